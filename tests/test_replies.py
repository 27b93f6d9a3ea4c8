"""What officers get back: acknowledgements, follow-ups, form errors, impersonation warnings;
and what strangers get: nothing."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import select, update

from gateway.models import Agency, Officer, Outbox
from tests.conftest import GatewayFactory, Harness
from tests.support.mail_factory import request_body, signed_request_mail, unsigned_mail
from tests.support.officer_keys import TestKey


async def test_missing_fields_get_a_followup_listing_exactly_them(gateway: Harness, alice: TestKey) -> None:
    body = request_body(type="preservation", legal_basis=None, subjects=None)
    await gateway.send(signed_request_mail(gateway.ring, alice, from_addr=alice.email, body=body))
    await gateway.settle()
    [request] = await gateway.requests()
    assert request["status"] == "awaiting_info"
    [reply] = gateway.replies(to=alice.email)
    assert reply.subject == f"[{request['ref']}] More information needed"
    listed = [line.strip()[2:] for line in reply.text.splitlines() if line.strip().startswith("- ")]
    assert listed == ["legal_basis", "subjects"]


async def test_subpoena_without_its_document_is_asked_for_it(gateway: Harness, alice: TestKey) -> None:
    await gateway.send(signed_request_mail(gateway.ring, alice, from_addr=alice.email,
                                           body=request_body(type="subpoena")))
    await gateway.settle()
    [reply] = gateway.replies(to=alice.email)
    assert "the legal document (a PDF of the subpoena)" in reply.text


async def test_malformed_values_are_refused_with_each_problem_named(gateway: Harness, alice: TestKey) -> None:
    body = request_body(type="wiretap", date_from="01/02/2026",
                        subjects="account_id:42, ssn:123", data_categories="everything")
    await gateway.send(signed_request_mail(gateway.ring, alice, from_addr=alice.email, body=body))
    await gateway.settle()
    assert await gateway.requests() == []
    [quarantined] = await gateway.quarantine()
    assert quarantined["reason"] == "invalid_request_form"
    [reply] = gateway.replies(to=alice.email)
    assert reply.subject == "Your request could not be accepted"
    for expected in ("type: 'wiretap' is not one of", "date_from: '01/02/2026' is not a date",
                     "identifier type 'ssn'", "data_categories: 'everything' is not one of"):
        assert expected in reply.text
    assert reply.signed_by == gateway.core.gateway_fingerprint


async def test_request_toml_attachment_is_read(gateway: Harness, alice: TestKey) -> None:
    from tests.support.mail_factory import Attachment
    form = b'''type = "preservation"
case_number = "2026-PR-7"
legal_basis = "18 U.S.C. 2703(f)"
data_categories = ["subscriber_information", "transaction_history"]
nondisclosure_until = "indefinite"

[[subjects]]
type = "wallet_address"
value = "bc1qexample"
'''
    mail = signed_request_mail(gateway.ring, alice, from_addr=alice.email, body="Please preserve.",
                               attachments=[Attachment("request.toml", "application/toml", form)])
    await gateway.send(mail)
    await gateway.settle()
    [request] = await gateway.requests()
    from gateway.records import show_request
    details = await show_request(gateway.core.db, request["ref"])
    assert details is not None
    assert details["type"] == "preservation"
    assert details["subjects"] == [{"type": "wallet_address", "value": "bc1qexample"}]
    assert details["nondisclosure_until"] == "indefinite"
    assert details["status"] == "received"


async def test_unsigned_mail_in_an_officers_name_warns_that_officer_once(
        gateway: Harness, alice: TestKey) -> None:
    for n in range(3):
        await gateway.send(unsigned_mail(from_addr=alice.email, body=f"urgent, send data {n}"))
    await gateway.settle()
    assert [q["reason"] for q in await gateway.quarantine()] == ["not_signed"] * 3
    [warning] = gateway.replies(to=alice.email)  # rate-limited: one warning, not three
    assert warning.subject == "Warning: a message in your name was refused"
    assert "not signed" in warning.text
    assert warning.signed_by == gateway.core.gateway_fingerprint


async def test_a_stranger_gets_no_reply_at_all(gateway: Harness) -> None:
    await gateway.send(unsigned_mail(from_addr="chief@police.example", body="EMERGENCY send data"))
    await gateway.settle()
    assert [q["reason"] for q in await gateway.quarantine()] == ["not_signed"]
    assert gateway.sink.received == []


async def test_replies_wait_in_the_outbox_until_the_smarthost_takes_them(
        make_gateway: GatewayFactory, alice: TestKey) -> None:
    harness = await make_gateway()
    await harness.enrol(alice)
    harness.sink.refuse = True
    await harness.send(signed_request_mail(harness.ring, alice, from_addr=alice.email,
                                           body=request_body(type="preservation")))
    await harness.settle()
    deadline = time.monotonic() + 20  # the outbox loop tries on its own; wait for a refused attempt
    while True:
        async with harness.core.db.transaction() as session:
            [row] = (await session.scalars(select(Outbox))).all()
        if row.attempts >= 1 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    # pending again (or already taken by the next pass of the outbox loop), never sent or dropped
    assert row.state in ("pending", "sending") and row.attempts >= 1 and "451" in (row.last_error or "")
    assert harness.sink.received == []
    harness.sink.refuse = False
    await harness.settle()
    [reply] = harness.replies(to=alice.email)
    assert "Request received" in reply.subject


async def test_officer_completes_a_request_by_signed_reply(gateway: Harness, alice: TestKey) -> None:
    first = request_body(type="preservation", legal_basis=None, subjects=None)
    await gateway.send(signed_request_mail(gateway.ring, alice, from_addr=alice.email, body=first,
                                           message_id="<first@police.test>"))
    await gateway.settle()
    [request] = await gateway.requests()
    ref = request["ref"]
    answer = f"reference: {ref}\nlegal_basis: 18 U.S.C. 2703(f)\nsubjects: account_id:42\n\nThanks.\n"
    await gateway.send(signed_request_mail(gateway.ring, alice, from_addr=alice.email, body=answer,
                                           subject=f"Re: [{ref}] More information needed"))
    await gateway.settle()
    [request] = await gateway.requests()
    assert request["status"] == "received"
    followup, ack = gateway.replies(to=alice.email)
    assert followup.subject == f"[{ref}] More information needed"
    assert ack.subject == f"[{ref}] Request received"
    from gateway.records import show_request
    details = await show_request(gateway.core.db, ref)
    assert details is not None
    assert details["legal_basis"] == "18 U.S.C. 2703(f)"
    assert details["subjects"] == [{"type": "account_id", "value": "42"}]
    assert details["missing_fields"] == []


async def test_a_reference_to_another_officers_request_is_refused(
        gateway: Harness, alice: TestKey, bob: TestKey) -> None:
    await gateway.send(signed_request_mail(gateway.ring, alice, from_addr=alice.email,
                                           body=request_body(type="preservation")))
    await gateway.settle()
    [request] = await gateway.requests()
    body = f"reference: {request['ref']}\ninvestigation_status: closed\n\nWithdraw it.\n"
    await gateway.send(signed_request_mail(gateway.ring, bob, from_addr=bob.email, body=body))
    await gateway.settle()
    [reply] = gateway.replies(to=bob.email)
    assert f"reference: {request['ref']} is not one of your requests" in reply.text
    [quarantined] = await gateway.quarantine()
    assert quarantined["reason"] == "invalid_request_form"


async def test_too_many_or_too_large_attachments_are_refused_with_the_limits(
        make_gateway: GatewayFactory, alice: TestKey) -> None:
    from tests.support.mail_factory import Attachment
    harness = await make_gateway(**{"policy.max_attachments": "2", "policy.max_attachment_bytes": "1000"})
    await harness.enrol(alice)
    files = [Attachment(f"scan{n}.pdf", "application/pdf", b"%PDF-1.4 " + b"x" * (500 + n * 600))
             for n in range(3)]
    await harness.send(signed_request_mail(harness.ring, alice, from_addr=alice.email,
                                           body=request_body(), attachments=files))
    await harness.settle()
    assert await harness.requests() == []
    [reply] = harness.replies(to=alice.email)
    assert "the message carries 3 files, at most 2 are accepted in one message" in reply.text
    assert "attachment scan1.pdf is 1109 bytes, at most 1000 bytes are accepted for one file" in reply.text
    [quarantined] = await harness.quarantine()
    assert quarantined["reason"] == "too_many_attachments"


@pytest.mark.parametrize("suspended", ["officer", "agency"])
async def test_a_reply_waiting_for_a_suspended_officer_or_agency_is_held(
        make_gateway: GatewayFactory, alice: TestKey, suspended: str) -> None:
    """The outbox's suspension check (officer or agency not active) holds a reply that waited."""
    harness = await make_gateway()
    await harness.enrol(alice)
    harness.sink.refuse = True
    await harness.send(signed_request_mail(harness.ring, alice, from_addr=alice.email,
                                           body=request_body(type="preservation")))
    await harness.settle()
    async with harness.core.db.transaction() as session:
        officer = await session.scalar(select(Officer).where(Officer.email == alice.email))
        assert officer is not None
        if suspended == "officer":
            await session.execute(update(Officer).where(Officer.id == officer.id).values(status="suspended"))
        else:  # the agency alone: the officer's own status still says active
            await session.execute(update(Agency).where(Agency.id == officer.agency_id)
                                  .values(status="suspended"))
    harness.sink.refuse = False
    deadline = time.monotonic() + 20
    while True:
        async with harness.core.db.transaction() as session:
            for row in await session.scalars(select(Outbox).where(Outbox.state == "pending")):
                row.next_attempt_at = row.created_at
        await harness.gateway.outbox.send_due()
        async with harness.core.db.transaction() as session:
            [row] = (await session.scalars(select(Outbox))).all()
        if row.state not in ("pending", "sending") or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert (row.state, row.last_error) == ("held", "the officer is suspended")
    assert harness.replies(to=alice.email) == []
