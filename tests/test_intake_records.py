"""What a new request from an enrolled officer leaves in the database (handlers/intake.py
`record_new_request`, the inbound job's Core path): the request and its subjects and documents,
the message's verdict, the job's end, the audit entry, the acknowledgement and the reviewers'
notice with the officer's history; and NUL in the form, stored and shown as U+FFFD."""

from __future__ import annotations

from sqlalchemy import select

from gateway.audit import verify_chain
from gateway.models import AuditEntry, Job, Message, Outbox
from gateway.records import show_request
from tests.conftest import Harness
from tests.support.mail_factory import Attachment, pdf_bytes, request_body, signed_request_mail
from tests.support.officer_keys import TestKey


async def test_a_new_request_leaves_every_record(gateway: Harness, alice: TestKey) -> None:
    bodies = (request_body(case_number="REC-1", subjects="account_id:42, email:a@b.test"),
              request_body(type="preservation", case_number="REC-2", subjects="phone:+155501"))
    for n, body in enumerate(bodies):
        mail = signed_request_mail(gateway.ring, alice, from_addr=alice.email, body=body,
                                   attachments=[Attachment("order.pdf", "application/pdf",
                                                           pdf_bytes(f"Court order {n}"))],
                                   message_id=f"<rec-{n}@police.test>")
        code, _ = await gateway.send(mail)
        assert code == 250
        await gateway.settle()
    first, second = await gateway.requests()
    details = await show_request(gateway.core.db, first["ref"])
    assert details is not None
    assert details["subjects"] == [{"type": "account_id", "value": "42"},
                                   {"type": "email", "value": "a@b.test"}]
    assert details["case_number"] == "REC-1" and details["status"] == "received"
    [document] = details["documents"]
    assert document["filename"] == "order.pdf" and document["text_extracted"]
    [message] = [m for m in details["messages"] if m["direction"] == "inbound"]
    assert message["state"] == "accepted" and message["verification"]["ok"] is True
    async with gateway.core.db.transaction() as session:
        stored = await session.get(Message, message["id"])
        assert stored is not None and stored.replay_key and stored.signer_fingerprint == alice.fingerprint
        assert stored.officer_id is not None and stored.signed_at is not None
        inbound = (await session.scalars(select(Job).where(Job.kind == "inbound"))).all()
        assert [job.state for job in inbound] == ["done", "done"]
        assert all(job.finished_at is not None and job.lease_until is None for job in inbound)
        created = (await session.scalars(select(AuditEntry).where(AuditEntry.action == "request.created")
                                          .order_by(AuditEntry.id))).all()
        assert [entry.subject for entry in created] == [first["ref"], second["ref"]]
        assert created[0].actor == f"officer:{alice.fingerprint}"
        assert created[0].details["message_id"] == message["id"]
        assert created[0].details["documents"][0]["sha256"] == document["sha256"]
        assert (await verify_chain(session)).ok
        notices = [job.payload for job in await session.scalars(
            select(Job).where(Job.kind == "chat_notify").order_by(Job.id))]
        replies = (await session.scalars(select(Outbox).order_by(Outbox.id))).all()
    assert [n["ref"] for n in notices] == [first["ref"], second["ref"]]
    assert notices[0]["text"].startswith(f"New request {first['ref']}: subpoena from {alice.email}")
    assert "History: first request from this officer" in notices[0]["text"]
    assert "History: 1 earlier request(s) from this officer (1 received)" in notices[1]["text"]
    assert [(r.kind, r.request_id, r.in_reply_to) for r in replies][:2] == [
        ("acknowledgement", replies[0].request_id, "<rec-0@police.test>"),
        ("acknowledgement", replies[1].request_id, "<rec-1@police.test>")]
    acks = gateway.replies(to=alice.email)
    assert [a.subject for a in acks] == [f"[{first['ref']}] Request received",
                                         f"[{second['ref']}] Request received"]
    assert "Case number:      REC-2" in acks[1].text


async def test_nul_in_the_form_is_stored_and_answered_as_a_replacement_character(
        gateway: Harness, alice: TestKey) -> None:
    """PostgreSQL text cannot hold NUL; SQLite can, so only the gateway's own replacement makes
    both store (and show the officer) the same."""
    mail = signed_request_mail(gateway.ring, alice, from_addr=alice.email,
                               body=request_body(type="preservation", case_number="NUL\x00-1"))
    await gateway.send(mail)
    await gateway.settle()
    [request] = await gateway.requests()
    assert request["case_number"] == "NUL\ufffd-1"
    details = await show_request(gateway.core.db, request["ref"])
    assert details is not None and details["status"] == "received"
    [ack] = gateway.replies(to=alice.email)
    assert "Case number:      NUL\ufffd-1" in ack.text and "\x00" not in ack.text
