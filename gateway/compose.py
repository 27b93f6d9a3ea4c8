"""The header fields and text body of a reply as bytes, without the email package's objects.

`EmailMessage` parses every value it is given into a header object and folds it again (header
registry, `_header_value_parser`): for a reply's half-dozen fields that was about a tenth of the
gateway's CPU per request. The values a reply carries are nearly always plain: an addr-spec, a
subject of printable ASCII, message ids, a date. Those are written here directly (RFC 5322
folding at whitespace, lines of at most 78 characters); a subject that is not plain becomes RFC
2047 encoded-words; anything else goes through the email package exactly as before (`stdlib_field`).

Header injection stays impossible: a value with a line break of any kind (what `str.splitlines`
splits on, as `EmailPolicy.header_store_parse` refuses) raises ValueError, other control
characters are only ever written inside encoded-words, and a fast path accepts only values whose
every character it knows to be safe. tests/test_compose.py checks every field and the body
against what the email package makes of the same values.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from email import policy

MAX_LINE = 78  # RFC 5322's "SHOULD" limit, policy.SMTP's max_line_length
MAX_WORD = 75  # RFC 2047: an encoded-word is at most 75 characters
HARD_LINE = 998  # RFC 5322's "MUST" limit

# everything str.splitlines() breaks a line at: what the email package refuses in a header value
_LINE_BREAK = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")
_SURROGATE = re.compile("[\ud800-\udfff]")
# printable ASCII words with spaces or tabs between them (a plain value also holds no "=?", which
# a reader could take for the start of an encoded-word, and does not start with whitespace)
_PLAIN_TEXT = re.compile(r"[!-~][ \t!-~]*")
_WORDS = re.compile(r"([ \t]+)")
# an addr-spec of dot-atoms in the plainest characters (anything else: the email package)
_ADDR_SPEC = re.compile(r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
# a msg-id of printable ASCII without whitespace, angle brackets inside or a second '@' (a plain
# one also holds no "=?": a reader would decode it in an unstructured field such as In-Reply-To)
_MSG_ID = re.compile(r"<[!-;=?A-~]{1,900}@[!-;=?A-~]{1,900}>")
_QP_TOO_LONG = re.compile(rb"^([^\n]{74,75})(=20|=09)$", re.MULTILINE)
_DATE = re.compile(r"[A-Za-z0-9 ,:+-]{1,60}")
# RFC 2047 "Q": characters written as themselves (the set allowed in any context, 5(3));
# a space is "_", everything else =XX
_Q_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
_Q_TEXT = [chr(b) if b in _Q_SAFE else "_" if b == 0x20 else f"={b:02X}" for b in range(256)]


def stdlib_field(name: str, value: str) -> bytes:
    """The field as `EmailMessage(policy=policy.SMTP)` writes it: parsed and checked by the email
    package (a line break raises ValueError), then folded."""
    return policy.SMTP.fold_binary(*policy.SMTP.header_store_parse(name, value))


def _refuse_line_breaks(name: str, value: str) -> None:
    if _LINE_BREAK.search(value):
        raise ValueError(f"Header values may not contain linefeed or carriage return characters "
                         f"({name})")


def unstructured_field(name: str, value: str) -> bytes:
    """A free-text field (Subject): printable ASCII folded at whitespace, anything else as
    UTF-8 encoded-words. A line break anywhere in the value raises ValueError."""
    _refuse_line_breaks(name, value)
    if not value:
        return f"{name}:\r\n".encode("ascii")
    if _PLAIN_TEXT.fullmatch(value) and "=?" not in value:
        folded = _fold_words(name, _WORDS.split(value))
        if folded is not None:
            return folded
    if _SURROGATE.search(value):  # not text (undecodable bytes): as the email package did it
        return stdlib_field(name, value)
    return _encoded_field(name, value)


def _fold_words(name: str, tokens: list[str]) -> bytes | None:
    """Words (tokens[0::2]) with their whitespace (tokens[1::2]) folded before whitespace into
    lines of at most 78; None if a word does not fit on a line of its own."""
    out = [name, ":"]
    width = len(name) + 1
    start = width
    for i in range(0, len(tokens), 2):
        space = tokens[i - 1] if i else " "
        word = tokens[i]
        if width + len(space) + len(word) > MAX_LINE and width > start and word:
            out.append("\r\n")
            width = 0
        out += (space, word)
        width += len(space) + len(word)
        if width > MAX_LINE:
            return None
    out.append("\r\n")
    return "".join(out).encode("ascii")


def _encoded_field(name: str, value: str) -> bytes:
    """The whole value as UTF-8 encoded-words ("Q" when that is shorter, else "B"), each whole
    characters, one per line; a reader joins adjacent encoded-words without the space between."""
    data = value.encode("utf-8")
    q_length = sum(len(_Q_TEXT[b]) for b in data)
    b_length = (len(data) + 2) // 3 * 4
    q = q_length <= b_length
    prefix = "=?utf-8?q?" if q else "=?utf-8?b?"
    overhead = len(prefix) + 2
    room = MAX_LINE - len(name) - 2  # the first line, after "Name: "
    head = f"{name}: "
    if room < overhead + 12:  # not even one character would fit: start on the next line
        head, room = f"{name}:\r\n ", MAX_WORD
    room = min(room, MAX_WORD)
    words: list[str] = []
    chunk = bytearray()
    length = overhead
    for char in value:
        piece = char.encode("utf-8")
        grown = (length + sum(len(_Q_TEXT[b]) for b in piece) if q
                 else overhead + (len(chunk) + len(piece) + 2) // 3 * 4)
        if grown > room and chunk:
            words.append(_encoded_word(prefix, bytes(chunk), q))
            chunk.clear()
            room = MAX_WORD
            grown = (overhead + sum(len(_Q_TEXT[b]) for b in piece) if q
                     else overhead + (len(piece) + 2) // 3 * 4)
        chunk += piece
        length = grown
    words.append(_encoded_word(prefix, bytes(chunk), q))
    return (head + "\r\n ".join(words) + "\r\n").encode("ascii")


def _encoded_word(prefix: str, data: bytes, q: bool) -> str:
    text = "".join(_Q_TEXT[b] for b in data) if q else base64.b64encode(data).decode("ascii")
    return f"{prefix}{text}?="


def address_field(name: str, value: str) -> bytes:
    """An address field (To) holding one plain addr-spec; any other value (a display name, a
    quoted local part, non-ASCII) goes through the email package."""
    if _ADDR_SPEC.fullmatch(value) and len(name) + 2 + len(value) <= MAX_LINE:
        return f"{name}: {value}\r\n".encode("ascii")
    return stdlib_field(name, value)


def msg_id_field(name: str, ids: Sequence[str]) -> bytes:
    """Message-ID, In-Reply-To or References: msg-ids folded between ids, never encoded (an
    encoded-word is not a msg-id: the email package encodes an id longer than a line, and mail
    clients then cannot thread the reply). Ids of any other form go through the email package."""
    if not ids or not all(_MSG_ID.fullmatch(i) and "=?" not in i for i in ids):
        return stdlib_field(name, " ".join(ids))
    out = [name, ":"]
    width = len(name) + 1
    for i, msg_id in enumerate(ids):
        if i and width + 1 + len(msg_id) > MAX_LINE:
            out.append("\r\n")
            width = 0
        out += (" ", msg_id)
        width += 1 + len(msg_id)
        if width > HARD_LINE:
            return stdlib_field(name, " ".join(ids))
    out.append("\r\n")
    return "".join(out).encode("ascii")


def date_field(name: str, value: str) -> bytes:
    """A Date as `email.utils.format_datetime` writes it."""
    if _DATE.fullmatch(value):
        return f"{name}: {value}\r\n".encode("ascii")
    return stdlib_field(name, value)


def quoted_printable_body(text: str) -> bytes:
    """The body `set_content(text, charset="utf-8", cte="quoted-printable")` encodes, with CRLF:
    every line break of the text (CR, LF, CRLF) one line end, a line end after the last line;
    lines of at most 76 characters (RFC 2045). A lone surrogate raises UnicodeEncodeError, as
    there."""
    lines = text.encode("utf-8").splitlines()
    encoded = binascii.b2a_qp(b"\n".join(lines) + b"\n", istext=True)
    if _QP_TOO_LONG.search(encoded):
        # binascii counts a line's last blank as one character, then writes it as =20 or =09
        # (up to 78): put a soft line break before it
        encoded = _QP_TOO_LONG.sub(rb"\1=\n\2", encoded)
    return encoded.replace(b"\n", b"\r\n")
