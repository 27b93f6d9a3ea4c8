"""Hypothesis strategies for inbound mail, well formed and hostile, built as raw bytes.

Everything here is assembled byte by byte (like mail_factory.py), never through
``email.generator``, so that what a strategy draws is exactly what the gateway receives:
odd charsets and transfer encodings, folded and non-UTF-8 headers, huge and empty values,
nesting, truncation and byte-level mutation.

The signature on a multipart/signed or inline mail is a *fake* by default: an ASCII-armored
block of OpenPGP packet headers with random bodies, which passes the gateway's structure checks
(one tag-2 packet) without gpg. Strategies that take ``sign`` / ``clearsign`` callables put a
real signature there instead (see tests/test_fuzz.py, which signs with a test officer's key).
"""

from __future__ import annotations

import base64
import binascii
import json
import quopri
import re
import string
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time
from typing import Any

from hypothesis import strategies as st

from gateway.mime import chat_file_message, chat_text_message

CRLF = b"\r\n"
Signer = Callable[[bytes], bytes]

# -- small pieces -----------------------------------------------------------------------------

BCHARS = string.ascii_letters + string.digits + "'()+_,-./:=?"
good_boundaries = st.text(BCHARS, min_size=1, max_size=70)
boundaries = st.one_of(
    good_boundaries,
    good_boundaries,
    good_boundaries,
    good_boundaries,
    good_boundaries,
    good_boundaries,
    st.just(""),
    st.text(BCHARS, min_size=71, max_size=90),  # longer than RFC 2046 allows
    st.text(BCHARS + ' "\\;\t\u00e9', min_size=1, max_size=20),  # needs quoting, or is not ASCII
)
CHARSETS = [
    "utf-8",
    "us-ascii",
    "iso-8859-1",
    "windows-1252",
    "utf-16",
    "utf-16-le",
    "utf-32",
    "utf-7",
    "shift_jis",
    "koi8-r",
    "gb2312",
    "unknown-8bit",
    "x-unknown",
    "",
    "UTF8",
    "latin1",
    "utf-8'en'",
    "idna",
    "rot13",
    "base64",
    "hex",
    "punycode",
    "bogus\u00e9",
]
charsets = st.sampled_from(CHARSETS)
TRANSFER_ENCODINGS = [
    "7bit",
    "8bit",
    "binary",
    "base64",
    "quoted-printable",
    "x-uuencode",
    "uuencode",
    "BASE64",
    " Quoted-Printable ",
    "7BIT",
    "gzip",
    "",
    "x-token",
]
transfer_encodings = st.sampled_from(TRANSFER_ENCODINGS)
line_endings = st.sampled_from([b"\r\n"] * 6 + [b"\n", b"\n", b"\r", b"mixed"])
TOKENS = [
    b"\r\n",
    b"\r\n\r\n",
    b"--",
    b"\r\n--",
    b"\r\n ",
    b"\r\n\t",
    b'"',
    b";",
    b"=",
    b"\\",
    b"\x00",
    b"\xff",
    b"\xc3",
    b"=?utf-8?b?",
    b"?=",
    b"-----BEGIN PGP SIGNATURE-----",
    b"-----END PGP SIGNATURE-----",
    b"-----BEGIN PGP SIGNED MESSAGE-----",
    b"-----BEGIN PGP MESSAGE-----",
    b"Content-Type: multipart/signed; boundary=x\r\n",
    b"Content-Type: message/rfc822\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b'protocol="application/pgp-signature"',
    b"boundary=",
    b"From: <a@b.c>\r\n",
    b"<",
    b">",
    b"@",
    b"(",
    b")",
    b",",
    b":",
    b"\r\n.\r\n",
    b"\t",
    b"\x80\x81\xfe",
]


def rarely(draw: st.DrawFn, one_in: int) -> bool:
    """True about once in `one_in` draws. Not `integers(...) == 0`: Hypothesis favours the
    simplest choice (0) when it explores, which would make the rare case common."""
    return draw(st.integers(0, one_in - 1)) == one_in // 2


def crlf(data: bytes) -> bytes:
    return re.sub(rb"\r\n|\r|\n", b"\r\n", data)


def set_line_endings(raw: bytes, ending: bytes, seed: int = 0) -> bytes:
    """CRLF everywhere becomes `ending`; b"mixed" picks CRLF, LF or CR line by line."""
    if ending == b"mixed":
        lines = crlf(raw).split(CRLF)
        choices = (b"\r\n", b"\n", b"\r")
        return b"".join(line + choices[(seed + i * 7) % 3] for i, line in enumerate(lines[:-1])) + lines[-1]
    return crlf(raw).replace(CRLF, ending)


@st.composite
def folded(draw: st.DrawFn, value: bytes) -> bytes:
    """Fold a header value at a few drawn places (RFC 5322 folding whitespace)."""
    if not value or not draw(st.booleans()):
        return value
    cuts = sorted(set(draw(st.lists(st.integers(0, len(value)), min_size=1, max_size=4))))
    pieces, start = [], 0
    for cut in cuts:
        pieces.append(value[start:cut])
        start = cut
    pieces.append(value[start:])
    return draw(st.sampled_from([b"\r\n ", b"\r\n\t"])).join(pieces)


def huge(unit: str, count: int, fold_every: int = 900) -> bytes:
    """A long header value, folded so that no line passes SMTP's 1000-octet limit."""
    value = (unit * count).encode("utf-8")
    return b"\r\n ".join(value[i : i + fold_every] for i in range(0, len(value), fold_every))


@st.composite
def encoded_words(draw: st.DrawFn) -> bytes:
    """RFC 2047 encoded words, well formed or not."""
    charset = draw(charsets)
    text = draw(st.text(max_size=30))
    method = draw(st.sampled_from(["B", "Q", "b", "q", "X", ""]))
    try:
        data = text.encode(charset or "utf-8")
    except (LookupError, UnicodeError, TypeError):
        data = text.encode("utf-8")
    if method.upper() == "B":
        payload = base64.b64encode(data)
        if draw(st.booleans()):
            payload = payload[: draw(st.integers(0, len(payload)))]  # broken padding
    elif method.upper() == "Q":
        payload = quopri.encodestring(data, header=True).replace(b"=\n", b"")
    else:
        payload = data.replace(b"?", b"")
    word = b"=?" + charset.encode("utf-8") + b"?" + method.encode() + b"?" + payload + b"?="
    return word.replace(b"\r", b"").replace(b"\n", b"")


@st.composite
def header_values(draw: st.DrawFn, *, allow_huge: bool = True) -> bytes:
    """An unstructured header value: text, non-UTF-8 bytes, encoded words, huge or empty."""
    kinds = (
        ["ascii"] * 5
        + ["unicode"] * 3
        + ["latin1", "encoded", "encoded", "empty", "mixed"]
        + (["huge"] if allow_huge else [])
    )
    kind = draw(st.sampled_from(kinds))
    if kind == "ascii":
        value = draw(st.text(string.printable.strip("\r\n\x0b\x0c"), max_size=60)).encode()
    elif kind == "unicode":
        value = draw(st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=40)).encode(
            "utf-8", "surrogatepass"
        )
    elif kind == "latin1":
        value = draw(st.binary(max_size=40)).replace(b"\r", b"").replace(b"\n", b"")
    elif kind == "encoded":
        words = draw(st.lists(encoded_words(), min_size=1, max_size=3))
        value = b" ".join(words)
    elif kind == "empty":
        value = draw(st.sampled_from([b"", b" ", b"\t"]))
    elif kind == "mixed":
        value = b"".join(draw(st.lists(st.sampled_from([*TOKENS, b"x", b"y", b" "]), max_size=12)))
        value = value.replace(b"\r", b"").replace(b"\n", b"")
    else:
        value = huge(
            draw(st.sampled_from([".", ";", '"', "a", "(", "<", ",", "=?", "\u00e9"])),
            draw(st.integers(500, 6000)),
        )
        return value
    return draw(folded(value))


# -- addresses ------------------------------------------------------------------------------------

ATEXT = string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~"
local_parts = st.one_of(
    st.text(ATEXT, min_size=1, max_size=20),
    st.builds(
        lambda a, b: f"{a}.{b}",
        st.text(ATEXT, min_size=1, max_size=8),
        st.text(ATEXT, min_size=1, max_size=8),
    ),
    st.builds(
        lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"',
        st.text(string.printable.strip("\r\n\x0b\x0c"), max_size=15),
    ),
)
domains = st.one_of(
    st.builds(
        lambda labels: ".".join(labels),
        st.lists(
            st.text(string.ascii_letters + string.digits + "-", min_size=1, max_size=10),
            min_size=1,
            max_size=4,
        ),
    ),
    st.sampled_from(
        [
            "police.test",
            "POLICE.TEST",
            "gateway.test",
            "[127.0.0.1]",
            "xn--bcher-kva.example",
            "b\u00fccher.example",
            "",
        ]
    ),
)


@st.composite
def addr_specs(draw: st.DrawFn, known: Sequence[str] = ()) -> str:
    if known and draw(st.booleans()):
        address = draw(st.sampled_from(list(known)))
        return address.upper() if draw(st.booleans()) else address
    return f"{draw(local_parts)}@{draw(domains)}"


@st.composite
def from_values(draw: st.DrawFn, known: Sequence[str] = (), *, allow_huge: bool = True) -> bytes:
    """A From header value: one mailbox (in its many spellings), several, a group, or junk."""
    address = draw(addr_specs(known))
    name = draw(st.text(string.ascii_letters + " .'", max_size=20))
    kind = draw(
        st.sampled_from(
            [
                "bare",
                "angle",
                "named",
                "quoted",
                "comment",
                "two",
                "group",
                "encoded_name",
                "addr_in_name",
                "junk",
                "empty",
                "unicode",
            ]
            + (["huge"] if allow_huge else [])
        )
    )
    if kind == "bare":
        value = address
    elif kind == "angle":
        value = f"<{address}>"
    elif kind == "named":
        value = f"{name} <{address}>"
    elif kind == "quoted":
        value = f'"{name}, {draw(st.text(max_size=10))}" <{address}>'
    elif kind == "comment":
        value = f"{address} ({draw(st.text(max_size=20))})"
    elif kind == "two":
        value = f"{address}, {draw(addr_specs(known))}"
    elif kind == "group":
        value = f"{name or 'group'}: {address};"
    elif kind == "encoded_name":
        word = base64.b64encode(draw(addr_specs(known)).encode()).decode()
        value = f"=?utf-8?b?{word}?= <{address}>"
    elif kind == "addr_in_name":
        value = f"{draw(addr_specs(known))} <{address}>"
    elif kind == "junk":
        return draw(header_values(allow_huge=allow_huge))
    elif kind == "empty":
        value = ""
    elif kind == "unicode":
        value = f"{draw(st.text(max_size=10))} <{draw(st.text(max_size=8))}@{address.split('@')[-1]}>"
    else:
        return huge(draw(st.sampled_from([".", "<", "(", '"', "a@b,"])), draw(st.integers(1000, 5000)))
    return draw(folded(value.replace("\r", "").replace("\n", "").encode("utf-8", "surrogatepass")))


# -- header blocks ---------------------------------------------------------------------------------

HEADER_NAMES = [
    "X-Mailer",
    "Received",
    "Reply-To",
    "Sender",
    "Cc",
    "Comments",
    "Keywords",
    "Content-Description",
    "X-Custom",
    "Autocrypt",
    "List-Id",
    "Return-Path",
    "Bcc",
]


def header_line(name: bytes | str, value: bytes) -> bytes:
    name = name.encode("utf-8", "surrogatepass") if isinstance(name, str) else name
    return name + b": " + value + CRLF


@st.composite
def extra_headers(draw: st.DrawFn, *, allow_huge: bool = True, max_size: int = 3) -> bytes:
    names = st.one_of(
        st.sampled_from(HEADER_NAMES),
        st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=20),
    )
    pairs = draw(st.lists(st.tuples(names, header_values(allow_huge=allow_huge)), max_size=max_size))
    return b"".join(header_line(n, v) for n, v in pairs)


@st.composite
def outer_headers(
    draw: st.DrawFn, *, known: Sequence[str] = (), strict: bool = False, from_addr: str | None = None
) -> bytes:
    """RFC 5322 top-level headers (no Content-Type): From, To, Subject, Date, Message-ID, ...
    With `from_addr`, From is that address (in one of its honest spellings)."""
    lines = []
    from_count = 1 if strict or from_addr else draw(st.sampled_from([1, 1, 1, 1, 0, 2]))
    for _ in range(from_count):
        if from_addr:
            spelling = draw(st.sampled_from(["{a}", "<{a}>", "Officer <{a}>", '"Officer, A." <{a}>', "{A}"]))
            lines.append(header_line("From", spelling.format(a=from_addr, A=from_addr.upper()).encode()))
        else:
            lines.append(header_line("From", draw(from_values(known, allow_huge=not strict))))
    lines.append(
        header_line(
            "To",
            draw(st.sampled_from([b"lers@gateway.test", b"<LERS@gateway.test>"]))
            if strict or draw(st.booleans())
            else draw(from_values(allow_huge=not strict)),
        )
    )
    lines.append(header_line("Subject", draw(header_values(allow_huge=not strict))))
    lines.append(
        header_line(
            "Date",
            draw(
                st.sampled_from(
                    [
                        b"Mon, 06 Jul 2026 10:00:00 +0000",
                        b"",
                        b"yesterday",
                        b"Thu, 31 Feb 2026 99:99:99 +9999",
                        b"Mon, 06 Jul 2026 10:00:00 GMT",
                    ]
                )
            ),
        )
    )
    lines.append(
        header_line(
            "Message-ID",
            draw(
                st.one_of(
                    st.builds(
                        lambda s: f"<{s}@police.test>".encode(), st.text(string.ascii_letters, min_size=1)
                    ),
                    header_values(allow_huge=not strict),
                )
            ),
        )
    )
    if not strict and rarely(draw, 30):
        lines.append(header_line("MIME-Version", b"1.0"))  # a second one
    lines.append(
        header_line(
            "MIME-Version", draw(st.sampled_from([b"1.0", b"1.0 (generated)", b""])) if not strict else b"1.0"
        )
    )
    extra = draw(extra_headers(allow_huge=not strict))
    lines.append(extra)
    order = draw(st.permutations(range(len(lines))))
    return b"".join(lines[i] for i in order)


# -- bodies and transfer encodings ------------------------------------------------------------------


@st.composite
def encoded_body(draw: st.DrawFn, payload: bytes, encoding: str, *, strict: bool = False) -> bytes:
    """`payload` in `encoding`, correctly done or (unless strict) broken on purpose."""
    broken = not strict and rarely(draw, 6)
    name = encoding.strip().lower()
    if name == "base64":
        out = crlf(base64.encodebytes(payload))
        if broken:
            out = out[: draw(st.integers(0, len(out)))] + draw(
                st.sampled_from([b"!", b"=", b"==x", b"\xff", b""])
            )
    elif name == "quoted-printable":
        out = crlf(quopri.encodestring(payload))
        if broken:
            out += draw(st.sampled_from([b"=", b"=Z", b"=\xff", b"= \r\nx"]))
    elif name in ("x-uuencode", "uuencode"):
        rows = [binascii.b2a_uu(payload[i : i + 45]) for i in range(0, len(payload), 45)]
        out = crlf(b"begin 644 file.bin\n" + b"".join(rows) + b"`\nend\n")
        if broken:
            out = out[: draw(st.integers(0, len(out)))]
    else:
        out = crlf(payload) if strict else payload
    return out


@st.composite
def text_payloads(draw: st.DrawFn, charset: str) -> bytes:
    text = draw(
        st.one_of(
            st.text(max_size=200),
            st.sampled_from(
                [
                    "type: subpoena\ncase_number: 1\nlegal_basis: x\nsubjects: account_id:1\n\nhello\n",
                    "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nhi\n"
                    "-----BEGIN PGP SIGNATURE-----\n\nwsA=\n-----END PGP SIGNATURE-----\n",
                    "From the start\n.\n..\n",
                    "",
                ]
            ),
        )
    )
    try:
        return text.encode(charset or "utf-8", "replace")
    except (LookupError, UnicodeError, TypeError, ValueError):
        return text.encode("utf-8", "surrogatepass")


# -- request forms (request.toml / request.json) ----------------------------------------------------

FORM_FIELDS = (
    "reference",
    "type",
    "case_number",
    "legal_basis",
    "subjects",
    "data_categories",
    "date_from",
    "date_to",
    "nondisclosure_until",
    "emergency",
    "emergency_justification",
    "supervisor",
    "investigation_status",
)
form_dates = st.one_of(
    st.dates(),
    st.datetimes(timezones=st.one_of(st.none(), st.just(UTC))),
    st.times(),
    st.builds(
        lambda y, m, d: f"{y:04d}-{m:02d}-{d:02d}",
        st.integers(0, 9999),
        st.integers(0, 99),
        st.integers(0, 99),
    ),
    st.sampled_from(["indefinite", "Indefinite ", "2026-02-30", "2026-1-1", "", "2026-01-01T00:00"]),
)
form_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=40),
    st.sampled_from(
        [
            "subpoena",
            "emergency_disclosure",
            "court_order",
            "true",
            "false",
            "account_id:42",
            "email:x@y",
            "subscriber_information",
            "LERS-2026-000123",
        ]
    ),
    form_dates,
)
form_values = st.recursive(
    form_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(["type", "value", "x"]) | st.text(max_size=8), children, max_size=3),
    ),
    max_leaves=8,
)
REQUEST_TYPES = (
    "preservation",
    "preservation_extension",
    "emergency_disclosure",
    "subpoena",
    "court_order",
    "search_warrant",
    "mlat",
    "asset_freeze",
    "freeze_release",
)
SUBJECT_TYPES = ("account_id", "email", "phone", "wallet_address", "tx_hash")
DATA_CATEGORIES = ("subscriber_information", "kyc_documents", "login_ip_addresses", "transaction_history")
_subject_items = st.one_of(
    st.builds(lambda t, v: f"{t}:{v}", st.sampled_from((*SUBJECT_TYPES, "x", "")), st.text(max_size=12)),
    st.fixed_dictionaries(
        {
            "type": st.one_of(st.sampled_from(SUBJECT_TYPES), form_scalars),
            "value": st.one_of(st.text(max_size=12), form_scalars),
        }
    ),
    form_scalars,
)
# Each field with values of its own kind (and sometimes of any kind), so forms get deep into validation.
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "reference": st.sampled_from(["LERS-2026-000123", "LERS-1-1", " LERS-2026-000001 "]),
    "type": st.sampled_from((*REQUEST_TYPES, "Subpoena", "")),
    "case_number": st.text(max_size=30),
    "legal_basis": st.text(max_size=30),
    "subjects": st.one_of(st.lists(_subject_items, max_size=4), st.text(max_size=30)),
    "data_categories": st.one_of(
        st.lists(st.sampled_from((*DATA_CATEGORIES, "x")), max_size=4), st.lists(form_scalars, max_size=2)
    ),
    "date_from": form_dates,
    "date_to": form_dates,
    "nondisclosure_until": form_dates,
    "emergency": st.one_of(st.booleans(), st.sampled_from(["true", "false", "TRUE ", "yes"])),
    "emergency_justification": st.text(max_size=30),
    "supervisor": st.text(max_size=30),
    "investigation_status": st.text(max_size=30),
}
form_dicts = st.builds(
    lambda known, other: {**other, **known},
    st.fixed_dictionaries(
        {},
        optional={
            name: st.one_of(values, values, values, form_values) for name, values in FIELD_VALUES.items()
        },
    ),
    st.dictionaries(st.text(max_size=12), form_values, max_size=2),
)


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)


def toml_value(value: Any) -> str:
    """A TOML rendering of one value (best effort: what cannot be said becomes invalid TOML,
    which is fine here: the reader must report it, not crash)."""
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(repr(value), repr(value))
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value))


def toml_text(data: dict[str, Any]) -> str:
    return "".join(f"{_toml_key(k)} = {toml_value(v)}\n" for k, v in data.items())


@st.composite
def form_attachment_bytes(draw: st.DrawFn, name: str) -> bytes:
    """What an officer (or a fuzzer) might put in request.toml / request.json."""
    kind = draw(st.sampled_from(["form", "form", "form", "binary", "deep", "bignum", "text", "mutated"]))
    if kind == "binary":
        return draw(st.binary(max_size=200))
    if kind == "deep":
        depth = draw(st.integers(100, 5000))
        return b"a = " + b"[" * depth if name.endswith(".toml") else b"[" * depth
    if kind == "bignum":
        digits = b"1" * draw(st.integers(4000, 6000))
        return b"case_number = " + digits if name.endswith(".toml") else b'{"case_number": ' + digits + b"}"
    if kind == "text":
        return draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")
    data = draw(form_dicts)
    text = toml_text(data) if name.endswith(".toml") else json.dumps(data, default=str, ensure_ascii=False)
    raw = text.encode("utf-8", "surrogatepass")
    if kind == "mutated":
        raw = apply_mutations(raw, draw(mutation_ops()))
    return raw


form_bodies = st.one_of(
    st.text(max_size=300),
    st.builds(
        lambda pairs, rest: "\n".join(f"{k}: {v}" for k, v in pairs) + "\n\n" + rest,
        st.lists(
            st.tuples(
                st.one_of(
                    st.sampled_from(FORM_FIELDS),
                    st.text(string.ascii_letters + "_ -", min_size=1, max_size=12),
                ),
                st.one_of(
                    st.text(max_size=40).map(lambda s: s.replace("\n", " ")),
                    form_dates.map(str),
                    st.sampled_from(
                        [
                            "subpoena",
                            "account_id:1, email:x@y",
                            "indefinite",
                            "true",
                            "subscriber_information, kyc_documents",
                            "LERS-2026-000001",
                        ]
                    ),
                ),
            ),
            max_size=10,
        ),
        st.text(max_size=60),
    ),
)


# -- MIME entities ------------------------------------------------------------------------------------

LEAF_TYPES = [
    "text/plain",
    "text/plain",
    "text/html",
    "application/octet-stream",
    "application/pdf",
    "image/png",
    "application/pgp-signature",
    "application/pgp-encrypted",
    "application/pkcs7-signature",
    "application/json",
    "text/x-weird",
    "text",
    "/",
    "",
]
FILENAMES = [
    "request.toml",
    "request.json",
    "REQUEST.TOML",
    "warrant.pdf",
    "a.txt",
    "signature.asc",
    "..\\..\\etc\\passwd",
    "../x",
    "",
]


@st.composite
def leaf_entities(draw: st.DrawFn, *, strict: bool = False) -> bytes:
    """One non-multipart MIME entity (headers, blank line, body)."""
    ctype = draw(st.sampled_from(LEAF_TYPES[:10] if strict else LEAF_TYPES))
    charset = draw(st.sampled_from(["utf-8", "us-ascii", "iso-8859-1"]) if strict else charsets)
    encoding = draw(st.sampled_from(["7bit", "base64", "quoted-printable"]) if strict else transfer_encodings)
    filename = draw(
        st.one_of(
            st.none(),
            st.sampled_from(FILENAMES),
            st.text(st.characters(codec="utf-8", exclude_characters='\r\n"\\'), max_size=30),
        )
    )
    if filename and filename.lower() in ("request.toml", "request.json"):
        payload = draw(form_attachment_bytes(filename.lower()))
    elif ctype.startswith("text") and draw(st.integers(0, 3)):
        payload = draw(text_payloads(charset))
    else:
        payload = draw(
            st.one_of(
                st.binary(max_size=300),
                st.builds(lambda b, n: b * n, st.binary(min_size=1, max_size=4), st.integers(0, 4000)),
            )
        )
    if (
        strict
        and encoding == "7bit"
        and (not payload.isascii() or max(map(len, crlf(payload).split(CRLF))) > 900)
    ):
        encoding = "base64"  # RFC 5322: 7-bit lines of at most 998 octets
    params = b""
    if charset or draw(st.booleans()):
        params += b'; charset="' + charset.encode("utf-8") + b'"'
    lines = []
    disposition = draw(
        st.sampled_from(
            ["attachment", "inline", None] if strict else ["attachment", "inline", None, "form-data", ""]
        )
    )
    if filename is not None:
        quoted = filename.encode("utf-8")
        style = "plain" if strict else draw(st.sampled_from(["plain", "rfc2231", "raw", "ct-name"]))
        if style == "rfc2231":
            param = b"filename*=utf-8''" + re.sub(
                rb"[^A-Za-z0-9.]", lambda m: b"%%%02X" % m.group(0)[0], quoted
            )
        elif style == "raw":
            param = b"filename=" + quoted
        elif style == "ct-name":
            params += b'; name="' + quoted + b'"'
            param = None
        else:
            param = b'filename="' + quoted + b'"'
        if param is not None:
            lines.append(
                header_line("Content-Disposition", (disposition or "attachment").encode() + b"; " + param)
            )
    elif disposition is not None:
        lines.append(header_line("Content-Disposition", disposition.encode()))
    lines.append(
        header_line(
            "Content-Type", draw(folded(ctype.encode() + params)) if not strict else ctype.encode() + params
        )
    )
    if encoding or strict:
        lines.append(header_line("Content-Transfer-Encoding", encoding.encode()))
    if not strict:
        lines.append(draw(extra_headers(max_size=2)))
        if rarely(draw, 16):
            lines.append(header_line("Content-Type", b"text/plain"))  # a duplicate
    order = draw(st.permutations(range(len(lines))))
    body = draw(encoded_body(payload, encoding, strict=strict))
    return b"".join(lines[i] for i in order) + CRLF + body


@st.composite
def multipart_entities(draw: st.DrawFn, children: st.SearchStrategy[bytes], *, strict: bool = False) -> bytes:
    subtype = draw(
        st.sampled_from(
            ["mixed", "alternative", "related"]
            if strict
            else [
                "mixed",
                "mixed",
                "alternative",
                "related",
                "signed",
                "encrypted",
                "report",
                "digest",
                "x-weird",
            ]
        )
    )
    boundary = draw(good_boundaries if strict else boundaries).encode("utf-8")
    parts = draw(st.lists(children, min_size=1 if strict else 0, max_size=4))
    quote = strict or not rarely(draw, 5)
    bparam = b'boundary="' + boundary + b'"' if quote else b"boundary=" + boundary
    ctype = b"multipart/" + subtype.encode() + b"; " + bparam
    if not strict and rarely(draw, 11):
        ctype += b"; " + bparam  # a repeated boundary parameter
    preamble = (
        b"" if strict else draw(st.sampled_from([b"", b"This is a multi-part message.\r\n", b"--\r\n"]))
    )
    body = preamble
    for part in parts:
        body += b"--" + boundary + CRLF + part + CRLF
    closed = strict or not rarely(draw, 7)
    if closed:
        body += b"--" + boundary + b"--" + CRLF
        if not strict:
            body += draw(st.sampled_from([b"", b"epilogue\r\n", b"--" + boundary + CRLF + b"x\r\n"]))
    head = header_line("Content-Type", ctype if strict else draw(folded(ctype)))
    if not strict and rarely(draw, 7):
        head += header_line("Content-Transfer-Encoding", draw(transfer_encodings).encode())
    return head + CRLF + body


@st.composite
def rfc822_entities(draw: st.DrawFn, children: st.SearchStrategy[bytes], *, strict: bool = False) -> bytes:
    """A child entity wrapped as a forwarded message (message/rfc822)."""
    inner = draw(children)
    headers = header_line("From", b"someone@example.org") + header_line("Subject", b"fwd")
    disposition = (
        header_line("Content-Disposition", b'attachment; filename="fwd.eml"')
        if (strict or draw(st.booleans()))
        else b""
    )
    return header_line("Content-Type", b"message/rfc822") + disposition + CRLF + headers + inner


def entity_trees(*, strict: bool = False, max_leaves: int = 5) -> st.SearchStrategy[bytes]:
    return st.recursive(
        leaf_entities(strict=strict),
        lambda children: st.one_of(
            multipart_entities(children, strict=strict), rfc822_entities(children, strict=strict)
        ),
        max_leaves=max_leaves,
    )


# -- OpenPGP armor --------------------------------------------------------------------------------------


def crc24(data: bytes) -> int:
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def packet(tag: int, body: bytes, *, old_format: bool = False) -> bytes:
    if old_format and tag < 16:
        if len(body) < 256:
            return bytes([0x80 | (tag << 2), len(body)]) + body
        return bytes([0x81 | (tag << 2)]) + len(body).to_bytes(2, "big") + body
    if len(body) < 192:
        return bytes([0xC0 | tag, len(body)]) + body
    if len(body) < 8384:
        n = len(body) - 192
        return bytes([0xC0 | tag, (n >> 8) + 192, n & 0xFF]) + body
    return bytes([0xC0 | tag, 255]) + len(body).to_bytes(4, "big") + body


def armor(
    data: bytes,
    kind: bytes = b"SIGNATURE",
    *,
    headers: Sequence[bytes] = (),
    crc: bool = True,
    width: int = 64,
) -> bytes:
    b64 = base64.b64encode(data)
    lines = [b"-----BEGIN PGP " + kind + b"-----", *headers, b""]
    lines += [b64[i : i + width] for i in range(0, len(b64), width)] or [b""]
    if crc:
        lines.append(b"=" + base64.b64encode(crc24(data).to_bytes(3, "big")))
    lines.append(b"-----END PGP " + kind + b"-----")
    return CRLF.join(lines) + CRLF


@st.composite
def good_fake_signatures(draw: st.DrawFn) -> bytes:
    """One armored block holding exactly one signature packet: passes the structure checks."""
    body = draw(st.binary(min_size=1, max_size=300))
    headers = draw(
        st.lists(
            st.sampled_from([b"Version: GnuPG v2", b"Comment: https://example.org", b"Charset: utf-8"]),
            max_size=2,
        )
    )
    return armor(
        packet(2, body, old_format=draw(st.booleans())),
        headers=headers,
        crc=draw(st.booleans()),
        width=draw(st.sampled_from([64, 76, 32])),
    )


@st.composite
def fake_signatures(draw: st.DrawFn) -> bytes:
    kind = draw(
        st.sampled_from(
            [
                "good",
                "good",
                "good",
                "two",
                "literal",
                "message",
                "garbage",
                "empty",
                "two_blocks",
                "truncated",
                "partial_length",
                "raw",
            ]
        )
    )
    if kind == "good":
        return draw(good_fake_signatures())
    body = draw(st.binary(min_size=1, max_size=120))
    if kind == "two":
        return armor(packet(2, body) + packet(2, body))
    if kind == "literal":
        return armor(
            packet(4, body[:13]) + packet(11, b"b\x08evil.txt\x00\x00\x00\x00" + body) + packet(2, body)
        )
    if kind == "message":
        return armor(packet(2, body), kind=b"MESSAGE")
    if kind == "garbage":
        return (
            b"-----BEGIN PGP SIGNATURE-----\r\n\r\n"
            + draw(st.binary(max_size=80))
            + b"\r\n-----END PGP SIGNATURE-----\r\n"
        )
    if kind == "empty":
        return b""
    if kind == "two_blocks":
        return armor(packet(2, body)) + armor(packet(2, body))
    if kind == "truncated":
        full = armor(packet(2, body))
        return full[: draw(st.integers(0, len(full)))]
    if kind == "partial_length":
        return armor(bytes([0xC2, 0xE1]) + body)
    return packet(2, body)  # binary, unarmored


# -- whole mails -----------------------------------------------------------------------------------------


GOOD_FORM = (
    "type: preservation\ncase_number: 2026-CR-{n}\nlegal_basis: 18 U.S.C. 2703(f)\n"
    "subjects: account_id:{n}, email:suspect@example.com\ndata_categories: subscriber_information\n"
    "date_from: 2026-01-01\ndate_to: 2026-06-30\n\nPlease preserve the account.\n"
)


@st.composite
def request_texts(draw: st.DrawFn) -> str:
    """A body an officer might write: a complete request, a form with faults, or anything."""
    kind = draw(st.sampled_from(["good", "good", "form", "any"]))
    if kind == "good":
        return GOOD_FORM.format(n=draw(st.integers(0, 10**9)))
    return draw(form_bodies if kind == "form" else st.text(max_size=200))


@st.composite
def request_entities(draw: st.DrawFn, *, strict: bool = False) -> bytes:
    """The text/plain part that carries the request (first in the signed part)."""
    text = draw(request_texts()).encode("utf-8", "surrogatepass")
    encoding = draw(st.sampled_from(["7bit", "quoted-printable", "base64"]))
    if encoding == "7bit" and (not text.isascii() or max(map(len, crlf(text).split(CRLF))) > 900):
        encoding = "quoted-printable"
    head = header_line("Content-Type", b'text/plain; charset="utf-8"')
    head += header_line("Content-Transfer-Encoding", encoding.encode())
    return head + CRLF + draw(encoded_body(text, encoding, strict=strict))


@st.composite
def mixed(draw: st.DrawFn, first: st.SearchStrategy[bytes], rest: st.SearchStrategy[bytes]) -> bytes:
    """multipart/mixed: one part from `first`, then up to three from `rest`."""
    boundary = b"=_fz_" + draw(good_boundaries).encode()[:60]
    parts = [draw(first), *draw(st.lists(rest, max_size=3))]
    body = b"".join(b"--" + boundary + CRLF + p + CRLF for p in parts) + b"--" + boundary + b"--"
    return header_line("Content-Type", b'multipart/mixed; boundary="' + boundary + b'"') + CRLF + body


def form_attachments() -> st.SearchStrategy[bytes]:
    """request.toml / request.json as a base64 attachment."""

    def entity(name: str, data: bytes) -> bytes:
        return (
            header_line("Content-Type", b'text/plain; name="' + name.encode() + b'"')
            + header_line("Content-Disposition", b'attachment; filename="' + name.encode() + b'"')
            + header_line("Content-Transfer-Encoding", b"base64")
            + CRLF
            + crlf(base64.encodebytes(data))
        )

    return st.sampled_from(["request.toml", "request.json"]).flatmap(
        lambda name: form_attachment_bytes(name).map(lambda data: entity(name, data))
    )


@st.composite
def signed_parts(draw: st.DrawFn, *, strict: bool = False, known: Sequence[str] = ()) -> bytes:
    """The first part of multipart/signed: a request (alone, or with attachments) or any entity,
    maybe with protected headers (v1)."""
    trees = entity_trees(strict=strict)
    shape = draw(st.sampled_from(["request", "request_mixed", "form_attachment", "tree", "tree"]))
    if shape == "request":
        part = draw(request_entities(strict=strict))
    elif shape == "request_mixed":
        part = draw(mixed(request_entities(strict=strict), trees))
    elif shape == "form_attachment":
        part = draw(mixed(request_entities(strict=strict), form_attachments()))
    else:
        part = draw(trees)
    if draw(st.booleans()):
        protected = (
            (header_line("From", draw(from_values(known))) if not strict else b"")
            + header_line("To", b"lers@gateway.test")
            + header_line("Subject", b"Data request")
        )
        part = re.sub(rb"^(Content-Type: [^\r\n;]+)", rb'\1; protected-headers="v1"', part, count=1)
        part = protected + part
    return part


def _signature_entity(signature: bytes, encoding: str) -> bytes:
    head = header_line("Content-Type", b'application/pgp-signature; name="signature.asc"')
    head += header_line("Content-Description", b"OpenPGP digital signature")
    if encoding:
        head += header_line("Content-Transfer-Encoding", encoding.encode())
    if encoding == "base64":
        body = crlf(base64.encodebytes(signature))
    elif encoding == "quoted-printable":
        body = crlf(quopri.encodestring(signature))
    else:
        body = signature
    return head + CRLF + body.rstrip(b"\r\n")


def multipart_signed(
    part: bytes,
    signature_entity: bytes,
    boundary: bytes,
    *,
    protocol: bytes = b'"application/pgp-signature"',
    micalg: bytes = b"pgp-sha256",
    layout: str = "normal",
    preamble: bytes = b"",
    closed: bool = True,
    fold: bool = True,
) -> bytes:
    params = [b"micalg=" + micalg]
    if protocol:
        params.append(b"protocol=" + protocol)
    params.append(b'boundary="' + boundary + b'"')
    ctype = b"multipart/signed; " + (b";\r\n " if fold else b"; ").join(params)
    parts = {
        "normal": [part, signature_entity],
        "swapped": [signature_entity, part],
        "one": [part],
        "three": [part, signature_entity, part],
        "two_signed": [part, part, signature_entity],
    }[layout]
    body = preamble
    for index, item in enumerate(parts):
        body += (b"" if index == 0 and not preamble else CRLF) + b"--" + boundary + CRLF + item
    body += CRLF
    if closed:
        body += b"--" + boundary + b"--" + CRLF
    return header_line("Content-Type", ctype) + CRLF + body


@st.composite
def signed_mails(
    draw: st.DrawFn,
    *,
    sign: Signer | None = None,
    known: Sequence[str] = (),
    strict: bool = False,
    from_addr: str | None = None,
) -> bytes:
    """PGP/MIME signed mail (RFC 3156); loose by default, well formed with `strict`."""
    return draw(signed_mail_pieces(sign=sign, known=known, strict=strict, from_addr=from_addr))[0]


@st.composite
def signed_mail_pieces(
    draw: st.DrawFn,
    *,
    sign: Signer | None = None,
    known: Sequence[str] = (),
    strict: bool = False,
    from_addr: str | None = None,
) -> tuple[bytes, bytes, bytes]:
    """(mail, signed part, signature): the last two are what a correct split must find."""
    part = draw(signed_parts(strict=strict, known=known))
    signature = (
        sign(part) if sign is not None else draw(good_fake_signatures() if strict else fake_signatures())
    )
    sig_encoding = draw(
        st.sampled_from(["", "7bit", "base64", "quoted-printable"] + ([] if strict else ["x-bad", "8bit"]))
    )
    boundary = draw(good_boundaries if strict else boundaries).encode("utf-8")
    if strict:
        protocol = b'"application/pgp-signature"'
        micalg, layout, preamble, closed = b"pgp-sha256", "normal", b"", True
    else:
        protocol = draw(
            st.sampled_from(
                [b'"application/pgp-signature"'] * 6
                + [
                    b"application/pgp-signature",
                    b'"APPLICATION/PGP-SIGNATURE"',
                    b'"application/pkcs7-signature"',
                    b"",
                    b'"x"',
                    b'"application/pgp-signature"; protocol="x"',
                ]
            )
        )
        micalg = draw(st.sampled_from([b"pgp-sha256", b"pgp-sha512", b"", b'"pgp-md5"']))
        layout = draw(st.sampled_from(["normal"] * 8 + ["swapped", "one", "three", "two_signed"]))
        preamble = draw(
            st.sampled_from([b"", b"This is an OpenPGP/MIME signed message (RFC 4880 and 3156)\r\n"])
        )
        closed = not rarely(draw, 9)
    top = multipart_signed(
        part,
        _signature_entity(signature, sig_encoding),
        boundary,
        protocol=protocol,
        micalg=micalg,
        layout=layout,
        preamble=preamble,
        closed=closed,
        fold=draw(st.booleans()),
    )
    mail = draw(outer_headers(known=known, strict=strict, from_addr=from_addr)) + top
    if not strict:
        mail = set_line_endings(mail, draw(line_endings), draw(st.integers(0, 2)))
    return mail, part, signature


@st.composite
def inline_signed_mails(
    draw: st.DrawFn, *, clearsign: Signer | None = None, known: Sequence[str] = ()
) -> bytes:
    text = draw(st.one_of(st.text(max_size=200), form_bodies)).encode("utf-8", "surrogatepass")
    if clearsign is not None:
        block = crlf(clearsign(text))
    else:
        escaped = re.sub(rb"(?m)^-", b"- -", crlf(text))
        block = (
            b"-----BEGIN PGP SIGNED MESSAGE-----\r\nHash: SHA256\r\n\r\n"
            + escaped
            + CRLF
            + draw(fake_signatures())
        )
    before = draw(st.sampled_from([b"", b"", b"Hello,\r\n", b"\r\n"]))
    after = draw(st.sampled_from([b"", b"", b"-- \r\nsig\r\n", armor(b"\xc2\x01x")]))
    body = before + block + after
    charset = draw(st.sampled_from(["utf-8", "us-ascii", "iso-8859-1", "utf-16", "x-unknown"]))
    encoding = draw(st.sampled_from(["7bit", "7bit", "quoted-printable", "base64", "8bit", "x-uuencode"]))
    head = header_line("Content-Type", b'text/plain; charset="' + charset.encode() + b'"')
    head += header_line("Content-Transfer-Encoding", encoding.encode())
    mail = draw(outer_headers(known=known)) + head + CRLF + draw(encoded_body(body, encoding))
    return set_line_endings(mail, draw(line_endings), draw(st.integers(0, 2)))


@st.composite
def encrypted_mails(draw: st.DrawFn, *, known: Sequence[str] = ()) -> bytes:
    """multipart/encrypted (RFC 3156 section 4) with a fake OpenPGP message inside."""
    boundary = draw(good_boundaries).encode()
    data = draw(
        st.one_of(st.binary(max_size=200), st.just(packet(1, b"\x03" + bytes(20)) + packet(18, b"\x01xx")))
    )
    ciphertext = armor(data, kind=b"MESSAGE") if not rarely(draw, 5) else draw(st.binary(max_size=100))
    version = header_line("Content-Type", b"application/pgp-encrypted") + CRLF + b"Version: 1"
    payload = (
        header_line("Content-Type", b'application/octet-stream; name="encrypted.asc"') + CRLF + ciphertext
    )
    protocol = draw(
        st.sampled_from([b'"application/pgp-encrypted"'] * 3 + [b"", b'"application/pgp-signature"'])
    )
    parts = draw(
        st.sampled_from(
            [[version, payload]] * 4 + [[payload, version], [version], [version, payload, payload]]
        )
    )
    body = b"".join(b"--" + boundary + CRLF + p + CRLF for p in parts) + b"--" + boundary + b"--" + CRLF
    top = header_line(
        "Content-Type", b"multipart/encrypted; protocol=" + protocol + b'; boundary="' + boundary + b'"'
    )
    return draw(outer_headers(known=known)) + top + CRLF + body


@st.composite
def unsigned_mails(draw: st.DrawFn, *, known: Sequence[str] = ()) -> bytes:
    """Any entity tree under outer headers: plain, multipart, forwarded, S/MIME-looking."""
    return draw(outer_headers(known=known)) + draw(entity_trees())


@st.composite
def chat_messages(draw: st.DrawFn, *, sign: Signer | None = None) -> bytes:
    """The containers the chat layer builds (gateway.mime.chat_*_message), from drawn inputs."""
    from_addr = draw(addr_specs(("alice@police.test",)))
    origin = f"telegram:{draw(st.integers(0, 2**40))}"
    if draw(st.booleans()):
        return chat_text_message(from_addr, "lers@gateway.test", draw(st.text(max_size=300)), origin)
    data = draw(st.binary(max_size=300))
    signature = (
        sign(data)
        if sign is not None
        else draw(
            st.one_of(
                good_fake_signatures(),
                fake_signatures(),
                st.builds(lambda b: packet(2, b), st.binary(max_size=60)),
            )
        )
    )
    filename = draw(st.text(max_size=40))
    return chat_file_message(from_addr, "lers@gateway.test", filename, data, signature, origin)


@st.composite
def wrapped_mails(draw: st.DrawFn, inner: st.SearchStrategy[bytes], *, known: Sequence[str] = ()) -> bytes:
    """A mail re-nested: inside multipart/mixed, as message/rfc822, or as a second alternative."""
    mail = crlf(draw(inner))
    boundary = draw(good_boundaries).encode()
    how = draw(
        st.sampled_from(["mixed_rfc822", "mixed_entity", "rfc822_top", "alternative", "signed_wrapper"])
    )
    text = header_line("Content-Type", b"text/plain") + CRLF + b"See the attached request.\r\n"
    if how == "rfc822_top":
        top = header_line("Content-Type", b"message/rfc822") + CRLF + mail
    else:
        if how == "mixed_rfc822":
            parts = [text, header_line("Content-Type", b"message/rfc822") + CRLF + mail]
        else:
            parts = [text, mail]  # the mail's own headers become the part's headers
        subtype = {
            "alternative": b"alternative",
            "signed_wrapper": b'signed; protocol="application/pgp-signature"',
        }.get(how, b"mixed")
        if draw(st.booleans()):
            parts.reverse()
        body = b"".join(b"--" + boundary + CRLF + p + CRLF for p in parts) + b"--" + boundary + b"--" + CRLF
        top = (
            header_line("Content-Type", b"multipart/" + subtype + b'; boundary="' + boundary + b'"')
            + CRLF
            + body
        )
    return draw(outer_headers(known=known)) + top


@st.composite
def huge_mails(draw: st.DrawFn, *, known: Sequence[str] = ()) -> bytes:
    """Headers or parameters at and past the gateway's header size limits."""
    unit = draw(st.sampled_from([";", ".", '"', "a", "=", "\\", "(", "<"]))
    count = draw(st.sampled_from([100, 3000, 4200, 9000, 70_000]))
    where = draw(
        st.sampled_from(
            ["from", "subject", "ctype_param", "boundary", "many_headers", "sig_header", "nested_param"]
        )
    )
    head = draw(outer_headers(known=known, strict=True))
    value = huge(unit, count)
    if where == "from":
        head = header_line("From", value) + head
    elif where == "subject":
        head += header_line("Subject", value)
    elif where == "many_headers":
        head += b"".join(header_line(f"X-H{i}", b"v" * 80) for i in range(count // 80))
    part = header_line("Content-Type", b"text/plain") + CRLF + b"hello\r\n"
    sig_entity = _signature_entity(armor(packet(2, b"x")), "")
    if where == "sig_header":
        sig_entity = (
            header_line("Content-Type", b'application/pgp-signature; x="' + value)
            + CRLF
            + armor(packet(2, b"x"))
        )
    boundary = b"b" if where != "boundary" else value.replace(b"\r\n ", b"")[:200]
    top = multipart_signed(part, sig_entity, boundary)
    if where == "ctype_param":
        top = top.replace(b"micalg=", b'x="' + value + b'";\r\n micalg=', 1)
    if where == "nested_param":  # unsigned wrapping whose inner multipart has a long parameter
        inner = header_line("Content-Type", b'multipart/mixed; boundary=c; x="' + value[:10_000]) + CRLF
        inner += b"--c\r\n" + part + b"--c--\r\n"
        top = (
            header_line("Content-Type", b"multipart/mixed; boundary=b")
            + CRLF
            + b"--b\r\n"
            + inner
            + b"--b--\r\n"
        )
    return head + top


def smtp_line_limit(raw: bytes, limit: int = 998) -> bytes:
    """Cut lines longer than SMTP carries (RFC 5321 4.5.3.1.6), so that fuzz input reaches the
    gateway's parser instead of being refused by the SMTP server (which it also is, correctly)."""
    lines = raw.split(b"\n")
    return b"\n".join(
        b"\r\n".join(line[i : i + limit] for i in range(0, len(line), limit)) or line for line in lines
    )


# -- mutations --------------------------------------------------------------------------------------------

MUTATIONS = [
    "flip",
    "insert",
    "delete",
    "dupline",
    "dropline",
    "truncate",
    "replace",
    "swaplines",
    "token",
    "lf",
    "cr",
]
mutation = st.tuples(
    st.sampled_from(MUTATIONS),
    st.integers(0, 2**20),  # position, taken modulo the length at the time
    st.integers(1, 64),  # size / bit
    st.binary(min_size=1, max_size=8),
    st.sampled_from(TOKENS),
)


def mutation_ops(min_size: int = 1, max_size: int = 4) -> st.SearchStrategy[list[tuple[Any, ...]]]:
    return st.lists(mutation, min_size=min_size, max_size=max_size)


def apply_mutations(raw: bytes, ops: Sequence[tuple[Any, ...]]) -> bytes:
    """Apply byte-level mutations: flip a bit, insert/delete bytes, duplicate/drop/swap a line,
    truncate, insert a structural token, change line endings."""
    data = bytearray(raw)
    for kind, position, size, blob, token in ops:
        pos = position % (len(data) + 1)
        if kind == "flip" and data:
            data[pos % len(data)] ^= 1 << (size % 8)
        elif kind == "insert":
            data[pos:pos] = blob
        elif kind == "delete":
            del data[pos : pos + size]
        elif kind == "truncate":
            del data[pos:]
        elif kind == "replace" and data:
            data[pos % len(data)] = blob[0]
        elif kind == "token":
            data[pos:pos] = token
        elif kind in ("dupline", "dropline", "swaplines"):
            lines = bytes(data).split(b"\n")
            index = position % len(lines)
            if kind == "dupline":
                lines.insert(index, lines[index])
            elif kind == "dropline" and len(lines) > 1:
                del lines[index]
            elif kind == "swaplines" and len(lines) > 1:
                other = (index + size) % len(lines)
                lines[index], lines[other] = lines[other], lines[index]
            data = bytearray(b"\n".join(lines))
        elif kind == "lf":
            data = bytearray(bytes(data).replace(b"\r\n", b"\n"))
        elif kind == "cr":
            data = bytearray(bytes(data).replace(b"\r\n", b"\r"))
    return bytes(data)


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes], min_ops: int = 1) -> bytes:
    return apply_mutations(draw(base), draw(mutation_ops(min_size=min_ops)))


def any_mails(
    *, known: Sequence[str] = (), sign: Signer | None = None, clearsign: Signer | None = None
) -> st.SearchStrategy[bytes]:
    """Everything above, weighted toward what gets past the first checks."""
    signed = signed_mails(sign=sign, known=known)
    inline = inline_signed_mails(clearsign=clearsign, known=known)
    return st.one_of(
        signed,
        signed,
        signed_mails(sign=sign, known=known, strict=True),
        inline,
        encrypted_mails(known=known),
        unsigned_mails(known=known),
        wrapped_mails(st.one_of(signed, inline), known=known),
        mutated(signed),
        mutated(signed),
        mutated(inline),
        mutated(wrapped_mails(signed, known=known)),
        huge_mails(known=known),
        st.binary(max_size=500),
    )
