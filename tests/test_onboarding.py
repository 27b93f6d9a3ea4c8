"""Officer onboarding end to end: enrolment by signed mail decided by reviewers in Telegram,
agency keys that certify officers, key rotation, revocation, suspension and expiry warnings.

Keys, certifications and revocations are made at test time with the real gpg (the agency in a
keyring of its own); mail goes over real SMTP, the reviewers' chat through the Bot API stand-in.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gateway.models import AuditEntry, Outbox
from gateway.scheduler import warn_of_key_expiry
from handlers.enrolment import add_agency, add_reviewer
from handlers.officers import (
    OfficerError,
    list_officers,
    reinstate_officer,
    revoke_key,
    suspend_agency,
    suspend_officer,
)
from tests.conftest import AGENCY, GATEWAY_ADDRESS, GatewayFactory, Harness, short_tempdir
from tests.support.agency_keys import certify, revocation_certificate
from tests.support.mail_factory import Attachment, pdf_bytes, request_body, signed_request_mail
from tests.support.officer_keys import OfficerKeyring, TestKey
from tests.support.telegram_stub import FakeBotApi
from tests.test_chat import ANNA, BERT, RITA, TOKEN, say

REPO = Path(__file__).resolve().parent.parent
ENROLMENT_FORM = """enrolment: yes
name: Carol Detective
rank: Detective Sergeant
unit: Cyber Crime Unit
agency: Test Police
country: XX
phone: +44 20 7946 0000
supervisor_name: Inspector Dana Lead
supervisor_contact: dana.lead@police.test, +44 20 7946 0001

Please enrol me; my warrant card and letter of authority are attached.
"""
DOCUMENTS = [Attachment("warrant-card.pdf", "application/pdf", pdf_bytes("Warrant card 4711")),
             Attachment("letter-of-authority.pdf", "application/pdf", pdf_bytes("Letter of authority"))]
CHECK = "called back Test Police's published number +44 20 7946 0999, duty sergeant confirmed Carol"


def key_file(armored: bytes, name: str = "officer.asc") -> Attachment:
    return Attachment(name, "application/pgp-keys", armored)


@pytest.fixture(scope="module")
def agency_ring() -> Iterator[OfficerKeyring]:
    """The agency's own keyring, apart from the officers' (as at a real agency)."""
    home = short_tempdir("agency-")
    ring = OfficerKeyring(home / "gnupg")
    yield ring
    ring.close()
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def agency_key(agency_ring: OfficerKeyring) -> TestKey:
    return agency_ring.create_key("pki@police.test", "Test Police CA")


@pytest.fixture
async def api() -> AsyncIterator[FakeBotApi]:
    async with FakeBotApi(TOKEN) as server:
        yield server


@pytest.fixture
async def onboarding(api: FakeBotApi, make_gateway: GatewayFactory, alice: TestKey) -> Harness:
    """A gateway with the chat bot, the agency (no key), alice enrolled, three reviewers."""
    harness: Harness = await make_gateway(**chat_settings(api))
    await harness.enrol(alice)
    await add_reviewer(harness.core, RITA, "Rita", "reviewer")
    await add_reviewer(harness.core, ANNA, "Anna", "approver")
    await add_reviewer(harness.core, BERT, "Bert", "approver")
    return harness


def chat_settings(api: FakeBotApi, **extra: str) -> dict[str, str]:
    return {"telegram.enabled": "true", "telegram.token": TOKEN, "telegram.base_url": api.base_url,
            "telegram.base_file_url": api.base_file_url, "telegram.poll_timeout_seconds": "1", **extra}


async def send_enrolment(gateway: Harness, officer: TestKey, *, attached: bytes | None = None,
                         body: str = ENROLMENT_FORM, from_addr: str | None = None) -> None:
    attachments = [key_file(attached if attached is not None else officer.public_armored), *DOCUMENTS]
    await gateway.send(signed_request_mail(gateway.ring, officer, from_addr=from_addr or officer.email,
                                           body=body, attachments=attachments))
    await gateway.settle()


async def send_request(gateway: Harness, officer: TestKey, attachments: list[Attachment] | None = None,
                       **fields: str) -> None:
    await gateway.send(signed_request_mail(gateway.ring, officer, from_addr=officer.email,
                                           body=request_body(type="preservation", **fields),
                                           attachments=attachments or []))
    await gateway.settle()


async def audit_entries(gateway: Harness, action: str) -> list[AuditEntry]:
    async with gateway.core.db.transaction() as session:
        return list(await session.scalars(select(AuditEntry).where(AuditEntry.action == action)
                                          .order_by(AuditEntry.id)))


async def notice_to(api: FakeBotApi, reviewer: int, starting: str) -> str:
    call = await api.wait_for_sent(lambda c: c.method == "sendMessage" and c.chat_id == reviewer
                                   and str(c.params["text"]).startswith(starting), timeout=10)
    return str(call.params["text"])


# --- enrolment by signed mail, decided in chat ----------------------------------------------


async def test_enrolment_from_mail_to_an_enrolled_officer_whose_request_is_accepted(
        onboarding: Harness, api: FakeBotApi, officer_ring: OfficerKeyring) -> None:
    carol = officer_ring.create_key("carol@police.test", "Carol Detective")
    await send_enrolment(onboarding, carol)
    [ack] = onboarding.replies(to=carol.email)
    assert ack.subject == "Enrolment 1 received: waiting for review"
    assert ack.signed_by == onboarding.core.gateway_fingerprint  # signed, and encrypted to carol
    assert f"Your key:         {carol.fingerprint}" in ack.text and "warrant-card.pdf (sha256 " in ack.text
    notice = await notice_to(api, ANNA, "🪪 Enrolment 1 waits for review")
    assert "Carol Detective, Detective Sergeant, Cyber Crime Unit, Test Police (XX)" in notice

    await send_request(onboarding, carol)  # not trusted yet: the mail alone proves nothing
    assert [q["reason"] for q in await onboarding.quarantine()] == ["key_not_registered"]

    listing = await say(api, RITA, "/enrolments")
    assert "1: Carol Detective <carol@police.test>, Test Police (XX)" in listing.params["text"]
    already = len(api.sent)
    shown = await say(api, RITA, "/enrolment 1")
    text = shown.params["text"]
    assert f"Key: {carol.fingerprint}" in text and "Rank: Detective Sergeant" in text
    assert "Mail domain police.test belongs to registered agency Test Police (active), 1 active " \
        "officer(s) enrolled" in text
    assert "never a number from the mail" in text
    await api.wait_for_sent(lambda c: c.method == "sendDocument" and c.chat_id == RITA, after=already,
                            timeout=10)
    await api.wait_for_sent(lambda c: c.method == "sendDocument" and c.chat_id == RITA
                            and "letter-of-authority.pdf" in str(c.params.get("caption")), timeout=10)
    captions = {(d.caption or "").split("\n")[0] for d in api.documents_to(RITA)}
    assert {"warrant-card.pdf", "letter-of-authority.pdf", "officer.asc"} <= captions

    denied = await say(api, RITA, f"/enrol 1 {CHECK}")
    assert denied.params["text"] == "Only an approver or admin may enrol officers; your role is reviewer."
    lazy = await say(api, ANNA, "/enrol 1 ok")
    assert lazy.params["text"].startswith("Usage: /enrol ID how-you-checked")
    done = await say(api, ANNA, f"/enrol 1 {CHECK}")
    assert done.params["text"] == ("carol@police.test is enrolled (Test Police); they are told by "
                                   "signed, encrypted email.")
    await onboarding.settle()
    decision = onboarding.replies(to=carol.email)[-1]
    assert decision.subject == "Enrolment accepted (enrolment 1)"
    assert "You are enrolled as an officer of Test Police." in decision.text

    await send_request(onboarding, carol, case_number="2026-CR-0044")
    requests = await onboarding.requests()
    assert len(requests) == 1, await onboarding.quarantine()
    [request] = requests
    assert request["officer"] == carol.email
    assert onboarding.replies(to=carol.email)[-1].subject == f"[{request['ref']}] Request received"
    [enrolled] = [e for e in await audit_entries(onboarding, "officer.enrolled") if e.subject == carol.email]
    assert enrolled.actor == f"reviewer:{ANNA}" and enrolled.details["check"] == CHECK
    assert [e.subject for e in await audit_entries(onboarding, "enrolment.received")] == ["enrolment:1"]
    [row] = [r for r in await list_officers(onboarding.core.db) if r["email"] == carol.email]
    assert row["enrolled_via"] == "enrolment" and row["status"] == "active"


async def test_two_approvers_and_a_refusal(api: FakeBotApi, make_gateway: GatewayFactory,
                                           officer_ring: OfficerKeyring) -> None:
    gateway: Harness = await make_gateway(**chat_settings(api, **{"review.enrolment_approvals": "2"}))
    await add_agency(gateway.core, AGENCY, domain="police.test", country="XX")
    for reviewer, name in ((ANNA, "Anna"), (BERT, "Bert")):
        await add_reviewer(gateway.core, reviewer, name, "approver")
    carol = officer_ring.create_key("carol2@police.test", "Carol Detective")
    mallory = officer_ring.create_key("mallory@police.test", "Mallory")
    await send_enrolment(gateway, carol)
    await send_enrolment(gateway, mallory)

    first = await say(api, ANNA, f"/enrol 1 {CHECK}")
    assert first.params["text"].startswith("Approval of enrolment 1 recorded. A second approver")
    again = await say(api, ANNA, f"/enrol 1 {CHECK}")
    assert again.params["text"].startswith("You have already approved enrolment 1")
    second = await say(api, BERT, "/enrol 1 called the agency switchboard (published on its website)")
    assert second.params["text"].startswith("carol2@police.test is enrolled (Test Police)")

    refused = await say(api, BERT, "/refuse 2 the agency does not know this person")
    assert refused.params["text"] == ("Enrolment 2 refused; mallory@police.test is told the reason by "
                                      "signed, encrypted email.")
    assert (await say(api, ANNA, "/refuse 2 again")).params["text"] == (
        "Enrolment 2 is refused: it cannot be decided now.")
    await gateway.settle()
    told = gateway.replies(to=mallory.email)[-1]
    assert told.subject == "Enrolment refused (enrolment 2)"
    assert "Reason: the agency does not know this person" in told.text
    await send_request(gateway, mallory)
    assert [q["reason"] for q in await gateway.quarantine()] == ["key_not_registered"]
    assert [e.details["reason"] for e in await audit_entries(gateway, "enrolment.refused")] == [
        "the agency does not know this person"]


async def test_an_attached_key_that_is_not_the_signing_key_is_refused(
        onboarding: Harness, officer_ring: OfficerKeyring, bob: TestKey) -> None:
    carol = officer_ring.create_key("carol3@police.test", "Carol Detective")
    await send_enrolment(onboarding, carol, attached=bob.public_armored)
    [refused] = await onboarding.quarantine()
    assert refused["reason"] == "attached_key_mismatch"
    assert carol.fingerprint in refused["detail"] and bob.fingerprint in refused["detail"]
    # signed by an unknown key, the From is nobody's we trust: nobody is answered
    assert onboarding.sink.received == []
    async with onboarding.core.db.transaction() as session:
        assert await onboarding.core.pgp.key_status(carol.fingerprint) is None  # never imported
        assert not list(await session.scalars(select(Outbox)))


async def test_an_enrolment_whose_from_is_not_a_user_id_of_the_key_or_whose_form_is_incomplete(
        onboarding: Harness, officer_ring: OfficerKeyring) -> None:
    carol = officer_ring.create_key("carol4@police.test", "Carol Detective")
    await send_enrolment(onboarding, carol, from_addr="chief@police.test")
    await send_enrolment(onboarding, carol, body="enrolment: yes\nname: Carol\n\nPlease enrol me.\n")
    reasons = [q["reason"] for q in await onboarding.quarantine()]
    assert reasons == ["from_mismatch", "invalid_enrolment"]
    [reply] = onboarding.replies(to=carol.email)  # the key proved itself: it hears what is missing
    assert reply.subject == "Your enrolment could not be accepted"
    assert "missing: rank" in reply.text and "missing: supervisor_contact" in reply.text


async def test_enrolment_for_an_address_already_enrolled_is_refused_and_the_officer_warned(
        onboarding: Harness, officer_ring: OfficerKeyring, alice: TestKey) -> None:
    """A hijacked mailbox cannot bring in a new key for an enrolled officer."""
    impostor = officer_ring.create_key(alice.email, "Alice Officer")
    await send_enrolment(onboarding, impostor)
    [refused] = await onboarding.quarantine()
    assert refused["reason"] == "key_not_registered" and "already enrolled" in refused["detail"]
    [warning] = onboarding.replies(to=alice.email)
    assert warning.subject == "Warning: a message in your name was refused"


# --- agency keys --------------------------------------------------------------------------


async def agency_gateway(make_gateway: GatewayFactory, agency_key: TestKey) -> Harness:
    gateway: Harness = await make_gateway()
    await add_agency(gateway.core, AGENCY, domain="police.test", country="XX",
                     key_data=agency_key.public_armored)
    return gateway


async def test_an_officer_certified_by_a_registered_agency_key_is_accepted(
        make_gateway: GatewayFactory, officer_ring: OfficerKeyring, agency_ring: OfficerKeyring,
        agency_key: TestKey) -> None:
    gateway = await agency_gateway(make_gateway, agency_key)
    dave = officer_ring.create_key("dave@police.test", "Dave Constable")
    certified = certify(agency_ring, agency_key, dave.public_armored, dave)
    await send_request(gateway, dave, attachments=[key_file(certified)])
    [request] = await gateway.requests()
    assert request["officer"] == dave.email
    assert gateway.replies(to=dave.email)[-1].subject == f"[{request['ref']}] Request received"
    [enrolled] = await audit_entries(gateway, "officer.enrolled")
    assert enrolled.actor == f"agency:{agency_key.fingerprint}"
    assert enrolled.details["via"] == "agency_certification" and enrolled.details["agency"] == AGENCY
    [row] = await list_officers(gateway.core.db)
    assert (row["email"], row["enrolled_via"], row["agency"]) == (dave.email, "agency", AGENCY)
    await send_request(gateway, dave, case_number="2026-CR-0043")  # the key is now in our keyring
    assert len(await gateway.requests()) == 2


async def test_a_certification_by_an_unregistered_or_revoked_agency_key_is_refused(
        make_gateway: GatewayFactory, officer_ring: OfficerKeyring, agency_ring: OfficerKeyring,
        agency_key: TestKey) -> None:
    gateway = await agency_gateway(make_gateway, agency_key)
    rogue = agency_ring.create_key("pki@rogue.test", "Rogue CA")
    erin = officer_ring.create_key("erin@police.test", "Erin Constable")
    await send_request(gateway, erin, attachments=[key_file(certify(agency_ring, rogue, erin.public_armored,
                                                                    erin))])
    revoked_agency = agency_ring.create_key("pki@revoked.test", "Revoked Police CA")
    await add_agency(gateway.core, "Revoked Police", domain="police.test",
                     key_data=revoked_agency.public_armored)
    frank = officer_ring.create_key("frank@police.test", "Frank Constable")
    certified = certify(agency_ring, revoked_agency, frank.public_armored, frank)
    revoked = await revoke_key(gateway.core.db, gateway.core.pgp,
                               revocation_certificate(agency_ring, revoked_agency), "operator")
    assert revoked == [f"{revoked_agency.fingerprint} (agency Revoked Police)"]
    await send_request(gateway, frank, attachments=[key_file(certified)])
    details = {q["claimed_from"]: (q["reason"], q["detail"]) for q in await gateway.quarantine()}
    assert details[erin.email][0] == "key_not_registered"
    assert f"certified by {rogue.fingerprint}, which is no registered agency's key" in details[erin.email][1]
    assert details[frank.email][0] == "key_not_registered"
    assert "certified by Revoked Police's key, which is revoked" in details[frank.email][1]
    assert await gateway.requests() == [] and gateway.sink.received == []
    # their keys came with the refused mail and left with it: forged-key mail cannot grow the keyring
    assert await gateway.core.pgp.key_status(erin.fingerprint) is None
    assert await gateway.core.pgp.key_status(frank.fingerprint) is None
    assert await gateway.core.pgp.key_status(revoked_agency.fingerprint) is not None


async def test_an_agency_registered_without_a_key_gets_one_later_and_can_replace_it(
        make_gateway: GatewayFactory, officer_ring: OfficerKeyring, agency_ring: OfficerKeyring,
        agency_key: TestKey, tmp_path: Path) -> None:
    gateway: Harness = await make_gateway()
    await add_agency(gateway.core, AGENCY, domain="police.test", country="XX")
    dave = officer_ring.create_key("dave@police.test", "Dave Constable")
    await send_request(gateway, dave, attachments=[key_file(certify(agency_ring, agency_key,
                                                                    dave.public_armored, dave))])
    assert [q["reason"] for q in await gateway.quarantine()] == ["key_not_registered"]
    key_path = tmp_path / "agency.asc"
    key_path.write_bytes(agency_key.public_armored)
    done = await asyncio.to_thread(lers, gateway, "agency", "set-key", AGENCY, "--key", str(key_path))
    assert done.stdout.strip() == f"agency key set: {AGENCY} {agency_key.fingerprint}", done.stderr
    await send_request(gateway, dave, case_number="2026-CR-0051",
                       attachments=[key_file(certify(agency_ring, agency_key, dave.public_armored, dave))])
    [request] = await gateway.requests()
    assert request["officer"] == dave.email

    successor = agency_ring.create_key("pki2@police.test", "Test Police CA 2027")
    key_path.write_bytes(successor.public_armored)
    replaced = await asyncio.to_thread(lers, gateway, "agency", "set-key", AGENCY, "--key", str(key_path))
    assert replaced.stdout.strip() == (f"agency key set: {AGENCY} {successor.fingerprint} (replaces "
                                       f"{agency_key.fingerprint}: its certifications no longer enrol "
                                       "officers)")
    again = await asyncio.to_thread(lers, gateway, "agency", "set-key", AGENCY, "--key", str(key_path))
    assert again.returncode == 1
    assert again.stderr.strip() == f"lers: error: {successor.fingerprint} is already {AGENCY}'s agency key"
    erin = officer_ring.create_key("erin@police.test", "Erin Constable")
    await send_request(gateway, erin, attachments=[key_file(certify(agency_ring, agency_key,
                                                                    erin.public_armored, erin))])
    frank = officer_ring.create_key("frank@police.test", "Frank Constable")
    await send_request(gateway, frank, attachments=[key_file(certify(agency_ring, successor,
                                                                     frank.public_armored, frank))])
    assert sorted(r["officer"] for r in await gateway.requests()) == [dave.email, frank.email]
    refused = {q["claimed_from"]: q["detail"] for q in await gateway.quarantine()}
    assert "which is no registered agency's key" in refused[erin.email]
    [entry, replacement] = await audit_entries(gateway, "agency.key_set")
    assert (entry.details["key"], entry.details["previous"]) == (agency_key.fingerprint, None)
    assert replacement.details["previous"] == agency_key.fingerprint


async def test_a_domain_scoped_trust_signature_holds_only_inside_its_domain(
        make_gateway: GatewayFactory, officer_ring: OfficerKeyring, agency_ring: OfficerKeyring,
        agency_key: TestKey) -> None:
    gateway = await agency_gateway(make_gateway, agency_key)
    inside = officer_ring.create_key("gus@cyber.police.test", "Gus Analyst")
    outside = officer_ring.create_key("gus@elsewhere.test", "Gus Analyst")
    for officer in (inside, outside):
        scoped = certify(agency_ring, agency_key, officer.public_armored, officer, trust_domain="police.test")
        await send_request(gateway, officer, attachments=[key_file(scoped)])
    [request] = await gateway.requests()
    assert request["officer"] == inside.email
    [refused] = await gateway.quarantine()
    assert refused["reason"] == "key_not_registered"
    assert ("trust signature is limited to police.test, and gus@elsewhere.test is outside it"
            in refused["detail"])


# --- life cycle ---------------------------------------------------------------------------


async def test_key_rotation_needs_the_current_key_and_its_certification_of_the_new_one(
        gateway: Harness, officer_ring: OfficerKeyring) -> None:
    old = officer_ring.create_key("hana@police.test", "Hana Officer")
    await gateway.enrol(old)
    new = officer_ring.create_key("hana@police.test", "Hana Officer")
    rotation = "key_rotation: yes\n\nMy new key is attached.\n"
    mail = signed_request_mail(gateway.ring, old, from_addr=old.email, body=rotation,
                               attachments=[key_file(new.public_armored)])
    await gateway.send(mail)
    await gateway.settle()
    [refused] = gateway.replies(to=old.email)
    assert refused.subject == "Your key change could not be accepted"
    assert f"gpg --local-user {old.fingerprint} --quick-sign-key {new.fingerprint}" in refused.text

    gateway.ring.run("--local-user", f"{old.fingerprint}!", "--quick-sign-key", new.fingerprint, new.uid)
    cross_signed = gateway.ring.public_key_by_fingerprint(new.fingerprint)
    await gateway.send(signed_request_mail(gateway.ring, old, from_addr=old.email, body=rotation + "\n",
                                           attachments=[key_file(cross_signed)]))
    await gateway.settle()
    changed = [r for r in gateway.replies(to=old.email) if r.subject == "Your key has been changed"]
    assert len(changed) == 2  # encrypted to the new key, and to the old one in case it was not them
    assert f"New key:      {new.fingerprint}" in changed[0].text
    await send_request(gateway, new)
    assert [r["officer"] for r in await gateway.requests()] == [old.email]
    await send_request(gateway, old, case_number="2026-CR-0099")
    assert (await gateway.quarantine())[-1]["reason"] == "key_not_registered"
    [rotated] = await audit_entries(gateway, "officer.key_rotated")
    assert rotated.details["old_key"] == old.fingerprint and rotated.details["new_key"] == new.fingerprint


async def test_a_revoked_key_stops_a_queued_reply_and_every_later_message(
        gateway: Harness, officer_ring: OfficerKeyring) -> None:
    ivy = officer_ring.create_key("ivy@police.test", "Ivy Officer")
    await gateway.enrol(ivy)
    gateway.sink.refuse = True  # the smarthost is down: the acknowledgement waits in the outbox
    await send_request(gateway, ivy)
    revoked = await revoke_key(gateway.core.db, gateway.core.pgp, revocation_certificate(officer_ring, ivy),
                               "operator")
    assert revoked == [f"{ivy.fingerprint} (officer {ivy.email})"]
    # the smarthost keeps refusing until the reply is held: an attempt already under way when the
    # key was revoked could otherwise reach it (the smarthost says 451 only at DATA)
    await retry_outbox(gateway)
    gateway.sink.refuse = False
    await retry_outbox(gateway)
    assert gateway.replies(to=ivy.email) == []
    assert await outbox_states(gateway, ivy.email) == [("held", "the recipient's key is revoked")]
    await send_request(gateway, ivy, case_number="2026-CR-0100")
    assert (await gateway.quarantine())[-1]["reason"] == "revoked_key"
    [row] = [r for r in await list_officers(gateway.core.db) if r["email"] == ivy.email]
    assert row["key_revoked"] is True


async def retry_outbox(gateway: Harness, within: float = 20) -> None:
    """Make every waiting reply due now and run the outbox until none is waiting or being sent
    (the gateway's own outbox loop may hold a row mid-send meanwhile; bounded)."""
    deadline = time.monotonic() + within
    while True:
        async with gateway.core.db.transaction() as session:
            for row in await session.scalars(select(Outbox).where(Outbox.state == "pending")):
                row.next_attempt_at = row.created_at
        await gateway.gateway.outbox.send_due()
        async with gateway.core.db.transaction() as session:
            busy = list(await session.scalars(select(Outbox.id).where(
                Outbox.state.in_(["pending", "sending"]))))
        if not busy or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.05)


async def outbox_states(gateway: Harness, recipient: str) -> list[tuple[str, Any]]:
    async with gateway.core.db.transaction() as session:
        return [(r.state, r.last_error) for r in await session.scalars(
            select(Outbox).where(Outbox.recipient == recipient).order_by(Outbox.id))]


async def test_suspension_refuses_messages_and_holds_replies_until_reinstated(
        onboarding: Harness, api: FakeBotApi, alice: TestKey) -> None:
    onboarding.sink.refuse = True
    await send_request(onboarding, alice)
    suspended = await say(api, RITA, f"/suspend {alice.email} mailbox reported compromised")
    assert suspended.params["text"].startswith(f"{alice.email} is suspended")
    await retry_outbox(onboarding)  # still refusing: see the revoked-key test
    onboarding.sink.refuse = False
    await retry_outbox(onboarding)
    assert await outbox_states(onboarding, alice.email) == [("held", "the officer is suspended")]
    await send_request(onboarding, alice, case_number="2026-CR-0101")
    [refused] = await onboarding.quarantine()
    assert (refused["reason"], refused["detail"]) == (
        "officer_suspended", "the officer is suspended: mailbox reported compromised")
    assert onboarding.replies(to=alice.email) == []
    _, released = await reinstate_officer(onboarding.core.db, alice.email, "operator")
    assert released == 1
    await onboarding.settle()
    assert [r.subject.split("] ")[1] for r in onboarding.replies(to=alice.email)] == ["Request received"]
    assert [e.actor for e in await audit_entries(onboarding, "officer.suspended")] == [f"reviewer:{RITA}"]


async def test_agency_suspension_suspends_its_officers(gateway: Harness, alice: TestKey,
                                                       bob: TestKey) -> None:
    _, count = await suspend_agency(gateway.core.db, AGENCY, "under investigation", "operator")
    assert count == 2
    await send_request(gateway, alice)
    [refused] = await gateway.quarantine()
    assert refused["reason"] == "agency_suspended"
    assert {r["status"] for r in await list_officers(gateway.core.db)} == {"agency_suspended"}
    with pytest.raises(OfficerError, match="is not suspended"):
        await reinstate_officer(gateway.core.db, bob.email, "operator")
    await suspend_officer(gateway.core.db, bob.email, "left the force", "operator")
    [row] = [r for r in await list_officers(gateway.core.db) if r["email"] == bob.email]
    assert row["reason"] == "left the force"


async def test_officers_are_warned_once_a_month_before_their_key_expires(
        gateway: Harness, officer_ring: OfficerKeyring) -> None:
    soon = officer_ring.create_key("june@police.test", "June Officer", expires_days=20)
    later = officer_ring.create_key("kai@police.test", "Kai Officer", expires_days=90)
    await gateway.enrol(soon)
    await gateway.enrol(later)
    assert await warn_of_key_expiry(gateway.settings, gateway.core.db) == 1
    assert await warn_of_key_expiry(gateway.settings, gateway.core.db) == 0  # sent once
    await gateway.settle()
    [warning] = gateway.replies(to=soon.email)
    assert warning.subject == "Your key expires soon" and soon.fingerprint in warning.text
    assert gateway.replies(to=later.email) == []


# --- reputation ----------------------------------------------------------------------------


async def test_reviewers_see_history_and_recent_spoofs_of_the_officer(
        onboarding: Harness, api: FakeBotApi, alice: TestKey, bob: TestKey) -> None:
    await send_request(onboarding, alice)
    first = await notice_to(api, ANNA, "New request LERS-")
    assert "History: first request from this officer and from Test Police" in first
    assert "Enrolled " in first and "by an operator" in first
    forged = signed_request_mail(onboarding.ring, bob, from_addr=alice.email, body=request_body())
    await onboarding.send(forged)
    await onboarding.settle()
    await send_request(onboarding, alice, case_number="2026-CR-0777")
    refs = [r["ref"] for r in await onboarding.requests()]
    shown = (await say(api, RITA, f"/show {refs[1]}")).params["text"]
    assert "History: 1 earlier request(s) from this officer (1 received); 1 from Test Police" in shown
    assert f"⚠️ 1 refused message(s) claimed {alice.email} in the last 30 days: unknown_key ×1" in shown


# --- the operator's commands ----------------------------------------------------------------


def lers(gateway: Harness, *args: str) -> subprocess.CompletedProcess[str]:
    """The `lers` command as an operator runs it beside the running gateway (same data dir)."""
    overrides = ["--set", f"gateway.address={GATEWAY_ADDRESS}",
                 "--set", f"gateway.data_dir={gateway.settings.data_dir}"]
    if gateway.settings.storage.url:
        overrides += ["--set", f"storage.url={gateway.settings.storage.url}"]
    return subprocess.run([sys.executable, "-m", "gateway", *overrides, *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "LERS_CONFIG": os.devnull})


async def test_operators_list_suspend_reinstate_and_revoke_from_the_cli(
        gateway: Harness, officer_ring: OfficerKeyring, alice: TestKey, tmp_path: Path) -> None:
    lena = officer_ring.create_key("lena@police.test", "Lena Officer", expires_days=200)
    await gateway.enrol(lena)
    suspended = await asyncio.to_thread(lers, gateway, "officer", "suspend", alice.email, "--reason",
                                        "on leave")
    assert suspended.stdout.strip() == (f"officer suspended: {alice.email} (on leave); their messages "
                                        "are refused and replies to them are held")
    revocation = tmp_path / "lena.rev"
    revocation.write_bytes(revocation_certificate(officer_ring, lena))
    revoked = await asyncio.to_thread(lers, gateway, "officer", "revoke-key", str(revocation))
    assert revoked.stdout.strip() == f"key revoked: {lena.fingerprint} (officer {lena.email})"
    listing = await asyncio.to_thread(lers, gateway, "officer", "list", "--json")
    rows = {r["email"]: r for r in json.loads(listing.stdout)}
    assert (rows[alice.email]["status"], rows[alice.email]["reason"]) == ("suspended", "on leave")
    assert rows[lena.email]["key_revoked"] is True and rows["bob@police.test"]["status"] == "active"
    text = await asyncio.to_thread(lers, gateway, "officer", "list")
    assert f"{alice.email}" in text.stdout and "(on leave)" in text.stdout and "REVOKED" in text.stdout
    again = await asyncio.to_thread(lers, gateway, "officer", "reinstate", "nobody@police.test")
    assert again.returncode == 1
    assert again.stderr.strip() == ("lers: error: no officer with address nobody@police.test "
                                    "(see `lers officer list`)")
    agency = await asyncio.to_thread(lers, gateway, "agency", "suspend", AGENCY, "--reason", "audit")
    assert agency.stdout.strip() == f"agency suspended: {AGENCY} (audit); 3 officer(s) suspended with it"
    await send_request(gateway, alice)
    assert [q["reason"] for q in await gateway.quarantine()] == ["officer_suspended"]
