"""The processing of one stored inbound message: rules, then the handler that fits.

gpg and PDF work happen before the write transaction; the verdict, the records it creates, the
replies it queues, the audit entries and the end of the job then commit together, so a crash
anywhere leaves the job to run again from the start.
"""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError

from gateway import queue
from gateway.documents import prepare_documents
from gateway.models import Job, Message, Officer
from handlers.chain import ChainContext, evaluate
from handlers.intake import handle_new_request
from handlers.refusals import quarantine


class RetryJob(Exception):
    """Something changed under us (a concurrent copy of the same message): run the job again."""


async def process_inbound(ctx: ChainContext, job: Job) -> None:
    async with ctx.db.transaction() as session:
        message = await session.get(Message, job.message_id)
        if message is None or message.state != "received":
            queue.mark_done(session, await session.get(Job, job.id) or job)
            return
        raw, received_at = message.raw, message.received_at
    evaluation = await evaluate(ctx, raw, received_at, message.id)
    documents = []
    if evaluation.accepted and evaluation.content is not None:
        documents = await prepare_documents(evaluation.content.attachments)
    try:
        async with ctx.db.transaction() as session:
            message = await session.get(Message, job.message_id)
            fresh_job = await session.get(Job, job.id)
            assert message is not None and fresh_job is not None
            if evaluation.check is not None:
                message.verification = evaluation.check.summary()
                message.signer_fingerprint = evaluation.check.signer_fingerprint
                message.signed_at = evaluation.check.signed_at
            message.officer_id = evaluation.officer_id
            if evaluation.accepted:
                message.replay_key = evaluation.replay_key
                officer = await session.get(Officer, evaluation.officer_id)
                assert officer is not None
                await handle_new_request(session, ctx.settings, message, officer, evaluation,
                                         documents)
            else:
                await quarantine(session, ctx.settings, message, evaluation)
            queue.mark_done(session, fresh_job)
    except IntegrityError as exc:
        raise RetryJob("a copy of this signed message was processed at the same time") from exc
