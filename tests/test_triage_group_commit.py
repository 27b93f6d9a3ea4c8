"""Issue 8: group commit at SMTP ingress (250 only after the batch's commit, duplicates within a
batch stored once, the audit chain intact) and triage (mail that does not look signed by a key we
hold is queued behind mail that does, and is still judged by the whole chain)."""

from __future__ import annotations

import asyncio

from hypothesis import example, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from gateway import audit
from gateway.models import Job, Message
from gateway.triage import (
    ARMORED_SIGNATURE,
    ATTACHED_KEY,
    NORMAL,
    SUSPECT,
    UNPROVEN,
    armored_signatures,
    carries_key,
    issuers,
    priority,
)
from tests.support.mail_factory import Attachment, request_body, signed_request_mail, unsigned_mail
from tests.support.officer_keys import OfficerKeyring, TestKey


def test_triage_reads_the_issuer_of_the_signature(officer_ring: OfficerKeyring, alice: TestKey,
                                                  bob: TestKey) -> None:
    body = request_body(type="preservation", case_number="T-1")
    signed = signed_request_mail(officer_ring, alice, from_addr=alice.email, body=body)
    block = signed[signed.index(b"-----BEGIN PGP SIGNATURE-----") + 30:]
    named = issuers(block[block.index(b"\n") + 1:block.index(b"-----END PGP SIGNATURE-----")])
    assert alice.signing_fingerprint in named or alice.fingerprint in named
    known = frozenset({alice.fingerprint, alice.signing_fingerprint, alice.keyid})
    assert priority(signed, known) == NORMAL
    assert priority(signed, frozenset({bob.fingerprint, bob.signing_fingerprint})) == SUSPECT
    assert priority(unsigned_mail(from_addr=alice.email, body=body), known) == SUSPECT
    start = signed.index(b"-----BEGIN PGP SIGNATURE-----")
    end = signed.index(b"-----END PGP SIGNATURE-----") + len(b"-----END PGP SIGNATURE-----")
    assert priority(signed[:start] + b"garbage" + signed[end:], known) == SUSPECT
    broken = signed[:start + 40] + b"!!!!" + signed[start + 44:]
    assert priority(broken, known) in (NORMAL, SUSPECT)  # never an exception
    # a stranger's signed mail carrying its own key, or anything encrypted, is queued behind
    # mail from known keys (anyone can add such a block to forged mail) but before plain forgeries
    stranger = signed_request_mail(officer_ring, bob, from_addr=alice.email, body=body,
                                   attachments=[Attachment("key.asc", "application/pgp-keys",
                                                           bob.public_armored)])
    assert priority(stranger, known) == UNPROVEN
    encrypted = unsigned_mail(from_addr=alice.email, body="-----BEGIN PGP MESSAGE-----\n\nhQEMA\n"
                              "-----END PGP MESSAGE-----\n")
    assert priority(encrypted, known) == UNPROVEN
    with_key_and_known_signature = signed_request_mail(
        officer_ring, alice, from_addr=alice.email, body=body,
        attachments=[Attachment("key.asc", "application/pgp-keys", bob.public_armored)])
    assert priority(with_key_and_known_signature, known) == NORMAL
    assert NORMAL < UNPROVEN < SUSPECT


async def test_many_senders_share_commits_and_each_is_stored_once(gateway, alice: TestKey) -> None:
    ring, body = gateway.ring, request_body(type="preservation", case_number="T-2")
    mails = [signed_request_mail(ring, alice, from_addr=alice.email, body=body,
                                 message_id=f"<gc-{i}@police.test>") for i in range(12)]
    forged = unsigned_mail(from_addr=alice.email, body=body, message_id="<gc-forged@police.test>")
    replies = await asyncio.gather(*(gateway.send(raw) for raw in [*mails, mails[0], forged]))
    assert all(code == 250 for code, _ in replies), replies
    async with gateway.core.db.transaction() as session:
        stored = await session.scalar(select(func.count()).select_from(Message)
                                      .where(Message.direction == "inbound"))
        jobs = {job.message_id: job.priority for job in await session.scalars(
            select(Job).where(Job.kind == "inbound"))}
        forged_id = await session.scalar(select(Message.id).where(Message.header_message_id
                                                                  == "<gc-forged@police.test>"))
        report = await audit.verify_chain(session)
    assert stored == 13  # the repeated mail is one message
    assert jobs[forged_id] == SUSPECT
    assert sorted(p for m, p in jobs.items() if m != forged_id) == [NORMAL] * 12
    assert report.ok, report


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(raw=st.lists(st.sampled_from([b"-----BEGIN PGP SIGNATURE-----", b"-----END PGP SIGNATURE-----", b"\r",
                                     b"\n", b"\r\n", b"x", b"-----", b"BEGIN PGP SIGNATURE-----"]),
                    max_size=14).map(b"".join))
@example(raw=b"-----BEGIN PGP SIGNATURE-----BEGIN PGP SIGNATURE-----\nA-----END PGP SIGNATURE-----")
@example(raw=b"-----BEGIN PGP SIGNATURE-----\nA-----END PGP SIGNATURE-----BEGIN PGP SIGNATURE-----\r\nB"
             b"-----END PGP SIGNATURE-----")  # markers that share their dashes
def test_armored_signatures_are_those_the_regex_finds(raw: bytes) -> None:
    """Triage's substring search finds the same signature bodies as the regex it replaced."""
    assert list(armored_signatures(raw)) == [m.group(1) for m in ARMORED_SIGNATURE.finditer(raw)]


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(raw=st.lists(st.sampled_from([b"-----BEGIN PGP PUBLIC KEY BLOCK-----",
                                     b"-----begin pgp Public KEY block-----", b"application/pgp-keys",
                                     b"APPLICATION/PGP-KEYS", b"Application/Pgp-Key",
                                     b"s", b"\xc5\xbf", b"\xe2\x84\xaa", b"\xff", b"-", b"x"]),
                    max_size=8).map(b"".join))
@example(raw=b"application/pgp-\xe2\x84\xaaeys")  # KELVIN SIGN: not a K for bytes patterns
def test_an_attached_key_is_found_as_the_regex_finds_it(raw: bytes) -> None:
    """Triage's lower-cased substring search answers as the case-insensitive regex it replaced."""
    assert carries_key(raw) == (ATTACHED_KEY.search(raw) is not None)
