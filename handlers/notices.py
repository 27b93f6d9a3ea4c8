"""Notices to the platform's users that a request concerned their account, and the holds on them.

A notice is created for each subject whose email the data source knows, once the request is
decided (approved in full or in part, or rejected). Whether it may go is decided again from the
request itself every time the scheduler looks, never from a stored "due" flag: a non-disclosure
order (NDO) extended by the officer or a reviewer holds it at once, an indefinite order holds it
until a reviewer lifts it, and an emergency request holds it for `[notices]
emergency_delay_hours` after the decision. If the clock is ever seen going backwards, no notice
goes until it has caught up again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway import audit, queue
from gateway.clock import utcnow
from gateway.config import Settings
from gateway.datasource import DataSource
from gateway.db import Database
from gateway.leases import locked_mark
from gateway.models import Job, Notice, Request
from gateway.outbox import queue_notice
from gateway.texts import notice_languages, render, render_html

log = logging.getLogger(__name__)

DECISION_WORDS = {"approve": "approved", "partial": "approved in part", "reject": "rejected"}
# the notice and its subject line in each language we ship
SUBJECTS = {"en": "A request from an authority about your account",
            "de": "Eine behördliche Anfrage zu Ihrem Konto"}
CLOCK_MARK = "notices.clock"
CLOCK_TOLERANCE = timedelta(minutes=5)


def hold_of(request: Request, settings: Settings) -> tuple[str, datetime | None]:
    """Why a request's notices wait, and until when (None: until a reviewer lifts the order).

    An NDO "until D" runs through the whole day D (UTC); notices may go from the next midnight.
    """
    if request.nondisclosure_indefinite:
        return "ndo_indefinite", None
    decided = request.decided_at or request.created_at
    waits: list[tuple[datetime, str]] = [(decided, "none")]
    if request.nondisclosure_until:
        waits.append((datetime.combine(request.nondisclosure_until + timedelta(days=1), time(), UTC),
                      "ndo"))
    if request.emergency:
        waits.append((decided + timedelta(hours=settings.notices.emergency_delay_hours), "emergency"))
    until, why = max(waits)
    return why, until


def enqueue_notices(session: AsyncSession, request: Request, decision: str) -> None:
    """After a decision: look up the subjects' emails (in a job: the data source is another
    database, not to be queried while the decision's transaction holds the write lock)."""
    queue.enqueue(session, "notices", payload={"request_id": request.id, "decision": decision})


@dataclass(frozen=True)
class Recipient:
    email: str
    language: str | None
    subject_type: str
    subject_value: str


async def create_notices(settings: Settings, db: Database, data_source: DataSource, job: Job) -> None:
    """The `notices` job: one held notice per distinct known email among the request's subjects."""
    async with db.transaction() as session:
        request = await session.get(Request, job.payload["request_id"])
        assert request is not None
        subjects = [(s.type, s.value) for s in request.subjects]
    recipients: dict[str, Recipient] = {}
    for kind, value in subjects:
        for user_id in await data_source.find_users(kind, value):
            email, language = await data_source.contact_of(user_id)
            if email and email.lower() not in recipients:
                recipients[email.lower()] = Recipient(email, language, kind, value)
    async with db.transaction() as session:
        request = await session.get(Request, job.payload["request_id"])
        fresh_job = await session.get(Job, job.id)
        assert request is not None and fresh_job is not None
        created: list[int] = []
        if request.status != "withdrawn":
            known = set(await session.scalars(select(Notice.email).where(Notice.request_id == request.id)))
            hold, until = hold_of(request, settings)
            for recipient in recipients.values():
                if recipient.email in known:
                    continue  # the job ran before and crashed after this commit: nothing twice
                language = (recipient.language if recipient.language in notice_languages()
                            else settings.notices.language)
                notice = Notice(request_id=request.id, email=recipient.email,
                                subject_type=recipient.subject_type, subject_value=recipient.subject_value,
                                language=language, decision=job.payload["decision"], state="held",
                                hold=hold, not_before=until)
                session.add(notice)
                await session.flush()
                created.append(notice.id)
            await audit.record(session, "system", "notices.created", request.ref, notices=created,
                               hold=hold, not_before=until.isoformat() if until else None,
                               subjects_without_email=len(subjects) - len(recipients))
        queue.mark_done(session, fresh_job)


async def send_due_notices(settings: Settings, db: Database) -> int:
    """Queue every held notice whose hold has ended, as judged now from its request."""
    now = utcnow()
    async with db.transaction() as session:
        mark = await locked_mark(session, CLOCK_MARK)  # one sender at a time, even across processes
        if now < mark.last_at - CLOCK_TOLERANCE:
            log.warning("the clock went backwards: notices wait until it catches up",
                        extra={"now": now.isoformat(), "seen": mark.last_at.isoformat()})
            return 0
        mark.last_at = max(mark.last_at, now)
        held = list(await session.scalars(select(Notice).where(Notice.state == "held")
                                          .order_by(Notice.id)))
        sent = 0
        for notice in held:
            request = await session.get(Request, notice.request_id)
            assert request is not None
            if request.status == "withdrawn":
                notice.state = "cancelled"
                await audit.record(session, "system", "notice.cancelled", request.ref,
                                   notice=notice.id, why="request withdrawn")
                continue
            hold, until = hold_of(request, settings)
            notice.hold, notice.not_before = hold, until
            if until is None or now < until:
                continue
            values = notice_values(settings, request, notice)
            row = queue_notice(session, settings, recipient=notice.email,
                               subject=SUBJECTS.get(notice.language, SUBJECTS["en"]),
                               text=render(f"notice.{notice.language}", **values),
                               html=render_html(f"notice.{notice.language}", **values),
                               request_id=request.id)
            await session.flush()
            notice.state, notice.sent_at, notice.outbox_id = "sent", now, row.id
            await audit.record(session, "system", "notice.sent", request.ref, notice=notice.id,
                               outbox=row.id, hold=hold)
            sent += 1
        return sent


def notice_values(settings: Settings, request: Request, notice: Notice) -> dict[str, Any]:
    agency = request.officer.agency
    return {
        "platform": settings.notices.platform_name,
        "subject": f"{notice.subject_type.replace('_', ' ')} {notice.subject_value}",
        "agency": agency.name,
        "country": agency.country or "country not recorded",
        "request_type": (request.type or "request").replace("_", " "),
        "categories": ", ".join(c.replace("_", " ") for c in request.data_categories) or "none named",
        "received": f"{request.created_at:%Y-%m-%d}",
        "decision": DECISION_WORDS.get(notice.decision, notice.decision),
        "contact": settings.notice_contact,
        "ref": request.ref,
    }


async def cancel_held(session: AsyncSession, request: Request, why: str) -> int:
    """A withdrawn request's held notices are never sent."""
    held = list(await session.scalars(select(Notice).where(Notice.request_id == request.id,
                                                           Notice.state == "held")))
    for notice in held:
        notice.state = "cancelled"
    if held:
        await audit.record(session, "system", "notice.cancelled", request.ref,
                           notices=[n.id for n in held], why=why)
    return len(held)


async def list_notices(db: Database, settings: Settings, due_only: bool) -> list[dict[str, Any]]:
    """For `lers notices list`: every notice with its hold as judged now."""
    now = utcnow()
    async with db.transaction() as session:
        notices = list(await session.scalars(select(Notice).order_by(Notice.id)))
        rows = []
        for notice in notices:
            request = await session.get(Request, notice.request_id)
            assert request is not None
            hold, until = (notice.hold, notice.not_before) if notice.state != "held" else hold_of(
                request, settings)
            due = notice.state == "held" and until is not None and until <= now
            if due_only and not due:
                continue
            rows.append({"id": notice.id, "ref": request.ref, "email": notice.email,
                         "state": notice.state, "hold": hold,
                         "not_before": until.isoformat() if until else None, "due": due,
                         "sent_at": notice.sent_at.isoformat() if notice.sent_at else None})
        return rows
