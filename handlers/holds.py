"""Preservations and asset freezes: decisions that last, expire, and can be extended or released.

No data leaves for these types. An approved preservation keeps the subjects' data for
`[holds] preservation_days`; the same officer extends it by a signed mail naming its reference
with `type: preservation_extension`. An approved asset freeze lasts `[holds] freeze_days`; an
approved freeze release ends the active freezes of the same agency on the same subjects.
Reviewers (and, for preservations, the officer) are told `[holds] expiry_warning_days` before a
hold expires, and again when it has.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway import audit
from gateway.clock import utcnow
from gateway.config import Settings
from gateway.db import Database
from gateway.models import Hold, Request
from gateway.outbox import queue_reply
from handlers.notify import notify_reviewers
from handlers.scope import Scope

HOLD_KINDS = {"preservation": "preservation", "asset_freeze": "freeze"}
WORDS = {"preservation": "preservation", "freeze": "asset freeze"}


def duration(settings: Settings, kind: str) -> timedelta:
    days = settings.holds.preservation_days if kind == "preservation" else settings.holds.freeze_days
    return timedelta(days=days)


async def start_hold(session: AsyncSession, settings: Settings, request: Request, scope: Scope) -> Hold:
    """An approved preservation or freeze: active from now, for the configured time."""
    kind = HOLD_KINDS[request.type or ""]
    now = utcnow()
    hold = Hold(request_id=request.id, kind=kind, state="active", subjects=scope["subjects"],
                starts_at=now, expires_at=now + duration(settings, kind))
    session.add(hold)
    if kind == "preservation":
        request.status = "preserved"
    await audit.record(session, "system", f"{kind}.started", request.ref,
                       expires_at=hold.expires_at.isoformat(), subjects=len(scope["subjects"]))
    return hold


async def release_freezes(session: AsyncSession, request: Request) -> list[str]:
    """An approved freeze release: end this agency's active freezes on any of its subjects."""
    wanted = {(s.type, s.value) for s in request.subjects}
    released = []
    rows = await session.execute(select(Hold, Request).join(Request, Hold.request_id == Request.id).where(
        Hold.kind == "freeze", Hold.state == "active", Request.agency_id == request.agency_id))
    for hold, frozen in rows.all():
        if wanted & {(kind, value) for kind, value in hold.subjects}:
            hold.state, hold.ended_at, hold.released_by_request_id = "released", utcnow(), request.id
            released.append(frozen.ref)
            await audit.record(session, "system", "freeze.released", frozen.ref, by=request.ref)
    request.status = "fulfilled"
    return released


async def active_hold(session: AsyncSession, request: Request) -> Hold | None:
    return await session.scalar(select(Hold).where(Hold.request_id == request.id, Hold.state == "active"))


async def extend_preservation(session: AsyncSession, settings: Settings, request: Request,
                              actor: str) -> Hold | None:
    """Another period from the current expiry; None when there is no active preservation."""
    hold = await active_hold(session, request)
    if hold is None or hold.kind != "preservation":
        return None
    hold.expires_at += duration(settings, "preservation")
    hold.extensions += 1
    hold.warned_at = None
    request.status = "extended"
    await audit.record(session, actor, "preservation.extended", request.ref,
                       expires_at=hold.expires_at.isoformat(), extensions=hold.extensions)
    return hold


async def end_for_withdrawal(session: AsyncSession, request: Request) -> None:
    hold = await active_hold(session, request)
    if hold is not None:
        hold.state, hold.ended_at = "released", utcnow()
        await audit.record(session, "system", f"{hold.kind}.released", request.ref, why="withdrawn")


async def warn_of_expiring_holds(settings: Settings, db: Database) -> int:
    """Once per period: reviewers (and the officer, for a preservation) hear of a hold expiring."""
    now = utcnow()
    horizon = now + timedelta(days=settings.holds.expiry_warning_days)
    async with db.transaction() as session:
        rows = (await session.execute(select(Hold, Request).join(Request, Hold.request_id == Request.id)
                                      .where(Hold.state == "active", Hold.warned_at.is_(None),
                                             Hold.expires_at <= horizon, Hold.expires_at > now)
                                      .with_for_update(of=Hold, skip_locked=True))).all()
        for hold, request in rows:
            hold.warned_at = now
            when = f"{hold.expires_at:%Y-%m-%d %H:%M} UTC"
            notify_reviewers(session, f"⏳ The {WORDS[hold.kind]} of {request.ref} "
                             f"({request.officer.agency.name}) expires {when}.", ref=request.ref)
            if hold.kind == "preservation":
                queue_reply(session, settings, kind="preservation_expiring", recipient=request.officer.email,
                            recipient_fingerprint=request.officer.key_fingerprint,
                            subject=f"[{request.ref}] Preservation expires {hold.expires_at:%Y-%m-%d}",
                            body=f"The preservation {request.ref} expires on {when}. To keep the data "
                                 f"preserved for another {settings.holds.preservation_days} days, send a "
                                 f"signed message with the lines\n\n    reference: {request.ref}\n"
                                 "    type: preservation_extension\n",
                            request_id=request.id, in_reply_to=request.thread_message_id or None,
                            references=list(request.thread_references))
            await audit.record(session, "system", f"{hold.kind}.expiry_warning", request.ref,
                               expires_at=hold.expires_at.isoformat())
        return len(rows)


async def expire_holds(settings: Settings, db: Database) -> int:
    """Holds past their expiry end; the request of an expired preservation is `expired`."""
    now = utcnow()
    async with db.transaction() as session:
        rows = (await session.execute(select(Hold, Request).join(Request, Hold.request_id == Request.id)
                                      .where(Hold.state == "active", Hold.expires_at <= now)
                                      .with_for_update(of=Hold, skip_locked=True))).all()
        for hold, request in rows:
            hold.state, hold.ended_at = "expired", now
            if hold.kind == "preservation":
                request.status = "expired"
            notify_reviewers(session, f"The {WORDS[hold.kind]} of {request.ref} has expired.",
                             ref=request.ref)
            await audit.record(session, "system", f"{hold.kind}.expired", request.ref)
        return len(rows)
