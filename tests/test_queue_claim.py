"""The job claim (gateway/queue.py) against a real database: which jobs it takes and in what
order, the lease it sets, the jobs it shunts or closes instead of running, and what its preload
sees. On SQLite the claim runs whole in the writer thread; on PostgreSQL (the suite's PostgreSQL
half) through the async driver, with SKIP LOCKED. Also `Database.read_sync`, which the inbound
job's identity look-ups use."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import pytest
from sqlalchemy import Connection, select, update

from gateway import audit, queue
from gateway.clock import utcnow
from gateway.db import Database
from gateway.models import AuditEntry, Job
from gateway.vault import Vault, new_data_key
from tests.conftest import short_tempdir

KINDS = ("inbound", "produce", "chat_notify")


@pytest.fixture
async def db(database_urls: Callable[[], str | None]) -> AsyncIterator[Database]:
    """SQLite, or PostgreSQL in the suite's PostgreSQL half (LERS_TEST_BACKEND=postgresql)."""
    root = short_tempdir("lers-queue-")
    database = Database(database_urls() or f"sqlite+aiosqlite:///{root}/lers.db")
    await database.ensure_schema()
    key_id, key = new_data_key()
    database.vault = Vault({key_id: key}, key_id)
    yield database
    await database.dispose()
    shutil.rmtree(root, ignore_errors=True)


async def _add(db: Database, **columns: object) -> int:
    async with db.transaction() as session:
        job = Job(**{"kind": "inbound", "payload": {"n": 1}, "run_after": utcnow(), **columns})
        session.add(job)
        await session.flush()
        return job.id


async def _jobs(db: Database) -> dict[int, Job]:
    async with db.transaction() as session:
        return {job.id: job for job in await session.scalars(select(Job))}


async def test_claim_takes_due_jobs_by_priority_then_age_and_leases_them(db: Database) -> None:
    now = utcnow()
    later = await _add(db, run_after=now + timedelta(hours=1))  # not due
    held = await _add(db, state="running", attempts=1, lease_until=now + timedelta(hours=1))
    other_kind = await _add(db, kind="notices")  # not a kind this worker runs
    old_low = await _add(db, priority=1)
    new_high = await _add(db, priority=0, payload={"ref": "LERS-2026-000001"})
    expired = await _add(db, state="running", attempts=2, lease_until=now - timedelta(seconds=1))
    seen: list[list[int]] = []

    def preload(conn: Connection, jobs: list[Job]) -> None:
        assert conn.in_transaction()
        seen.append([job.id for job in jobs])

    first = await queue.claim_batch(db, 60, 5, KINDS, frozenset(), 2, preload)
    assert [job.id for job in first] == [new_high, expired]
    assert first[0].payload == {"ref": "LERS-2026-000001"}  # opened from its sealed column
    assert seen == [[new_high, expired]]
    rest = await queue.claim_batch(db, 60, 5, KINDS, frozenset(), 5, preload)
    assert [job.id for job in rest] == [old_low]
    assert await queue.claim_batch(db, 60, 5, KINDS, frozenset(), 5, preload) == []
    assert seen == [[new_high, expired], [old_low]]  # nothing claimed: no preload
    stored = await _jobs(db)
    for job_id, attempts in ((new_high, 1), (expired, 3), (old_low, 1)):
        assert stored[job_id].state == "running"
        assert stored[job_id].attempts == attempts
        lease = stored[job_id].lease_until
        assert lease is not None and timedelta(seconds=55) < lease - now < timedelta(seconds=65)
    assert [job.attempts for job in first] == [1, 3]  # the objects returned say the same
    assert stored[later].state == "queued" and stored[other_kind].state == "queued"
    assert stored[held].attempts == 1


async def test_claim_shunts_a_job_that_never_finished_and_closes_jobs_with_nothing_to_do(
        db: Database) -> None:
    now = utcnow()
    dead = await _add(db, state="running", attempts=5, lease_until=now - timedelta(seconds=1),
                      last_error="MemoryError\x00")
    chat = [await _add(db, kind="chat_notify") for _ in range(3)]
    runnable = await _add(db, priority=1)
    claimed = await queue.claim_batch(db, 60, 5, KINDS, frozenset({"chat_notify"}), 1)
    assert [job.id for job in claimed] == [runnable]  # the others were no work: one claim
    stored = await _jobs(db)
    assert stored[dead].state == "shunted" and stored[dead].lease_until is None
    assert stored[dead].last_error == "MemoryError\ufffd [claimed 5 times, never finished]"
    for job_id in chat:
        assert stored[job_id].state == "done" and stored[job_id].finished_at is not None
    async with db.transaction() as session:
        [entry] = await session.scalars(select(AuditEntry))
        assert (entry.action, entry.subject) == ("job.shunted", f"job:{dead}")
        assert entry.details == {"kind": "inbound", "error": "never finished", "attempts": 5}
        assert (await audit.verify_chain(session)).ok


async def test_read_sync_neither_waits_for_the_writer_nor_sees_its_uncommitted_work(db: Database) -> None:
    """Rule 3's look-ups run in `read_sync`: with a write transaction open (and the SQLite write
    lock held), they answer at once, from the last commit."""
    job_id = await _add(db)
    started, release = asyncio.Event(), asyncio.Event()

    async def writer() -> None:
        async with db.transaction() as session:
            await session.execute(update(Job).where(Job.id == job_id).values(state="running"))
            started.set()
            await release.wait()

    task = asyncio.create_task(writer())
    await started.wait()
    try:
        state = await asyncio.wait_for(db.read_sync(
            lambda conn: conn.scalar(select(Job.state).where(Job.id == job_id))), 5)
    finally:
        release.set()
        await task
    assert state == "queued"
    committed = await db.read_sync(lambda conn: conn.scalar(select(Job.state).where(Job.id == job_id)))
    assert committed == "running"
