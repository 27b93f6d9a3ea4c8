"""The gateway's JSON logs: every line written while a request's work runs names the request."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import Harness, production_logs
from tests.support.mail_factory import request_body, signed_request_mail, unsigned_mail
from tests.support.officer_keys import TestKey


def lines(buffer: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


async def test_each_request_s_log_lines_carry_its_reference(gateway: Harness, alice: TestKey,
                                                           bob: TestKey) -> None:
    with production_logs() as buffer:
        for officer, case in ((alice, "2026-PR-0101"), (bob, "2026-PR-0102")):
            await gateway.send(signed_request_mail(gateway.ring, officer, from_addr=officer.email,
                                                   body=request_body(type="preservation", case_number=case)))
        await gateway.send(unsigned_mail(from_addr="nobody@elsewhere.test", body="hello"))
        await gateway.settle()
    logged = lines(buffer)
    refs = {r["case_number"]: r["ref"] for r in await gateway.requests()}
    assert sorted(refs) == ["2026-PR-0101", "2026-PR-0102"]
    for ref in refs.values():
        mine = [entry for entry in logged if entry.get("ref") == ref]
        assert [e["msg"] for e in mine if e["logger"] == "handlers.inbound"] == ["inbound message accepted"]
        assert [e["msg"] for e in mine if e["logger"] == "gateway.outbox"] == ["reply sent"]
    refused = [e for e in logged if e["msg"] == "inbound message quarantined"]
    assert len(refused) == 1 and "ref" not in refused[0] and refused[0]["reason"] == "not_signed"
    # lines with no request behind them name none (and never a stale one)
    assert all("ref" not in e for e in logged if e["msg"] in ("messages stored", "gateway started"))
    # each stored message is named in its commit's line, with the peer it came from
    stored = [m for e in logged if e["msg"] == "messages stored" for m in e["messages"]]
    assert len(stored) == 3 and all(m["peer"] == "127.0.0.1" and not m["duplicate"] for m in stored)
    assert len({m["message_id"] for m in stored}) == 3
    assert set(e["ref"] for e in logged if "ref" in e) == set(refs.values())


def test_secrets_never_reach_a_log_line_raw_or_json_escaped() -> None:
    """A secret given to `never_log` is cut from every line: as it is (a library logging a URL
    with the token in it) and as it looks inside a JSON string (an `extra` field)."""
    import logging

    from gateway.logs import JsonFormatter, never_log

    secret = 'tok"en\\with-quote-' + "x" * 8
    never_log(secret)
    record = logging.LogRecord("httpx", logging.INFO, __file__, 1, f"GET https://api.test/bot{secret}/getMe",
                               (), None)
    record.password = secret  # lands JSON-escaped in the line
    line = JsonFormatter().format(record)
    assert secret not in line and json.dumps(secret)[1:-1] not in line
    entry = json.loads(line)
    assert entry["msg"] == "GET https://api.test/bot[redacted]/getMe" and entry["password"] == "[redacted]"
