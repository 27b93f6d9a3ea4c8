"""The signed part is read at the byte level (issue 8, item 5: a large attachment is decoded once,
not parsed whole by the email package): what handlers get must be exactly what the email package
gives when it parses the whole part, the way the gateway read it before."""

from __future__ import annotations

import base64
import hashlib
import random
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.mime import SignedContent, canonical_line_endings, canonical_text_sha256, read_signed_content
from gateway.spool import SPOOL_DIR
from tests.support import mail_strategies as ms


def _as_the_email_package_reads_it(signed: bytes) -> tuple[str, list[tuple[str | None, str, bytes]]]:
    """The reference: the whole part parsed by the email package (text and attachments)."""
    entity: EmailMessage = BytesParser(policy=policy.default).parsebytes(signed)  # type: ignore[assignment]
    texts, files = [], []
    pending = [entity]
    leaves = []
    while pending:
        part = pending.pop(0)
        if part.get_content_maintype() == "message" or not part.is_multipart():
            leaves.append(part)
        else:
            pending[:0] = list(part.iter_parts())  # type: ignore[arg-type]
    for part in leaves:
        filename = part.get_filename()
        if part.get_content_type() == "text/plain" and not (
                part.get_content_disposition() == "attachment" or filename is not None):
            texts.append(part)
            continue
        if part.get_content_maintype() == "message" and isinstance(part.get_payload(), list) \
                and part.get_payload():
            data = part.get_payload()[0].as_bytes()  # type: ignore[index]
        else:
            payload = part.get_payload(decode=True)
            data = payload if isinstance(payload, bytes) else b""
        files.append((filename, part.get_content_type(), data))
    return str(len(texts)), files


def _read(signed: bytes) -> tuple[str, list[tuple[str | None, str, bytes]]] | None:
    try:
        content = read_signed_content(memoryview(signed))
    except (RecursionError, ValueError, LookupError, TypeError, AttributeError, UnicodeError):
        return None
    assert isinstance(content, SignedContent)
    texts = str(len([t for t in [content.text] if t]))
    return texts, [(a.filename, a.content_type, bytes(a.data)) for a in content.attachments]


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(signed=st.one_of(ms.signed_parts(), ms.mutated(ms.signed_parts()), ms.entity_trees(max_leaves=8)))
def test_the_byte_level_reading_gives_what_the_email_package_gives(signed: bytes) -> None:
    signed = canonical_line_endings(signed)
    ours = _read(signed)
    if ours is None:  # refused as unparseable: the email package's reading is not compared
        return
    try:
        reference = _as_the_email_package_reads_it(signed)
    except (RecursionError, ValueError, LookupError, TypeError, AttributeError, UnicodeError):
        return
    assert _comparable(ours[1]) == _comparable(reference[1])


def _comparable(files: list[tuple[str | None, str, bytes]]) -> list[tuple[str | None, str, bytes]]:
    """A forwarded message is generated again by the email package, with new random boundaries
    when its own were unusable: its bytes differ from one reading to the next, ours or not."""
    return [(name, kind, b"" if kind.startswith("message/") else data) for name, kind, data in files]


def _with_attachment(body: bytes, encoding: str = "base64") -> bytes:
    return (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
            b"hello\r\n--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; "
            b"filename=x.pdf\r\nContent-Transfer-Encoding: " + encoding.encode() + b"\r\n\r\n"
            + body + b"\r\n--b--\r\n")


@pytest.mark.parametrize("spooled", [False, True], ids=["in memory", "into a spool"])
def test_attachments_decode_as_the_email_package_decodes_them(spooled: bool, tmp_path: Path) -> None:
    token = SPOOL_DIR.set(tmp_path / "spool" if spooled else None)  # large files decode to a spool
    try:
        _decode_as_the_email_package()
    finally:
        SPOOL_DIR.reset(token)


def _decode_as_the_email_package() -> None:
    data = bytes(range(256)) * 5000  # over a megabyte: several windows
    clean = canonical_line_endings(base64.encodebytes(data))
    cases = [
        clean,
        base64.b64encode(data),  # one long line
        canonical_line_endings(base64.encodebytes(data[:-1])),  # padding at the end
        clean[:-4],  # the padding cut off: repaired by the email package
        clean[:700_000] + b"==" + clean[700_000:],  # padding in the middle
        clean.replace(b"\r\n", b" \r\n"),  # blanks on every line
        b"",
        b"not base64 at all!\r\n",
    ]
    for body in cases:
        signed = _with_attachment(body)
        assert _read(signed) == _as_the_email_package_reads_it(signed)
    for encoding in ("quoted-printable", "7bit", "8bit", "binary", "x-unknown"):
        signed = _with_attachment(b"a=3Db\r\n\xff line two", encoding)
        assert _read(signed) == _as_the_email_package_reads_it(signed)
        signed = _with_attachment(b"a=3Db\r\n\xff line two" * 100_000, encoding)  # over a megabyte
        assert _read(signed) == _as_the_email_package_reads_it(signed)


def _canonical_text(data: bytes) -> bytes:
    """The replay key's text, as it was computed on the whole signed part (stored keys use it)."""
    lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    return b"\n".join(line.rstrip(b" \t") for line in lines).rstrip(b"\n")


@settings(max_examples=300, deadline=None)
@given(data=st.lists(st.sampled_from([b"a", b" ", b"\t", b"\r", b"\n", b"\r\n", b"xyz"]), max_size=60)
       .map(b"".join))
def test_the_replay_text_digest_is_that_of_the_whole_text(data: bytes) -> None:
    assert canonical_text_sha256(data) == hashlib.sha256(_canonical_text(data)).digest()


def test_the_replay_text_digest_of_a_large_part_read_in_windows() -> None:
    rng = random.Random(8)
    pieces = [b"line", b" \t", b"\r\n", b"\n", b"\r", b"\r\n\r\n", b"x" * 3000]
    data = b"".join(rng.choice(pieces) for _ in range(20_000)) + b" \r\n\n\r\n"
    assert len(data) > 3 * 1024 * 1024
    for framed in (data, data.replace(b"\r\n", b"\n"), b"\n\n" + data, data + b"\n" * 5):
        assert canonical_text_sha256(memoryview(framed)) == hashlib.sha256(_canonical_text(framed)).digest()
