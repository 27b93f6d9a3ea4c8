"""What reviewers do: plain functions the chat layer calls, each returning what to show.

Every command is audited with the reviewer's Telegram id, including the ones that only read.
Decisions move the request through its states (DESIGN.md); what the officer must hear goes
through the outbox, signed and encrypted, threaded on the request. Approvals of the types listed
in `[review] four_eyes_types` need two distinct approvers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway import audit
from gateway.chunks import attachment_bytes
from gateway.clock import utcnow
from gateway.config import Settings
from gateway.db import Database
from gateway.documents import display_name
from gateway.models import Message, Notice, Request, Review, Reviewer
from gateway.outbox import queue_reply
from gateway.pgp import OpenPGP
from gateway.texts import render
from handlers.holds import HOLD_KINDS, release_freezes, start_hold
from handlers.notices import enqueue_notices, hold_of
from handlers.production import DISCLOSURE_TYPES, enqueue_production
from handlers.reputation import reputation_lines
from handlers.scope import Scope, ScopeError, describe, full_scope, intersect, narrow

OPEN_STATES = ("received", "under_review", "awaiting_info")
DECIDABLE_STATES = ("received", "under_review", "awaiting_info")
ROLES = ("reviewer", "approver", "admin")
DECIDERS = ("approver", "admin")
PARTIAL_USAGE = "-category -type:value [from=YYYY-MM-DD] [to=YYYY-MM-DD] note"


class ReviewError(Exception):
    """A reviewer's command cannot be done; the message is shown to them as it is."""


@dataclass(frozen=True)
class ChatReply:
    """What the bot answers: text, optional inline buttons (label, data), optional files."""

    text: str
    buttons: tuple[tuple[tuple[str, str], ...], ...] = ()
    documents: tuple[tuple[str, bytes, str], ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class ReviewContext:
    settings: Settings
    db: Database
    pgp: OpenPGP | None = None  # for acts that must ask gpg about a key (enrolment)


async def authorize(db: Database, user_id: int, chat_id: int, chat_type: str,
                    allowed_chats: tuple[int, ...]) -> Reviewer | None:
    """The reviewer behind a chat update, if they may use the bot from this chat."""
    async with db.transaction() as session:
        reviewer = await session.scalar(select(Reviewer).where(Reviewer.telegram_id == user_id))
        chat_allowed = chat_type == "private" or chat_id in allowed_chats
        if reviewer is None or not reviewer.active or not chat_allowed:
            await audit.record(session, f"telegram:{user_id}", "chat.refused", None,
                               chat_id=chat_id, chat_type=chat_type,
                               registered=reviewer is not None, chat_allowed=chat_allowed)
            return None
        return reviewer


def actor(reviewer: Reviewer) -> str:
    return f"reviewer:{reviewer.telegram_id}"


async def _request(session: AsyncSession, ref: str) -> Request:
    request = await session.scalar(select(Request).where(Request.ref == ref.strip().upper()))
    if request is None:
        raise ReviewError(f"No request {ref}. References look like LERS-2026-000123; /queue lists "
                          "open requests.")
    return request


def _require(reviewer: Reviewer, roles: tuple[str, ...], what: str) -> None:
    if reviewer.role not in roles:
        raise ReviewError(f"Only an {' or '.join(roles)} may {what}; your role is {reviewer.role}.")


def _require_state(request: Request, states: tuple[str, ...], what: str) -> None:
    if request.status not in states:
        raise ReviewError(f"{request.ref} is {request.status.replace('_', ' ')}: it cannot be {what} now.")


def _age(request: Request) -> str:
    hours = (utcnow() - request.created_at).total_seconds() / 3600
    return f"{hours:.0f}h" if hours < 48 else f"{hours / 24:.0f}d"


def request_buttons(ref: str) -> tuple[tuple[tuple[str, str], ...], ...]:
    return ((("Show", f"show:{ref}"), ("Documents", f"docs:{ref}")),
            (("Approve", f"approve:{ref}"), ("Assign to me", f"assign:{ref}")))


async def show_queue(ctx: ReviewContext, reviewer: Reviewer) -> ChatReply:
    async with ctx.db.transaction() as session:
        requests = list(await session.scalars(
            select(Request).where(Request.status.in_(OPEN_STATES)).order_by(
                Request.emergency.desc(),
                case((Request.deadline.is_(None), 1), else_=0), Request.deadline,
                Request.created_at)))
        await audit.record(session, actor(reviewer), "review.queue", None, shown=len(requests))
    if not requests:
        return ChatReply("The queue is empty.")
    lines = [f"{len(requests)} open request(s):"]
    for r in requests:
        flag = "🚨 " if r.emergency else ""
        due = ""
        if r.deadline:
            due = f", {'OVERDUE since' if r.deadline < utcnow() else 'due'} {r.deadline:%Y-%m-%d %H:%M}"
        lines.append(f"{flag}{r.ref} {r.type or '?'} · {r.status.replace('_', ' ')} · "
                     f"{_age(r)} old{due} · {r.officer.agency.name}")
    return ChatReply("\n".join(lines))


async def show_request(ctx: ReviewContext, reviewer: Reviewer, ref: str) -> ChatReply:
    async with ctx.db.transaction() as session:
        request = await _request(session, ref)
        messages = list(await session.scalars(
            select(Message).where(Message.request_id == request.id).order_by(Message.id)))
        reviews = list(await session.scalars(
            select(Review).where(Review.request_id == request.id).order_by(Review.id)))
        reputation = await reputation_lines(session, request.officer, request.id)
        await audit.record(session, actor(reviewer), "review.show", request.ref)
    officer = request.officer
    lines = [
        f"{'🚨 EMERGENCY ' if request.emergency else ''}{request.ref} · {request.status.replace('_', ' ')}",
        f"Officer: {officer.name or ''} <{officer.email}>, {officer.agency.name}"
        f"{' (' + officer.agency.country + ')' if officer.agency.country else ''}",
        *reputation,
        f"Type: {request.type or '(missing)'}",
        f"Case: {request.case_number or '(missing)'}",
        f"Legal basis: {request.legal_basis or '(missing)'}",
        "Subjects: " + (", ".join(f"{s.type}:{s.value}" for s in request.subjects) or "(none)"),
        "Data: " + (", ".join(request.data_categories) or "(none)"),
    ]
    if request.date_from or request.date_to:
        lines.append(f"Period: {request.date_from or '…'} to {request.date_to or '…'}")
    ndo = "indefinite" if request.nondisclosure_indefinite else request.nondisclosure_until
    lines.append(f"Non-disclosure order: {ndo or 'none'}")
    if request.emergency:
        lines.append(f"Emergency justification: {request.emergency_justification}")
        lines.append(f"Supervisor: {request.supervisor}")
    if request.missing_fields:
        lines.append("Missing: " + "; ".join(request.missing_fields))
    if request.assigned_reviewer:
        lines.append(f"Assigned to: {request.assigned_reviewer.name}")
    lines.append(f"Documents: {len(request.attachments)} (/docs {request.ref})")
    for message in messages:
        verification = message.verification or {}
        lines.append(
            f"· {message.received_at:%Y-%m-%d %H:%M} {message.direction} {message.state}; signed by "
            f"{verification.get('signer_fingerprint') or '-'} at {verification.get('signed_at') or '-'}")
    for review in reviews:
        lines.append(f"· {review.created_at:%Y-%m-%d %H:%M} {review.reviewer.name}: {review.action}"
                     + (f": {review.text}" if review.text else ""))
    return ChatReply("\n".join(lines), buttons=request_buttons(request.ref))


async def send_documents(ctx: ReviewContext, reviewer: Reviewer, ref: str) -> ChatReply:
    async with ctx.db.transaction() as session:
        request = await _request(session, ref)
        documents = tuple([
            (a.stored_name, await attachment_bytes(session, a),
             f"{display_name(a.original_filename) or a.stored_name}\nsha256 {a.sha256}")
            for a in request.attachments])
        await audit.record(session, actor(reviewer), "review.docs", request.ref,
                           documents=[a.sha256 for a in request.attachments])
    if not documents:
        return ChatReply(f"{request.ref} has no documents.")
    return ChatReply(f"{len(documents)} document(s) of {request.ref}:", documents=documents)


async def add_note(ctx: ReviewContext, reviewer: Reviewer, ref: str, text: str) -> ChatReply:
    if not text.strip():
        raise ReviewError("Usage: /note REF text")
    async with ctx.db.transaction() as session:
        request = await _request(session, ref)
        session.add(Review(request_id=request.id, reviewer_id=reviewer.id, action="note", text=text))
        await audit.record(session, actor(reviewer), "review.note", request.ref,
                           text_sha256=audit.digest(text))
    return ChatReply(f"Note added to {request.ref} (internal, never sent to the officer).")


async def assign(ctx: ReviewContext, reviewer: Reviewer, ref: str, who: str) -> ChatReply:
    async with ctx.db.transaction() as session:
        request = await _request(session, ref)
        _require_state(request, OPEN_STATES, "assigned")
        target = reviewer if not who.strip() else await _find_reviewer(session, who)
        request.assigned_reviewer_id = target.id
        if request.status == "received":
            request.status = "under_review"
        session.add(Review(request_id=request.id, reviewer_id=reviewer.id, action="assign",
                           text=target.name))
        await audit.record(session, actor(reviewer), "review.assign", request.ref,
                           assignee=target.telegram_id, status=request.status)
    return ChatReply(f"{request.ref} is assigned to {target.name}.")


async def _find_reviewer(session: AsyncSession, who: str) -> Reviewer:
    key = who.strip().lstrip("@")
    query = select(Reviewer).where(Reviewer.active.is_(True))
    reviewers = list(await session.scalars(query))
    for candidate in reviewers:
        if key.isdigit() and candidate.telegram_id == int(key):
            return candidate
        if candidate.name.lower() == key.lower():
            return candidate
    raise ReviewError(f"No active reviewer {who!r}; give their name or Telegram id.")


async def my_requests(ctx: ReviewContext, reviewer: Reviewer) -> ChatReply:
    async with ctx.db.transaction() as session:
        requests = list(await session.scalars(
            select(Request).where(Request.assigned_reviewer_id == reviewer.id,
                                  Request.status.in_(OPEN_STATES)).order_by(Request.created_at)))
        await audit.record(session, actor(reviewer), "review.mine", None, shown=len(requests))
    if not requests:
        return ChatReply("Nothing is assigned to you.")
    return ChatReply("\n".join(f"{r.ref} {r.type or '?'} · {r.status.replace('_', ' ')} · {_age(r)} old"
                               for r in requests))


async def ask(ctx: ReviewContext, reviewer: Reviewer, ref: str, question: str) -> ChatReply:
    if not question.strip():
        raise ReviewError("Usage: /ask REF question")
    async with ctx.db.transaction() as session:
        request = await _request(session, ref)
        _require_state(request, DECIDABLE_STATES, "asked about")
        request.status = "awaiting_info"
        session.add(Review(request_id=request.id, reviewer_id=reviewer.id, action="ask", text=question))
        _write_to_officer(session, ctx.settings, request, "question",
                          f"[{request.ref}] Question about your request",
                          render("question", ref=request.ref, question=question.strip()))
        await audit.record(session, actor(reviewer), "review.ask", request.ref,
                           question_sha256=audit.digest(question),
                           status=request.status)
    return ChatReply(f"Question sent to {request.officer.email}; {request.ref} waits for the answer.")


async def decide(ctx: ReviewContext, reviewer: Reviewer, ref: str, decision: str, text: str) -> ChatReply:
    """approve | partial | reject. Four-eyes applies to approvals of the configured types; the
    production then covers only what every approver allowed (handlers/scope.py)."""
    if decision in ("reject", "partial") and not text.strip():
        raise ReviewError(f"Usage: /{decision} REF {'reason' if decision == 'reject' else PARTIAL_USAGE}")
    _require(reviewer, DECIDERS, f"{decision} requests")
    async with ctx.db.transaction() as session:
        request = await _request(session, ref)
        _require_state(request, DECIDABLE_STATES, "decided")
        if decision != "reject" and request.missing_fields:
            raise ReviewError(f"{request.ref} still lacks: {'; '.join(request.missing_fields)}. It can "
                              "be rejected, or approved once the officer has supplied them.")
        scope = None
        if decision == "partial":
            try:
                scope, text = narrow(request, text.split())
            except ScopeError as exc:
                raise ReviewError(str(exc)) from exc
        elif decision == "approve":
            scope = full_scope(request)
        pending: list[Review] = []
        if decision != "reject" and request.type in ctx.settings.review.four_eyes_types:
            pending = await _pending_approvals(session, request)
            if any(r.reviewer_id == reviewer.id for r in pending):
                return ChatReply(f"You have already approved {request.ref}; a second, different "
                                 "approver must approve it too.")
            if not pending:
                session.add(Review(request_id=request.id, reviewer_id=reviewer.id,
                                   action=f"{decision}_first", text=text or None, scope=scope))
                if request.status == "received":
                    request.status = "under_review"
                await audit.record(session, actor(reviewer), f"review.{decision}.first", request.ref,
                                   text_sha256=audit.digest(text), scope=audit.scope_summary(scope))
                return ChatReply(f"First approval of {request.ref} recorded"
                                 f"{' (' + describe(scope) + ')' if decision == 'partial' and scope else ''}."
                                 f" A second approver must approve it (four-eyes rule for {request.type}).")
        if scope is not None:
            scope = intersect([*(r.scope for r in pending if r.scope), scope])
            if scope != full_scope(request):
                decision = "partial"
        status = {"approve": "approved", "partial": "partially_approved", "reject": "rejected"}[decision]
        request.status = status
        request.decided_at = utcnow()
        review = Review(request_id=request.id, reviewer_id=reviewer.id, action=decision,
                        text=text or None, scope=scope)
        session.add(review)
        await session.flush()
        label = {"approve": "approved", "partial": "partially approved", "reject": "rejected"}[decision]
        closing = await _carry_out(session, ctx.settings, request, review, scope)
        body = render("decision", ref=request.ref, decision=label, text=text.strip(), closing=closing)
        _write_to_officer(session, ctx.settings, request, f"decision_{decision}",
                          f"[{request.ref}] Request {label}", body)
        enqueue_notices(session, request, decision)
        await audit.record(session, actor(reviewer), f"review.{decision}", request.ref,
                           text_sha256=audit.digest(text), status=request.status,
                           scope=audit.scope_summary(scope))
    return ChatReply(f"{request.ref} {label}; the officer is told by signed, encrypted email."
                     + (f"\nScope: {describe(scope)}" if scope else ""))


async def _carry_out(session: AsyncSession, settings: Settings, request: Request, review: Review,
                     scope: Scope | None) -> str:
    """What a decision sets in motion; returns the sentence that tells the officer."""
    if scope is None:
        return "No data will be disclosed for this request."
    closing = f"The approval covers {describe(scope)}. " if scope != full_scope(request) else ""
    if request.type in DISCLOSURE_TYPES:
        enqueue_production(session, request, review)
        return closing + "The data production follows in a separate signed and encrypted message."
    if request.type in HOLD_KINDS:
        hold = await start_hold(session, settings, request, scope)
        what = "The data is preserved" if hold.kind == "preservation" else "The assets are frozen"
        return closing + f"{what} until {hold.expires_at:%Y-%m-%d %H:%M} UTC. No data is disclosed."
    if request.type == "freeze_release":
        released = await release_freezes(session, request)
        return closing + (f"Released: the asset freeze {', '.join(released)}." if released else
                          "No active asset freeze of your agency matched these subjects.")
    return closing + "No data is disclosed for this type of request."


async def set_nondisclosure(ctx: ReviewContext, reviewer: Reviewer, ref: str, value: str) -> ChatReply:
    """Set, extend, shorten or lift a request's non-disclosure order (what a court decided)."""
    _require(reviewer, DECIDERS, "change non-disclosure orders")
    word = value.strip().lower()
    until, indefinite = None, False
    if word == "indefinite":
        indefinite = True
    elif word not in ("lift", "none"):
        try:
            until = date.fromisoformat(word)
        except ValueError as exc:
            raise ReviewError("Usage: /ndo REF YYYY-MM-DD | indefinite | lift") from exc
    async with ctx.db.transaction() as session:
        request = await _request(session, ref)
        if request.status == "withdrawn":
            raise ReviewError(f"{request.ref} was withdrawn; its notices will never be sent.")
        before = _ndo_words(request)
        request.nondisclosure_until, request.nondisclosure_indefinite = until, indefinite
        session.add(Review(request_id=request.id, reviewer_id=reviewer.id, action="ndo", text=word))
        _, when = hold_of(request, ctx.settings)
        held = await session.scalar(select(func.count()).select_from(Notice).where(
            Notice.request_id == request.id, Notice.state == "held"))
        await audit.record(session, actor(reviewer), "review.ndo", request.ref, before=before,
                           after=_ndo_words(request), held_notices=held)
    going = ("until a reviewer lifts the order" if when is None
             else f"from {when:%Y-%m-%d %H:%M} UTC" if when > utcnow() else "at the scheduler's next run")
    return ChatReply(f"Non-disclosure order of {request.ref}: {before} → {_ndo_words(request)}. "
                     f"{held} notice(s) held; notices go {going}.")


def _ndo_words(request: Request) -> str:
    if request.nondisclosure_indefinite:
        return "indefinite"
    return f"until {request.nondisclosure_until}" if request.nondisclosure_until else "none"


async def _pending_approvals(session: AsyncSession, request: Request) -> list[Review]:
    """First approvals not yet completed by a second approver (reset by an /ask in between)."""
    reviews = list(await session.scalars(
        select(Review).where(Review.request_id == request.id).order_by(Review.id)))
    pending: list[Review] = []
    for review in reviews:
        if review.action in ("approve_first", "partial_first"):
            pending.append(review)
        elif review.action == "ask":
            pending.clear()
    return pending


def _write_to_officer(session: AsyncSession, settings: Settings, request: Request, kind: str,
                      subject: str, body: str) -> None:
    queue_reply(session, settings, kind=kind, recipient=request.officer.email,
                recipient_fingerprint=request.officer.key_fingerprint, subject=subject, body=body,
                request_id=request.id, in_reply_to=request.thread_message_id or None,
                references=list(request.thread_references))


HELP = """Commands (REF is a reference like LERS-2026-000123):
/queue — open requests, emergencies first, then by deadline
/show REF — the request, its verification and its thread
/docs REF — the legal documents, with their sha256
/approve REF [note] — approve (some types need two approvers)
/partial REF -category -type:value [from=DATE] [to=DATE] note — approve in part
/ndo REF DATE|indefinite|lift — set, extend or lift the non-disclosure order
/reject REF reason — reject; the reason is sent to the officer
/ask REF question — ask the officer; the request waits for the answer
/note REF text — internal note, never sent
/assign REF [name] — assign to a reviewer (default: yourself)
/mine — requests assigned to you
/stats — figures for the last 30 days, and the queue's age
/enrolments — officers asking to be enrolled
/enrolment ID — one enrolment: form, key, documents, the agency's registration
/enrol ID how-you-checked — enrol, after an out-of-band check: call the agency back on its
  published number, never a number from the mail; say what you did (some set-ups need two)
/refuse ID reason — refuse an enrolment; the reason is sent to the applicant
/suspend EMAIL reason — suspend an officer at once (messages refused, replies held)
/help — this list"""
