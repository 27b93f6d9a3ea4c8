"""The MIME parsing of gateway/mime.py and handlers/chain.py as it was before issue 8's MIME work
(commit 6bfd8c6), kept verbatim so that tests/test_mime_equivalence.py can require the faster code
to give exactly the same answers. Only the data types are shared (imported), so results compare
equal; every function here is the old one, calling only old ones. Not used by the gateway.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import quopri
import re
from collections.abc import Callable
from email import errors, policy
from email.headerregistry import AddressHeader
from email.message import EmailMessage
from email.message import Message as Compat32Message
from email.parser import BytesHeaderParser, BytesParser
from functools import partial

from gateway.mime import (
    DetachedFile,
    InlineSigned,
    MimeLimits,
    PgpMimeEncrypted,
    PgpMimeSigned,
    ReceivedAttachment,
    Refusal,
    SignedContent,
)
from gateway.spool import CHUNK, RECORD, SPOOL_DIR, Spool

PGP_SIGNATURE_TYPE = "application/pgp-signature"
PGP_ENCRYPTED_TYPE = "application/pgp-encrypted"
SMIME_TYPES = {"application/pkcs7-signature", "application/x-pkcs7-signature",
               "application/pkcs7-mime", "application/x-pkcs7-mime"}
IDENTITY_ENCODINGS = {"7bit", "8bit", "binary"}

BEGIN_SIGNED = b"-----BEGIN PGP SIGNED MESSAGE-----"
BEGIN_SIGNATURE = b"-----BEGIN PGP SIGNATURE-----"
END_SIGNATURE = b"-----END PGP SIGNATURE-----"
BEGIN_MESSAGE = b"-----BEGIN PGP MESSAGE-----"
ARMOR_LINE = re.compile(rb"^-----(BEGIN|END) PGP [A-Z ,/0-9]+-----[ \t\r]*$", re.MULTILINE)


SignedStructure = PgpMimeSigned | InlineSigned | PgpMimeEncrypted | DetachedFile


def canonical_line_endings(raw: bytes) -> bytes:
    """CRLF everywhere: signatures are made over the canonical form; LF-only mail is fixed here.

    Mail that came over SMTP is CRLF already: it is returned as it is (three counts, no copy),
    instead of three replacements that each copy a message of possibly tens of megabytes."""
    crlf = raw.count(b"\r\n")
    if raw.count(b"\n") == crlf and raw.count(b"\r") == crlf:
        return raw
    return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


Buffer = bytes | bytearray | memoryview  # a memoryview is a part of a larger message, not a copy
BLANK_LINE = re.compile(rb"\r\n\r\n")


def canonical_text_sha256(data: Buffer) -> bytes:
    """sha256 of the text however it was framed: line endings, trailing blanks on a line and final
    newlines do not change it (a replay re-sent in another frame is still recognised). Computed a
    window of whole lines at a time, so a large signed part is not copied whole, or split into a
    list of all its lines."""
    digest = hashlib.sha256()
    held = 0  # newlines at the end of what was read so far: dropped if nothing follows them
    view = memoryview(data)
    at = 0
    while at < len(view):
        end = min(at + WINDOW, len(view))
        found = NEWLINE.search(view, end) if end < len(view) else None
        end = found.end() if found else len(view)
        window = bytes(view[at:end])
        at = end
        lines = window.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        text = b"\n".join(line.rstrip(b" \t") for line in lines)
        body = text.rstrip(b"\n")
        if body:
            digest.update(b"\n" * held + body)
            held = 0
        held += len(text) - len(body)
    return digest.digest()


NEWLINE = re.compile(rb"\n")


def split_head_body(entity: Buffer) -> tuple[bytes, Buffer]:
    """The header block (as bytes: it is small) and the body (a view when given a view)."""
    if isinstance(entity, memoryview):
        found = BLANK_LINE.search(entity)
        end = found.start() if found else -1
    else:
        end = entity.find(b"\r\n\r\n")
    if end < 0:
        return bytes(entity), b""
    return bytes(entity[: end + 2]), entity[end + 4 :]


def parse_headers(head: bytes) -> Compat32Message:
    return BytesHeaderParser().parsebytes(head + b"\r\n", headersonly=True)


DEFAULT_LIMITS = MimeLimits()
MAX_HEADER_BLOCK = DEFAULT_LIMITS.max_header_bytes
MAX_HEADER_FIELD = DEFAULT_LIMITS.max_header_field_bytes
SINGLE_PARAMS = re.compile(rb"(?i)[;\s](boundary|protocol)\s*=")


def header_problem(head: bytes, limits: MimeLimits = DEFAULT_LIMITS) -> Refusal | None:
    """Bound what the (slow, recursive) header parsers are given, before they see it.

    The standard library's address and parameter parsers take quadratic time on some inputs, so an
    unsigned header of a few hundred kilobytes could stall the gateway; no honest mail needs that.
    """
    if len(head) > limits.max_header_bytes:
        return Refusal("headers_too_large", f"a header block is {len(head)} bytes long, more than the "
                       f"{limits.max_header_bytes} bytes accepted: send the message without extra headers")
    field_start, fields = 0, 0
    lines = head.split(b"\r\n")
    for index, line in enumerate([*lines, b"end"]):
        if index == len(lines) or not line[:1].isspace():
            field = b"\r\n".join(lines[field_start:index])
            if len(field) > limits.max_header_field_bytes:
                name = field.split(b":", 1)[0][:40].decode("ascii", "replace")
                return Refusal("headers_too_large", f"the {name} header is {len(field)} bytes long, more "
                               f"than the {limits.max_header_field_bytes} bytes accepted for one header")
            if field[:13].lower() == b"content-type:":
                found = [m.group(1).lower() for m in SINGLE_PARAMS.finditer(field)]
                if len(found) != len(set(found)):
                    return Refusal("bad_structure", "a Content-Type header repeats a parameter")
            fields += field.strip() != b""
            field_start = index
    if fields > limits.max_header_fields:
        return Refusal("too_many_headers", f"a header block has {fields} header fields, more than the "
                       f"{limits.max_header_fields} accepted: send the message without the extra headers")
    return None


def mime_tree_problem(entity: Buffer, limits: MimeLimits = DEFAULT_LIMITS) -> Refusal | None:
    """Walk every MIME part at the byte level and hold it to `limits`, before any parser does.

    The walk reads each part's (bounded) header block with the same header parser the standard
    library's MIME parser uses, so it sees the parts that parser would build; it keeps no objects,
    decodes nothing, and stops at the first limit broken. Decoding never makes base64 or
    quoted-printable bigger, so the decoded size is bounded from the encoded length alone."""
    parts, decoded = 0, 0
    pending: list[tuple[Buffer, int]] = [(memoryview(entity), 0)]  # views: parts are not copied
    while pending:
        current, depth = pending.pop()
        parts += 1
        if parts > limits.max_parts:
            return Refusal("too_many_parts", f"the message has more than {limits.max_parts} MIME parts: "
                           "send fewer files in one message (several messages may follow each other)")
        if depth > limits.max_nesting:
            return Refusal("too_deeply_nested", f"the message's MIME parts are nested more than "
                           f"{limits.max_nesting} levels deep: attach the files directly, not inside "
                           "forwarded or nested messages")
        head, body = _part_head_body(current)
        problem = header_problem(head, limits)
        if problem:
            return problem
        headers = parse_headers(head)
        children = _children(headers, body)
        if children is None:
            decoded += decoded_size_estimate(body, _transfer_encoding(headers))
            if decoded > limits.max_decoded_bytes:
                return Refusal("decoded_size_exceeded", f"the message's parts decode to more than "
                               f"{limits.max_decoded_bytes} bytes: send the files in several messages")
        else:
            pending.extend((child, depth + 1) for child in reversed(children))
    return None


def _part_head_body(entity: Buffer) -> tuple[bytes, Buffer]:
    """A part that starts with an empty line has no headers (RFC 2046 5.1.1): all of it is body."""
    if entity[:2] == b"\r\n":
        return b"", entity[2:]
    return split_head_body(entity)


def _children(headers: Compat32Message, body: Buffer) -> list[Buffer] | None:
    """The entities inside a container, as the MIME parser would find them; None for a leaf.

    A multipart without a boundary is text to the parser, and a missing close delimiter ends the
    last part at the end of the body; message/* holds one message (delivery-status, blocks of
    headers), which the parser reads too, so it counts."""
    maintype = headers.get_content_maintype()
    if maintype == "multipart":
        boundary = headers.get_boundary()
        return None if not boundary else _delimited_parts(body, boundary)
    if headers.get_content_type() == "message/delivery-status":
        return [block + b"\r\n\r\n" for block in bytes(body).split(b"\r\n\r\n") if block.strip()]
    if maintype == "message":
        return [body]
    return None


def _transfer_encoding(headers: Compat32Message) -> str:
    return str(headers.get("Content-Transfer-Encoding", "7bit")).strip().lower()


def decoded_size_estimate(body: Buffer, encoding: str) -> int:
    """An upper bound of what `body` decodes to, computed without decoding (or copying) it whole:
    base64 gives three bytes for four non-blank characters; quoted-printable and the identity
    encodings never give more than they were sent."""
    if encoding == "base64":
        blanks = 0
        for at in range(0, len(body), WINDOW):  # a view has no count(): a window at a time
            window = bytes(body[at:at + WINDOW])
            blanks += sum(window.count(c) for c in (b" ", b"\t", b"\r", b"\n"))
        return (len(body) - blanks) * 3 // 4 + 3
    return len(body)


WINDOW = 1024 * 1024  # bytes of a large part copied at a time
DECODE_WINDOW = 256 * 1024  # bytes of an attachment decoded at a time (each window is copied thrice)


def split_signed(raw: Buffer, *, allow_inline: bool,
                 limits: MimeLimits = DEFAULT_LIMITS) -> SignedStructure | Refusal:
    """Judge the message's outer structure (acceptance rule 1), after holding all of its MIME
    parts to `limits`: every part, signed or not, is counted before anything is decoded."""
    entity = canonical_line_endings(raw)
    view = memoryview(entity)  # parts are cut as views: the signed part is not copied
    head, body = split_head_body(view)
    problem = header_problem(head, limits)
    if problem:
        return problem
    headers = parse_headers(head)
    problem = _header_problem(headers) or mime_tree_problem(view, limits)
    if problem:
        return problem
    content_type = headers.get_content_type()
    if content_type == "multipart/signed":
        return _split_multipart_signed(headers, body)
    if content_type == "multipart/encrypted":
        return _split_multipart_encrypted(headers, body)
    if content_type in SMIME_TYPES:
        return Refusal("smime_not_accepted", "S/MIME is not accepted; sign with OpenPGP (PGP/MIME)")
    if content_type == "text/plain":
        return _split_inline(headers, body, allow_inline)
    return _classify_unsigned(bytes(entity))


def _header_problem(headers: Compat32Message) -> Refusal | None:
    for name in ("Content-Type", "Content-Transfer-Encoding", "MIME-Version"):
        if len(headers.get_all(name) or []) > 1:
            return Refusal("bad_structure", f"the message has more than one {name} header")
    return None


def _split_multipart_signed(headers: Compat32Message, body: Buffer) -> PgpMimeSigned | Refusal:
    protocol = (headers.get_param("protocol") or "")
    protocol = protocol.lower() if isinstance(protocol, str) else ""
    if protocol in SMIME_TYPES:
        return Refusal("smime_not_accepted", "S/MIME is not accepted; sign with OpenPGP (PGP/MIME)")
    if protocol != PGP_SIGNATURE_TYPE:
        return Refusal("bad_structure", 'multipart/signed needs protocol="application/pgp-signature"')
    encoding = str(headers.get("Content-Transfer-Encoding", "7bit")).strip().lower()
    if encoding not in IDENTITY_ENCODINGS:
        return Refusal("bad_structure", f"a multipart cannot have transfer encoding {encoding!r}")
    parts = _split_parts(headers, body)
    if isinstance(parts, Refusal):
        return parts
    if len(parts) != 2:
        return Refusal("bad_structure",
                       f"multipart/signed must have exactly two parts, this one has {len(parts)}")
    signed_bytes, signature_part = parts
    sig_head, sig_body = split_head_body(signature_part)
    problem = header_problem(sig_head) or header_problem(split_head_body(signed_bytes)[0])
    if problem:
        return problem
    sig_headers = parse_headers(sig_head)
    problem = _header_problem(sig_headers)
    if problem:
        return problem
    if sig_headers.get_content_type() != PGP_SIGNATURE_TYPE:
        return Refusal("bad_structure", "the second part of multipart/signed must be "
                       f"application/pgp-signature, not {sig_headers.get_content_type()}")
    signature = _decode_transfer(sig_body, sig_headers)
    if signature is None:
        return Refusal("bad_structure", "the signature part's transfer encoding is broken")
    problem = check_detached_signature_armor(signature)
    if problem:
        return problem
    return PgpMimeSigned(signed_bytes=signed_bytes, signature=signature)


def _split_multipart_encrypted(headers: Compat32Message, body: Buffer) -> PgpMimeEncrypted | Refusal:
    protocol = headers.get_param("protocol")
    if not isinstance(protocol, str) or protocol.lower() != PGP_ENCRYPTED_TYPE:
        return Refusal("bad_structure",
                       'multipart/encrypted needs protocol="application/pgp-encrypted"')
    parts = _split_parts(headers, body)
    if isinstance(parts, Refusal):
        return parts
    if len(parts) != 2:
        return Refusal("bad_structure", "multipart/encrypted must have exactly two parts")
    control_head, _ = split_head_body(parts[0])
    data_head, data_body = split_head_body(parts[1])
    problem = header_problem(control_head) or header_problem(data_head)
    if problem:
        return problem
    if parse_headers(control_head).get_content_type() != PGP_ENCRYPTED_TYPE:
        return Refusal("bad_structure", "multipart/encrypted's first part must be "
                       "application/pgp-encrypted")
    data_headers = parse_headers(data_head)
    if data_headers.get_content_type() != "application/octet-stream":
        return Refusal("bad_structure", "multipart/encrypted's second part must be "
                       "application/octet-stream")
    ciphertext = _decode_transfer(data_body, data_headers)
    if ciphertext is None or BEGIN_MESSAGE not in ciphertext:
        return Refusal("bad_structure", "the encrypted part holds no OpenPGP message")
    return PgpMimeEncrypted(ciphertext=ciphertext)


def _split_parts(headers: Compat32Message, body: Buffer) -> list[Buffer] | Refusal:
    """Cut a multipart body into its parts' exact bytes (RFC 2046 5.1.1), preamble and epilogue dropped."""
    boundary = headers.get_boundary()
    if not boundary or len(boundary) > 70:
        return Refusal("bad_structure", "the multipart has no valid boundary parameter")
    parts = _delimited_parts(body, boundary, strict=True)
    if parts is None:
        return Refusal("bad_structure", "the multipart has no closing boundary (truncated?)")
    return parts


def _delimited_parts(body: Buffer, boundary: str, strict: bool = False) -> list[Buffer] | None:
    """The parts between delimiter lines. Without a close delimiter: None when `strict`, else the
    last part runs to the end of the body, as the standard library's parser reads it."""
    delimiter = re.compile(
        rb"(?:\A|\r\n)--" + re.escape(boundary.encode("ascii", "replace")) + rb"(--)?[ \t]*(?=\r\n|\Z)"
    )
    parts: list[Buffer] = []
    start: int | None = None
    for match in delimiter.finditer(body):
        if start is not None:
            parts.append(body[start : match.start()])
        if match.group(1):  # the close delimiter: what follows is the epilogue
            return parts
        start = match.end() + 2
    if strict:
        return None
    if start is not None:
        parts.append(body[start:])
    return parts


def _decode_transfer(body: Buffer, headers: Compat32Message) -> bytes | None:
    """A small part's decoded bytes (signatures, ciphertext, text; attachments: `_decoded_leaf`)."""
    encoding = str(headers.get("Content-Transfer-Encoding", "7bit")).strip().lower()
    body = bytes(body)
    if encoding in IDENTITY_ENCODINGS:
        return body
    if encoding == "base64":
        try:
            return base64.b64decode(b"".join(body.split()), validate=True)
        except (binascii.Error, ValueError):
            return None
    if encoding == "quoted-printable":
        return canonical_line_endings(quopri.decodestring(body))
    return None


def check_detached_signature_armor(signature: bytes) -> Refusal | None:
    """The signature part must hold one armored block of signature packets and nothing else.

    An opaque signed message there would make gpg verify *its* embedded data and ignore the
    signed part; literal data would carry a file name (the CVE-2018-12020 injection vector).
    """
    armor = [m.group(0).strip() for m in ARMOR_LINE.finditer(signature)]
    if armor != [BEGIN_SIGNATURE, END_SIGNATURE]:
        if BEGIN_MESSAGE in signature:
            return Refusal("not_a_detached_signature",
                           "the signature part holds an OpenPGP message, not a detached signature")
        return Refusal("not_a_detached_signature",
                       "the signature part must hold exactly one armored PGP SIGNATURE block")
    packets = dearmor_packet_tags(signature)
    if packets is None:
        return Refusal("not_a_detached_signature", "the signature block cannot be decoded")
    if any(tag != 2 for tag in packets):
        return Refusal("not_a_detached_signature",
                       "the signature block holds packets other than signatures")
    if len(packets) != 1:
        return Refusal("multiple_signatures",
                       "the message carries more than one signature; send exactly one")
    return None


def dearmor_packet_tags(armored: bytes) -> list[int] | None:
    """The OpenPGP packet tags in an armored block, or None if it is not well formed."""
    lines = armored.replace(b"\r\n", b"\n").split(b"\n")
    try:
        begin = next(i for i, line in enumerate(lines) if line.startswith(b"-----BEGIN PGP"))
        end = next(i for i, line in enumerate(lines) if line.startswith(b"-----END PGP"))
    except StopIteration:
        return None
    inner = lines[begin + 1 : end]
    # armor headers ("Hash: ...", "Comment: ...") end at the first empty line
    blank = next((i for i, line in enumerate(inner) if not line.strip()), None)
    if blank is not None:
        inner = inner[blank + 1 :]
    data_lines = [line.strip() for line in inner if line.strip() and not line.startswith(b"=")]
    try:
        data = base64.b64decode(b"".join(data_lines), validate=True)
    except (binascii.Error, ValueError):
        return None
    return packet_tags(data)


def packet_tags(data: bytes) -> list[int] | None:
    """Walk OpenPGP packet headers (RFC 4880 4.2); None on anything malformed or partial."""
    tags: list[int] = []
    pos = 0
    while pos < len(data):
        first = data[pos]
        if not first & 0x80:
            return None
        if first & 0x40:  # new format
            tag = first & 0x3F
            if pos + 1 >= len(data):
                return None
            octet = data[pos + 1]
            if octet < 192:
                length, header = octet, 2
            elif octet < 224:
                if pos + 2 >= len(data):
                    return None
                length, header = ((octet - 192) << 8) + data[pos + 2] + 192, 3
            elif octet == 255:
                if pos + 5 >= len(data):
                    return None
                length, header = int.from_bytes(data[pos + 2 : pos + 6], "big"), 6
            else:
                return None  # partial body lengths never appear in a signature
        else:  # old format
            tag = (first >> 2) & 0x0F
            size = {0: 1, 1: 2, 2: 4}.get(first & 0x03)
            if size is None or pos + size >= len(data):
                return None
            length, header = int.from_bytes(data[pos + 1 : pos + 1 + size], "big"), 1 + size
        tags.append(tag)
        pos += header + length
        if pos > len(data):
            return None
    return tags


def _split_inline(headers: Compat32Message, body: Buffer, allow_inline: bool) -> InlineSigned | Refusal:
    text = _decode_transfer(body, headers)
    if text is None:
        return Refusal("bad_structure", "the message body's transfer encoding is broken")
    text = canonical_line_endings(text)
    if BEGIN_SIGNED not in text:
        if BEGIN_MESSAGE in text:
            return Refusal("not_signed", "an inline OpenPGP message block is not accepted: "
                           "sign with PGP/MIME (or inline cleartext signing where allowed)")
        return Refusal("not_signed", "the message is not signed: sign it with PGP/MIME")
    if not allow_inline:
        return Refusal("inline_pgp_disabled",
                       "inline PGP is not accepted here: sign the message with PGP/MIME")
    armor = [m.group(0).strip() for m in ARMOR_LINE.finditer(text)]
    if armor.count(BEGIN_SIGNED) > 1 or len(armor) > 3:
        return Refusal("inline_multiple_blocks",
                       "the message holds more than one PGP block; send exactly one signed block")
    if armor != [BEGIN_SIGNED, BEGIN_SIGNATURE, END_SIGNATURE]:
        return Refusal("bad_structure", "the inline PGP block is incomplete")
    stripped = text.strip()
    if not (stripped.startswith(BEGIN_SIGNED) and stripped.endswith(END_SIGNATURE)):
        return Refusal("inline_text_outside_block",
                       "there is text outside the signed block; only signed text is accepted")
    problem = check_detached_signature_armor(stripped[stripped.index(BEGIN_SIGNATURE):])
    if problem:
        return problem
    return InlineSigned(block=stripped + b"\r\n")


SIGNATURE_MARKERS = (b"multipart/signed", b"application/pgp-signature", b"message/rfc822",
                     BEGIN_SIGNED, BEGIN_SIGNATURE)


def _classify_unsigned(entity: bytes) -> Refusal:
    """Name the attack when a signature sits somewhere inside unsigned wrapping.

    A byte scan, not a parse: the message is refused either way, and the standard library's
    parameter parser is quadratic on hostile nested headers."""
    lowered = entity.lower()
    if any(marker in lowered for marker in (b"application/pkcs7", b"application/x-pkcs7")):
        return Refusal("smime_not_accepted", "S/MIME is not accepted; sign with OpenPGP (PGP/MIME)")
    if any(marker.lower() in lowered for marker in SIGNATURE_MARKERS):
        return Refusal("unsigned_content", "the signed part is wrapped in unsigned content; "
                       "send the signed message itself, with nothing around it")
    return Refusal("not_signed", "the message is not signed: sign it with PGP/MIME")


def read_signed_content(signed_bytes: Buffer) -> SignedContent:
    """Parse the signed MIME entity: body text, protected headers, attachments.

    The parts are found at the byte level (`_leaves`) and only their header blocks go through
    the email package, so a large attachment is decoded once, from a view of the message, into
    its own buffer (`_decoded_leaf`); text parts and unusual encodings are read by the email
    package part by part, as it reads them in the whole. A header block the byte-level cut
    would read otherwise than the parser (a line that is no header) has the whole entity parsed."""
    view = memoryview(signed_bytes)
    try:
        if not isinstance(signed_bytes, memoryview) and (
                canonical_line_endings(signed_bytes) is not signed_bytes):
            raise _Irregular  # the cut below reads CRLF lines, like the signature
        entity = _part_headers(_part_head_body(view)[0])
        leaves: list[tuple[EmailMessage, Callable[[], EmailMessage], Callable[[], Decoded]]] = [
            (headers, partial(_parsed, part, headers), partial(_decoded_leaf, part, headers))
            for headers, part in _leaves(view, entity)]
    except _Irregular:
        entity = BytesParser(policy=policy.default).parsebytes(bytes(view))  # type: ignore[assignment]
        leaves = [(leaf, partial(lambda leaf: leaf, leaf), partial(_payload, leaf))
                  for leaf in _parsed_leaves(entity)]
    problems: list[Refusal] = []
    protected: dict[str, list[str]] = {}
    if str(entity.get_param("protected-headers", "", header="content-type")).lower() == "v1":
        for name in ("From", "To", "Cc", "Subject", "Date", "Message-ID", "In-Reply-To",
                     "References"):
            values = entity.get_all(name)
            if values:
                protected[name] = [str(v) for v in values]
                problems += [_undecodable_header(name)] if any("\ufffd" in v for v in protected[name]) else []
    text = ""
    attachments: list[ReceivedAttachment] = []
    for headers, whole, data in leaves:
        content_type = headers.get_content_type()
        filename = headers.get_filename()
        is_attachment = headers.get_content_disposition() == "attachment" or filename is not None
        if content_type == "text/plain" and not is_attachment:
            part_text, problem = _part_text(whole())
            text = part_text if not text else text + "\n" + part_text
            problems += [problem] if problem else []
            continue
        attachments.append(ReceivedAttachment(filename, content_type, data()))
    return SignedContent(text=text, protected_headers=protected, attachments=tuple(attachments),
                         problems=tuple(dict.fromkeys(problems)))


def _undecodable_header(name: str) -> Refusal:
    return Refusal("bad_charset", f"the signed {name} header holds text that cannot be decoded (bytes that "
                   "are not UTF-8, or an unknown charset): write it in UTF-8")


class _Irregular(Exception):
    """What the byte-level cut and the email package would read differently (a header block
    with a line that is no header, bare LF line endings)."""


def _part_headers(head: bytes, default_type: str | None = None) -> EmailMessage:
    """A part's header block as the email package reads it (policy.default), without its body."""
    headers: EmailMessage = BytesParser(policy=policy.default).parsebytes(  # type: ignore[assignment]
        head + b"\r\n", headersonly=True)
    if any(isinstance(d, (errors.MissingHeaderBodySeparatorDefect, errors.MisplacedEnvelopeHeaderDefect))
           for d in headers.defects):
        raise _Irregular
    if default_type and "content-type" not in headers:
        headers.set_default_type(default_type)
    return headers


def _leaves(part: memoryview, headers: EmailMessage,
            depth: int = 0) -> list[tuple[EmailMessage, memoryview]]:
    """The parts to read, in order, each with its headers; a message/* part is one attachment,
    never opened: a forwarded mail is something the officer shows us, not something the officer
    says. The parts are cut where the email package cuts them (`_delimited_parts`)."""
    if depth > MAX_NESTING:
        raise ValueError("MIME nesting too deep")
    if headers.get_content_maintype() != "multipart":
        return [(headers, part)]
    boundary = headers.get_boundary()
    children = _delimited_parts(_part_head_body(part)[1], boundary, strict=True) if boundary else None
    if not children:  # no boundary, no parts, no close delimiter: the email package's repairs
        raise _Irregular
    default = "message/rfc822" if headers.get_content_type() == "multipart/digest" else None
    found = []
    for child in children:
        child_view = memoryview(child)
        found += _leaves(child_view, _part_headers(_part_head_body(child_view)[0], default), depth + 1)
    return found


def _parsed_leaves(part: EmailMessage, depth: int = 0) -> list[EmailMessage]:
    """`_leaves` for an entity the email package parsed whole."""
    if depth > MAX_NESTING:
        raise ValueError("MIME nesting too deep")
    if part.get_content_maintype() == "message" or not part.is_multipart():
        return [part]
    return [leaf for sub in part.iter_parts() for leaf in _parsed_leaves(sub, depth + 1)]  # type: ignore[arg-type]


MAX_NESTING = 20


def _parsed(part: memoryview, headers: EmailMessage) -> EmailMessage:
    """The whole part read by the email package (text parts, unusual encodings)."""
    parsed: EmailMessage = BytesParser(policy=policy.default).parsebytes(bytes(part))  # type: ignore[assignment]
    if "content-type" not in parsed:
        parsed.set_default_type(headers.get_default_type())
    return parsed


def _payload(part: EmailMessage) -> bytes:
    """What an attachment holds, as the email package decodes it."""
    if part.get_content_maintype() == "message":
        inner = part.get_payload()
        if isinstance(inner, list) and inner:
            return inner[0].as_bytes()
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


Decoded = bytes | bytearray | Spool  # an attachment's bytes, in memory or in a spool


def _decoded_leaf(part: memoryview, headers: EmailMessage) -> Decoded:
    """`_payload` of this leaf: base64 and the identity encodings decoded here from the view
    (a large one into a spool, when there is a spool directory); anything else, or base64 that
    is not clean, by the email package itself."""
    encoding = str(headers.get("content-transfer-encoding", "")).lower()
    if headers.get_content_maintype() != "message":
        body = memoryview(_part_head_body(part)[1])
        if encoding == "base64":
            decoded = _base64_strict(body, _sink(len(body) * 3 // 4))
            if decoded is not None:
                return decoded
        elif encoding not in ("quoted-printable", "x-uuencode", "uuencode", "uue", "x-uue"):
            sink = _sink(len(body))
            for at in range(0, len(body), DECODE_WINDOW):
                _write(sink, body[at:at + DECODE_WINDOW])
            return sink if isinstance(sink, Spool) else bytes(sink)
    return _payload(_parsed(part, headers))


def _sink(size: int) -> bytearray | Spool:
    """Where a decoded file of about `size` bytes goes: a spool when it is large and there is
    a spool directory, else memory."""
    directory = SPOOL_DIR.get()
    return Spool(directory) if directory is not None and size > CHUNK else bytearray()


def _write(sink: bytearray | Spool, data: bytes | memoryview) -> None:
    if isinstance(sink, Spool):
        view = memoryview(data)
        for at in range(0, len(view), RECORD):  # the spool's buffer stays about one record
            if sink.write(view[at:at + RECORD]):
                sink.flush_here()
    else:
        sink += data


def _base64_strict(body: memoryview, sink: bytearray | Spool) -> bytearray | Spool | None:
    """Base64 decoded a window at a time into `sink`; None for anything but clean base64
    (the email package then decodes it, with its own repairs)."""
    carry = b""
    for at in range(0, len(body), DECODE_WINDOW):
        last = at + DECODE_WINDOW >= len(body)
        window = carry + bytes(body[at:at + DECODE_WINDOW]).translate(None, b"\r\n")
        usable = len(window) if last else len(window) - len(window) % 4
        carry = window[usable:]
        try:
            if not last and b"=" in window[:usable]:
                raise binascii.Error("padding before the end")
            _write(sink, binascii.a2b_base64(window[:usable], strict_mode=True))
        except binascii.Error:
            if isinstance(sink, Spool):
                sink.close()
            return None
    return sink


def read_inline_content(plaintext: bytes) -> SignedContent:
    """A cleartext-signed text: UTF-8 (or ASCII), or refused as bad_charset, never guessed."""
    try:
        text = plaintext.decode("utf-8")
        problems: tuple[Refusal, ...] = ()
    except UnicodeDecodeError:
        text = plaintext.decode("utf-8", errors="replace")
        problems = (Refusal("bad_charset", "the signed text is not valid UTF-8: sign it as UTF-8"),)
    return SignedContent(text=text.replace("\r\n", "\n"), problems=problems)


def _part_text(part: EmailMessage) -> tuple[str, Refusal | None]:
    """A text part decoded strictly in its declared charset (undeclared: ASCII, else UTF-8).

    The library would substitute replacement characters silently; a form read with a guess could
    change a case number or an account, so what does not decode is named instead."""
    payload = part.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else b""
    declared = part.get_content_charset()
    try:
        text = data.decode(declared or ("ascii" if data.isascii() else "utf-8"))
        problem = None
    except LookupError:
        text = data.decode("utf-8", errors="replace")
        problem = Refusal("bad_charset", f"a text part declares the charset {declared[:40]!r}, which is "
                          "unknown: send the text as UTF-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        problem = Refusal("bad_charset", f"a text part is not valid {declared or 'UTF-8'} (its declared "
                          "charset): send the text as UTF-8")
    return text.replace("\r\n", "\n"), problem


# --- what arrives through the chat bot ------------------------------------------------------
# The chat layer stores what an officer sent as a small MIME message of its own making, so that
# every transport keeps raw bytes the same way. Its From is the officer's registered address
# (looked up from their Telegram id); the signature must still be theirs, as for email.

CHAT_FILE_PARAM = "x-lers-chat-file"


def split_chat_message(raw: bytes, limits: MimeLimits = DEFAULT_LIMITS) -> SignedStructure | Refusal:
    """Judge what came through the chat bot: a cleartext-signed text, or a file and its signature."""
    entity = canonical_line_endings(raw)
    head, body = split_head_body(entity)
    problem = header_problem(head, limits) or mime_tree_problem(entity, limits)
    if problem:
        return problem
    headers = parse_headers(head)
    if headers.get_content_type() != "multipart/mixed" or not headers.get_param(CHAT_FILE_PARAM):
        return split_signed(raw, allow_inline=True, limits=limits)
    parts = _split_parts(headers, body)
    if isinstance(parts, Refusal) or len(parts) != 2:
        return Refusal("bad_structure", "a chat upload must be one file and its signature")
    file_head, file_body = split_head_body(parts[0])
    sig_head, sig_body = split_head_body(parts[1])
    file_headers, sig_headers = parse_headers(file_head), parse_headers(sig_head)
    data = _decode_transfer(file_body, file_headers)
    signature = _decode_transfer(sig_body, sig_headers)
    if data is None or signature is None:
        return Refusal("bad_structure", "the chat upload cannot be decoded")
    if b"-----BEGIN PGP" not in signature:
        if packet_tags(signature) != [2]:
            return Refusal("not_a_detached_signature",
                           "the second file must be the detached signature (.asc or .sig) of the first")
    else:
        problem = check_detached_signature_armor(signature)
        if problem:
            return problem
    return DetachedFile(filename=file_headers.get_filename() or "file", data=data, signature=signature)


# --- handlers/chain.py ---

DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\U0010ffff-]+"
                      r"(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\U0010ffff-]+)*")


def outer_from_address(raw: bytes, limits: MimeLimits = DEFAULT_LIMITS) -> str | Refusal:
    """The message's own From header, judged strictly (it is what mail clients show)."""
    head = outer_head(raw)
    problem = header_problem(head, limits)
    if problem:
        return Refusal("bad_from", problem.detail)
    values = parse_headers(head).get_all("From") or []
    return single_from_address([str(v) for v in values])


def outer_head(raw: bytes) -> bytes:
    """The message's header block, CRLF, without copying the body (which may be tens of MB).

    Any empty line, in any mix of CR, LF and CRLF, contains LF LF, CR CR or LF CR; the header block
    ends within 4 bytes after the first of them, so canonicalising up to there finds the same head
    as canonicalising the whole message."""
    ends = [i for i in (raw.find(b"\n\n"), raw.find(b"\r\r"), raw.find(b"\n\r")) if i >= 0]
    cut = min(ends) + 4 if ends else len(raw)
    head, _ = split_head_body(canonical_line_endings(raw[:cut]))
    return head


def single_from_address(values: list[str]) -> str | Refusal:
    """Exactly one From with exactly one mailbox, no parse defects, no address in the name."""
    if len(values) != 1:
        return Refusal("bad_from", "the message must have exactly one From header, "
                       f"it has {len(values)}")
    try:
        header = policy.default.header_factory("from", values[0])
    except Exception:
        return Refusal("bad_from", "the From header cannot be parsed")
    if not isinstance(header, AddressHeader):
        return Refusal("bad_from", "the From header cannot be parsed")
    if header.defects:
        return Refusal("bad_from", "the From header is malformed: "
                       + "; ".join(str(d) for d in header.defects)[:200])
    if len(header.groups) != 1 or header.groups[0].display_name is not None:
        return Refusal("bad_from", "the From header must name exactly one mailbox")
    addresses = header.addresses
    if len(addresses) != 1:
        return Refusal("bad_from", f"the From header names {len(addresses)} mailboxes, not one")
    address = addresses[0]
    if not address.username or not address.domain:
        return Refusal("bad_from", "the From header has no complete address")
    if "@" in address.display_name or "<" in address.display_name:
        return Refusal("bad_from", "the From header's display name contains an address")
    if not DOT_ATOM.fullmatch(address.username):
        # a quoted local part such as ".alice" would come back unquoted, not an address at all
        return Refusal("bad_from", "the From address's local part must be a plain dot-atom")
    return address.addr_spec.lower()
