"""An officer emails a signed request over real SMTP; the gateway answers over real SMTP."""

from __future__ import annotations

import re

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
