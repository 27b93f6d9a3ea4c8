"""An officer emails a signed request over real SMTP; the gateway answers over real SMTP."""

from __future__ import annotations

import re

from sqlalchemy import select

from tests.conftest import Harness
from tests.support.mail_factory import Attachment, pdf_bytes, request_body, signed_request_mail
from tests.support.officer_keys import TestKey


async def test_signed_request_is_registered_and_acknowledged(gateway: Harness, alice: TestKey) -> None:
    mail = signed_request_mail(
        gateway.ring,
        alice,
        from_addr=alice.email,
        body=request_body(),
        attachments=[
            Attachment("subpoena.pdf", "application/pdf", pdf_bytes("Grand jury subpoena 2026-CR-0042"))
        ],
        message_id="<req-1@police.test>",
    )
    code, text = await gateway.send(mail)
    assert code == 250, text
    await gateway.settle()

    requests = await gateway.requests()
    assert len(requests) == 1, [(q["reason"], q["detail"]) for q in await gateway.quarantine()]
    request = requests[0]
    assert re.fullmatch(r"LERS-\d{4}-000001", request["ref"])
    assert request["status"] == "received"
    assert request["officer"] == alice.email

    [reply] = gateway.replies(to=alice.email)
    assert reply.subject == f"[{request['ref']}] Request received"
    assert reply.outer["In-Reply-To"] == "<req-1@police.test>"
    assert "<req-1@police.test>" in reply.outer["References"]
    assert reply.signed_by == gateway.core.gateway_fingerprint
    assert request["ref"] in reply.text
    assert "subpoena.pdf" in reply.text

    from gateway.models import Attachment as StoredDocument
    async with gateway.core.db.transaction() as session:
        [document] = (await session.scalars(select(StoredDocument))).all()
    assert document.original_filename == "subpoena.pdf"
    assert "Grand jury subpoena 2026-CR-0042" in (document.extracted_text or "")
    assert document.sha256 in reply.text


async def test_the_unsigned_subject_never_routes_a_message(gateway: Harness, alice: TestKey) -> None:
    """An outer Subject naming an existing request does not make a new request a follow-up."""
    await gateway.send(signed_request_mail(gateway.ring, alice, from_addr=alice.email,
                                           body=request_body(type="preservation", case_number="A-1")))
    await gateway.settle()
    [first] = await gateway.requests()
    await gateway.send(signed_request_mail(gateway.ring, alice, from_addr=alice.email,
                                           subject=f"Re: [{first['ref']}] Request received",
                                           body=request_body(type="preservation", case_number="B-2")))
    await gateway.settle()
    assert [r["case_number"] for r in await gateway.requests()] == ["A-1", "B-2"]


async def test_signed_and_encrypted_request_is_accepted(gateway: Harness, alice: TestKey) -> None:
    """RFC 3156 6.2: one OpenPGP message, signed by the officer and encrypted to the gateway."""
    from tests.support.mail_factory import encrypted_mail
    gateway_key = (await gateway.core.pgp.export_gateway_public_key()).encode()
    mail = encrypted_mail(gateway.ring, gateway_key, from_addr=alice.email,
                          body=request_body(type="preservation"), signer=alice)
    await gateway.send(mail)
    await gateway.settle()
    [request] = await gateway.requests()
    assert request["status"] == "received" and request["officer"] == alice.email


async def test_signed_then_encrypted_request_is_accepted(gateway: Harness, alice: TestKey) -> None:
    """RFC 3156 6.1: a whole multipart/signed entity, encrypted to the gateway."""
    from tests.support.mail_factory import (
        encrypted_mail,
        micalg_for,
        multipart_signed_entity,
        signed_part_bytes,
    )
    part = signed_part_bytes(request_body(type="preservation"), (), protected_headers=False,
                             from_addr=alice.email, to_addr=gateway.settings.gateway.address,
                             subject="Data request")
    signed = multipart_signed_entity(part, gateway.ring.sign_detached(alice, part),
                                     micalg=micalg_for("SHA256"))
    gateway_key = (await gateway.core.pgp.export_gateway_public_key()).encode()
    await gateway.send(encrypted_mail(gateway.ring, gateway_key, from_addr=alice.email, body="",
                                      inner=signed))
    await gateway.settle()
    [request] = await gateway.requests()
    assert request["officer"] == alice.email


async def test_a_reply_to_a_key_revoked_meanwhile_is_held(gateway: Harness) -> None:
    dave = gateway.ring.create_key("dave@police.test", "Dave Officer")
    await gateway.enrol(dave)
    gateway.sink.refuse = True
    await gateway.send(signed_request_mail(gateway.ring, dave, from_addr=dave.email,
                                           body=request_body(type="preservation")))
    await gateway.settle()
    await gateway.import_key(gateway.ring.revoke(dave))
    gateway.sink.refuse = False
    await gateway.gateway.outbox.send_due()
    await gateway.settle()
    assert gateway.sink.received == []
    from sqlalchemy import select

    from gateway.models import Outbox
    async with gateway.core.db.transaction() as session:
        [row] = (await session.scalars(select(Outbox))).all()
    assert row.state == "held" and row.last_error == "the recipient's key is revoked"
