"""NUL replacement in JSON values (gateway/db.py `no_nul`) changes real NUL characters only.

It used to replace the six characters `\\u0000` in the JSON text, which also matched text that
merely spells them (an escaped backslash followed by "u0000"): a Message-ID such as
`<a\\u0000b@police.test>` (a valid id) came out of the request's `thread_references` altered,
while `thread_message_id` (plain text) kept it, so replies referenced an id the officer never sent.
"""

from __future__ import annotations

from sqlalchemy import select

from gateway.db import no_nul
from gateway.models import Outbox, Request
from tests.conftest import Harness
from tests.support.mail_factory import request_body, signed_request_mail
from tests.support.officer_keys import TestKey

LITERAL = "<a\\u0000b@police.test>"  # backslash, u, 0, 0, 0, 0: no NUL in it


def test_text_that_spells_an_escape_is_kept() -> None:
    value = {"refs": [LITERAL], "k\\u0000": "C:\\u0000"}
    assert no_nul(value) is value
    assert no_nul([LITERAL]) == [LITERAL]


def test_real_nul_is_replaced_everywhere_in_a_json_value() -> None:
    value = {"a\x00": ["x\x00y", {"b": "\\u0000\x00"}], "n": 1, "t": True, "z": None}
    assert no_nul(value) == {"a\ufffd": ["x\ufffdy", {"b": "\\u0000\ufffd"}], "n": 1, "t": True, "z": None}
    assert value["a\x00"][0] == "x\x00y"  # the caller's value is left as it was
    assert no_nul("x\x00") == "x\ufffd" and no_nul(b"x\x00") == b"x\x00"


async def test_a_message_id_spelling_an_escape_threads_the_reply(gateway: Harness, alice: TestKey) -> None:
    mail = signed_request_mail(gateway.ring, alice, from_addr=alice.email, body=request_body(),
                               message_id=LITERAL)
    assert (await gateway.send(mail))[0] == 250
    await gateway.settle()
    async with gateway.core.db.transaction() as session:
        request = (await session.scalars(select(Request))).one()
        reply = (await session.scalars(select(Outbox))).one()
    assert request.thread_message_id == LITERAL and request.thread_references == [LITERAL]
    assert reply.in_reply_to == LITERAL and reply.references == [LITERAL]


async def test_audit_details_keep_text_that_spells_an_escape(gateway: Harness) -> None:
    """The audit stores (and hashes) details as given, with only real NUL replaced."""
    from gateway import audit
    from gateway.models import AuditEntry

    async with gateway.core.db.transaction() as session:
        await audit.record(session, "system", "test.nul", "x", note=LITERAL, nul="a\x00b")
    async with gateway.core.db.transaction() as session:
        entry = await session.scalar(select(AuditEntry).where(AuditEntry.action == "test.nul"))
        assert entry is not None and entry.details == {"note": LITERAL, "nul": "a\ufffdb"}
        assert (await audit.verify_chain(session)).ok


def test_audit_details_are_stored_as_json_would_keep_them() -> None:
    """`audit.as_stored` skips JSON's way there and back for details that are already what it
    gives (text without NUL, numbers, flags, None), and takes it for everything else: the same
    value either way."""
    import enum
    import json
    from datetime import UTC, datetime

    from gateway import audit

    class Level(enum.IntEnum):
        HIGH = 2

    def by_json(details: dict) -> dict:
        return no_nul(json.loads(json.dumps(details, default=str)))

    plain = {"peer": "127.0.0.1", "size": 39, "ratio": 0.5, "ok": True, "none": None, "note": LITERAL}
    assert audit.as_stored(plain) is plain and by_json(plain) == plain
    for details in ({"at": datetime(2026, 11, 24, tzinfo=UTC)}, {"ids": (1, 2)}, {"nested": {"a": [1]}},
                    {"nul": "a\x00b"}, {"k\x00": 1}, {1: "number key"}, {"level": Level.HIGH},
                    {"raw": b"bytes"}):
        stored = audit.as_stored(details)
        assert stored == by_json(details) and json.dumps(stored) == json.dumps(by_json(details))
        assert stored is not details
