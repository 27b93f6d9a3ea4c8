"""An officer's STATUS query: a signed message whose first line is `STATUS` (all their open
requests) or `STATUS LERS-YYYY-NNNNNN` (one request), answered by signed, encrypted email.

Only the signed body is read, as for every message. An officer sees only their own requests: a
reference that is someone else's gets exactly the answer an unknown reference gets, so nobody
learns from us whether a request exists. Nothing internal is shown (reviewers, notes, approvals
so far): only what the officer already knows or is waiting for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway import audit
from gateway.config import Settings
from gateway.logs import set_ref
from gateway.models import Message, Officer, Request
from gateway.outbox import queue_reply
from gateway.texts import render
from handlers.chain import Evaluation
from handlers.refs import REF_PATTERN
from handlers.threading import reply_threading

STATUS_LINE = re.compile(r"STATUS\b(.*)", re.IGNORECASE)
OPEN_STATES = ("received", "under_review", "awaiting_info")
USAGE = ("Write STATUS alone on the first line for all your open requests, or STATUS followed by "
         "one reference (STATUS LERS-2026-000123) for one request.")


@dataclass(frozen=True)
class StatusQuery:
    ref: str | None = None  # None: all the officer's open requests
    problem: str | None = None


def status_query(text: str) -> StatusQuery | None:
    """The query if the signed body's first non-blank line is a STATUS line, else None."""
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    match = STATUS_LINE.fullmatch(first)
    if match is None:
        return None
    rest = match.group(1).strip().upper()
    if not rest:
        return StatusQuery()
    if REF_PATTERN.fullmatch(rest):
        return StatusQuery(ref=rest)
    return StatusQuery(problem=f"{first[:100]!r} is not a status query. {USAGE}")


def not_yours(ref: str) -> str:
    """One wording for an unknown reference and another officer's (existence is not revealed)."""
    return f"{ref} is not one of your requests."


async def answer_status(session: AsyncSession, settings: Settings, message: Message, officer: Officer,
                        evaluation: Evaluation, query: StatusQuery) -> None:
    assert evaluation.content is not None
    in_reply_to, references = reply_threading(message, evaluation.content)
    message.state = "accepted"
    request_id = None
    if query.problem:
        subject, intro, shown = "Status query not understood", query.problem, []
    elif query.ref:
        request = await session.scalar(select(Request).where(Request.ref == query.ref))
        subject = f"Status of {query.ref}"
        if request is None or request.officer_id != officer.id:
            intro, shown = not_yours(query.ref), []
        else:
            intro, shown, request_id = f"The status of {request.ref}:", [request], request.id
            set_ref(request.ref)
    else:
        shown = list(await session.scalars(
            select(Request).where(Request.officer_id == officer.id, Request.status.in_(OPEN_STATES))
            .order_by(Request.created_at, Request.id)))
        subject = "Status of your open requests"
        intro = (f"You have {len(shown)} open request(s):" if shown else
                 "You have no open requests. For a closed one, send STATUS followed by its reference.")
    await audit.record(session, f"officer:{officer.key_fingerprint}", "officer.status_query",
                       query.ref, message_id=message.id, shown=[r.ref for r in shown],
                       understood=query.problem is None)
    queue_reply(session, settings, kind="status", recipient=officer.email,
                recipient_fingerprint=officer.key_fingerprint, subject=subject,
                body=render("status", intro=intro, summaries="\n\n".join(summary(r) for r in shown)),
                request_id=request_id, in_reply_to=in_reply_to, references=references,
                reply_to_message=message.id)


def summary(request: Request) -> str:
    lines = [
        f"Reference:    {request.ref}{'  (EMERGENCY)' if request.emergency else ''}",
        f"Type:         {request.type or '(not given yet)'}",
        f"Case number:  {request.case_number or '(not given yet)'}",
        f"Status:       {request.status.replace('_', ' ')}",
        f"Received:     {request.created_at:%Y-%m-%d %H:%M} UTC",
        f"Deadline:     {f'{request.deadline:%Y-%m-%d %H:%M} UTC' if request.deadline else '(none yet)'}",
    ]
    if request.decided_at:
        lines.append(f"Decided:      {request.decided_at:%Y-%m-%d %H:%M} UTC")
    lines.append(f"Waiting for:  {awaited(request)}")
    return "\n".join(lines)


def awaited(request: Request) -> str:
    """What the request waits for, in the officer's terms."""
    if request.status == "awaiting_info":
        if request.missing_fields:
            return (f"you: {'; '.join(request.missing_fields)} (send them in a signed message whose "
                    f"first line is `reference: {request.ref}`)")
        return ("your answer to our question (a signed message whose first line is "
                f"`reference: {request.ref}`)")
    return {
        "received": "review by our legal team",
        "under_review": "a decision by our legal team",
        "approved": "the data production, sent in a separate signed and encrypted message",
        "partially_approved": "the data production, sent in a separate signed and encrypted message",
        "fulfilled": "nothing: the data production was sent to you",
        "preserved": "nothing: the data is preserved (the approval gave the expiry date)",
        "extended": "nothing: the data is preserved (the extension gave the new expiry date)",
        "expired": "nothing: the preservation has expired",
        "withdrawn": "nothing: you withdrew this request",
        "rejected": "nothing: the request was rejected",
    }.get(request.status, "nothing: this request is closed")
