"""Time-based work: each task is a function of "now" that finds what is due and does it once.

The clock is `gateway.clock`, so tests move time instead of sleeping; every task records what it
did, so running it twice (or after a restart) does nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

from sqlalchemy import select

from gateway import audit
from gateway.clock import utcnow
from gateway.config import Settings
from gateway.db import Database
from gateway.leases import locked_mark
from gateway.models import Key, Officer, Request
from gateway.outbox import queue_reply
from gateway.texts import render
from handlers.holds import expire_holds, warn_of_expiring_holds
from handlers.notices import send_due_notices
from handlers.notify import notify_reviewers
from handlers.quarantine import purge
from handlers.review import OPEN_STATES

log = logging.getLogger(__name__)
OVERDUE_MARK = "overdue_report"


async def warn_of_deadlines(settings: Settings, db: Database) -> int:
    """Tell reviewers once about each open request whose deadline is near (or past)."""
    now = utcnow()
    horizon = now + timedelta(hours=settings.deadlines.warn_before_hours)
    async with db.transaction() as session:
        due = list(await session.scalars(
            select(Request).where(Request.status.in_(OPEN_STATES), Request.deadline.is_not(None),
                                  Request.deadline <= horizon, Request.deadline_warned_at.is_(None))
            .order_by(Request.deadline)))
        for request in due:
            assert request.deadline is not None
            left = request.deadline - now
            when = (f"in {left.total_seconds() / 3600:.0f} h" if left.total_seconds() > 0
                    else f"{-left.total_seconds() / 3600:.0f} h ago")
            notify_reviewers(session, f"⏰ {request.ref} ({request.type}, "
                             f"{request.status.replace('_', ' ')}) is due "
                             f"{request.deadline:%Y-%m-%d %H:%M} UTC, {when}.",
                             ref=request.ref, emergency=request.emergency)
            request.deadline_warned_at = now
            await audit.record(session, "system", "request.deadline_warning", request.ref,
                               deadline=request.deadline.isoformat())
        return len(due)


async def report_overdue(settings: Settings, db: Database) -> int:
    """Once a day, after `[deadlines] overdue_report_hour` (UTC): the list of overdue requests."""
    now = utcnow()
    if now.hour < settings.deadlines.overdue_report_hour:
        return 0
    async with db.transaction() as session:
        mark = await locked_mark(session, OVERDUE_MARK)
        if mark.last_at.date() >= now.date():
            return 0
        mark.last_at = now
        overdue = list(await session.scalars(
            select(Request).where(Request.status.in_(OPEN_STATES), Request.deadline.is_not(None),
                                  Request.deadline < now).order_by(Request.deadline)))
        if overdue:
            lines = [f"📋 {len(overdue)} overdue request(s) today:"]
            for request in overdue:
                assert request.deadline is not None
                late = (now - request.deadline).total_seconds() / 3600
                lines.append(f"{'🚨 ' if request.emergency else ''}{request.ref} {request.type} · "
                             f"{request.status.replace('_', ' ')} · {late:.0f} h late")
            notify_reviewers(session, "\n".join(lines), emergency=any(r.emergency for r in overdue))
        await audit.record(session, "system", "requests.overdue_report", None,
                           overdue=[r.ref for r in overdue])
        return len(overdue)


async def warn_of_key_expiry(settings: Settings, db: Database) -> int:
    """Tell each active officer once, through the outbox, that their key expires soon."""
    now = utcnow()
    horizon = now + timedelta(days=settings.policy.key_expiry_warning_days)
    async with db.transaction() as session:
        due = list(await session.execute(
            select(Officer, Key.expires_at).join(Key, Key.fingerprint == Officer.key_fingerprint)
            .where(Officer.status == "active", Officer.key_expiry_warned_at.is_(None),
                   Key.revoked.is_(False), Key.expires_at.is_not(None), Key.expires_at > now,
                   Key.expires_at <= horizon)))
        for officer, expires_at in due:
            if not officer.active:
                continue  # a suspended agency's officers are sent nothing
            queue_reply(session, settings, kind="key_expiry_warning", recipient=officer.email,
                        recipient_fingerprint=officer.key_fingerprint,
                        subject="Your key expires soon",
                        body=render("key_expiry_warning", fingerprint=officer.key_fingerprint,
                                    expires_at=f"{expires_at:%Y-%m-%d %H:%M}"))
            officer.key_expiry_warned_at = now
            await audit.record(session, "system", "officer.key_expiry_warning", officer.email,
                               key=officer.key_fingerprint, expires_at=expires_at.isoformat())
        return len(due)


async def purge_old_quarantine(settings: Settings, db: Database) -> int:
    """Refused messages are kept `[policy] quarantine_retention_days` (0: for ever), then deleted."""
    days = settings.policy.quarantine_retention_days
    return await purge(db, days) if days else 0


Task = Callable[[Settings, Database], Awaitable[int]]
TASKS: tuple[Task, ...] = (warn_of_deadlines, report_overdue, send_due_notices, warn_of_expiring_holds,
                           expire_holds, warn_of_key_expiry, purge_old_quarantine)


class Scheduler:
    def __init__(self, settings: Settings, db: Database, on_work: Callable[[], None]) -> None:
        self.settings = settings
        self.db = db
        self.on_work = on_work

    async def run_once(self) -> int:
        done = 0
        for task in TASKS:
            try:
                done += await task(self.settings, self.db)
            except Exception:
                log.exception("scheduled task failed", extra={"task": task.__name__})
        if done:
            self.on_work()
        return done

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.run_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.deadlines.scheduler_interval_seconds)
