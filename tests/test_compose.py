"""Replies written by gateway/compose.py say what the email package wrote before, and stay safe.

The reference is the code the outbox used until it wrote replies itself: `EmailMessage` with
`policy.SMTP`, `set_content(..., cte="quoted-printable")`, `set_param("protected-headers", "v1")`
(kept below as `reference_content` and `reference_outer_head`). Both versions are parsed with the
email package (`policy.default`, what a mail client's parser makes of them) and every header value
and the decoded body must be equal; where the email package itself loses part of a value (a
subject's leading whitespace, text that looks like an encoded-word), the new bytes must keep it.
Plain values must give the very bytes the email package gave.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime, formataddr
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from gateway import compose
from gateway.config import GatewaySettings, Settings
from gateway.models import Outbox
from gateway.outbox import pgp_mime_encrypted, reply_content

if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    set_hypothesis_home_dir(Path(tempfile.gettempdir()) / f"lers-gateway-hypothesis-{os.getuid()}")
PROPERTY = settings(max_examples=400, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"
SETTINGS = Settings(gateway=GatewaySettings(address="lers@gateway.test", name="LERS Gateway"))
MESSAGE_ID = "<lers.0123456789abcdef0123456789abcdef@gateway.test>"
OUTLOOK_ID = "<DM6PR11MB4657D8F1C8F5E1A1B2C3D4E5F6A7B8C9D@DM6PR11MB4657.namprd11.prod.outlook.com>"
ARMORED = b"-----BEGIN PGP MESSAGE-----\n\nwV4DAAAAAAAAAAASAQdA\n-----END PGP MESSAGE-----\n"


# -- the email package's version (the outbox's code before gateway/compose.py) ----------------------

def reference_content(settings: Settings, message_id: str, recipient: str, subject: str, body: str) -> bytes:
    inner = EmailMessage(policy=policy.SMTP)
    inner["From"] = policy.SMTP.header_store_parse(
        "From", formataddr((settings.gateway.name, settings.gateway.address)))[1]
    inner["To"] = recipient
    inner["Subject"] = subject
    inner["Message-ID"] = message_id
    inner.set_content(body, charset="utf-8", cte="quoted-printable")
    inner.set_param("protected-headers", "v1")
    return inner.as_bytes()


def reference_outer_head(settings: Settings, row: Outbox, date: str, boundary: str) -> bytes:
    headers = [("From", formataddr((settings.gateway.name, settings.gateway.address))),
               ("To", row.recipient), ("Subject", row.subject), ("Date", date),
               ("Message-ID", row.header_message_id)]
    if row.in_reply_to:
        headers.append(("In-Reply-To", row.in_reply_to))
    if row.references:
        headers.append(("References", " ".join(row.references)))
    headers += [("MIME-Version", "1.0"),
                ("Content-Type", f'multipart/encrypted; protocol="application/pgp-encrypted"; '
                                 f'boundary="{boundary}"')]
    head = EmailMessage(policy=policy.SMTP)
    for name, value in headers:
        head[name] = value
    return b"".join(policy.SMTP.fold_binary(name, value) for name, value in head.items())


def parsed(raw: bytes) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


def assert_well_formed_head(raw: bytes, stdlib: Sequence[str] = ()) -> None:
    """ASCII only, CRLF line ends only, continuation lines start with whitespace; in each field
    except those left to the email package (`stdlib`): no control characters, lines within 78
    characters unless one unbreakable word (a msg-id, an address; up to 998)."""
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()
    lines = head.split(b"\r\n")
    name = b""
    for i, line in enumerate(lines):
        assert b"\r" not in line and b"\n" not in line
        if i and line[:1] not in (b" ", b"\t"):
            found = re.match(rb"([!-9;-~]+):", line)
            assert found is not None, line
            name = found.group(1)
        if name.decode() in stdlib:
            continue
        assert not re.search(rb"[\x00-\x08\x0a-\x1f\x7f]", line), line
        assert len(line) <= 78 or (len(line) <= 998 and re.fullmatch(rb"(?:[\w-]+:)? (?:<\S+>|[^\s=]+@\S+)",
                                                                      line)), line
        assert all(len(word) <= 75 for word in re.findall(rb"=\?[^?]*\?[bqBQ]\?[^?]*\?=", line)), line


def plain_address(value: str) -> bool:
    """What compose.address_field writes itself (anything else is the email package's)."""
    return re.fullmatch(r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*",
                        value) is not None


# -- strategies ------------------------------------------------------------------------------------

plain_word = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20)
plain_subjects = st.lists(plain_word, min_size=1, max_size=12).map(" ".join)
subjects = st.one_of(
    plain_subjects,
    st.text(max_size=120),  # any code point: controls, line breaks, surrogates, astral planes
    st.text(st.sampled_from([*"aé €😀 \t=?_", *LINE_BREAKS, "\x00", "\x07", "\x7f"]), max_size=90),
    st.builds(lambda ref, text: f"[{ref}] {text}",
              st.from_regex(r"LERS-20[0-9]{2}-[0-9]{6}", fullmatch=True), st.text(max_size=80)),
)
bodies = st.one_of(
    st.text(max_size=400),
    st.lists(st.sampled_from([*"ab .=\t é€", "\r", "\n", "\r\n", "\x00", "x" * 75]), max_size=120)
    .map("".join),
)
local = st.from_regex(r"[a-z0-9_+-]{1,20}(\.[a-z0-9_+-]{1,10}){0,2}", fullmatch=True)
domain = st.from_regex(r"[a-z0-9-]{1,15}(\.[a-z0-9-]{1,10}){0,2}", fullmatch=True)
recipients = st.one_of(
    st.builds(lambda lo, do: f"{lo}@{do}", local, domain),
    st.emails(),
    st.builds(lambda name, lo, do: formataddr((name, f"{lo}@{do}")), st.text(max_size=30), local, domain),
)
msg_id_text = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="<>@"),
                      min_size=1, max_size=60)
msg_ids = st.builds(lambda a, b: f"<{a}@{b}>", msg_id_text, msg_id_text)


# -- the inside of a reply -------------------------------------------------------------------------

@PROPERTY
@given(subject=subjects, body=bodies, recipient=recipients)
@example(subject=" leading space", body="", recipient="alice@police.test")
@example(subject="=?utf-8?q?looks_encoded?=", body="a\r\nb\rc\n", recipient="alice@police.test")
@example(subject="x" * 200, body="y" * 200, recipient="alice@police.test")
@example(subject="é" * 100, body="trailing space \nand tab\t", recipient="alice@police.test")
@example(subject="bell \x07 and nul \x00", body=".\r\nFrom me", recipient="alice@police.test")
@example(subject="a\ud800b", body="x", recipient="alice@police.test")
@example(subject="s", body="0" * 74 + " \n" + "0" * 75 + "\t", recipient="alice@police.test")
def test_reply_content_says_what_the_email_package_said(subject: str, body: str, recipient: str) -> None:
    try:
        reference = reference_content(SETTINGS, MESSAGE_ID, recipient, subject, body)
    except (ValueError, UnicodeEncodeError) as exc:
        # refused before: refused now (a line break in a header, a surrogate in the body)
        with pytest.raises(type(exc)):
            reply_content(SETTINGS, message_id=MESSAGE_ID, recipient=recipient, subject=subject, body=body)
        return
    if any(c in LINE_BREAKS for c in subject):
        # the email package let one line break at the very end through, as a bare LF in the
        # header; now any line break is refused
        assert subject.splitlines() == [subject.rstrip(LINE_BREAKS)]
        with pytest.raises(ValueError):
            reply_content(SETTINGS, message_id=MESSAGE_ID, recipient=recipient, subject=subject, body=body)
        return
    raw = reply_content(SETTINGS, message_id=MESSAGE_ID, recipient=recipient, subject=subject, body=body)
    assert_well_formed_head(raw, stdlib=() if plain_address(recipient) else ("To",))
    new, old = parsed(raw), parsed(reference)
    assert new.keys() == old.keys()
    for name in old:
        if name == "Subject":
            continue
        assert str(new[name]) == str(old[name]), name
    assert new.get_content() == old.get_content()
    assert new.get_payload(decode=True) == old.get_payload(decode=True)
    assert new.get_content_type() == "text/plain" and new.get_param("protected-headers") == "v1"
    assert new.get_content_charset() == "utf-8" and new["Content-Transfer-Encoding"] == "quoted-printable"
    assert_same_subject(str(new["Subject"]), str(old["Subject"]), subject)
    body_lines = raw.split(b"\r\n\r\n", 1)[1].split(b"\r\n")
    assert all(len(line) <= 76 for line in body_lines)  # RFC 2045's limit for quoted-printable
    assert b"\r" not in raw.replace(b"\r\n", b"") and b"\n" not in raw.replace(b"\r\n", b"")


def assert_same_subject(new: str, old: str, subject: str) -> None:
    """The subject read back is the subject given; the email package's reading was the same
    unless it got the subject wrong (a subject with surrogates is still written by the email
    package). What it got wrong: leading whitespace dropped, text that looks like an
    encoded-word decoded, a space added where it folded a long subject right after "Subject:"."""
    if re.search("[\ud800-\udfff]", subject):
        assert new == old
        return
    assert new == subject
    if old != new:
        assert old.lstrip() == subject.lstrip() or "=?" in subject, (old, new)


@PROPERTY
@given(subject=plain_subjects.filter(lambda s: "=?" not in s and len(s) < 60), body=bodies,
       recipient=st.builds(lambda lo, do: f"{lo}@{do}", local, domain).filter(lambda r: len(r) < 70))
def test_plain_values_give_the_same_head_bytes_as_before(subject: str, body: str, recipient: str) -> None:
    raw = reply_content(SETTINGS, message_id=MESSAGE_ID, recipient=recipient, subject=subject, body=body)
    reference = reference_content(SETTINGS, MESSAGE_ID, recipient, subject, body)
    assert raw.split(b"\r\n\r\n", 1)[0] == reference.split(b"\r\n\r\n", 1)[0]


# -- the outside -----------------------------------------------------------------------------------

@PROPERTY
@given(subject=subjects, recipient=recipients, in_reply_to=st.none() | msg_ids,
       references=st.lists(msg_ids, max_size=20))
@example(subject="Request received", recipient="alice@police.test", in_reply_to=OUTLOOK_ID,
         references=[OUTLOOK_ID] * 3)
@example(subject="s", recipient="alice@police.test", in_reply_to="<=?utf-8?q?x?=@y>", references=["<a=?b@c>"])
def test_outer_headers_say_what_the_email_package_said(subject: str, recipient: str, in_reply_to: str | None,
                                                       references: list[str]) -> None:
    row = Outbox(recipient=recipient, subject=subject, header_message_id=MESSAGE_ID,
                 in_reply_to=in_reply_to, references=references)
    when = format_datetime(datetime.now(UTC))
    try:
        reference = reference_outer_head(SETTINGS, row, when, "lers-0123")
    except ValueError:
        with pytest.raises(ValueError):
            pgp_mime_encrypted(SETTINGS, row, ARMORED)
        return
    if any(c in LINE_BREAKS for c in subject):
        with pytest.raises(ValueError):
            pgp_mime_encrypted(SETTINGS, row, ARMORED)
        return
    raw = pgp_mime_encrypted(SETTINGS, row, ARMORED)
    assert_well_formed_head(raw, stdlib=() if plain_address(recipient) else ("To",))
    new, old = parsed(raw), parsed(reference + b"\r\n")
    assert new.keys() == old.keys()
    for name in old:
        if name in ("Subject", "Date", "Content-Type"):
            continue
        if name in ("In-Reply-To", "References"):  # the email package may fold after the colon
            assert str(new[name]).split() == str(old[name]).split(), name
            continue
        assert str(new[name]) == str(old[name]), name
    assert abs((new["Date"].datetime - old["Date"].datetime).total_seconds()) <= 5
    assert_same_subject(str(new["Subject"]), str(old["Subject"]), subject)
    assert new.get_content_type() == "multipart/encrypted"
    assert new.get_param("protocol") == "application/pgp-encrypted"
    version, payload = new.iter_parts()
    assert version.get_content_type() == "application/pgp-encrypted"
    assert b"Version: 1" in version.get_payload(decode=True)
    assert payload.get_content_type() == "application/octet-stream"
    assert payload.get_payload(decode=True).replace(b"\r\n", b"\n").rstrip(b"\n") == ARMORED.rstrip(b"\n")
    # message ids are written as they are, never as encoded-words (mail clients thread by them)
    for name, ids in (("In-Reply-To", [in_reply_to] if in_reply_to else []), ("References", references)):
        if ids and not any("=?" in i for i in ids):
            head = raw.split(b"\r\n\r\n", 1)[0].decode()
            field = re.search(rf"^{name}:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", head, re.MULTILINE)
            assert field is not None and field.group(1).split() == ids


# -- single fields ---------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    "a\r\nBcc: victim@example.org", "a\nBcc: x", "a\rb", "trailing\n", "\r\n", "a\x0bb", "a\x0cb",
    "a\x1cb", "a\x85b", "a\u2028b", "a\u2029b",
])
def test_a_line_break_in_a_subject_is_refused(value: str) -> None:
    with pytest.raises(ValueError):
        compose.unstructured_field("Subject", value)
    with pytest.raises(ValueError):
        reply_content(SETTINGS, message_id=MESSAGE_ID, recipient="a@b.test", subject=value, body="x")


@pytest.mark.parametrize("name,value", [
    ("To", "a@b.test\r\nBcc: victim@example.org"), ("To", "a@b.test\nBcc: x"),
    ("Message-ID", "<a@b>\r\nBcc: x"),
])
def test_a_line_break_in_other_fields_is_refused(name: str, value: str) -> None:
    write = compose.address_field if name == "To" else (lambda n, v: compose.msg_id_field(n, [v]))
    with pytest.raises(ValueError):
        write(name, value)


def test_control_characters_are_only_written_inside_encoded_words() -> None:
    field = compose.unstructured_field("Subject", "bell \x07 nul \x00 del \x7f")
    assert re.fullmatch(rb"Subject: =\?utf-8\?q\?[!-~]+\?=\r\n", field), field
    assert str(parsed(field + b"\r\n")["Subject"]) == "bell \x07 nul \x00 del \x7f"


def test_a_long_outlook_message_id_stays_one_msg_id() -> None:
    long_id = OUTLOOK_ID
    assert compose.msg_id_field("In-Reply-To", [long_id]) == f"In-Reply-To: {long_id}\r\n".encode()
    assert compose.msg_id_field("References", ["<a@b>", long_id]) == \
        f"References: <a@b>\r\n {long_id}\r\n".encode()


def test_subject_folding_and_encoding_examples() -> None:
    assert compose.unstructured_field("Subject", "[LERS-2026-000001] Request received") == \
        b"Subject: [LERS-2026-000001] Request received\r\n"
    long = " ".join(["word"] * 30)
    folded = compose.unstructured_field("Subject", long)
    assert all(len(line) <= 78 for line in folded.split(b"\r\n"))
    assert str(parsed(folded + b"\r\n")["Subject"]) == long
    encoded = compose.unstructured_field("Subject", "Frage zu Ihrer Anfrage: Größe")
    assert encoded.startswith(b"Subject: =?utf-8?q?") and encoded.isascii()


def test_reply_content_shape() -> None:
    raw = reply_content(SETTINGS, message_id=MESSAGE_ID, recipient="alice@police.test",
                        subject="[LERS-2026-000001] Request received", body="Hello,\n\nline two é\n")
    assert raw == (
        b"From: LERS Gateway <lers@gateway.test>\r\n"
        b"To: alice@police.test\r\n"
        b"Subject: [LERS-2026-000001] Request received\r\n"
        b"Message-ID: " + MESSAGE_ID.encode() + b"\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: text/plain; charset="utf-8"; protected-headers="v1"\r\n'
        b"\r\n"
        b"Hello,\r\n\r\nline two =C3=A9\r\n")
    assert raw == reference_content(SETTINGS, MESSAGE_ID, "alice@police.test",
                                    "[LERS-2026-000001] Request received", "Hello,\n\nline two é\n")

