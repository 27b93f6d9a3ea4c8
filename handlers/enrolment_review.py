"""Reviewers deciding enrolments in chat, and suspending officers: plain functions returning
`ChatReply`, as in handlers/review.py.

Enrolling rests on an out-of-band check that the reviewer states in the note (for example a
call back to the agency's published number, never a number taken from the mail). With
`[review] enrolment_approvals = 2` two distinct approvers must enrol before it takes effect.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway import audit
from gateway.clock import utcnow
from gateway.documents import display_name
from gateway.models import Agency, Enrolment, EnrolmentAct, Officer, Reviewer
from gateway.outbox import queue_reply
from gateway.pgp import KeyStatus
from gateway.texts import render
from handlers.officers import OfficerError, suspend_officer
from handlers.onboarding import bind_officer, key_problems, record_key
from handlers.review import DECIDERS, ChatReply, ReviewContext, ReviewError, _require, actor

MIN_CHECK_NOTE = 15  # characters: "ok" is not a record of an out-of-band check


async def _enrolment(session: AsyncSession, enrolment_id: str) -> Enrolment:
    found = await session.get(Enrolment, int(enrolment_id)) if enrolment_id.isdigit() else None
    if found is None:
        raise ReviewError(f"No enrolment {enrolment_id}; /enrolments lists the pending ones.")
    return found


def _domain(email: str) -> str:
    return email.rpartition("@")[2]


async def agencies_for(session: AsyncSession, email: str) -> list[Agency]:
    """Registered agencies whose mail domain holds this address (the domain only picks the
    agency record; it proves nothing about the person)."""
    domain = _domain(email)
    agencies = list(await session.scalars(select(Agency).order_by(Agency.id)))
    return [a for a in agencies if domain == a.domain or domain.endswith("." + a.domain)]


async def list_enrolments(ctx: ReviewContext, reviewer: Reviewer) -> ChatReply:
    async with ctx.db.transaction() as session:
        pending = list(await session.scalars(
            select(Enrolment).where(Enrolment.status == "pending").order_by(Enrolment.id)))
        await audit.record(session, actor(reviewer), "enrolment.list", None, shown=len(pending))
    if not pending:
        return ChatReply("No enrolment is waiting for review.")
    lines = [f"{len(pending)} enrolment(s) waiting:"]
    lines += [f"{e.id}: {e.form.get('name')} <{e.email}>, {e.form.get('agency')} "
              f"({e.form.get('country')}), since {e.created_at:%Y-%m-%d %H:%M}" for e in pending]
    return ChatReply("\n".join([*lines, "/enrolment ID shows one."]))


async def show_enrolment(ctx: ReviewContext, reviewer: Reviewer, enrolment_id: str) -> ChatReply:
    """The form, the key, the documents (as files), and what we know of the agency."""
    async with ctx.db.transaction() as session:
        enrolment = await _enrolment(session, enrolment_id)
        agencies = await agencies_for(session, enrolment.email)
        colleagues = {a.id: await session.scalar(select(func.count()).select_from(Officer).where(
            Officer.agency_id == a.id, Officer.status == "active")) for a in agencies}
        acts = list(await session.scalars(select(EnrolmentAct).where(
            EnrolmentAct.enrolment_id == enrolment.id).order_by(EnrolmentAct.id)))
        await audit.record(session, actor(reviewer), "enrolment.show", f"enrolment:{enrolment.id}")
    form = enrolment.form
    received = f"{enrolment.created_at:%Y-%m-%d %H:%M}"
    lines = [f"Enrolment {enrolment.id} · {enrolment.status} · received {received}",
             f"Address: {enrolment.email}", f"Key: {enrolment.key_fingerprint}"]
    lines += [f"{name.replace('_', ' ').capitalize()}: {form.get(name, '')}" for name in (
        "name", "rank", "unit", "agency", "country", "phone", "supervisor_name", "supervisor_contact")]
    if agencies:
        lines += [f"Mail domain {_domain(enrolment.email)} belongs to registered agency {a.name} "
                  f"({a.status}), {colleagues[a.id]} active officer(s) enrolled" for a in agencies]
    else:
        lines.append(f"⚠️ Mail domain {_domain(enrolment.email)} belongs to no registered agency: "
                     "an operator must register the agency (lers agency add) before enrolling.")
    lines.append(f"Documents: {len(enrolment.documents)}")
    lines += [f"· {act.created_at:%Y-%m-%d %H:%M} {act.reviewer.name}: {act.action}: {act.text}"
              for act in acts]
    lines.append("Check the identity out of band before /enrol: call the agency back on its "
                 "published number, never a number from the mail.")
    documents = tuple((d.stored_name, d.data,
                       f"{display_name(d.original_filename) or d.stored_name}\nsha256 {d.sha256}")
                      for d in enrolment.documents)
    return ChatReply("\n".join(lines), documents=documents)


async def enrol(ctx: ReviewContext, reviewer: Reviewer, enrolment_id: str, note: str) -> ChatReply:
    """Record an approval; the last one required creates the officer, bound to the key."""
    _require(reviewer, DECIDERS, "enrol officers")
    if len(note.strip()) < MIN_CHECK_NOTE:
        raise ReviewError("Usage: /enrol ID how-you-checked — say which out-of-band check you did, e.g. "
                          "\"called back the agency's published number +44 20 7946 0000, spoke to the "
                          "duty sergeant\" (never a number taken from the mail).")
    assert ctx.pgp is not None
    async with ctx.db.transaction() as session:
        fingerprint = (await _pending(session, enrolment_id)).key_fingerprint
    key = await ctx.pgp.key_status(fingerprint)  # gpg before the write transaction
    async with ctx.db.transaction() as session:
        enrolment = await _pending(session, enrolment_id)
        approvals = list(await session.scalars(select(EnrolmentAct).where(
            EnrolmentAct.enrolment_id == enrolment.id, EnrolmentAct.action == "approve")))
        if any(a.reviewer_id == reviewer.id for a in approvals):
            return ChatReply(f"You have already approved enrolment {enrolment.id}; a second, "
                             "different approver must enrol it.")
        if len(approvals) + 1 < ctx.settings.review.enrolment_approvals:
            session.add(EnrolmentAct(enrolment_id=enrolment.id, reviewer_id=reviewer.id,
                                     action="approve", text=note.strip()))
            await audit.record(session, actor(reviewer), "enrolment.approved", f"enrolment:{enrolment.id}",
                               check=note.strip())
            return ChatReply(f"Approval of enrolment {enrolment.id} recorded. A second approver must "
                             "enrol it too, after their own out-of-band check.")
        officer = await _create_officer(session, enrolment, key, reviewer, note)
        _tell(session, ctx, enrolment, "enrolment_enrolled", "enrolled", "Enrolment accepted",
              f"You are enrolled as an officer of {officer.agency.name}.",
              "From now on, requests signed with your key are accepted.")
    return ChatReply(f"{enrolment.email} is enrolled ({officer.agency.name}); they are told by signed, "
                     "encrypted email.")


async def _pending(session: AsyncSession, enrolment_id: str) -> Enrolment:
    enrolment = await _enrolment(session, enrolment_id)
    if enrolment.status != "pending":
        raise ReviewError(f"Enrolment {enrolment.id} is {enrolment.status}: it cannot be decided now.")
    return enrolment


async def _create_officer(session: AsyncSession, enrolment: Enrolment, key: KeyStatus | None,
                          reviewer: Reviewer, note: str) -> Officer:
    problems = key_problems(key, enrolment.email)
    if problems:
        raise ReviewError(f"Enrolment {enrolment.id} cannot be enrolled: {'; '.join(problems)}.")
    assert key is not None
    agencies = await agencies_for(session, enrolment.email)
    named = [a for a in agencies if a.name.lower() == str(enrolment.form.get("agency", "")).lower()]
    if len(agencies) != 1 and len(named) != 1:
        raise ReviewError(f"No single registered agency has the mail domain {_domain(enrolment.email)}"
                          f" ({', '.join(a.name for a in agencies) or 'none'}): an operator must "
                          "register it with `lers agency add` first.")
    agency = named[0] if len(named) == 1 else agencies[0]
    if agency.status != "active":
        raise ReviewError(f"{agency.name} is suspended: its officers cannot be enrolled.")
    if await session.scalar(select(Officer.id).where(Officer.email == enrolment.email)):
        raise ReviewError(f"{enrolment.email} is already enrolled.")
    officer = bind_officer(session, email=enrolment.email, agency=agency, key=key,
                           name=enrolment.form.get("name"), via="enrolment")
    await record_key(session, officer, key)
    enrolment.status, enrolment.officer_id = "enrolled", officer.id
    enrolment.decided_at, enrolment.decision_text = utcnow(), note.strip()
    session.add(EnrolmentAct(enrolment_id=enrolment.id, reviewer_id=reviewer.id, action="enrol",
                             text=note.strip()))
    await audit.record(session, actor(reviewer), "officer.enrolled", officer.email, via="enrolment",
                       enrolment=enrolment.id, agency=agency.name, key=key.fingerprint,
                       check=note.strip())
    return officer


async def refuse(ctx: ReviewContext, reviewer: Reviewer, enrolment_id: str, reason: str) -> ChatReply:
    _require(reviewer, DECIDERS, "refuse enrolments")
    if not reason.strip():
        raise ReviewError("Usage: /refuse ID reason (the reason is sent to the applicant)")
    async with ctx.db.transaction() as session:
        enrolment = await _pending(session, enrolment_id)
        enrolment.status, enrolment.decided_at, enrolment.decision_text = "refused", utcnow(), reason.strip()
        session.add(EnrolmentAct(enrolment_id=enrolment.id, reviewer_id=reviewer.id, action="refuse",
                                 text=reason.strip()))
        await audit.record(session, actor(reviewer), "enrolment.refused", f"enrolment:{enrolment.id}",
                           email=enrolment.email, reason=reason.strip())
        _tell(session, ctx, enrolment, "enrolment_refused", "refused", "Enrolment refused",
              f"Reason: {reason.strip()}", "Requests signed with your key are not accepted.")
    return ChatReply(f"Enrolment {enrolment.id} refused; {enrolment.email} is told the reason by "
                     "signed, encrypted email.")


def _tell(session: AsyncSession, ctx: ReviewContext, enrolment: Enrolment, kind: str, decision: str,
          subject: str, text: str, closing: str) -> None:
    queue_reply(session, ctx.settings, kind=kind, recipient=enrolment.email,
                recipient_fingerprint=enrolment.key_fingerprint,
                subject=f"{subject} (enrolment {enrolment.id})",
                body=render("enrolment_decision", enrolment_id=enrolment.id, decision=decision,
                            text=text, closing=closing),
                reply_to_message=enrolment.message_id)


async def suspend(ctx: ReviewContext, reviewer: Reviewer, email: str, reason: str) -> ChatReply:
    """Any reviewer may suspend (stopping is never the risky direction); reinstating is the CLI's."""
    if not email or not reason.strip():
        raise ReviewError("Usage: /suspend EMAIL reason")
    try:
        officer = await suspend_officer(ctx.db, email, reason, actor(reviewer))
    except OfficerError as exc:
        raise ReviewError(str(exc)) from exc
    return ChatReply(f"{officer.email} is suspended: their messages are refused and replies to them "
                     "are held. An operator reinstates with `lers officer reinstate`.")
