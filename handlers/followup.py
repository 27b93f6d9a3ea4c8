"""An officer's signed message about an existing request.

It is recognised only by what the signature covers: a `reference: LERS-YYYY-NNNNNN` line in the
form, or the reference in a protected (signed) Subject; never the unsigned Subject or
In-Reply-To. The request must be this officer's. On a request awaiting information the new
fields are merged and what is still missing is asked for again; otherwise the message and its
documents are added to the request's thread.
"""

from __future__ import annotations

from dataclasses import fields

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway import audit
from gateway.config import Settings
from gateway.documents import Document
from gateway.mime import SignedContent
from gateway.models import Message, Officer, Request, RequestSubject, Review
from gateway.outbox import queue_reply
from handlers.chain import Evaluation
from handlers.form import RequestForm, Subject, missing_fields
from handlers.holds import end_for_withdrawal, extend_preservation
from handlers.intake import queue_status_reply, refuse_form, set_deadline, store_documents
from handlers.notices import cancel_held
from handlers.notify import notify_reviewers
from handlers.refs import find_refs
from handlers.threading import reply_threading

# states a request can be withdrawn from: before anything was produced or released
WITHDRAWABLE = ("received", "under_review", "awaiting_info", "approved", "partially_approved",
                "preserved", "extended")
# request fields an officer's follow-up may fill in (subjects are merged separately)
MERGEABLE = ("type", "case_number", "legal_basis", "data_categories", "date_from", "date_to",
             "nondisclosure_until", "nondisclosure_indefinite", "emergency",
             "emergency_justification", "supervisor", "investigation_status")


def referenced_request(form: RequestForm, content: SignedContent) -> str | None:
    """The reference this message is about, read only from signed content."""
    if form.reference:
        return form.reference
    for subject in content.protected_headers.get("Subject", []):
        refs = find_refs(subject)
        if refs:
            return refs[0]
    return None


async def handle_followup(session: AsyncSession, settings: Settings, message: Message,
                          officer: Officer, evaluation: Evaluation, form: RequestForm,
                          documents: list[Document], ref: str) -> Request | None:
    assert evaluation.content is not None
    in_reply_to, references = reply_threading(message, evaluation.content)
    request = await session.scalar(select(Request).where(Request.ref == ref))
    if request is None or request.officer_id != officer.id:
        await refuse_form(session, settings, message, officer,
                          [f"reference: {ref} is not one of your requests"], in_reply_to, references)
        return None
    if form.problems:
        await refuse_form(session, settings, message, officer, form.problems, in_reply_to, references)
        return None
    actor = f"officer:{officer.key_fingerprint}"
    act = officer_act(form, request)
    if act is not None:
        problem = act_problem(act, request)
        if problem:
            await refuse_form(session, settings, message, officer, [problem], in_reply_to, references)
            return None
    message.state = "accepted"
    message.request_id = request.id
    await store_documents(session, request, message, documents)
    if act is not None:
        what = await carry_out_act(session, settings, act, request, form, actor, message.id)
        _acknowledge_message(session, settings, request, message, officer, in_reply_to, references, what)
        notify_reviewers(session, f"{request.ref}: {what}", ref=ref, emergency=request.emergency)
        return request
    if request.status != "awaiting_info":
        await audit.record(session, actor, "request.officer_message", ref, message_id=message.id,
                           documents=[d.sha256 for d in documents])
        _acknowledge_message(session, settings, request, message, officer, in_reply_to, references,
                             "It was added to the request.")
        notify_reviewers(session, f"The officer wrote about {ref}:\n{evaluation.content.text[:1500]}",
                         ref=ref, emergency=request.emergency)
        return request
    asked = await _open_question(session, request)
    merged = _merge(request, form)
    has_document = any(a.content_type == "application/pdf" for a in request.attachments) or any(
        d.is_pdf for d in documents)
    request.missing_fields = missing_fields(merged, has_document)
    set_deadline(request, settings)
    request.body_text = "\n\n".join(t for t in (request.body_text, evaluation.content.text) if t)
    if not request.missing_fields:
        request.status = "under_review" if asked else "received"
    await audit.record(session, actor, "request.completed" if not request.missing_fields
                       else "request.updated", ref, message_id=message.id,
                       status=request.status, missing=request.missing_fields)
    if asked and not request.missing_fields:
        _acknowledge_message(session, settings, request, message, officer, in_reply_to, references,
                             "Your answer was added to the request and passed to the reviewers.")
        notify_reviewers(session, f"The officer answered on {ref}:\n{evaluation.content.text[:1500]}",
                         ref=ref, emergency=request.emergency)
    else:
        queue_status_reply(session, settings, request, message, officer, documents, in_reply_to,
                           references)
    return request


def officer_act(form: RequestForm, request: Request) -> str | None:
    """What a signed follow-up asks beyond adding information: withdraw, extend, change the NDO."""
    if form.action == "withdraw":
        return "withdraw"
    if form.type == "preservation_extension":
        return "extend"
    if (form.nondisclosure_until or form.nondisclosure_indefinite) and request.status != "awaiting_info":
        return "ndo"
    return None


def act_problem(act: str, request: Request) -> str | None:
    """Why the officer's act cannot be done on this request now, in words they can act on."""
    state = request.status.replace("_", " ")
    if act == "withdraw" and request.status not in WITHDRAWABLE:
        return f"action: {request.ref} is {state} and can no longer be withdrawn"
    if act == "extend" and (request.type != "preservation"
                            or request.status not in ("preserved", "extended")):
        return (f"type: preservation_extension applies to an active preservation; {request.ref} is "
                f"a {(request.type or 'request').replace('_', ' ')}, {state}")
    if act == "ndo" and request.status == "withdrawn":
        return f"nondisclosure_until: {request.ref} was withdrawn"
    return None


async def carry_out_act(session: AsyncSession, settings: Settings, act: str, request: Request,
                        form: RequestForm, actor: str, message_id: int) -> str:
    """Do the officer's act (already checked); return the sentence that tells them it is done."""
    if act == "withdraw":
        before = request.status
        request.status = "withdrawn"
        cancelled = await cancel_held(session, request, "withdrawn by the officer")
        await end_for_withdrawal(session, request)
        await audit.record(session, actor, "request.withdrawn", request.ref, message_id=message_id,
                           before=before, notices_cancelled=cancelled)
        return "The request is withdrawn: nothing will be produced and no one will be notified."
    if act == "extend":
        hold = await extend_preservation(session, settings, request, actor)
        assert hold is not None  # act_problem checked the state
        return f"The preservation is extended until {hold.expires_at:%Y-%m-%d %H:%M} UTC."
    return await _change_nondisclosure(session, request, form, actor, message_id)


async def _change_nondisclosure(session: AsyncSession, request: Request, form: RequestForm, actor: str,
                                message_id: int) -> str:
    """An officer may extend an NDO (or make it indefinite); shortening it is for the reviewers."""
    before_until, before_indefinite = request.nondisclosure_until, request.nondisclosure_indefinite
    if form.nondisclosure_indefinite:
        request.nondisclosure_until, request.nondisclosure_indefinite = None, True
        what = "The non-disclosure order is now indefinite."
    elif before_indefinite or (before_until and form.nondisclosure_until
                               and form.nondisclosure_until <= before_until):
        return ("The non-disclosure order was not changed: it already runs "
                f"{'indefinitely' if before_indefinite else f'until {before_until}'}. To shorten or "
                "lift it, write to us with the court's decision; a reviewer will change it.")
    else:
        request.nondisclosure_until = form.nondisclosure_until
        what = f"The non-disclosure order now runs until {form.nondisclosure_until}."
    await audit.record(session, actor, "request.ndo_extended", request.ref, message_id=message_id,
                       before="indefinite" if before_indefinite else str(before_until),
                       after="indefinite" if request.nondisclosure_indefinite
                       else str(request.nondisclosure_until))
    return what


def _acknowledge_message(session: AsyncSession, settings: Settings, request: Request, message: Message,
                         officer: Officer, in_reply_to: str | None, references: list[str],
                         what: str) -> None:
    queue_reply(session, settings, kind="followup_received", recipient=officer.email,
                recipient_fingerprint=officer.key_fingerprint,
                subject=f"[{request.ref}] Your message was received",
                body=f"Your signed message of {message.received_at:%Y-%m-%d %H:%M} UTC about "
                     f"{request.ref} was received. {what} The request is now "
                     f"{request.status.replace('_', ' ')}.\n",
                request_id=request.id, in_reply_to=in_reply_to, references=references,
                reply_to_message=message.id)


async def _open_question(session: AsyncSession, request: Request) -> bool:
    """Did a reviewer's /ask put this request in awaiting_info (rather than a missing field)?"""
    last = await session.scalar(select(Review.action).where(Review.request_id == request.id)
                                .order_by(Review.id.desc()).limit(1))
    return last == "ask"


def _merge(request: Request, form: RequestForm) -> RequestForm:
    """Fill the request's empty fields from the form; return the combined view to validate."""
    for name in MERGEABLE:
        value = getattr(form, name)
        if value not in (None, "", [], False):
            setattr(request, name, value)
    known = {(s.type, s.value) for s in request.subjects}
    for subject in form.subjects:
        if (subject.type, subject.value) not in known:
            request.subjects.append(RequestSubject(type=subject.type, value=subject.value))
    combined = RequestForm(**{f.name: getattr(request, f.name) for f in fields(RequestForm)
                              if f.name in MERGEABLE})
    combined.subjects = [Subject(s.type, s.value) for s in request.subjects]
    return combined
