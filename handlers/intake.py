"""A verified officer's new request: request record, documents, acknowledgement, audit.

A form with malformed values is refused with a signed reply naming every problem; a form with
missing fields is registered as `awaiting_info` and the officer is asked for exactly those.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, insert, update
from sqlalchemy.ext.asyncio import AsyncSession

from gateway import audit
from gateway.chunks import ATTACHMENT, store_chunks
from gateway.clock import utcnow
from gateway.config import Settings
from gateway.db import no_nul_row
from gateway.documents import Document, display_name
from gateway.logs import set_ref
from gateway.mime import Refusal
from gateway.models import Attachment, Job, Message, Officer, Request, RequestSubject
from gateway.outbox import queue_reply, queue_reply_in
from gateway.spool import CHUNK
from gateway.texts import render
from handlers.chain import Evaluation, still_active
from handlers.form import NO_FORM, RequestForm
from handlers.notify import notify_reviewers, notify_reviewers_in
from handlers.refs import allocate_ref, allocate_ref_in
from handlers.reputation import HISTORY, history_params, reputation_lines, reputation_text
from handlers.threading import reply_threading


async def handle_new_request(session: AsyncSession, settings: Settings, message: Message,
                             officer: Officer, evaluation: Evaluation, form: RequestForm,
                             documents: list[Document]) -> Request | None:
    assert evaluation.content is not None
    content = evaluation.content
    in_reply_to, references = reply_threading(message, content)
    problems = form.problems if form.found else [NO_FORM]
    if problems:
        await refuse_form(session, settings, message, officer, problems + [
            f"missing: {m}" for m in form.missing], in_reply_to, references)
        return None
    actor = f"officer:{officer.key_fingerprint}"

    ref = await allocate_ref(session)
    set_ref(ref)  # the log lines of this job name it from here on
    request = _new_request(ref, form, officer, content.text, in_reply_to)
    request.thread_references = references
    request.created_at = utcnow()
    set_deadline(request, settings)
    request.subjects = [RequestSubject(type=s.type, value=s.value) for s in form.subjects]
    session.add(request)
    await session.flush()
    await store_documents(session, request, message, documents)
    message.state = "accepted"
    message.request_id = request.id
    await audit.record(session, actor, "request.created", ref, status=request.status,
                       type=request.type, message_id=message.id, missing=form.missing,
                       documents=[{"name": d.stored_name, "sha256": d.sha256} for d in documents])
    queue_status_reply(session, settings, request, message, officer, documents, in_reply_to, references)
    notify_reviewers(session, new_request_notice(request, officer, await reputation_lines(
        session, officer, request.id)), ref=ref, emergency=request.emergency)
    return request


REQUESTS = cast(Table, Request.__table__)
# built once: executing them costs no statement construction nor cache-key generation
INSERT_REQUEST = insert(REQUESTS).returning(REQUESTS.c.id)
INSERT_SUBJECTS = insert(cast(Table, RequestSubject.__table__))
INSERT_ATTACHMENTS = insert(cast(Table, Attachment.__table__))
MESSAGES = cast(Table, Message.__table__)
# only a message still "received": a second run of its job (a lease that ran out) changes nothing
ACCEPT_MESSAGE = update(MESSAGES).where(MESSAGES.c.id == bindparam("message_id"),
                                        MESSAGES.c.state == "received")
JOBS = cast(Table, Job.__table__)
JOB_DONE = (update(JOBS).where(JOBS.c.id == bindparam("job_id"))
            .values(state="done", finished_at=bindparam("finished_at"), lease_until=None))


class MessageTaken(Exception):
    """The message was no longer "received" when its verdict was to be written: another run of
    its job (claimed again when its lease ran out) recorded it first. Nothing of this run stays."""


def fits_record_new_request(documents: list[Document]) -> bool:
    """Whether `record_new_request` can store these documents (a large one goes to chunks, which
    `handle_new_request` writes)."""
    return all(document.attachment.size <= CHUNK for document in documents)


def record_new_request(conn: Connection, settings: Settings, message: Message, officer: Officer,
                       evaluation: Evaluation, form: RequestForm, documents: list[Document],
                       job_id: int) -> str:
    """`handle_new_request` for a form without problems, and the rest of the inbound job's
    transaction (the message's verdict, the job's end), as Core statements on one synchronous
    connection: on SQLite the whole transaction is one trip to the writer thread
    (`Database.write_sync`), and no ORM unit of work runs. The same rows, audit entry and
    replies as `handle_new_request`;
    `message` and `officer` are read, never written through. Returns the reference."""
    assert evaluation.content is not None and evaluation.check is not None and form.found
    assert not form.problems and fits_record_new_request(documents)
    still_active(conn, officer.id)
    content = evaluation.content
    in_reply_to, references = reply_threading(message, content)
    ref = allocate_ref_in(conn)
    values = _request_values(ref, form, officer, content.text, in_reply_to)
    values["thread_references"] = references
    values["created_at"] = utcnow()
    values["deadline"] = deadline_for(values["type"], values["emergency"], values["created_at"], settings)
    values = no_nul_row(values)  # as stored, and as the reply and the notice show it
    request_id = conn.execute(INSERT_REQUEST, values).scalar_one()
    if form.subjects:
        conn.execute(INSERT_SUBJECTS, [no_nul_row({"request_id": request_id, "type": subject.type,
                                                   "value": subject.value}) for subject in form.subjects])
    if documents:
        conn.execute(INSERT_ATTACHMENTS, [no_nul_row(_attachment_values(request_id, message.id, d))
                                          for d in documents])
    check = evaluation.check
    accepted = conn.execute(ACCEPT_MESSAGE, no_nul_row({
        "message_id": message.id, "verification": check.summary(),
        "signer_fingerprint": check.signer_fingerprint, "signed_at": check.signed_at,
        "officer_id": officer.id, "replay_key": evaluation.replay_key, "state": "accepted",
        "request_id": request_id}))
    if accepted.rowcount != 1:  # the request, its number and rows are rolled back with this run
        raise MessageTaken(f"message {message.id} was recorded by another run of its job")
    request = Request(id=request_id, **values)  # transient: what the reply and the notice read
    audit.append(conn, [(f"officer:{officer.key_fingerprint}", "request.created", ref, {
        "status": request.status, "type": request.type, "message_id": message.id, "missing": form.missing,
        "documents": [{"name": d.stored_name, "sha256": d.sha256} for d in documents]})])
    queue_reply_in(conn, settings, **status_reply(request, message, officer, documents, in_reply_to,
                                                  references))
    history = [(kind, key, n) for kind, key, n in conn.execute(HISTORY, history_params(officer, request_id))]
    notify_reviewers_in(conn, new_request_notice(request, officer, reputation_text(officer, history)),
                        ref=ref, emergency=request.emergency)
    conn.execute(JOB_DONE, {"job_id": job_id, "finished_at": utcnow()})
    return ref


def new_request_notice(request: Request, officer: Officer, reputation: list[str]) -> str:
    head = "🚨 EMERGENCY request" if request.emergency else "New request"
    missing = ""
    if request.missing_fields:
        missing = f"\nWaiting for the officer: {'; '.join(request.missing_fields)}"
    return (f"{head} {request.ref}: {request.type or '(type missing)'} from {officer.email} "
            f"({officer.agency.name}){missing}\n" + "\n".join(reputation))


def queue_status_reply(session: AsyncSession, settings: Settings, request: Request, message: Message,
                       officer: Officer, documents: list[Document], in_reply_to: str | None,
                       references: list[str]) -> None:
    """The acknowledgement of a complete request, or the follow-up listing what is missing."""
    queue_reply(session, settings, **status_reply(request, message, officer, documents, in_reply_to,
                                                  references))


def status_reply(request: Request, message: Message, officer: Officer, documents: list[Document],
                 in_reply_to: str | None, references: list[str]) -> dict[str, Any]:
    """`queue_status_reply`'s reply, as `queue_reply`'s arguments."""
    ref = request.ref
    if request.missing_fields:
        subject, kind = f"[{ref}] More information needed", "followup"
        body = render("followup_missing", ref=ref, missing=bullets(request.missing_fields))
    else:
        subject, kind = f"[{ref}] Request received", "acknowledgement"
        body = render("acknowledgement", ref=ref, type=request.type,
                      case_number=request.case_number,
                      received_at=f"{message.received_at:%Y-%m-%d %H:%M} UTC",
                      fingerprint=officer.key_fingerprint, documents=_document_list(documents))
    return {"kind": kind, "recipient": officer.email, "recipient_fingerprint": officer.key_fingerprint,
            "subject": subject, "body": body, "request_id": request.id, "in_reply_to": in_reply_to,
            "references": references, "reply_to_message": message.id}


async def refuse_form(session: AsyncSession, settings: Settings, message: Message, officer: Officer,
                      problems: list[str], in_reply_to: str | None, references: list[str]) -> None:
    """A verified officer's form cannot be used: quarantine the mail, tell them every problem."""
    message.state = "quarantined"
    message.reason = "invalid_request_form"
    message.reason_detail = "; ".join(problems)[:4000]
    await audit.record(session, f"officer:{officer.key_fingerprint}", "inbound.refused",
                       f"message:{message.id}", reason="invalid_request_form", problems=len(problems))
    queue_reply(session, settings, kind="form_refused", recipient=officer.email,
                recipient_fingerprint=officer.key_fingerprint,
                subject="Your request could not be accepted",
                body=render("request_form_refused", problems=bullets(problems)),
                in_reply_to=in_reply_to, references=references, reply_to_message=message.id)


async def refuse_content(session: AsyncSession, settings: Settings, message: Message, officer: Officer,
                         problems: list[Refusal], in_reply_to: str | None, references: list[str]) -> None:
    """A verified officer's message breaks a limit (attachments, charsets): quarantine it under the
    first breach's reason code and tell them, by signed mail, every breach and its limit."""
    message.state = "quarantined"
    message.reason = problems[0].reason
    message.reason_detail = "; ".join(p.detail for p in problems)[:4000]
    await audit.record(session, f"officer:{officer.key_fingerprint}", "inbound.refused",
                       f"message:{message.id}", reason=message.reason,
                       reasons=sorted({p.reason for p in problems}))
    queue_reply(session, settings, kind="content_refused", recipient=officer.email,
                recipient_fingerprint=officer.key_fingerprint,
                subject="Your message could not be accepted",
                body=render("content_refused", problems=bullets([p.detail for p in problems])),
                in_reply_to=in_reply_to, references=references, reply_to_message=message.id)


async def store_documents(session: AsyncSession, request: Request, message: Message,
                          documents: list[Document]) -> None:
    """The files as records; a large one in sealed chunks (gateway/chunks.py), so storing it
    costs one chunk at a time, not a sealed copy of the whole file."""
    for document in documents:
        received = document.attachment
        large = received.size > CHUNK
        attachment = Attachment(
            request_id=request.id, message_id=message.id,
            original_filename=received.filename, stored_name=document.stored_name,
            content_type=received.content_type, sha256=document.sha256,
            size=received.size, data=b"" if large else received.data,
            extracted_text=document.text, extraction_error=document.error,
        )
        session.add(attachment)
        if large:
            await session.flush()
            attachment.chunks = await store_chunks(session, ATTACHMENT, attachment.id, received.pieces())


def set_deadline(request: Request, settings: Settings) -> None:
    """The response target, once the type is known (DESIGN.md: deadlines per request type)."""
    if request.type and request.deadline is None:
        request.deadline = deadline_for(request.type, request.emergency, request.created_at, settings)


def deadline_for(type_: str | None, emergency: bool, created_at: datetime | None,
                 settings: Settings) -> datetime | None:
    """A new request's response target: none while its type is unknown."""
    if not type_:
        return None
    hours = settings.deadlines.target_hours(type_, emergency)
    return (created_at or utcnow()) + timedelta(hours=hours)


def _attachment_values(request_id: int, message_id: int, document: Document) -> dict[str, Any]:
    """A small document's row (the columns `store_documents` sets)."""
    received = document.attachment
    return {"request_id": request_id, "message_id": message_id, "original_filename": received.filename,
            "stored_name": document.stored_name, "content_type": received.content_type,
            "sha256": document.sha256, "size": received.size, "data": received.data,
            "extracted_text": document.text, "extraction_error": document.error}


def _new_request(ref: str, form: RequestForm, officer: Officer, text: str,
                 thread_message_id: str | None) -> Request:
    return Request(**_request_values(ref, form, officer, text, thread_message_id))


def _request_values(ref: str, form: RequestForm, officer: Officer, text: str,
                    thread_message_id: str | None) -> dict[str, Any]:
    return dict(
        ref=ref, type=form.type, status="awaiting_info" if form.missing else "received",
        emergency=form.emergency, case_number=form.case_number, legal_basis=form.legal_basis,
        data_categories=form.data_categories, date_from=form.date_from, date_to=form.date_to,
        nondisclosure_until=form.nondisclosure_until,
        nondisclosure_indefinite=form.nondisclosure_indefinite,
        emergency_justification=form.emergency_justification, supervisor=form.supervisor,
        investigation_status=form.investigation_status, missing_fields=form.missing,
        body_text=text, officer_id=officer.id, agency_id=officer.agency_id,
        thread_message_id=thread_message_id or "",
    )


def bullets(items: list[str]) -> str:
    return "\n".join(f"  - {item}" for item in items)


def _document_list(documents: list[Document]) -> str:
    if not documents:
        return ""
    lines = ["", "Documents received:"]
    lines += [f"  - {display_name(d.attachment.filename) or d.stored_name} (sha256 {d.sha256})"
              for d in documents]
    return "\n".join(lines)
