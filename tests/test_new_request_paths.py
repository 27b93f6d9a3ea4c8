"""One signed request, two code paths, the same records.

A new request from an enrolled officer is recorded either by the inbound job's Core fast path
(handlers/inbound.py `plain_new_request` -> handlers/intake.py `record_new_request`) or by the
general ORM path (`route` -> `handle_new_request`). Both must leave the same rows, or the two
copies of the intake rules drift apart unnoticed. Each case signs one mail, delivers the same
bytes over SMTP to two fresh gateways (their workers stopped), claims the inbound job in each the
way the worker does, runs the real `process_inbound` in one and, in the other, what
`_process_inbound` does on its general path, and compares every record column by column, modulo
ids, reference numbers and timestamps. Runs on PostgreSQL too (LERS_TEST_BACKEND=postgresql).
"""

from __future__ import annotations

import email
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.orm import defer

from gateway import queue
from gateway.documents import prepare_documents
from gateway.models import Attachment as AttachmentRow
from gateway.models import AuditEntry, Base, Job, Message, Outbox, Request, RequestSubject
from handlers.chain import evaluate
from handlers.inbound import content_problems, load_inbound, plain_new_request, process_inbound, route
from tests.conftest import GatewayFactory, Harness
from tests.support.mail_factory import Attachment, pdf_bytes, request_body, signed_request_mail
from tests.support.officer_keys import TestKey

PDF = Attachment("court order.pdf", "application/pdf", pdf_bytes("Court order 7"))


@dataclass(frozen=True)
class Case:
    body: str
    attachments: tuple[Attachment, ...] = (PDF,)
    status: str = "received"
    earlier: tuple[str, ...] = ()  # requests the officer sent before (the notice's history line)
    protected_headers: bool = False


CASES = {
    "plain_with_subjects_and_pdf": Case(request_body(
        case_number="DIFF-1", subjects="account_id:42, email:a@b.test, wallet_address:bc1qxyz")),
    "missing_fields": Case(request_body(legal_basis=None, data_categories=None), (),
                           status="awaiting_info"),
    "emergency": Case(request_body(
        type="emergency_disclosure", emergency="true", case_number="EM-9",
        emergency_justification="imminent threat to life", supervisor="Sgt. Example, +1 555 0100")),
    # an emergency flag on another type: its deadline is the emergency one, not the type's
    "emergency_subpoena": Case(request_body(
        emergency="true", emergency_justification="kidnapping in progress", supervisor="Lt. Example")),
    "nul_in_a_field": Case(request_body(type="preservation", case_number="NUL\x00-1",
                                        legal_basis="basis\x00with NUL", subjects="account_id:4\x002")),
    "second_request_two_documents_protected_headers": Case(
        request_body(case_number="DIFF-2"),
        (PDF, Attachment("warrant.pdf", "application/pdf", pdf_bytes("Warrant 8")),
         Attachment("notes.txt", "text/plain", b"plain notes\n")),
        earlier=(request_body(type="preservation", case_number="EARLIER-1"),),
        protected_headers=True),
    "non_ascii": Case(request_body(case_number="Ærø-Straße-42 №7", legal_basis="§ 100a StPO — Überwachung",
                                   subjects="email:jürgen@example.test",
                                   free_text="Grüße aus Köln: 東京 ✓")),
}

# never compared as values: surrogate keys and clocks (timestamps are compared as set / not set)
IDS = {"id", "request_id", "message_id", "officer_id", "agency_id", "in_reply_to_message"}


def columns(row: Base, skip: set[str] = frozenset()) -> dict[str, Any]:  # type: ignore[assignment]
    """Every mapped column of `row` (so a column added later is compared too), ids and times
    reduced to whether they are set."""
    out: dict[str, Any] = {}
    for attr in inspect(type(row)).mapper.column_attrs:
        if attr.key in skip:
            continue
        value = getattr(row, attr.key)
        out[attr.key] = (value is not None) if attr.key in IDS or isinstance(value, datetime) else value
    return out


def masked(value: Any, subs: dict[str, str]) -> Any:
    """`value` with each key of `subs` in its text replaced (reference numbers, Message-IDs)."""
    if isinstance(value, str):
        for old, new in subs.items():
            value = value.replace(old, new)
        return value
    if isinstance(value, bytes):
        return masked(value.decode("utf-8", "replace"), subs)
    if isinstance(value, dict):
        return {masked(k, subs): masked(v, subs) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [masked(v, subs) for v in value]
    return value


async def records(harness: Harness, message_id: int, job_id: int) -> dict[str, Any]:
    """What a new request left in `harness`'s database, comparable across databases."""
    async with harness.core.db.transaction() as session:
        message = await session.get(Message, message_id, options=[defer(Message.raw)])
        assert message is not None and message.request_id is not None, "no request recorded"
        request = await session.get(Request, message.request_id)
        assert request is not None
        # the acknowledgement shows the minute the mail was received (each gateway got its own copy)
        subs = {request.ref: "<REF>", f"{message.received_at:%Y-%m-%d %H:%M} UTC": "<RECEIVED>"}
        subjects = (await session.scalars(select(RequestSubject).where(
            RequestSubject.request_id == request.id).order_by(RequestSubject.id))).all()
        attachments = (await session.scalars(select(AttachmentRow).where(
            AttachmentRow.request_id == request.id).order_by(AttachmentRow.id))).all()
        audits = (await session.scalars(select(AuditEntry).where(
            AuditEntry.subject == request.ref))).all()
        replies = (await session.scalars(select(Outbox).where(
            Outbox.request_id == request.id).order_by(Outbox.id))).all()
        notices = [job for job in (await session.scalars(select(Job).where(Job.kind == "chat_notify")
                                                         .order_by(Job.id))).all()
                   if job.payload.get("ref") == request.ref]
        inbound = await session.get(Job, job_id)
        assert inbound is not None
        out: dict[str, Any] = {}
        out["request"] = columns(request, {"ref"})
        assert request.deadline is not None or request.type is None
        out["request"]["deadline_after_created"] = (
            request.deadline - request.created_at if request.deadline else None)
        out["request"]["officer_and_agency"] = (request.officer_id == message.officer_id,
                                                request.agency_id == request.officer.agency_id)
        out["subjects"] = [columns(s) for s in subjects]
        out["attachments"] = [
            columns(a) | {"linked": (a.message_id, a.request_id) == (message_id, request.id)}
            for a in attachments]
        # every column but the bytes (the verdict: state, verification, signer, signed_at, officer,
        # replay key, request link; the rest was written at ingress and must be left as it was)
        out["message"] = columns(message, {"raw"}) | {
            "linked": (message.request_id, message.officer_id) == (request.id, request.officer_id),
            "signed_at": message.signed_at}
        out["audit"] = [(a.actor, a.action, masked({k: ("<msg>" if k == "message_id" and v == message_id
                                                         else v) for k, v in a.details.items()}, subs))
                        for a in audits]
        for reply in replies:
            subs[reply.header_message_id] = "<MSGID>"
        out["outbox"] = []
        for reply in replies:
            inner = email.message_from_bytes(reply.content)
            payload = inner.get_payload(decode=True)
            assert isinstance(payload, bytes)
            head = {k: v for k, v in inner.items() if k.lower() not in ("message-id", "date")}
            out["outbox"].append(masked(columns(reply, {"header_message_id", "content"}) | {
                "linked": (reply.in_reply_to_message, reply.request_id) == (message_id, request.id),
                "headers": head, "text": payload.decode("utf-8")}, subs))
        out["notices"] = [masked(columns(n, {"payload"}) | {"payload": n.payload}, subs) for n in notices]
        out["inbound_job"] = columns(inbound)
        out["inbound_job"]["lease_until"] = inbound.lease_until
    return out


async def claim_inbound(harness: Harness) -> Job:
    """The inbound job, claimed with a lease as the worker claims it (its message preloaded)."""
    settings = harness.settings.worker
    [job] = await queue.claim_batch(harness.core.db, settings.lease_seconds, settings.max_attempts,
                                    ("inbound",), frozenset(), 1, harness.gateway.preloaded)
    return job


async def through_fast_path(harness: Harness) -> tuple[int, int]:
    """The gateway's own inbound handler (`process_inbound`), as the worker runs it."""
    job = await claim_inbound(harness)
    assert job.message_id is not None
    await process_inbound(harness.gateway.ctx, job, harness.gateway.preloaded.take(job.message_id))
    return job.message_id, job.id


async def through_orm_path(harness: Harness) -> tuple[int, int]:
    """`_process_inbound`'s general path for an accepted mail from an enrolled officer: evaluate,
    then, in one ORM transaction, the message's verdict, `route`, the job's end."""
    ctx, settings = harness.gateway.ctx, harness.settings
    job = await claim_inbound(harness)
    assert job.message_id is not None
    stored = harness.gateway.preloaded.take(job.message_id) or await load_inbound(ctx, job.message_id)
    assert stored is not None and stored.state == "received"
    evaluation = await evaluate(ctx, stored.raw, stored.received_at, job.message_id, stored.transport)
    assert evaluation.accepted and evaluation.content is not None and evaluation.officer is not None
    assert evaluation.check is not None
    assert not content_problems(evaluation.content, settings)
    documents = await prepare_documents(evaluation.content.attachments,
                                        seconds=settings.policy.pdf_text_seconds,
                                        max_pages=settings.policy.pdf_text_max_pages)
    # the other gateway, given the same bytes, takes the fast path: else this compares ORM to ORM
    assert plain_new_request(settings, evaluation, documents, stored.transport) is not None
    async with harness.core.db.transaction() as session:
        message = await session.get(Message, job.message_id, options=[defer(Message.raw)])
        assert message is not None
        message.verification = evaluation.check.summary()
        message.signer_fingerprint = evaluation.check.signer_fingerprint
        message.signed_at = evaluation.check.signed_at
        message.officer_id = evaluation.officer_id
        message.replay_key = evaluation.replay_key
        officer = await session.merge(evaluation.officer, load=False)
        await route(session, settings, message, officer, evaluation, documents)
        await queue.mark_done_by_id(session, job.id)
    return job.message_id, job.id


async def idle_gateway(make_gateway: GatewayFactory, key: TestKey) -> Harness:
    """A gateway with `key` enrolled and its workers stopped (SMTP ingress still running)."""
    harness: Harness = await make_gateway()
    await harness.enrol(key)
    await harness.stop_workers()
    return harness


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
async def test_fast_and_orm_paths_leave_the_same_records(make_gateway: GatewayFactory, alice: TestKey,
                                                         case: str) -> None:
    spec = CASES[case]
    fast, orm = await idle_gateway(make_gateway, alice), await idle_gateway(make_gateway, alice)
    for n, body in enumerate(spec.earlier):  # the same history in both, recorded the same way
        earlier = signed_request_mail(fast.ring, alice, from_addr=alice.email, body=body,
                                      message_id=f"<earlier-{n}-{case}@police.test>")
        for harness in (fast, orm):
            assert (await harness.send(earlier))[0] == 250
            await through_fast_path(harness)
    mail = signed_request_mail(fast.ring, alice, from_addr=alice.email, body=spec.body,
                               attachments=spec.attachments, message_id=f"<diff-{case}@police.test>",
                               protected_headers=spec.protected_headers)
    for harness in (fast, orm):
        code, _ = await harness.send(mail)
        assert code == 250
    fast_records = await records(fast, *await through_fast_path(fast))
    orm_records = await records(orm, *await through_orm_path(orm))
    assert fast_records["request"]["status"] == spec.status
    assert fast_records["inbound_job"]["state"] == "done"
    assert fast_records == orm_records
