"""A job queue in the database: enqueue, claim with a lease, finish, retry with back-off, shunt.

A job is claimed by setting a lease; a worker that dies leaves the lease to run out and the job
is claimed again. Handlers are idempotent, so a job done twice changes nothing the second time.
A job that keeps failing is shunted: kept with its error for a human, never dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, Integer, Select, Table, bindparam, insert, select, union_all, update
from sqlalchemy.ext.asyncio import AsyncSession

from gateway import audit
from gateway.clock import utcnow
from gateway.db import Database, no_nul, no_nul_row
from gateway.models import Job


def enqueue(session: AsyncSession, kind: str, *, message_id: int | None = None,
            payload: dict[str, Any] | None = None, priority: int = 0) -> Job:
    job = Job(kind=kind, message_id=message_id, payload=payload or {}, run_after=utcnow(),
              priority=priority)
    session.add(job)
    return job


CLOSE_AT_ONCE = 50  # jobs of `close_kinds` closed in one claim at most (then the caller claims again)
# what a worker loads with the jobs it claims, in the claim's transaction (e.g. their messages)
Preload = Callable[[Connection, list[Job]], None]
JOBS = cast(Table, Job.__table__)
# built once (executed with their parameters): no statement construction per claim
LEASE = (update(JOBS).where(JOBS.c.id == bindparam("job_id"))
         .values(state="running", attempts=bindparam("b_attempts"), lease_until=bindparam("b_until")))
CLOSE = (update(JOBS).where(JOBS.c.id == bindparam("job_id"))
         .values(state="done", finished_at=bindparam("b_finished"), lease_until=None))
SHUNT = (update(JOBS).where(JOBS.c.id == bindparam("job_id"))
         .values(state="shunted", last_error=bindparam("b_error"), lease_until=None))
_CANDIDATES: dict[tuple[tuple[str, ...], bool], Select[Any]] = {}


INSERT_JOB = insert(JOBS)


def enqueue_in(conn: Connection, kind: str, *, message_id: int | None = None,
               payload: dict[str, Any] | None = None, priority: int = 0) -> None:
    """`enqueue` as one Core INSERT on a synchronous connection in the caller's transaction
    (the same row; NUL in the payload's text replaced as an ORM flush replaces it)."""
    now = utcnow()
    conn.execute(INSERT_JOB, no_nul_row({"kind": kind, "message_id": message_id, "payload": payload or {},
                                         "run_after": now, "priority": priority, "created_at": now}))


async def claim_batch(db: Database, lease_seconds: float, max_attempts: int, kinds: tuple[str, ...],
                      close_kinds: frozenset[str], limit: int, preload: Preload | None = None,
                      redoable: bool = False) -> list[Job]:
    """Up to `limit` jobs (queued and due, or with an expired lease) of the highest priority (the
    lowest number: mail that looks signed by a known key before the rest), oldest first, claimed
    in one transaction (one write lock and one commit for several jobs) with a lease: a worker
    that dies leaves the lease to run out and the job is claimed again. `preload` runs in that
    transaction, so a job's handler need not open one of its own just to read its input.

    A job already claimed `max_attempts` times that never finished killed its worker each time
    (e.g. ran it out of memory): it is shunted instead of being run again. Jobs of `close_kinds`
    have nothing to do here (chat notifications with Telegram off): they are marked done here,
    instead of a transaction to claim and one to finish. Core statements on one connection: on
    SQLite the claim is one trip to the writer thread (`Database.write_sync`). The jobs returned
    are transient `Job` objects holding the columns as claimed. `redoable` (`Database.write_in_thread`):
    a claim lost with the machine only runs the job again; not for jobs that send something out."""
    now = utcnow()
    return await db.write_sync(lambda conn: _claim(conn, now, lease_seconds, max_attempts, kinds,
                                                   close_kinds, limit, preload), redoable=redoable)


def _claim(conn: Connection, now: datetime, lease_seconds: float, max_attempts: int,
           kinds: tuple[str, ...], close_kinds: frozenset[str], limit: int,
           preload: Preload | None) -> list[Job]:
    claimed: list[Job] = []
    closed = 0
    query = _candidates(kinds, conn.dialect.name == "postgresql")
    until = now + timedelta(seconds=lease_seconds)
    while len(claimed) < limit and closed < CLOSE_AT_ONCE:
        wanted = limit - len(claimed)
        candidates = [Job(**row) for row in conn.execute(query, {"b_now": now, "b_limit": wanted}).mappings()]
        leases, closes, shunts, entries = [], [], [], []
        for job in candidates:
            if job.attempts >= max_attempts:
                job.state, job.lease_until = "shunted", None
                never = f" [claimed {job.attempts} times, never finished]"
                job.last_error = no_nul((job.last_error or "") + never)
                shunts.append({"job_id": job.id, "b_error": job.last_error})
                entries.append(("system", "job.shunted", f"job:{job.id}",
                                {"kind": job.kind, "error": "never finished", "attempts": job.attempts}))
            elif job.kind in close_kinds:
                job.state, job.finished_at, job.lease_until = "done", now, None
                closes.append({"job_id": job.id, "b_finished": now})
                closed += 1
            else:
                job.state, job.attempts, job.lease_until = "running", job.attempts + 1, until
                leases.append({"job_id": job.id, "b_attempts": job.attempts, "b_until": until})
                claimed.append(job)
        for statement, rows in ((SHUNT, shunts), (CLOSE, closes), (LEASE, leases)):
            if rows:
                conn.execute(statement, rows)
        if entries:
            audit.append(conn, entries)
        if len(candidates) < wanted:  # no more runnable jobs
            break
    if claimed and preload is not None:
        preload(conn, claimed)
    return claimed


def _candidates(kinds: tuple[str, ...], skip_locked: bool) -> Select[Any]:
    """Runnable jobs of `kinds` (queued and due, or with an expired lease), highest priority (the
    lowest number) and oldest first; on PostgreSQL, rows another process holds are skipped (SQLite
    serialises writers with BEGIN IMMEDIATE instead). One statement per worker, made once.

    Each state and kind is read in the order of its index (state, kind, priority, id), its first
    `b_limit` rows only; those few are then ordered together. Ordering every runnable job instead
    read and sorted the whole backlog at every claim, in the one writer: a flood of forged mail
    queued behind a real request made each claim slower the longer it lasted (issue 8)."""
    query = _CANDIDATES.get((kinds, skip_locked))
    if query is None:
        now = bindparam("b_now", type_=JOBS.c.run_after.type)
        limit = bindparam("b_limit", type_=Integer)
        states = (("queued", JOBS.c.run_after <= now), ("running", JOBS.c.lease_until < now))
        firsts = []
        for kind in kinds:
            for state, runnable in states:
                first = (select(JOBS.c.id).where(JOBS.c.state == state, JOBS.c.kind == kind, runnable)
                         .order_by(JOBS.c.priority, JOBS.c.id).limit(limit))
                if skip_locked:  # each state and kind's first rows that no other process holds
                    first = first.with_for_update(skip_locked=True)
                firsts.append(first.subquery().select())
        query = (select(JOBS).where(JOBS.c.id.in_(union_all(*firsts)))
                 .order_by(JOBS.c.priority, JOBS.c.id).limit(limit))
        if skip_locked:
            query = query.with_for_update(skip_locked=True)
        _CANDIDATES[(kinds, skip_locked)] = query
    return query


async def release_all_leases(db: Database) -> int:
    """At start of a single-process gateway, jobs left running by a crash are ours to redo."""
    async with db.transaction() as session:
        result = await session.execute(
            update(Job).where(Job.state == "running").values(state="queued", lease_until=None)
        )
        return result.rowcount or 0


def mark_done(session: AsyncSession, job: Job) -> None:
    """Finish a job inside the handler's own transaction, so the work and its end commit together."""
    job.state = "done"
    job.finished_at = utcnow()
    job.lease_until = None
    session.add(job)


async def mark_done_by_id(session: AsyncSession, job_id: int) -> None:
    """`mark_done` without loading the job: one UPDATE in the handler's own transaction."""
    await session.execute(update(Job).where(Job.id == job_id)
                          .values(state="done", finished_at=utcnow(), lease_until=None)
                          .execution_options(synchronize_session=False))


async def finish(db: Database, job: Job) -> None:
    """Finish a job whose work was not a database write of its own (e.g. a chat message sent)."""
    async with db.transaction() as session:
        fresh = await session.get(Job, job.id)
        assert fresh is not None
        mark_done(session, fresh)


async def mark_failed(db: Database, job: Job, error: str, max_attempts: int) -> str:
    """Retry later with exponential back-off, or shunt the job for a human after max_attempts."""
    async with db.transaction() as session:
        fresh = await session.get(Job, job.id)
        assert fresh is not None
        fresh.last_error = error[:4000]
        fresh.lease_until = None
        if fresh.attempts >= max_attempts:
            fresh.state = "shunted"
            await audit.record(session, "system", "job.shunted", f"job:{fresh.id}",
                               kind=fresh.kind, error=error[:500], attempts=fresh.attempts)
        else:
            fresh.state = "queued"
            fresh.run_after = utcnow() + timedelta(seconds=min(2 ** fresh.attempts, 300))
        return fresh.state
