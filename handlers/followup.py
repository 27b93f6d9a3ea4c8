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
from handlers.intake import queue_status_reply, refuse_form, set_deadline, store_documents
from handlers.notify import notify_reviewers
from handlers.refs import find_refs
from handlers.threading import reply_threading

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
    message.state = "accepted"
    message.request_id = request.id
    store_documents(session, request, message, documents)
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
