"""The processing of one stored inbound message: rules, then the handler that fits.

gpg and PDF work happen before the write transaction; the verdict, the records it creates, the
replies it queues, the audit entries and the end of the job then commit together, so a crash
anywhere leaves the job to run again from the start.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from gateway import queue
from gateway.chunks import large_message_turn, raw_bytes
from gateway.config import Settings
from gateway.documents import Document, archive_kind, display_name, prepare_documents
from gateway.logs import current_ref, set_ref
from gateway.mime import Refusal, SignedContent
from gateway.models import Job, Message, Officer, Request
from gateway.spool import SPOOL_DIR
from handlers.chain import ChainContext, Evaluation, SuspendedMeanwhile, evaluate, still_active
from handlers.enrolment_form import purpose_of
from handlers.followup import handle_followup, referenced_request
from handlers.form import RequestForm, read_request_form
from handlers.intake import (
    MessageTaken,
    fits_record_new_request,
    handle_new_request,
    record_new_request,
    refuse_content,
)
from handlers.notify import tell_chat_sender
from handlers.onboarding import enrol_certified, handle_enrolment, handle_key_rotation, inspect_rotation
from handlers.refusals import quarantine
from handlers.status import answer_status, status_query
from handlers.threading import reply_threading

log = logging.getLogger(__name__)


async def route(session: AsyncSession, settings: Settings, message: Message, officer: Officer,
                evaluation: Evaluation, documents: list[Document]) -> None:
    """A STATUS query; a follow-up if the signed content names one of the officer's requests;
    else a new request."""
    assert evaluation.content is not None
    await session.run_sync(lambda sync: still_active(sync.connection(), officer.id))
    content = evaluation.content
    query = status_query(content.text)
    if query is not None:
        await answer_status(session, settings, message, officer, evaluation, query)
        return
    problems = content_problems(content, settings)
    if problems:
        in_reply_to, references = reply_threading(message, content)
        await refuse_content(session, settings, message, officer, problems, in_reply_to, references)
        return
    if purpose_of(content) == "key_rotation":
        await handle_key_rotation(session, settings, message, officer, evaluation)
        return
    form = read_request_form(content.text, content.attachments,
                             has_document=any(d.is_pdf for d in documents))
    ref = referenced_request(form, content)
    if ref is not None:
        await handle_followup(session, settings, message, officer, evaluation, form, documents, ref)
    else:
        await handle_new_request(session, settings, message, officer, evaluation, form, documents)


def plain_new_request(settings: Settings, evaluation: Evaluation, documents: list[Document],
                      transport: str) -> RequestForm | None:
    """The form of an accepted mail from an enrolled officer that `route` would hand to
    `handle_new_request` and that would be registered as it is (no problems in it), when
    `record_new_request` can store it; None for everything else (which takes the general path).
    Decided from the signed content alone, as `route` decides, before the write transaction."""
    content = evaluation.content
    if (not evaluation.accepted or evaluation.enrolment or evaluation.officer is None or content is None
            or evaluation.check is None or transport == "chat"):
        return None
    if status_query(content.text) is not None or content_problems(content, settings):
        return None
    if purpose_of(content) == "key_rotation":
        return None
    form = read_request_form(content.text, content.attachments,
                             has_document=any(d.is_pdf for d in documents))
    if referenced_request(form, content) is not None or not form.found or form.problems:
        return None
    return form if fits_record_new_request(documents) else None


def content_problems(content: SignedContent, settings: Settings) -> list[Refusal]:
    """What a verified signer's message may not carry, each breach with its own reason code and
    the limit: text that does not decode, too many or too large attachments, archives. Found
    after the signature proved the sender, so the sender is told, by signed mail."""
    policy = settings.policy
    problems = list(content.problems)
    attachments = content.attachments
    if len(attachments) > policy.max_attachments:
        problems.append(Refusal("too_many_attachments", f"the message carries {len(attachments)} files, "
                                f"at most {policy.max_attachments} are accepted in one message: send the "
                                "others in a follow-up message naming the request's reference"))
    for attachment in attachments:
        name = display_name(attachment.filename or "(unnamed)", 80)
        if attachment.size > policy.max_attachment_bytes:
            problems.append(Refusal("attachment_too_large", f"attachment {name} is {attachment.size} "
                                    f"bytes, at most {policy.max_attachment_bytes} bytes are accepted for "
                                    "one file"))
        kind = archive_kind(attachment)
        if kind is not None:
            problems.append(Refusal("archive_attachment", f"attachment {name} is an archive ({kind}); "
                                    "archives are never unpacked or accepted: attach each document "
                                    "itself, as a PDF"))
    return problems


class RetryJob(Exception):
    """Something changed under us (a concurrent copy of the same message): run the job again."""


PRELOAD_MAX_BYTES = 1 << 20  # larger messages are loaded by their job itself, one at a time


@dataclass(frozen=True)
class StoredInbound:
    """What the rules read of a stored inbound message."""

    raw: bytes
    received_at: datetime
    transport: str
    state: str
    header_message_id: str | None


COLUMNS = (Message.id, Message.raw, Message.chunks, Message.received_at, Message.transport, Message.state,
           Message.header_message_id)
PRELOAD = select(*COLUMNS).where(Message.id.in_(bindparam("ids", expanding=True)),
                                 Message.size <= PRELOAD_MAX_BYTES, Message.chunks == 0)


class InboundPreload:
    """Loads inbound messages in the transaction that claims their jobs (`queue.claim_batch`), so
    a job does not open a transaction of its own just to read its message. Each is taken once."""

    def __init__(self) -> None:
        self._messages: dict[int, StoredInbound] = {}

    def __call__(self, conn: Connection, jobs: list[Job]) -> None:
        ids = [job.message_id for job in jobs if job.kind == "inbound" and job.message_id is not None]
        if ids:
            for row in conn.execute(PRELOAD, {"ids": ids}):
                self._messages[row.id] = StoredInbound(row.raw, row.received_at, row.transport, row.state,
                                                       row.header_message_id)

    def take(self, message_id: int | None) -> StoredInbound | None:
        return self._messages.pop(message_id, None) if message_id is not None else None


async def load_inbound(ctx: ChainContext, message_id: int | None) -> StoredInbound | None:
    """A message its job did not preload: a large one comes out of its chunks (gateway/chunks.py)."""
    async with ctx.db.reading() as session:
        message = await session.get(Message, message_id) if message_id is not None else None
        if message is None:
            return None
        return StoredInbound(await raw_bytes(session, message), message.received_at, message.transport,
                             message.state, message.header_message_id)


async def process_inbound(ctx: ChainContext, job: Job, stored: StoredInbound | None = None) -> None:
    """`stored`: the message as loaded when the job was claimed, if it was."""
    async with large_message_turn(job.payload):  # large messages one at a time (gateway/chunks.py)
        token = SPOOL_DIR.set(ctx.settings.data_dir / "spool")  # large attachments decode to a spool
        try:
            await _process_inbound(ctx, job, stored)
        finally:
            SPOOL_DIR.reset(token)


async def _process_inbound(ctx: ChainContext, job: Job, stored: StoredInbound | None) -> None:
    stored = stored or await load_inbound(ctx, job.message_id)
    if stored is None or stored.state != "received":
        async with ctx.db.transaction() as session:
            await queue.mark_done_by_id(session, job.id)
        return
    raw, received_at, transport = stored.raw, stored.received_at, stored.transport
    header_message_id = stored.header_message_id
    assert job.message_id is not None
    evaluation = await evaluate(ctx, raw, received_at, job.message_id, transport)
    del raw, stored  # what follows needs only what the signature covers: a large message is not held twice
    documents = []
    problems = []
    if evaluation.accepted and evaluation.content is not None:
        problems = content_problems(evaluation.content, ctx.settings)
    if evaluation.accepted and evaluation.content is not None and not problems:  # else refused
        documents = await prepare_documents(evaluation.content.attachments,
                                            seconds=ctx.settings.policy.pdf_text_seconds,
                                            max_pages=ctx.settings.policy.pdf_text_max_pages)
        await _inspect_rotation(ctx, evaluation)
    try:
        state, reason = await _record(ctx, job, evaluation, documents, problems, received_at, transport,
                                      header_message_id)
    except IntegrityError as exc:
        raise RetryJob("a copy of this signed message was processed at the same time") from exc
    except SuspendedMeanwhile as exc:
        raise RetryJob(str(exc)) from exc
    except MessageTaken:
        await _taken(ctx, job)
        return
    log.info(f"inbound message {state}", extra={"message_id": job.message_id, "transport": transport,
                                                "reason": reason})


async def _record(ctx: ChainContext, job: Job, evaluation: Evaluation, documents: list[Document],
                  problems: list[Refusal], received_at: datetime, transport: str,
                  header_message_id: str | None) -> tuple[str, str | None]:
    """The verdict, the records it creates, the replies, the audit and the job's end, in one write
    transaction; returns the message's (state, reason). A plain new request takes the Core path
    (`record_new_request`), everything else the ORM session."""
    form = plain_new_request(ctx.settings, evaluation, documents, transport)
    if form is not None:
        assert evaluation.officer is not None
        message = Message(id=job.message_id, received_at=received_at, transport=transport,
                          header_message_id=header_message_id)  # transient: read, never written
        set_ref(await ctx.db.write_sync(partial(
            record_new_request, settings=ctx.settings, message=message, officer=evaluation.officer,
            evaluation=evaluation, form=form, documents=documents, job_id=job.id), redoable=True))
        return "accepted", None
    async with ctx.db.transaction() as session:
        # the bytes were read when the job was claimed: not loaded (nor opened) again
        # FOR UPDATE (PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises): a second run
        # of this job waits for the first one's commit, then finds the message taken
        message = await session.get(Message, job.message_id, options=[defer(Message.raw)],
                                    with_for_update=True)
        assert message is not None
        if message.state != "received":
            raise MessageTaken(f"message {message.id} was recorded by another run of its job")
        if evaluation.check is not None:
            message.verification = evaluation.check.summary()
            message.signer_fingerprint = evaluation.check.signer_fingerprint
            message.signed_at = evaluation.check.signed_at
        message.officer_id = evaluation.officer_id
        if evaluation.accepted and evaluation.enrolment:
            message.replay_key = evaluation.replay_key
            await handle_enrolment(session, ctx.settings, message, evaluation, documents, problems)
        elif evaluation.accepted:
            message.replay_key = evaluation.replay_key
            if evaluation.officer_id is None:  # certified by a registered agency's key
                new_officer = await enrol_certified(session, evaluation)
                await session.flush()
                evaluation.officer_id = message.officer_id = new_officer.id
            if evaluation.officer is not None:  # as rule 3 read it moments ago: not read again
                officer = await session.merge(evaluation.officer, load=False)
            else:
                officer = await session.get(Officer, evaluation.officer_id)
            assert officer is not None and evaluation.content is not None
            await route(session, ctx.settings, message, officer, evaluation, documents)
        else:
            await quarantine(session, ctx.settings, message, evaluation)
        if message.request_id is not None and current_ref() is None:  # intake names it itself
            set_ref(await session.scalar(select(Request.ref).where(Request.id == message.request_id)))
        if message.transport == "chat":
            await _answer_in_chat(session, message)
        await queue.mark_done_by_id(session, job.id)
        return message.state, message.reason


async def _taken(ctx: ChainContext, job: Job) -> None:
    """Another run of this job recorded its message first (its transaction, rolled back, left
    nothing): this run only ends the job, which that run has normally ended already."""
    log.warning("inbound message already recorded by another run of its job",
                extra={"message_id": job.message_id})
    async with ctx.db.transaction() as session:
        await queue.mark_done_by_id(session, job.id)


async def _inspect_rotation(ctx: ChainContext, evaluation: Evaluation) -> None:
    """A key rotation's gpg work happens here, before the write transaction (like PDF text)."""
    content = evaluation.content
    if evaluation.officer_id is None or content is None or purpose_of(content) != "key_rotation":
        return
    assert evaluation.check is not None and evaluation.from_address is not None
    assert evaluation.check.signer_fingerprint is not None
    evaluation.rotation = await inspect_rotation(ctx.pgp, evaluation.from_address,
                                                 evaluation.check.signer_fingerprint, content)


async def _answer_in_chat(session: AsyncSession, message: Message) -> None:
    """What came through the chat bot is also answered there, briefly; email carries the rest."""
    telegram_id = int((message.peer or "telegram:0").partition(":")[2] or 0)
    if not telegram_id:
        return
    if message.state == "accepted" and message.request_id is None:  # a STATUS query
        text = ("Received and verified. The answer was sent to your registered email address, "
                "signed and encrypted.")
    elif message.state == "accepted" and message.request_id is not None:
        request = await session.get(Request, message.request_id)
        assert request is not None
        text = (f"Received and verified: {request.ref}, now {request.status.replace('_', ' ')}. "
                "The signed, encrypted acknowledgement was sent to your registered email address.")
    else:
        text = f"Not accepted: {message.reason_detail or message.reason}."
    tell_chat_sender(session, telegram_id, text)
