"""Regression tests from a security review of the verification chain: resource exhaustion,
crashes, replay evasion, and content the signature covers but the officer did not mean as a
request. Mail goes through real SMTP and real gpg, as in the other tests."""

from __future__ import annotations

import asyncio
import base64
import gc
import time
import tracemalloc
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from gateway.ingest import ingest
from gateway.models import Job, Message
from tests.conftest import GATEWAY_ADDRESS, GatewayFactory, Harness
from tests.support.mail_factory import (
    Attachment,
    compose,
    entity,
    extract_signed_part,
    message_entity,
    multipart_entity,
    multipart_signed_entity,
    outer_headers,
    pdf_bytes,
    replace_outer_header,
    request_body,
    signed_request_mail,
    text_entity,
    unsigned_mail,
)
from tests.support.officer_keys import TestKey

# -- helpers ----------------------------------------------------------------------------------


async def stored(gateway: Harness, raw: bytes) -> int:
    code, text = await gateway.send(raw)
    assert code == 250, text
    return int(text.rsplit(" ", 1)[1])


async def processed(gateway: Harness, message_id: int, within: float = 90.0) -> tuple[Job, Message]:
    """Wait until the message's job finished or failed once (a failure is not waited out)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        async with gateway.core.db.transaction() as session:
            job = await session.scalar(select(Job).where(Job.kind == "inbound",
                                                         Job.message_id == message_id))
            if job is not None and (job.state in ("done", "shunted") or job.last_error):
                message = await session.get(Message, message_id)
                assert message is not None
                return job, message
        gateway.gateway.worker.wakeup.set()
        await asyncio.sleep(0.05)
    raise AssertionError(f"message {message_id} was not processed within {within}s")


def folded(unit: str, total: int) -> str:
    """A header value of about `total` characters, folded into 900-character lines (SMTP-safe)."""
    return "\r\n ".join([unit * 900] * (total // 900))


# -- unauthenticated crash and resource exhaustion ---------------------------------------------


async def test_deeply_nested_unsigned_mail_is_quarantined_not_crashed(gateway: Harness) -> None:
    """~85 kB of nested multipart/mixed makes `_classify_unsigned` (compat32 parse + walk) raise
    RecursionError out of evaluate(): the job is retried and shunted, the message never gets a
    quarantine reason. Fail closed instead: quarantine it as malformed."""
    body = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
                    for i in range(1500))
    raw = (b"From: alice@police.test\r\nTo: " + GATEWAY_ADDRESS.encode() + b"\r\nSubject: x\r\n"
           b"Message-ID: <nested@police.test>\r\nMIME-Version: 1.0\r\n" + body
           + b"Content-Type: text/plain\r\n\r\nhi\r\n")
    job, message = await processed(gateway, await stored(gateway, raw))
    assert job.last_error is None, job.last_error
    assert (message.state, message.reason) == ("quarantined", "too_deeply_nested")


async def _assert_refused_before_parsing(gateway: Harness, raw: bytes, reason: str) -> None:
    """Oversized headers are refused by their size, before the quadratic standard-library parsers
    (address lists, MIME parameters) ever see them: the refusal names the size limit."""
    code, text = await gateway.send(raw)
    if code != 250:  # refused at the door: fine
        return
    job, message = await processed(gateway, int(text.rsplit(" ", 1)[1]))
    assert job.last_error is None, job.last_error
    assert message.state == "quarantined"
    assert (message.reason, "bytes accepted" in (message.reason_detail or "")) == (reason, True), (
        message.reason, message.reason_detail)


async def test_huge_from_header_does_not_stall_the_gateway(gateway: Harness) -> None:
    """outer_from_address() runs email.policy.default's address parser on an unbounded, unsigned
    From header, before any signature check; it is quadratic (100 kB of dots: ~18 s, 1 MB: ~30 min),
    on the event loop."""
    raw = compose(outer_headers(from_addr=folded(".", 100_000), to_addr=GATEWAY_ADDRESS,
                                subject="x", date=datetime.now(UTC), message_id="<dots@police.test>"),
                  text_entity("hello\n"), b"\r\n")
    await _assert_refused_before_parsing(gateway, raw, "headers_too_large")


async def test_huge_content_type_parameters_do_not_stall_the_gateway(gateway: Harness) -> None:
    """compat32 get_param()/get_boundary() (_parseparam) is quadratic on ';' after an open quote;
    split_signed() calls both on the unsigned top-level Content-Type, on the event loop."""
    ctype = ('multipart/signed; protocol="application/pgp-signature"; boundary=b; x="'
             + folded(";", 120_000))
    raw = compose(outer_headers(from_addr="alice@police.test", to_addr=GATEWAY_ADDRESS, subject="x",
                                date=datetime.now(UTC), message_id="<semis@police.test>"),
                  entity([("Content-Type", ctype)], b"--b\r\n\r\nx\r\n--b--\r\n"), b"\r\n")
    await _assert_refused_before_parsing(gateway, raw, "headers_too_large")


async def test_decrypted_plaintext_is_bounded(make_gateway: GatewayFactory, alice: TestKey) -> None:
    """Anyone can encrypt to the gateway's public key. A ~1 kB bzip2 'bomb' decrypts to hundreds of
    MB (25 MB of it: terabytes): python-gnupg collects gpg's whole output in memory before anything
    is judged. The process is OOM-killed, and the job, never marked failed, is claimed again
    after every restart. The plaintext must be capped (stream gpg's output, stop at a limit)."""
    gateway: Harness = await make_gateway(smtp__max_message_bytes=str(1024 * 1024))
    bomb = 32 * 1024 * 1024  # 8x what a 1 MiB size limit allows to come out of decryption
    zeros = bytes(bomb)
    ciphertext = gateway.ring.run(
        "--trust-model", "always", "--compress-algo", "bzip2", "--armor", "--encrypt",
        "--recipient", gateway.core.gateway_fingerprint or "", "--output", "-", input=zeros,
    ).stdout
    del zeros
    assert len(ciphertext) < 4 * 1024
    _check, plaintext = await gateway.core.pgp.decrypt_from_officer(ciphertext)
    size = None if plaintext is None else len(plaintext)
    assert size is None, f"a {len(ciphertext)}-byte mail decrypted to {size} bytes"


# -- replay evasion ---------------------------------------------------------------------------


async def test_inline_resent_with_other_line_endings_is_a_replay(make_gateway: GatewayFactory,
                                                                   alice: TestKey) -> None:
    """The inline replay key hashes gpg's plaintext output, which keeps the line endings of the
    input; a base64 body is not canonicalised, so the same clearsigned block re-sent as base64
    with LF endings gets a new replay key and becomes a second request."""
    gateway: Harness = await make_gateway(policy__allow_inline_pgp="true")
    await gateway.enrol(alice)
    block = gateway.ring.clearsign(alice, request_body(case_number="INL-1").encode())
    await stored(gateway, unsigned_mail(from_addr=alice.email, body=block.decode(),
                                        message_id="<inline-1@police.test>"))
    await gateway.settle()
    assert len(await gateway.requests()) == 1
    resent = compose(
        outer_headers(from_addr=alice.email, to_addr=GATEWAY_ADDRESS, subject="Data request",
                      date=datetime.now(UTC), message_id="<inline-2@police.test>"),
        entity([("Content-Type", 'text/plain; charset="utf-8"'),
                ("Content-Transfer-Encoding", "base64")], base64.encodebytes(block)),
        b"\r\n")
    second = await stored(gateway, resent)
    await gateway.settle()
    assert len(await gateway.requests()) == 1
    assert (await gateway.message(second)).reason == "replay"


async def test_pgp_mime_signature_reframed_as_inline_is_a_replay(make_gateway: GatewayFactory,
                                                                   alice: TestKey) -> None:
    """gpg accepts a detached binary (0x00) signature inside a cleartext frame when the text
    equals the signed bytes. So any PGP/MIME mail of an officer can be re-sent as an inline
    message: same signature, same signed text, but the inline replay key differs, so the chain
    accepts it as new (it then fails only on the form, by luck of the MIME header lines)."""
    gateway: Harness = await make_gateway(policy__allow_inline_pgp="true")
    await gateway.enrol(alice)
    original = signed_request_mail(gateway.ring, alice, from_addr=alice.email,
                                   body=request_body(case_number="RF-1"),
                                   message_id="<reframe-1@police.test>")
    await stored(gateway, original)
    await gateway.settle()
    assert len(await gateway.requests()) == 1
    signed, signature = extract_signed_part(original)
    lines = [b"- " + line if line.startswith(b"-") else line for line in signed.split(b"\r\n")]
    frame = (b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n" + b"\n".join(lines) + b"\n"
             + signature.replace(b"\r\n", b"\n").strip() + b"\n")
    second = await stored(gateway, unsigned_mail(from_addr=alice.email, body=frame.decode(),
                                                 message_id="<reframe-2@police.test>"))
    await gateway.settle()
    message = await gateway.message(second)
    assert message.reason == "replay", (message.reason, message.reason_detail)


# -- signed content that should not be taken as this officer's request to us -----------------


async def test_signed_part_addressed_to_someone_else_is_refused(gateway: Harness, alice: TestKey) -> None:
    """Protected headers say the officer signed this for supervisor@police.test (e.g. a draft
    sent for approval); whoever holds her mailbox re-sends it to the gateway within the
    freshness window. The protected To must include the gateway (DESIGN rule 5)."""
    mail = signed_request_mail(gateway.ring, alice, from_addr=alice.email,
                               to_addr="supervisor@police.test", protected_headers=True,
                               body=request_body(type="preservation", case_number="DRAFT-1"))
    mail = replace_outer_header(mail, "To", GATEWAY_ADDRESS)
    message_id = await stored(gateway, mail)
    await gateway.settle()
    assert await gateway.requests() == []
    assert (await gateway.message(message_id)).state == "quarantined"


async def test_forwarded_message_inside_signed_part_does_not_supply_the_form(
        gateway: Harness, alice: TestKey) -> None:
    """read_signed_content walks into message/rfc822 parts (is_multipart() is True for them, so
    its own message/rfc822 branch is dead code): a forwarded mail's text and attachments,
    request.toml included, are read as the officer's own. An officer forwarding a suspicious
    mail to ask about it files the forwarded request instead."""
    form = b'''type = "emergency_disclosure"
case_number = "FWD-1"
legal_basis = "exigent circumstances"
emergency_justification = "threat to life"
supervisor = "Chief"
data_categories = ["subscriber_information", "login_ip_addresses"]

[[subjects]]
type = "account_id"
value = "victim-42"
'''
    forwarded = unsigned_mail(from_addr="chief@police.test", to_addr=alice.email,
                              subject="urgent", body="Please file the attached at once.\n",
                              attachments=[Attachment("request.toml", "application/toml", form)],
                              message_id="<fwd-inner@police.test>")
    note = text_entity("Is the attached mail genuine? Please do NOT process it.\n")
    part = multipart_entity("mixed", [note, message_entity(forwarded)], closing_crlf=False)
    top = multipart_signed_entity(part, gateway.ring.sign_detached(alice, part))
    mail = compose(outer_headers(from_addr=alice.email, to_addr=GATEWAY_ADDRESS,
                                 subject="Fwd: urgent", date=datetime.now(UTC),
                                 message_id="<fwd-outer@police.test>"), top, b"\r\n")
    await stored(gateway, mail)
    await gateway.settle()
    assert await gateway.requests() == []


async def test_malformed_request_json_gets_a_form_refusal_not_a_crash(gateway: Harness,
                                                                      alice: TestKey) -> None:
    """json.loads raises ValueError (int digit limit) or RecursionError, tomllib too; only
    JSONDecodeError/TOMLDecodeError are caught, so route() raises, the job is retried and
    shunted, and the officer hears nothing."""
    bad = b'{"type": "preservation", "case_number": ' + b"1" * 5000 + b"}"
    mail = signed_request_mail(gateway.ring, alice, from_addr=alice.email, body="See attached.\n",
                               attachments=[Attachment("request.json", "application/json", bad)])
    job, message = await processed(gateway, await stored(gateway, mail))
    assert job.last_error is None, job.last_error
    assert message.state == "quarantined" and message.reason == "invalid_request_form"


# -- unsigned header reaching the outbox --------------------------------------------------------


async def test_folded_outer_message_id_does_not_jam_the_outbox(gateway: Harness, alice: TestKey,
                                                               bob: TestKey) -> None:
    """ingest keeps the unsigned outer Message-ID with compat32's folding ("\\r\\n ") inside it;
    reply_threading only checks '<' ... '>', so it becomes the reply's In-Reply-To, and
    pgp_mime_encrypted() raises ValueError (CR/LF in a header) outside _send_one's try: the row
    is never failed or given up but re-leased every 90 s forever, and replies leased in the same
    batch behind it are skipped each time. Anyone who gets a copy of an officer's signed mail in
    first (the outer Message-ID is unsigned) can do it."""
    poisoned = signed_request_mail(gateway.ring, alice, from_addr=alice.email,
                                   body=request_body(type="preservation", case_number="MID-1"),
                                   message_id="<mid-1@police.test\r\n x>")
    _, message = await processed(gateway, await stored(gateway, poisoned))
    assert message.state == "accepted"
    await stored(gateway, signed_request_mail(gateway.ring, bob, from_addr=bob.email,
                                              body=request_body(type="preservation",
                                                                case_number="MID-2")))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (gateway.replies(to=alice.email)
                                               and gateway.replies(to=bob.email)):
        gateway.gateway.worker.wakeup.set()
        gateway.gateway.outbox.wakeup.set()
        await asyncio.sleep(0.1)
    stuck = [who for who in (alice.email, bob.email) if not gateway.replies(to=who)]
    assert stuck == [], f"acknowledgements that never left the outbox: {stuck}"


async def test_pdf_text_extraction_is_stopped_at_its_time_limit(
        make_gateway: GatewayFactory, alice: TestKey) -> None:
    """A PDF is parsed in a process of its own that is killed at the limit; the document is still
    kept (hash, size) and the request registered, with the reason its text is missing."""
    gateway: Harness = await make_gateway(policy__pdf_text_seconds="0.01")
    await gateway.enrol(alice)
    order = Attachment("order.pdf", "application/pdf", pdf_bytes("Court order"))
    await gateway.send(signed_request_mail(gateway.ring, alice, from_addr=alice.email,
                                           body=request_body(type="court_order"), attachments=[order]))
    await gateway.settle()
    from gateway.records import show_request
    [request] = await gateway.requests()
    details = await show_request(gateway.core.db, request["ref"])
    assert details is not None
    [document] = details["documents"]
    assert document["text_extracted"] is False
    assert document["extraction_error"] == "text extraction took longer than 0.01 s and was stopped"


async def test_a_file_named_pdf_that_is_not_one() -> None:
    from gateway.documents import extract_in_subprocess
    assert await extract_in_subprocess(b"MZ\x90\x00 not a pdf", 30, 200) == (None, "not a PDF file")
    text, error = await extract_in_subprocess(pdf_bytes("Hello court"), 30, 200)
    assert error is None and text is not None and "Hello court" in text


# -- refused cheaply: memory bounded by a small multiple of the message ---------------------------


def _ten_thousand_parts() -> bytes:
    parts = b"".join(b"--p\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(10_000))
    return (b"From: mallory@attacker.test\r\nTo: " + GATEWAY_ADDRESS.encode() + b"\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=p\r\n\r\n" + parts + b"--p--\r\n")


def _deeply_nested() -> bytes:
    body = b"".join(b"Content-Type: multipart/mixed; boundary=n%d\r\n\r\n--n%d\r\n" % (i, i)
                    for i in range(5_000))
    return (b"From: mallory@attacker.test\r\nTo: " + GATEWAY_ADDRESS.encode() + b"\r\nMIME-Version: 1.0\r\n"
            + body + b"Content-Type: text/plain\r\n\r\nhi\r\n")


def _base64_bomb(alice: TestKey, ring: Any) -> bytes:
    """A signed-looking mail whose attachment is 20 MB of base64 (15 MB decoded)."""
    blob = Attachment("blob.bin", "application/octet-stream", bytes(15 * 1024 * 1024))
    return signed_request_mail(ring, alice, from_addr="mallory@attacker.test", body="x\n",
                               attachments=[blob])


async def _peak_while_judged(gateway: Harness, raw: bytes) -> tuple[int, Message]:
    """Python's peak heap (tracemalloc, every thread) from storage to the verdict, above where it
    started. The mail goes in through the door every transport uses (ingest), as SMTP would hand
    it over: the SMTP server's own line buffering is aiosmtpd's, and under tracemalloc it is slow."""
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start, _ = tracemalloc.get_traced_memory()
        stored_as = await ingest(gateway.core.db, raw, transport="smtp", peer="127.0.0.1")
        gateway.gateway.worker.wakeup.set()
        _, message = await processed(gateway, stored_as.message_id)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - start, message


# Storing and judging a message costs about one copy of it (a large one is stored and read back a
# chunk at a time, then cut into views of that one copy; the structure walk copies a window at a
# time). 3 copies plus 16 MB for the gateway's own fixed work is generous; parsing instead would
# build an object per part (10,000 parts: well over 100 MB) or decode every body.
COPIES, FIXED = 3, 16 * 1024 * 1024


@pytest.mark.parametrize(("build", "limits", "reason"), [
    ("ten_thousand_parts", {}, "too_many_parts"),
    ("deeply_nested", {}, "too_deeply_nested"),
    ("base64_bomb", {"mime.max_decoded_bytes": str(4 * 1024 * 1024)}, "decoded_size_exceeded"),
])
async def test_hostile_structure_is_refused_cheaply(make_gateway: GatewayFactory, alice: TestKey,
                                                    build: str, limits: dict[str, str], reason: str) -> None:
    gateway: Harness = await make_gateway(**limits)
    raw = {"ten_thousand_parts": _ten_thousand_parts, "deeply_nested": _deeply_nested,
           "base64_bomb": lambda: _base64_bomb(alice, gateway.ring)}[build]()
    started = time.monotonic()
    peak, message = await _peak_while_judged(gateway, raw)
    assert (message.state, message.reason) == ("quarantined", reason), message.reason_detail
    assert peak < COPIES * len(raw) + FIXED, f"{peak / 2**20:.1f} MiB for a {len(raw) / 2**20:.1f} MiB mail"
    print(f"{build}: peak {peak / 2**20:.1f} MiB, mail {len(raw) / 2**20:.1f} MiB")
    assert time.monotonic() - started < 15
