"""What must be on disk before the gateway tells anyone anything (SQLite): the message before the
SMTP 250, and everything before a reply leaves through the outbox. Work the gateway would only
redo if it were lost (a job's claim, a verdict and its reply queued, a reply recorded as sent)
commits without waiting for the disk; the next commit that waits makes it durable too."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, event, text
from sqlalchemy.engine import Engine

from gateway.db import Database
from tests.conftest import GatewayFactory
from tests.support.mail_factory import request_body, signed_request_mail
from tests.support.officer_keys import TestKey

FULL, NORMAL = 2, 1  # PRAGMA synchronous


def _level(conn: Connection) -> int:
    return int(conn.exec_driver_sql("PRAGMA synchronous").scalar_one())


async def test_a_redoable_commit_does_not_make_the_next_one_skip_the_disk(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'd.db'}")
    await db.ensure_schema()
    try:
        seen = [await db.write_in_thread(_level, redoable=redoable)
                for redoable in (False, True, True, False, True, False)]
        assert seen == [FULL, NORMAL, NORMAL, FULL, NORMAL, FULL]
        async with db.transaction() as session:  # the ORM's engine is never relaxed
            assert (await session.execute(text("PRAGMA synchronous"))).scalar_one() == FULL
    finally:
        await db.dispose()


async def test_what_leaves_the_gateway_was_committed_to_disk_first(make_gateway: GatewayFactory,
                                                                   alice: TestKey) -> None:
    gateway = await make_gateway()
    if not gateway.core.db.threaded_writes:
        return  # PostgreSQL: every commit waits for its WAL (nothing is relaxed there)
    await gateway.enrol(alice)
    # each write transaction's statements, with the synchronous level it committed under
    transactions: list[tuple[list[str], list[int]]] = []

    def began(conn: Any) -> None:
        transactions.append(([], []))
        conn.info["test_transaction"] = len(transactions) - 1

    def seen(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if conn.in_transaction() and "test_transaction" in conn.info:
            statements, levels = transactions[conn.info["test_transaction"]]
            statements.append(" ".join(statement.split()))
            levels.append({"NORMAL": NORMAL, "FULL": FULL}[conn.info.get("synchronous", "FULL")])

    event.listen(Engine, "begin", began)
    event.listen(Engine, "before_cursor_execute", seen)
    try:
        await gateway.send(signed_request_mail(gateway.ring, alice, from_addr=alice.email,
                                               body=request_body(type="preservation")))
        await gateway.settle()
        await asyncio.sleep(0.2)  # the reply's record as sent
    finally:
        event.remove(Engine, "before_cursor_execute", seen)
        event.remove(Engine, "begin", began)
    [reply] = gateway.replies(to=alice.email)
    assert "Request received" in reply.subject

    def levels_of(starts: str, *holding: str) -> set[int]:
        found = [set(levels) for statements, levels in transactions
                 if any(s.startswith(starts) and all(h in s for h in holding) for s in statements)]
        assert found, f"no transaction ran {starts!r}"
        return set().union(*found)

    assert levels_of("INSERT INTO messages", "ON CONFLICT") == {FULL}  # the inbound message, before the 250
    assert levels_of("UPDATE outbox SET state=?, next_attempt_at=?") == {FULL}  # before the smarthost
    assert levels_of("INSERT INTO requests") == {NORMAL}  # redone if lost: nothing had left yet
    assert levels_of("UPDATE jobs SET state=?, attempts=?") == {NORMAL}  # the inbound job's claim
