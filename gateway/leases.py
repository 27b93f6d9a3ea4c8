"""One-at-a-time duties among several gateway processes: a lease row per duty.

The holder renews its lease well before it expires; when a process dies its lease runs out and
another takes the duty over (fail-over within one lease period). With SQLite there is one
process, and it always holds every lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.clock import utcnow
from gateway.db import Database
from gateway.models import Lease, ScheduleMark

log = logging.getLogger(__name__)

HOLDER = f"{socket.gethostname()}:{os.getpid()}"


async def acquire(db: Database, name: str, ttl_seconds: float, holder: str = HOLDER) -> bool:
    """Take or renew the lease `name` for `holder`; False if someone else holds it."""
    now = utcnow()
    until = now + timedelta(seconds=ttl_seconds)
    async with db.transaction() as session:
        result = await session.execute(
            update(Lease).where(Lease.name == name,
                                or_(Lease.holder == holder, Lease.expires_at < now))
            .values(holder=holder, expires_at=until))
        if result.rowcount:
            return True
        if await session.get(Lease, name) is not None:
            return False
    try:
        async with db.transaction() as session:
            session.add(Lease(name=name, holder=holder, expires_at=until))
        return True
    except IntegrityError:  # another process created it first
        return False


async def release(db: Database, name: str, holder: str = HOLDER) -> None:
    async with db.transaction() as session:
        await session.execute(update(Lease).where(Lease.name == name, Lease.holder == holder)
                              .values(expires_at=utcnow()))


class Duty:
    """Runs `start()` while this process holds the lease, `stop()` when it loses or gives it up."""

    def __init__(self, db: Database, name: str, start: Callable[[], Awaitable[None]],
                 stop: Callable[[], Awaitable[None]], ttl_seconds: float = 30.0) -> None:
        self.db, self.name, self.ttl = db, name, ttl_seconds
        self._start, self._stop = start, stop
        self.active = False

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    held = await acquire(self.db, self.name, self.ttl)
                except Exception:
                    log.exception("lease check failed", extra={"duty": self.name})
                    held = False
                if held and not self.active:
                    log.info("taking over a duty", extra={"duty": self.name, "holder": HOLDER})
                    await self._start()
                    self.active = True
                elif not held and self.active:
                    log.warning("lost a duty to another process", extra={"duty": self.name})
                    await self._stop()
                    self.active = False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.ttl / 3)
        finally:
            if self.active:
                await self._stop()
                self.active = False
                await release(self.db, self.name)


NEVER = datetime(1970, 1, 1, tzinfo=UTC)


async def locked_mark(session: AsyncSession, name: str) -> ScheduleMark:
    """The schedule mark `name`, created at the epoch if new, locked until the transaction ends:
    two scheduler runs (two processes, or a test beside the running scheduler) take turns."""
    insert = sqlite_insert if session.bind.dialect.name == "sqlite" else postgresql_insert
    await session.execute(insert(ScheduleMark).values(name=name, last_at=NEVER).on_conflict_do_nothing())
    mark = await session.scalar(select(ScheduleMark).where(ScheduleMark.name == name).with_for_update())
    assert mark is not None
    return mark
