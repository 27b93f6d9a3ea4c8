"""Issue 8: the gateway's own CPU per verified request is mostly SQLAlchemy, so the number of
database statements one request costs is a bound worth keeping (a regression would creep back
silently: everything still works, only slower). Counted, not timed, so the test cannot be flaky."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from tests.conftest import GatewayFactory
from tests.support.mail_factory import request_body, signed_request_mail
from tests.support.officer_keys import TestKey

# one signed request from arrival to its acknowledgement at the smarthost (store, claim, identity
# and replay look-ups, the request and its records, the reviewers' job, the reply's claim,
# suspension check and bookkeeping) took 54 statements on SQLite before issue 8's third round, 40
# after it, and 33 once the inbound job's claim, look-ups and records were Core statements
# (counted on every engine: 37 before that); the margin is for a duty lease renewed meanwhile, not
# for new statements
BUDGET = 36


async def test_one_request_costs_a_bounded_number_of_statements(make_gateway: GatewayFactory,
                                                                  alice: TestKey) -> None:
    # no idle polling during the count: the workers and the outbox run on wake-ups only
    gateway = await make_gateway(worker__poll_seconds="30")
    await gateway.enrol(alice)
    for n in range(3):  # earlier requests (the year's reference counter, the officer's history)
        await gateway.send(_request(gateway, alice, n))
    await gateway.settle()
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    # every engine: on SQLite, transactions run whole in a thread use an engine of their own
    # (`Database.write_in_thread`), as bench/counted.py counts them
    mail = _request(gateway, alice, 3)
    event.listen(Engine, "before_cursor_execute", count)
    try:
        code, _ = await gateway.send(mail)
        for _ in range(1500):  # up to 30 s for the acknowledgement at the smarthost
            if len(gateway.replies(to=alice.email)) == 4:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)  # the reply's own bookkeeping after the smarthost took it
    finally:
        event.remove(Engine, "before_cursor_execute", count)
    assert code == 250
    ack = gateway.replies(to=alice.email)[-1]
    assert "Request received" in ack.subject
    assert len(statements) <= BUDGET, "\n".join(statements)


def _request(gateway: Any, officer: TestKey, n: int) -> bytes:
    return signed_request_mail(gateway.ring, officer, from_addr=officer.email,
                               body=request_body(type="preservation", case_number=f"BUDGET-{n}"))
