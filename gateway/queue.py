"""A job queue in the database: enqueue, claim with a lease, finish, retry with back-off, shunt.

A job is claimed by setting a lease; a worker that dies leaves the lease to run out and the job
is claimed again. Handlers are idempotent, so a job done twice changes nothing the second time.
A job that keeps failing is shunted: kept with its error for a human, never dropped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gateway import audit
from gateway.clock import utcnow
from gateway.db import Database
from gateway.models import Job


def enqueue(session: AsyncSession, kind: str, *, message_id: int | None = None,
            payload: dict[str, Any] | None = None, priority: int = 0) -> Job:
    job = Job(kind=kind, message_id=message_id, payload=payload or {}, run_after=utcnow(),
              priority=priority)
    session.add(job)
    return job


async def claim(db: Database, lease_seconds: float, max_attempts: int = 5,
                kinds: tuple[str, ...] | None = None,
                close_kinds: frozenset[str] = frozenset()) -> Job | None:
    """Take the oldest runnable job (queued and due, or with an expired lease) of the highest
    priority (the lowest number: mail that looks signed by a known key before the rest).

    A job already claimed `max_attempts` times that never finished killed its worker each time
    (e.g. ran it out of memory): it is shunted instead of being run again. Jobs of `close_kinds`
    have nothing to do here (chat notifications with Telegram off): they are marked done in this
    transaction and the next job is looked at, instead of a transaction to claim and one to finish.
    """
    now = utcnow()
    async with db.transaction() as session:
        for _ in range(CLOSE_AT_ONCE):
            job = await _claim_one(session, db, now, lease_seconds, max_attempts, kinds)
            if job is None or job.kind not in close_kinds:
                return job
            mark_done(session, job)
        return None


CLOSE_AT_ONCE = 50  # jobs of `close_kinds` closed in one claim at most (then the caller claims again)
# what a worker loads with the jobs it claims, in the claim's transaction (e.g. their messages)
Preload = Callable[[AsyncSession, list[Job]], Awaitable[None]]


async def claim_batch(db: Database, lease_seconds: float, max_attempts: int, kinds: tuple[str, ...],
                      close_kinds: frozenset[str], limit: int, preload: Preload | None = None) -> list[Job]:
    """Up to `limit` jobs, in the order `claim` takes them, claimed in one transaction (one write
    lock and one commit for several jobs); `preload` runs in that transaction, so a job's handler
    need not open one of its own just to read its input. Shunts and closes like `claim`."""
    now = utcnow()
    claimed: list[Job] = []
    closed = 0
    async with db.transaction() as session:
        while len(claimed) < limit and closed < CLOSE_AT_ONCE:
            wanted = limit - len(claimed)
            candidates = await _candidates(session, db, now, kinds, wanted)
            for job in candidates:
                if job.attempts >= max_attempts:
                    await _shunt_unfinished(session, job)
                elif job.kind in close_kinds:
                    mark_done(session, job)
                    closed += 1
                else:
                    _lease(job, now, lease_seconds)
                    claimed.append(job)
            if len(candidates) < wanted:  # no more runnable jobs
                break
            await session.flush()  # what was just taken is no candidate for the next round
        if claimed and preload is not None:
            await preload(session, claimed)
    return claimed


async def _candidates(session: AsyncSession, db: Database, now: datetime, kinds: tuple[str, ...] | None,
                      limit: int) -> list[Job]:
    """Runnable jobs (queued and due, or with an expired lease), highest priority (the lowest
    number) and oldest first; on PostgreSQL, rows another process holds are skipped."""
    query = (
        select(Job)
        .where(
            or_(
                (Job.state == "queued") & (Job.run_after <= now),
                (Job.state == "running") & (Job.lease_until < now),
            )
        )
        .order_by(Job.priority, Job.id)
        .limit(limit)
    )
    if kinds is not None:
        query = query.where(Job.kind.in_(kinds))
    if not db.is_sqlite:  # SQLite serialises writers with BEGIN IMMEDIATE instead
        query = query.with_for_update(skip_locked=True)
    return list(await session.scalars(query))


async def _shunt_unfinished(session: AsyncSession, job: Job) -> None:
    """A job claimed `max_attempts` times that never finished killed its worker each time."""
    job.state = "shunted"
    job.last_error = (job.last_error or "") + f" [claimed {job.attempts} times, never finished]"
    job.lease_until = None
    await audit.record(session, "system", "job.shunted", f"job:{job.id}", kind=job.kind,
                       error="never finished", attempts=job.attempts)


def _lease(job: Job, now: datetime, lease_seconds: float) -> None:
    job.state = "running"
    job.attempts += 1
    job.lease_until = now + timedelta(seconds=lease_seconds)


async def _claim_one(session: AsyncSession, db: Database, now: datetime, lease_seconds: float,
                     max_attempts: int, kinds: tuple[str, ...] | None) -> Job | None:
    """One claim (see `claim`), inside the caller's transaction."""
    candidates = await _candidates(session, db, now, kinds, 1)
    if not candidates:
        return None
    job = candidates[0]
    if job.attempts >= max_attempts:
        await _shunt_unfinished(session, job)
        return None
    _lease(job, now, lease_seconds)
    return job


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
