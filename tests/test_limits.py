"""Issue 9: every limit on hostile MIME has its own reason code and a sentence naming the limit.

Structure limits (`[mime]`) are pure functions of gateway/mime.py, checked before any signature
check: a breach is quarantined, and nobody unverified is answered. Content limits (`[policy]`
attachments, archives, charsets) are judged once the signature proved the sender, who gets a
signed reply naming each breach. Each limit is tested just past it, and just within it where the
difference is one byte or one part, so that a test cannot pass without the limit.
"""

from __future__ import annotations

import base64
import email
import email.policy
import io
import zipfile
from datetime import UTC, datetime

import pytest

from gateway.config import ConfigError, load_settings
from gateway.documents import archive_kind, display_name, safe_name
from gateway.mime import (
    MimeLimits,
    ReceivedAttachment,
    Refusal,
    SignedContent,
    decoded_size_estimate,
    header_problem,
    mime_tree_problem,
    read_inline_content,
    read_signed_content,
    split_signed,
)
from gateway.records import show_request
from tests.conftest import GATEWAY_ADDRESS, GatewayFactory, Harness
from tests.support.mail_factory import (
    Attachment,
    attachment_entity,
    compose,
    entity,
    multipart_entity,
    multipart_signed_entity,
    outer_headers,
    pdf_bytes,
    request_body,
    signed_request_mail,
    text_entity,
)
from tests.support.officer_keys import OfficerKeyring, TestKey

LIMITS = MimeLimits(max_header_bytes=2000, max_header_field_bytes=300, max_header_fields=20,
                    max_parts=8, max_nesting=3, max_decoded_bytes=10_000)


def mail(top: bytes, *, extra: list[tuple[str, str]] | None = None) -> bytes:
    return compose(outer_headers(from_addr="mallory@attacker.test", to_addr=GATEWAY_ADDRESS,
                                 subject="x", date=datetime.now(UTC), message_id="<m@attacker.test>",
                                 extra=extra or []), top, b"\r\n")


def leaves(count: int) -> bytes:
    return multipart_entity("mixed", [text_entity(f"part {n}\n") for n in range(count)])


def nested(levels: int) -> bytes:
    """`levels` multiparts inside each other, one text part at the bottom."""
    inner = text_entity("bottom\n")
    for _ in range(levels):
        inner = multipart_entity("mixed", [inner])
    return inner


def base64_part(decoded_size: int) -> bytes:
    return attachment_entity(Attachment("blob.bin", "application/octet-stream", bytes(decoded_size)))


def verdict(raw: bytes) -> Refusal | None:
    return mime_tree_problem(raw.replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n"), LIMITS)


# -- [mime] structure limits: pure functions ---------------------------------------------------


@pytest.mark.parametrize(("within", "beyond", "reason", "detail"), [
    (mail(leaves(7)), mail(leaves(8)), "too_many_parts",
     "the message has more than 8 MIME parts: send fewer files in one message"),
    (mail(nested(3)), mail(nested(4)), "too_deeply_nested",
     "the message's MIME parts are nested more than 3 levels deep"),
    (mail(multipart_entity("mixed", [base64_part(9_000)])),
     mail(multipart_entity("mixed", [base64_part(9_000), base64_part(1_000)])),
     "decoded_size_exceeded", "the message's parts decode to more than 10000 bytes"),
    (mail(text_entity("x\n"), extra=[("X-Pad", "v" * 250)]),
     mail(text_entity("x\n"), extra=[("X-Pad", "v" * 300)]),
     "headers_too_large", "the X-Pad header is 307 bytes long, more than the 300 bytes accepted"),
    (mail(text_entity("x\n"), extra=[("X-Pad", "v" * 200)] * 6),
     mail(text_entity("x\n"), extra=[("X-Pad", "v" * 200)] * 12),
     "headers_too_large", "more than the 2000 bytes accepted"),
    (mail(text_entity("x\n"), extra=[("X-H", "v")] * 10),
     mail(text_entity("x\n"), extra=[("X-H", "v")] * 15),
     "too_many_headers", "a header block has 23 header fields, more than the 20 accepted"),
])
def test_each_structure_limit_has_its_reason(within: bytes, beyond: bytes, reason: str, detail: str) -> None:
    assert verdict(within) is None
    refusal = verdict(beyond)
    assert refusal is not None and refusal.reason == reason, refusal
    assert detail in refusal.detail, refusal.detail


def test_a_part_header_deep_inside_is_held_to_the_limits() -> None:
    """Not only the message's own headers: every part's, where the parsers would read them later."""
    deep = multipart_entity("mixed", [entity([("Content-Type", "text/plain"), ("X-Pad", "v" * 400)],
                                             b"hello\r\n")])
    refusal = verdict(mail(multipart_entity("mixed", [deep])))
    assert refusal == Refusal("headers_too_large", "the X-Pad header is 407 bytes long, more than the 300 "
                              "bytes accepted for one header")


def test_forwarded_messages_count_as_nesting_and_parts() -> None:
    """message/rfc822 is parsed by the standard library too, so its parts count."""
    forwarded = entity([("Content-Type", "message/rfc822")], mail(nested(2)))
    refusal = verdict(mail(multipart_entity("mixed", [forwarded])))
    assert refusal is not None and refusal.reason == "too_deeply_nested"


def test_the_walk_counts_what_the_parser_builds() -> None:
    """The byte-level walk and the standard library agree on the number of parts (unclosed
    multiparts included), so a limit cannot be dodged by a structure only one of them sees."""
    unclosed = (b"Content-Type: multipart/mixed; boundary=u\r\n\r\n--u\r\nContent-Type: text/plain\r\n\r\n"
                b"a\r\n--u\r\nContent-Type: text/plain\r\n\r\nb\r\n")
    for raw in (mail(leaves(5)), mail(nested(2)), mail(unclosed)):
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        count = sum(1 for _ in parsed.walk())
        assert verdict(raw) is None
        assert mime_tree_problem(raw, MimeLimits(max_parts=count)) is None
        refusal = mime_tree_problem(raw, MimeLimits(max_parts=count - 1))
        assert refusal is not None and refusal.reason == "too_many_parts", (count, raw)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 57, 1000, 100_000])
@pytest.mark.parametrize("encoding", ["base64", "quoted-printable", "7bit"])
def test_decoded_size_is_bounded_from_the_encoded_length(size: int, encoding: str) -> None:
    import quopri
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    body = base64.encodebytes(data) if encoding == "base64" else (
        quopri.encodestring(data) if encoding == "quoted-printable" else data)
    estimate = decoded_size_estimate(body.replace(b"\n", b"\r\n"), encoding)
    assert size <= estimate <= (size + 5 if encoding == "base64" else len(body) * 2)


def test_split_signed_applies_the_limits_before_anything_else() -> None:
    """A multipart/signed mail over a limit never reaches the signature check: the refusal is the
    limit's, not bad_signature or unknown_key."""
    signed = multipart_entity("mixed", [text_entity("hi\n"), base64_part(20_000)], closing_crlf=False)
    raw = mail(multipart_signed_entity(signed, b"-----BEGIN PGP SIGNATURE-----\r\n\r\nwsBc\r\n"
                                       b"-----END PGP SIGNATURE-----\r\n"))
    refusal = split_signed(raw, allow_inline=False, limits=LIMITS)
    assert isinstance(refusal, Refusal) and refusal.reason == "decoded_size_exceeded"
    default = split_signed(raw, allow_inline=False)  # within the default limits: judged on
    assert not (isinstance(default, Refusal) and default.reason == "decoded_size_exceeded")


def test_default_header_limits_keep_their_values() -> None:
    head = b"Subject: " + b"x" * 5000
    assert header_problem(head) == Refusal(
        "headers_too_large", "the Subject header is 5009 bytes long, more than the 4096 bytes accepted "
        "for one header")


# -- charsets: decoded strictly, or refused as bad_charset ---------------------------------------


def content_of(*parts: bytes, headers: list[tuple[str, str]] | None = None) -> list[Refusal]:
    top = multipart_entity("mixed", list(parts), headers=headers or [],
                           params=' protected-headers="v1";' if headers else "", closing_crlf=False)
    return list(read_signed_content(top).problems)


def test_text_in_its_declared_charset_is_read() -> None:
    latin = entity([("Content-Type", "text/plain; charset=iso-8859-1")], "Grüße\r\n".encode("latin-1"))
    top = multipart_entity("mixed", [latin], closing_crlf=False)
    content = read_signed_content(top)
    assert content.problems == () and content.text.startswith("Grüße")


@pytest.mark.parametrize(("part", "detail"), [
    (entity([("Content-Type", "text/plain; charset=x-klingon")], b"case_number: 42\r\n"),
     "a text part declares the charset 'x-klingon', which is unknown: send the text as UTF-8"),
    (entity([("Content-Type", "text/plain; charset=utf-8")], b"case_number: 4\xff2\r\n"),
     "a text part is not valid utf-8 (its declared charset): send the text as UTF-8"),
    (entity([("Content-Type", "text/plain")], b"case_number: 4\xff2\r\n"),
     "a text part is not valid UTF-8 (its declared charset): send the text as UTF-8"),
])
def test_undecodable_text_is_named_not_guessed(part: bytes, detail: str) -> None:
    assert content_of(part) == [Refusal("bad_charset", detail)]


def test_undecodable_protected_header_is_named() -> None:
    problems = content_of(text_entity("hi\n"), headers=[("Subject", "=?utf-8?b?/w==?= case 42")])
    assert [p.reason for p in problems] == ["bad_charset"]
    assert "the signed Subject header holds text that cannot be decoded" in problems[0].detail


def test_inline_text_must_be_utf8() -> None:
    assert read_inline_content("Grüße".encode()).problems == ()
    assert [p.reason for p in read_inline_content(b"Gr\xfc\xdfe").problems] == ["bad_charset"]


# -- archives and file names ------------------------------------------------------------------


def zipped() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("order.pdf", b"%PDF-1.4")
    return buffer.getvalue()


@pytest.mark.parametrize(("filename", "content_type", "data", "kind"), [
    ("evidence.zip", "application/octet-stream", b"anything", "zip"),
    ("order.pdf", "application/pdf", zipped(), "ZIP"),  # the bytes decide, whatever the name
    ("x.tar.gz", "application/octet-stream", b"\x1f\x8b\x08\x00", "gzip"),
    ("x.7z", "application/x-7z-compressed", b"7z\xbc\xaf\x27\x1c", "7z"),
    ("x.rar", "application/octet-stream", b"Rar!\x1a\x07\x00", "RAR"),
    ("x", "application/x-tar", b"\x00" * 300, "application/x-tar"),
    ("x.bin", "application/octet-stream", b"\x00" * 257 + b"ustar\x00", "tar"),
    ("letter.docx", "application/vnd.openxmlformats", zipped(), None),  # an Office file: a document
    ("order.pdf", "application/pdf", pdf_bytes("order"), None),
])
def test_archives_are_recognised(filename: str, content_type: str, data: bytes, kind: str | None) -> None:
    assert archive_kind(ReceivedAttachment(filename, content_type, data)) == kind


@pytest.mark.parametrize(("original", "stored"), [
    ("../../etc/passwd", "01-0123456789ab-passwd"),
    ("..", "01-0123456789ab-attachment"),
    ("C:\\Users\\x\\order.pdf", "01-0123456789ab-order.pdf"),
    ("or\x00der\r\n.pdf", "01-0123456789ab-or_der_.pdf"),
    ("\u202efdp.exe", "01-0123456789ab-fdp.exe"),
    ("a" * 300 + ".pdf", "01-0123456789ab-" + "a" * 69 + ".pdf"),
    (None, "01-0123456789ab-attachment"),
])
def test_stored_names_are_safe(original: str | None, stored: str) -> None:
    assert safe_name(original, 1, "0123456789abcdef") == stored


def test_file_names_are_shown_without_control_characters() -> None:
    assert display_name("order.pdf\nsha256 0000") == "order.pdf?sha256 0000"
    assert display_name("\u202efdp.exe") == "?fdp.exe"
    assert len(display_name("a" * 500)) == 120


# -- configuration -------------------------------------------------------------------------------


def test_mime_limits_come_from_the_configuration() -> None:
    settings = load_settings(None, {"mime.max_parts": "7"}, environ={"LERS_MIME__MAX_NESTING": "4"})
    assert (settings.mime.max_parts, settings.mime.max_nesting) == (7, 4)
    with pytest.raises(ConfigError, match=r"mime\.max_parts: must be greater than 0"):
        load_settings(None, {"mime.max_parts": "0"}, environ={})
    with pytest.raises(ConfigError, match=r"mime\.max_nesting: at most 20, got 21"):
        load_settings(None, {"mime.max_nesting": "21"}, environ={})


# -- end to end: a real gateway over SMTP --------------------------------------------------------


async def test_structure_breaches_are_quarantined_without_a_reply(make_gateway: GatewayFactory,
                                                                  alice: TestKey) -> None:
    """Before verification nobody is answered (DESIGN, acceptance rules): each breach is
    quarantined under its own reason, with the sentence an operator reads in `lers quarantine`."""
    harness: Harness = await make_gateway(**{"mime.max_parts": "8", "mime.max_nesting": "3",
                                             "mime.max_decoded_bytes": "10000"})
    await harness.enrol(alice)
    cases = {
        "too_many_parts": mail(leaves(12)),
        "too_deeply_nested": mail(nested(5)),
        "decoded_size_exceeded": mail(multipart_entity("mixed", [base64_part(30_000)])),
        "headers_too_large": mail(text_entity("x\n"), extra=[("X-Pad", "v" * 900 + "\r\n " + "v" * 900)
                                                             for _ in range(40)]),
    }
    for raw in cases.values():
        code, text = await harness.send(raw)
        assert code == 250, text
    await harness.settle()
    found = {q["reason"]: q for q in await harness.quarantine()}
    assert sorted(found) == sorted(cases)
    assert "more than 8 MIME parts" in found["too_many_parts"]["detail"]
    assert "nested more than 3 levels deep" in found["too_deeply_nested"]["detail"]
    assert "decode to more than 10000 bytes" in found["decoded_size_exceeded"]["detail"]
    assert "more than the 65536 bytes accepted" in found["headers_too_large"]["detail"]
    assert harness.sink.received == [], "an unverified sender was answered"


def signed_mail_of(ring: OfficerKeyring, key: TestKey, part: bytes, message_id: str) -> bytes:
    top = multipart_signed_entity(part, ring.sign_detached(key, part))
    return compose(outer_headers(from_addr=key.email, to_addr=GATEWAY_ADDRESS, subject="Data request",
                                 date=datetime.now(UTC), message_id=message_id), top, b"\r\n")


async def test_a_verified_officer_is_told_each_content_limit(make_gateway: GatewayFactory,
                                                             alice: TestKey) -> None:
    """After the signature proved the officer: a signed, encrypted reply names every breach and
    its limit; the message is quarantined under the first breach's reason; nothing is registered."""
    harness: Harness = await make_gateway(**{"policy.max_attachments": "2",
                                             "policy.max_attachment_bytes": "1000"})
    await harness.enrol(alice)
    sends = {
        "too_many_attachments": [Attachment(f"scan{n}.pdf", "application/pdf", b"%PDF-1.4 " + b"x" * 10)
                                 for n in range(3)],
        "attachment_too_large": [Attachment("big.pdf", "application/pdf", b"%PDF-1.4 " + b"x" * 1000)],
        "archive_attachment": [Attachment("evidence.zip", "application/zip", zipped())],
    }
    for n, files in enumerate(sends.values()):
        raw = signed_request_mail(harness.ring, alice, from_addr=alice.email, attachments=files,
                                  body=request_body(case_number=f"LIM-{n}"))
        await harness.send(raw)
    bad_text = entity([("Content-Type", "text/plain; charset=x-klingon")],
                      request_body(case_number="LIM-9").encode())
    await harness.send(signed_mail_of(harness.ring, alice, bad_text, "<charset@police.test>"))
    await harness.settle()
    assert await harness.requests() == []
    reasons = sorted(q["reason"] for q in await harness.quarantine())
    assert reasons == sorted([*sends, "bad_charset"])
    texts = "\n".join(r.text for r in harness.replies(to=alice.email))
    assert all(r.signed_by for r in harness.replies(to=alice.email))
    for expected in (
        "the message carries 3 files, at most 2 are accepted in one message",
        "attachment big.pdf is 1009 bytes, at most 1000 bytes are accepted for one file",
        "attachment evidence.zip is an archive (ZIP); archives are never unpacked or accepted",
        "a text part declares the charset 'x-klingon', which is unknown",
    ):
        assert expected in texts, expected


async def test_hostile_file_names_are_stored_safely_with_the_original_kept(gateway: Harness,
                                                                           alice: TestKey) -> None:
    """RFC 2231 lets a file name carry '/', NUL and line breaks; the request keeps the document
    under a generated name, the exact original as metadata, and shows it without the breaks."""
    original = "../../etc/pass\x00wd\r\nsha256 0000.pdf"
    document = entity([("Content-Type", "application/pdf"),
                       ("Content-Disposition", "attachment; filename*=utf-8''..%2F..%2Fetc%2Fpass%00wd"
                                               "%0D%0Asha256%200000.pdf"),
                       ("Content-Transfer-Encoding", "base64")],
                      base64.encodebytes(pdf_bytes("Court order")))
    part = multipart_entity("mixed", [text_entity(request_body(type="court_order", case_number="FN-1")),
                                      document], closing_crlf=False)
    await gateway.send(signed_mail_of(gateway.ring, alice, part, "<filename@police.test>"))
    await gateway.settle()
    [request] = await gateway.requests()
    details = await show_request(gateway.core.db, request["ref"])
    assert details is not None
    [stored] = details["documents"]
    assert stored["filename"] == original.replace("\x00", "\ufffd")  # NUL cannot be stored as text
    assert stored["stored_name"].endswith("-pass_wd_sha256_0000.pdf") and "/" not in stored["stored_name"]
    [ack] = gateway.replies(to=alice.email)
    assert "pass?wd??sha256 0000.pdf (sha256" in ack.text


def test_an_oversized_form_file_is_named_and_not_parsed() -> None:
    """A form is a few hundred bytes; a 300 KB one is refused by its size, before it is read whole
    (a large attachment lives in a spool file) or handed to the TOML/JSON parser."""
    from handlers.enrolment_form import read_enrolment_form
    from handlers.form import FORM_MAX_BYTES, read_request_form

    padding = b"# " + b"x" * 300_000 + b"\ncase_number = \"2026-CR-1\"\n"
    form = read_request_form("", [ReceivedAttachment("request.toml", "text/plain", padding)],
                             has_document=False)
    assert form.problems == [f"request.toml: is {len(padding)} bytes, more than a form's "
                             f"{FORM_MAX_BYTES} at most"]
    enrolment = read_enrolment_form(SignedContent(text="", attachments=(
        ReceivedAttachment("enrolment.toml", "text/plain", padding),)), pdf_count=1)
    assert f"enrolment.toml: is {len(padding)} bytes, more than a form's {FORM_MAX_BYTES} at most" \
        in enrolment.problems
