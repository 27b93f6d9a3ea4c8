"""A message the chain refused: quarantine it, and tell only people we already trust.

Never reply to an unverified From. If the signature proved an officer (the message was refused
later, e.g. a stale signature or a replay), or if the From claims an enrolled officer's address,
that officer's registered address is warned, at most once per configured interval.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway import audit
from gateway.clock import utcnow
from gateway.config import Settings
from gateway.models import Message, Officer
from gateway.outbox import queue_reply
from gateway.texts import render
from handlers.chain import Evaluation


async def quarantine(session: AsyncSession, settings: Settings, message: Message,
                     evaluation: Evaluation) -> None:
    refusal = evaluation.refusal
    assert refusal is not None
    message.state = "quarantined"
    message.reason = refusal.reason
    message.reason_detail = refusal.detail
    message.claimed_from = (evaluation.from_address or "")[:320] or None
    await audit.record(session, "system", "inbound.refused", f"message:{message.id}",
                       reason=refusal.reason, detail=refusal.detail,
                       signer=evaluation.check.signer_fingerprint if evaluation.check else None,
                       claimed_from=evaluation.from_address)
    officer = await _officer_to_warn(session, evaluation)
    if officer is not None:
        await _warn_officer(session, settings, message, officer, evaluation)


async def _officer_to_warn(session: AsyncSession, evaluation: Evaluation) -> Officer | None:
    if evaluation.officer_id is not None:
        return await session.get(Officer, evaluation.officer_id)
    if evaluation.from_address:
        return await session.scalar(select(Officer).where(Officer.email == evaluation.from_address))
    return None


async def _warn_officer(session: AsyncSession, settings: Settings, message: Message,
                        officer: Officer, evaluation: Evaluation) -> None:
    assert evaluation.refusal is not None
    interval = timedelta(hours=settings.policy.impersonation_warning_hours)
    last = officer.last_impersonation_warning_at
    if officer.status != "active" or (last is not None and utcnow() - last < interval):
        await audit.record(session, "system", "officer.warning_suppressed", officer.email,
                           message_id=message.id, reason=evaluation.refusal.reason)
        return
    officer.last_impersonation_warning_at = utcnow()
    if evaluation.verified_officer:
        kind, subject = "signed_message_refused", "A message signed with your key was not accepted"
        body = render("message_refused", detail=evaluation.refusal.detail)
    else:
        kind, subject = "impersonation_warning", "Warning: a message in your name was refused"
        body = render("impersonation_warning", address=officer.email,
                      received_at=f"{message.received_at:%Y-%m-%d %H:%M}",
                      detail=evaluation.refusal.detail, fingerprint=officer.key_fingerprint,
                      interval=f"{settings.policy.impersonation_warning_hours:g}")
    queue_reply(session, settings, kind=kind, recipient=officer.email,
                recipient_fingerprint=officer.key_fingerprint, subject=subject, body=body,
                reply_to_message=message.id)
    await audit.record(session, "system", "officer.warned", officer.email, kind=kind,
                       message_id=message.id, reason=evaluation.refusal.reason)
