"""Raw RFC 5322 / RFC 3156 test mail, built byte by byte.

The signed MIME part is assembled as bytes and signed as-is, so nothing (in particular
``email.generator``) can re-fold or re-encode it after signing. Everything is written with
CRLF and converted to another line ending only at the very end, if asked.
"""

from __future__ import annotations

import base64
import hashlib
import quopri
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import Header
from email.utils import format_datetime

from .officer_keys import OfficerKeyring, TestKey

CRLF = b"\r\n"
GATEWAY_ADDRESS = "lers@gateway.test"

_MICALG = {
    "SHA1": "pgp-sha1",
    "SHA224": "pgp-sha224",
    "SHA256": "pgp-sha256",
    "SHA384": "pgp-sha384",
    "SHA512": "pgp-sha512",
    "RIPEMD160": "pgp-ripemd160",
}

_REQUEST_DEFAULTS: dict[str, str] = {
    "type": "subpoena",
    "case_number": "2026-CR-0042",
    "legal_basis": "18 U.S.C. 2703(c)",
    "subjects": "account_id:42, email:suspect@example.com",
    "data_categories": "subscriber_information, login_ip_addresses",
    "date_from": "2026-01-01",
    "date_to": "2026-06-30",
}
_FREE_TEXT = "Free text after the blank line."


@dataclass(frozen=True)
class Attachment:
    """One attachment of the signed part; always sent base64-encoded."""

    filename: str
    content_type: str
    data: bytes


# -- small helpers --------------------------------------------------------------------


def request_body(*, free_text: str = _FREE_TEXT, **overrides: str | None) -> str:
    """A sample request: ``key: value`` lines, a blank line, then free text.

    Overrides replace defaults, ``None`` drops a field, unknown keys are appended.
    """
    fields: dict[str, str | None] = {**_REQUEST_DEFAULTS, **overrides}
    lines = [f"{key}: {value}" for key, value in fields.items() if value is not None]
    return "\n".join(lines) + "\n\n" + free_text + "\n"


def boundary_for(*seeds: bytes | str) -> str:
    """Deterministic MIME boundary; ``=_`` can never occur in base64 or QP output."""
    digest = hashlib.sha256()
    for seed in seeds:
        digest.update(seed.encode() if isinstance(seed, str) else seed)
        digest.update(b"\0")
    return "=_lers_" + digest.hexdigest()[:24]


def crlf(data: bytes) -> bytes:
    """Normalise any mix of CR, LF and CRLF to CRLF."""
    return re.sub(rb"\r\n|\r|\n", b"\r\n", data)


def with_line_ending(message: bytes, line_ending: bytes) -> bytes:
    """Turn a CRLF message into one with another line ending (e.g. LF-only)."""
    return crlf(message).replace(CRLF, line_ending)


def header_block(headers: Sequence[tuple[str, str]]) -> bytes:
    """Header lines, CRLF-terminated. Values are used verbatim (folding included).

    Non-ASCII values are RFC 2047-encoded; ASCII values are never touched, so attack
    values (odd display names, empty values) go out exactly as given.
    """
    out = bytearray()
    for name, value in headers:
        if not value.isascii():
            value = Header(value, "utf-8").encode(linesep="\r\n")
        line = f"{name}: {value}".rstrip(" ")
        out += crlf(line.encode("ascii")) + CRLF
    return bytes(out)


def entity(headers: Sequence[tuple[str, str]], body: bytes) -> bytes:
    """A MIME entity: headers, blank line, body (no trailing CRLF added)."""
    return header_block(headers) + CRLF + crlf(body)


def _text_transfer(text: str) -> tuple[str, bytes]:
    """Pick 7bit when the text survives transport untouched, else quoted-printable.

    RFC 3156 requires signed content to be 7-bit clean, with no trailing whitespace.
    """
    raw = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = raw.split("\n")
    safe = raw.isascii() and all(
        len(line) <= 76 and line == line.rstrip(" \t") and not line.startswith("From ")
        for line in lines
    )
    if safe:
        return "7bit", crlf(raw.encode("ascii"))
    encoded = quopri.encodestring(raw.encode("utf-8"))
    encoded = re.sub(rb"(?m)^From ", b"=46rom ", encoded)
    return "quoted-printable", crlf(encoded)


def text_entity(
    text: str,
    *,
    subtype: str = "plain",
    extra_params: str = "",
    headers: Sequence[tuple[str, str]] = (),
) -> bytes:
    """A text/* entity (UTF-8); ``headers`` go before Content-Type (protected headers)."""
    cte, body = _text_transfer(text)
    ctype = f'text/{subtype}; charset="utf-8"{extra_params}'
    return entity([*headers, ("Content-Type", ctype), ("Content-Transfer-Encoding", cte)], body)


def attachment_entity(attachment: Attachment, *, disposition: str = "attachment") -> bytes:
    """A base64 attachment entity."""
    name = attachment.filename
    body = base64.encodebytes(attachment.data).rstrip(b"\n")
    return entity(
        [
            ("Content-Type", f'{attachment.content_type}; name="{name}"'),
            ("Content-Disposition", f'{disposition}; filename="{name}"'),
            ("Content-Transfer-Encoding", "base64"),
        ],
        body,
    )


def multipart_entity(
    subtype: str,
    parts: Sequence[bytes],
    *,
    boundary: str | None = None,
    params: str = "",
    headers: Sequence[tuple[str, str]] = (),
    preamble: bytes = b"",
    closing_crlf: bool = True,
) -> bytes:
    """multipart/* entity around already-built part entities.

    ``closing_crlf=False`` ends exactly at the close delimiter, which is what a part
    nested as the signed part of multipart/signed needs (the CRLF before the next
    boundary belongs to that boundary, not to the signed bytes).
    """
    boundary = boundary or boundary_for(subtype, *parts)
    ctype = f"multipart/{subtype};{params}"
    fold = "\r\n" if len(ctype) + len(boundary) > 50 else ""
    ctype += f'{fold} boundary="{boundary}"'
    body = bytearray(crlf(preamble) + CRLF if preamble else b"")
    for part in parts:
        body += f"--{boundary}".encode() + CRLF + part + CRLF
    body += f"--{boundary}--".encode()
    if closing_crlf:
        body += CRLF
    return entity([*headers, ("Content-Type", ctype)], bytes(body))


def message_entity(message: bytes) -> bytes:
    """message/rfc822 entity embedding a whole mail (forwarding as attachment)."""
    return entity(
        [
            ("Content-Type", "message/rfc822"),
            ("Content-Disposition", 'attachment; filename="forwarded.eml"'),
        ],
        message,
    )


def outer_headers(
    *,
    from_addr: str | None,
    to_addr: str,
    subject: str,
    date: datetime,
    message_id: str,
    extra: Sequence[tuple[str, str]] = (),
) -> list[tuple[str, str]]:
    """Top-level RFC 5322 headers; ``from_addr=None`` leaves From out entirely."""
    headers: list[tuple[str, str]] = []
    if from_addr is not None:
        headers.append(("From", from_addr))
    headers += [
        ("To", to_addr),
        ("Subject", subject),
        ("Date", format_datetime(_aware(date))),
        ("Message-ID", message_id),
        *extra,
        ("MIME-Version", "1.0"),
    ]
    return headers


def compose(headers: Sequence[tuple[str, str]], top_entity: bytes, line_ending: bytes) -> bytes:
    """Whole message: RFC 5322 headers followed by the top entity's own headers and body."""
    return with_line_ending(header_block(headers) + top_entity, line_ending)


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def default_message_id(*seeds: bytes | str, domain: str = "police.test") -> str:
    """Deterministic Message-ID derived from the content."""
    return f"<{boundary_for(*seeds)[7:]}@{domain}>"


def _domain_of(address: str | None) -> str:
    match = re.search(r"@([A-Za-z0-9.-]+)", address or "")
    return match.group(1) if match else "police.test"


def _pdf_string(line: str) -> bytes:
    """A PDF literal string in WinAnsi (cp1252) with (, ) and backslash escaped."""
    raw = line.encode("cp1252", errors="replace")
    return b"(" + re.sub(rb"([()\\])", rb"\\\1", raw) + b")"


def pdf_bytes(text: str) -> bytes:
    """A tiny valid one-page PDF showing ``text`` (one PDF line per text line).

    Hand-written so the tests need no PDF library; the xref offsets are computed, so
    strict readers (pypdf) parse it without repairs and can extract the text.
    """
    lines = text.splitlines() or [""]
    ops = [b"BT", b"/F1 12 Tf", b"14 TL", b"72 720 Td"]
    for index, line in enumerate(lines):
        ops.append((b"T* " if index else b"") + _pdf_string(line) + b" Tj")
    ops.append(b"ET")
    stream = b"\n".join(ops) + b"\n"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792]"
        b" /Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"endstream",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref_at = len(out)
    out += b"xref\n0 %d\n" % (len(objects) + 1)
    out += b"0000000000 65535 f\r\n"  # each xref entry is exactly 20 bytes
    for offset in offsets:
        out += b"%010d 00000 n\r\n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\n" % (len(objects) + 1)
    out += b"startxref\n%d\n%%%%EOF\n" % xref_at
    return bytes(out)


# -- PGP/MIME signed ------------------------------------------------------------------


def signed_part_bytes(
    body: str,
    attachments: Sequence[Attachment] = (),
    *,
    protected_headers: bool = False,
    from_addr: str | None = None,
    to_addr: str = GATEWAY_ADDRESS,
    subject: str = "Data request",
) -> bytes:
    """The exact bytes (CRLF) that go first in multipart/signed and get signed.

    ``text/plain`` alone, or ``multipart/mixed`` (text + base64 attachments). With
    ``protected_headers`` the part carries From/To/Subject and ``protected-headers="v1"``.
    """
    inner_headers: list[tuple[str, str]] = []
    params = ""
    if protected_headers:
        if from_addr is not None:
            inner_headers.append(("From", from_addr))
        inner_headers += [("To", to_addr), ("Subject", subject)]
        params = ' protected-headers="v1";'
    if not attachments:
        extra = f";{params.rstrip(';')}" if params else ""
        return text_entity(body, extra_params=extra, headers=inner_headers)
    parts = [text_entity(body), *(attachment_entity(att) for att in attachments)]
    return multipart_entity(
        "mixed", parts, params=params, headers=inner_headers, closing_crlf=False
    )


def multipart_signed_entity(
    signed_part: bytes,
    signature: bytes,
    *,
    micalg: str = "pgp-sha256",
    protocol: str | None = "application/pgp-signature",
    boundary: str | None = None,
    extra_headers: Sequence[tuple[str, str]] = (),
    signature_content_type: str = "application/pgp-signature",
    closing_crlf: bool = True,
) -> bytes:
    """RFC 3156 multipart/signed entity; parameters are overridable for attack cases.

    ``extra_headers`` go right after Content-Type (e.g. a duplicate Content-Type).
    """
    boundary = boundary or boundary_for("signed", signed_part, signature)
    params = [f"micalg={micalg}"]
    if protocol is not None:
        params.append(f'protocol="{protocol}"')
    params.append(f'boundary="{boundary}"')
    ctype = "multipart/signed; " + ";\r\n ".join(params)
    sig_entity = entity(
        [
            ("Content-Type", f'{signature_content_type}; name="signature.asc"'),
            ("Content-Description", "OpenPGP digital signature"),
            ("Content-Disposition", 'attachment; filename="signature.asc"'),
        ],
        crlf(signature).rstrip(b"\r\n"),
    )
    body = (
        b"This is an OpenPGP/MIME signed message (RFC 4880 and 3156)" + CRLF
        + f"--{boundary}".encode() + CRLF + signed_part + CRLF
        + f"--{boundary}".encode() + CRLF + sig_entity + CRLF
        + f"--{boundary}--".encode()
        + (CRLF if closing_crlf else b"")
    )  # fmt: skip
    return header_block([("Content-Type", ctype), *extra_headers]) + CRLF + body


def micalg_for(digest: str) -> str:
    """RFC 3156 micalg value for a gpg digest name."""
    return _MICALG[digest.upper()]


def signed_request_mail(
    ring: OfficerKeyring,
    key: TestKey,
    *,
    from_addr: str | None,
    to_addr: str = GATEWAY_ADDRESS,
    subject: str = "Data request",
    body: str,
    attachments: Sequence[Attachment] = (),
    protected_headers: bool = False,
    message_id: str | None = None,
    extra_outer_headers: Sequence[tuple[str, str]] = (),
    digest: str = "SHA256",
    at: datetime | None = None,
    date: datetime | None = None,
    expires_seconds: int | None = None,
    line_ending: bytes = CRLF,
) -> bytes:
    """A PGP/MIME (RFC 3156) signed mail as a real client would send it.

    ``at`` dates the signature (and, unless ``date`` is given, the Date header).
    """
    part = signed_part_bytes(
        body,
        attachments,
        protected_headers=protected_headers,
        from_addr=from_addr,
        to_addr=to_addr,
        subject=subject,
    )
    signature = ring.sign_detached(key, part, digest=digest, at=at, expires_seconds=expires_seconds)
    top = multipart_signed_entity(part, signature, micalg=micalg_for(digest))
    when = date or at or datetime.now(UTC)
    headers = outer_headers(
        from_addr=from_addr,
        to_addr=to_addr,
        subject=subject,
        date=when,
        message_id=message_id or default_message_id(part, domain=_domain_of(from_addr)),
        extra=extra_outer_headers,
    )
    return compose(headers, top, line_ending)


# -- inline PGP, unsigned, encrypted --------------------------------------------------


def inline_signed_mail(
    ring: OfficerKeyring,
    key: TestKey,
    *,
    from_addr: str | None,
    to_addr: str = GATEWAY_ADDRESS,
    subject: str = "Data request",
    body: str,
    text_before: str = "",
    text_after: str = "",
    message_id: str | None = None,
    extra_outer_headers: Sequence[tuple[str, str]] = (),
    digest: str = "SHA256",
    at: datetime | None = None,
    date: datetime | None = None,
    line_ending: bytes = CRLF,
) -> bytes:
    """text/plain mail whose body is a clearsigned block (optionally with text around it)."""
    block = ring.clearsign(key, body.encode("utf-8"), digest=digest, at=at).decode("utf-8")
    return unsigned_mail(
        from_addr=from_addr,
        to_addr=to_addr,
        subject=subject,
        body=text_before + block + text_after,
        message_id=message_id,
        extra_outer_headers=extra_outer_headers,
        date=date or at,
        line_ending=line_ending,
    )


def unsigned_mail(
    *,
    from_addr: str | None,
    to_addr: str = GATEWAY_ADDRESS,
    subject: str = "Data request",
    body: str,
    attachments: Sequence[Attachment] = (),
    message_id: str | None = None,
    extra_outer_headers: Sequence[tuple[str, str]] = (),
    date: datetime | None = None,
    line_ending: bytes = CRLF,
) -> bytes:
    """Plain mail with no signature at all (text/plain, or multipart/mixed)."""
    if attachments:
        parts = [text_entity(body), *(attachment_entity(att) for att in attachments)]
        top = multipart_entity("mixed", parts)
    else:
        top = text_entity(body)
    headers = outer_headers(
        from_addr=from_addr,
        to_addr=to_addr,
        subject=subject,
        date=date or datetime.now(UTC),
        message_id=message_id or default_message_id(top, domain=_domain_of(from_addr)),
        extra=extra_outer_headers,
    )
    return compose(headers, top, line_ending)


def encrypted_mail(
    ring: OfficerKeyring,
    recipient_public: bytes,
    *,
    from_addr: str | None,
    to_addr: str = GATEWAY_ADDRESS,
    subject: str = "Data request",
    body: str,
    message_id: str | None = None,
    date: datetime | None = None,
    line_ending: bytes = CRLF,
    signer: TestKey | None = None,
    inner: bytes | None = None,
) -> bytes:
    """RFC 3156 section 4 multipart/encrypted mail: by default encrypted but NOT signed.

    ``signer`` signs and encrypts in one OpenPGP message (section 6.2); ``inner`` replaces the
    plain text entity, e.g. with a whole multipart/signed entity (sign, then encrypt: 6.1).
    """
    inner = inner if inner is not None else text_entity(body)
    armored = ring.encrypt_to(recipient_public, inner, signer=signer)
    version = entity(
        [
            ("Content-Type", "application/pgp-encrypted"),
            ("Content-Description", "PGP/MIME version identification"),
        ],
        b"Version: 1",
    )
    payload = entity(
        [
            ("Content-Type", 'application/octet-stream; name="encrypted.asc"'),
            ("Content-Description", "OpenPGP encrypted message"),
            ("Content-Disposition", 'inline; filename="encrypted.asc"'),
        ],
        crlf(armored).rstrip(b"\r\n"),
    )
    top = multipart_entity(
        "encrypted",
        [version, payload],
        params=' protocol="application/pgp-encrypted";',
        preamble=b"This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)",
    )
    headers = outer_headers(
        from_addr=from_addr,
        to_addr=to_addr,
        subject=subject,
        date=date or datetime.now(UTC),
        message_id=message_id or default_message_id(inner, domain=_domain_of(from_addr)),
    )
    return compose(headers, top, line_ending)


# -- re-sending and parsing -----------------------------------------------------------


def split_head(message: bytes) -> tuple[bytes, bytes, bytes]:
    """Split a message into (header block, separator, body) at the first empty line."""
    match = re.search(rb"\r?\n\r?\n", message)
    if match is None:
        return message, b"", b""
    return message[: match.start()], message[match.start() : match.end()], message[match.end() :]


def _header_fields(head: bytes) -> tuple[list[bytes], bytes]:
    """Logical header fields (folded continuation lines kept) and the line ending used."""
    eol = b"\r\n" if b"\r\n" in head else b"\n"
    fields: list[bytes] = []
    for line in re.split(rb"\r?\n", head):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += eol + line
        else:
            fields.append(line)
    return fields, eol


def replace_outer_header(message: bytes, name: str, value: str) -> bytes:
    """Replace the top-level ``name:`` header(s) by a single new one, in place."""
    head, sep, body = split_head(message)
    fields, eol = _header_fields(head)
    prefix = name.lower().encode() + b":"
    new_field = f"{name}: {value}".encode("ascii")
    out: list[bytes] = []
    for field in fields:
        if field.lower().startswith(prefix):
            if new_field not in out:
                out.append(new_field)
        else:
            out.append(field)
    if new_field not in out:
        out.append(new_field)
    return eol.join(out) + sep + body


def resend(message: bytes, *, message_id: str, date: datetime) -> bytes:
    """The same mail (same signed part and signature) with a new Message-ID and Date."""
    message = replace_outer_header(message, "Message-ID", message_id)
    return replace_outer_header(message, "Date", format_datetime(_aware(date)))


def boundary_of(header_value: bytes) -> bytes:
    """The boundary parameter of a (possibly folded) Content-Type value."""
    match = re.search(rb'boundary\s*=\s*(?:"([^"]+)"|([^\s;]+))', header_value, re.I)
    if match is None:
        raise ValueError("no boundary parameter")
    return match.group(1) or match.group(2)


def extract_signed_part(message: bytes) -> tuple[bytes, bytes]:
    """(signed part bytes in CRLF form, signature part body) of a top-level multipart/signed.

    A deliberately independent byte-level parser for the self-tests; the gateway has
    its own.
    """
    head, _sep, body = split_head(message)
    fields, _eol = _header_fields(head)
    ctypes = [f for f in fields if f.lower().startswith(b"content-type:")]
    if len(ctypes) != 1 or b"multipart/signed" not in ctypes[0].lower():
        raise ValueError("not a (single Content-Type) multipart/signed message")
    delimiter = b"--" + boundary_of(ctypes[0])
    marker = CRLF + delimiter
    body = crlf(body)
    start = 0 if body.startswith(delimiter) else body.index(marker) + 2
    first = body.index(CRLF, start) + 2
    end = body.index(marker, first)
    second = body.index(CRLF, end + 2) + 2
    end2 = body.index(marker, second)
    _sig_head, _sep2, signature = split_head(body[second:end2])
    return body[first:end], signature
