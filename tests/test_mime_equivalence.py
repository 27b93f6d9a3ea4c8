"""The faster MIME reading (issue 8) must answer exactly as the code it replaced, for every input.

The old functions are kept verbatim in tests/support/mime_reference.py. Each test runs the old and
the new code on the same bytes, generated (tests/support/mail_strategies.py: loose, mutated,
nested, oversized mail) or written by hand to hit each shortcut at its edges, and requires the same
outcome: the same structure, refusal (reason and sentence), signed bytes, signature, text,
protected headers, attachments (name, type, bytes) and problems, or the same exception.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway import mime
from gateway.mime import (
    DetachedFile,
    InlineSigned,
    MimeLimits,
    PgpMimeEncrypted,
    PgpMimeSigned,
    Refusal,
    SignedContent,
    canonical_line_endings,
)
from handlers import chain
from tests.support import mail_strategies as ms
from tests.support import mime_reference as old

SETTINGS = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))
LIMITS = [
    mime.DEFAULT_LIMITS,
    MimeLimits(max_header_bytes=400, max_header_field_bytes=150, max_header_fields=9, max_parts=5,
               max_nesting=2, max_decoded_bytes=600),
    MimeLimits(max_header_bytes=1 << 20, max_header_field_bytes=1 << 16, max_header_fields=5000,
               max_parts=1000, max_nesting=20, max_decoded_bytes=1 << 30),  # above the defaults
]
# the email package writes a forwarded message again with random boundaries of its own
GENERATED_BOUNDARY = re.compile(rb"={15}\d{19}==(?:\.\d+)?")


def comparable(result: Any) -> Any:
    """A result as plain values (views as bytes, files as bytes), so that equal means the same."""
    if isinstance(result, Refusal | str | bytes) or result is None:
        return result
    if isinstance(result, PgpMimeSigned):
        return ("pgp/mime", bytes(result.signed_bytes), result.signature)
    if isinstance(result, InlineSigned | PgpMimeEncrypted | DetachedFile):
        return result
    if isinstance(result, SignedContent):
        files = [(a.filename, a.content_type, GENERATED_BOUNDARY.sub(b"=", bytes(a.data)))
                 for a in result.attachments]
        return (result.text, result.protected_headers, files, result.problems)
    raise AssertionError(f"unexpected result {result!r}")


def outcome(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return comparable(function(*args, **kwargs))
    except Exception as exc:  # the same input must fail the same way (parse_safely names the type)
        return ("raised", type(exc).__name__)


def same(new: Callable[..., Any], reference: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    ours = outcome(new, *args, **kwargs)
    assert ours == outcome(reference, *args, **kwargs)
    return ours


def judge_everything(raw: bytes) -> None:
    """Every entry point on one raw message, as handlers/chain.py calls them, old against new."""
    same(chain.outer_from_address, old.outer_from_address, raw)
    signed_parts = set()
    for limits in LIMITS:
        same(chain.outer_from_address, old.outer_from_address, raw, limits)
        for allow_inline in (False, True):
            structure = same(mime.split_signed, old.split_signed, raw, allow_inline=allow_inline,
                             limits=limits)
            if isinstance(structure, tuple) and structure[0] == "pgp/mime":
                signed_parts.add(structure[1])
        entity = canonical_line_endings(raw)
        same(mime.mime_tree_problem, old.mime_tree_problem, entity, limits)
        same(mime.header_problem, old.header_problem, mime.split_head_body(entity)[0], limits)
        same(mime.split_chat_message, old.split_chat_message, raw, limits)
    for signed in signed_parts:
        read_both_ways(signed)


def read_both_ways(signed: bytes) -> None:
    """`read_signed_content` of a view (what split_signed gives) and of bytes (the decrypted path)."""
    same(mime.read_signed_content, old.read_signed_content, memoryview(signed))
    same(mime.read_signed_content, old.read_signed_content, signed)


# -- generated mail ------------------------------------------------------------------------------------


@SETTINGS
@given(raw=ms.any_mails(known=("alice@police.test",)))
def test_every_entry_point_answers_as_before(raw: bytes) -> None:
    judge_everything(raw)


@SETTINGS
@given(raw=st.one_of(ms.signed_mails(strict=True), ms.mutated(ms.signed_mails(strict=True)),
                     ms.wrapped_mails(ms.signed_mails()), ms.chat_messages()))
def test_well_formed_and_slightly_broken_mail_answers_as_before(raw: bytes) -> None:
    judge_everything(raw)


@SETTINGS
@given(signed=st.one_of(ms.signed_parts(), ms.signed_parts(strict=True), ms.mutated(ms.signed_parts()),
                        ms.entity_trees(max_leaves=8)))
def test_the_signed_part_reads_as_before(signed: bytes) -> None:
    read_both_ways(canonical_line_endings(signed))
    read_both_ways(signed)  # not canonical: the whole-entity reading, in both


@SETTINGS
@given(values=st.lists(ms.from_values(("alice@police.test",)).map(lambda v: v.decode("utf-8", "replace")),
                       min_size=0, max_size=2))
def test_from_verdicts_are_as_before_and_again(values: list[str]) -> None:
    for _ in range(2):  # the second time, from the kept verdict
        assert chain.single_from_address(values) == old.single_from_address(values)


# -- the shortcuts at their edges ------------------------------------------------------------------------

SIG = ms.armor(ms.packet(2, b"\x04\x00" + bytes(40)))


def signed_mail(part: bytes, boundary: bytes = b"outer", tail: bytes = b"") -> bytes:
    """A multipart/signed mail around `part` with a fake (structurally valid) signature."""
    return (b"From: alice@police.test\r\nTo: lers@gateway.test\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/signed; protocol="application/pgp-signature";\r\n'
            b' boundary="' + boundary + b'"\r\n\r\n--' + boundary + b"\r\n" + part + b"\r\n--" + boundary
            + b"\r\nContent-Type: application/pgp-signature\r\n\r\n" + SIG + b"\r\n--" + boundary + b"--"
            + tail + b"\r\n")


def mixed(boundary: bytes, *parts: bytes, close: bytes = b"--", preamble: bytes = b"") -> bytes:
    body = preamble + b"".join(b"--" + boundary + b"\r\n" + p + b"\r\n" for p in parts)
    return (b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\r\n\r\n' + body
            + b"--" + boundary + close)


TEXT = b"Content-Type: text/plain; charset=utf-8\r\n\r\ntype: preservation\r\n"
PDF = (b'Content-Type: application/pdf; name="order.pdf"\r\nContent-Disposition: attachment; '
       b'filename="order.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
       + base64.encodebytes(b"%PDF-1.4 " * 40).replace(b"\n", b"\r\n"))
EDGES = {
    "plain": signed_mail(TEXT),
    "with a PDF": signed_mail(mixed(b"inner", TEXT, PDF)),
    # delimiters: at the very start of a body, with blanks, as a prefix of a longer line, overlapping
    "delimiter first in the body": signed_mail(mixed(b"b", TEXT, preamble=b"")[:-3] + b"--\r\n"),
    "blanks after delimiters": signed_mail(mixed(b"b", TEXT, PDF).replace(b"--b\r\n", b"--b \t\r\n")),
    "a line that starts like a delimiter": signed_mail(mixed(b"b", TEXT + b"\r\n--bx\r\n--b-\r\n--b--x",
                                                             PDF)),
    "boundaries of dashes": signed_mail(mixed(b"-", TEXT, b"\r\n---\r\n----\r\n" + TEXT), boundary=b"--"),
    "inner boundary of dashes": signed_mail(mixed(b"-", TEXT, b"---\r\n--- \r\n" + TEXT, b"---x")),
    "boundary with regex characters": signed_mail(mixed(b".*+?(", TEXT, PDF), boundary=b"a.b|c"),
    "boundary not ASCII": signed_mail(mixed("é".encode(), TEXT, PDF)),
    "boundary with a fold in it": signed_mail(TEXT, boundary=b"ou\r\n ter"),
    "inner boundary with a fold in it": signed_mail(mixed(b"in\r\n --ner", TEXT, PDF)),
    "no close delimiter": signed_mail(mixed(b"b", TEXT, PDF, close=b"")),
    "close delimiter then more": signed_mail(mixed(b"b", TEXT, close=b"--\r\n--b\r\n" + TEXT)),
    "no parts": signed_mail(mixed(b"b")),
    "delimiter at the very end": signed_mail(mixed(b"b", TEXT, close=b"")),
    "many delimiter-like lines": signed_mail(mixed(b"b", TEXT + b"\r\n--bx" * 200, PDF)),
    "many parts": signed_mail(mixed(b"b", *[TEXT] * 120)),
    "a large part": signed_mail(mixed(b"b", TEXT, PDF + b"\r\nQUFB" * 60_000)),
    # header blocks: "From " lines, no body, no blank line, defects, duplicates, encoded words, NUL
    "From line last in a text part's headers": signed_mail(b"Content-Type: text/plain\r\nFrom x\r\n\r\nhi"),
    "From line first in a text part": signed_mail(b"From x\r\nContent-Type: text/plain\r\n\r\nhi"),
    "From line in the middle": signed_mail(b"Content-Type: text/plain\r\nFrom x\r\nX: y\r\n\r\nhi"),
    "From line, no body": signed_mail(mixed(b"b", b"Content-Type: text/plain\r\nFrom x", PDF)),
    "text part without a blank line": signed_mail(mixed(b"b", b"Content-Type: text/plain", PDF)),
    "text part that is only a blank line": signed_mail(mixed(b"b", b"\r\nhello\r\n\r\nthere", PDF)),
    "a line that is no header": signed_mail(mixed(b"b", b"Content-Type: text/plain\r\nno header\r\n\r\nx")),
    "continuation first": signed_mail(mixed(b"b", b" folded\r\nContent-Type: text/plain\r\n\r\nx")),
    "missing header name": signed_mail(mixed(b"b", b": x\r\nContent-Type: text/plain\r\n\r\nx")),
    "two content types": signed_mail(mixed(b"b", b"Content-Type: text/html\r\n" + TEXT, PDF)),
    "encoded words in parameters": signed_mail(mixed(b"b", TEXT, PDF.replace(
        b'filename="order.pdf"', b'filename="=?utf-8?q?=C3=A9.pdf?="'))),
    "RFC 2231 file name": signed_mail(mixed(b"b", TEXT, PDF.replace(
        b'filename="order.pdf"', b"filename*0*=utf-8''%C3%A9; filename*1=.pdf"))),
    "folded content type": signed_mail(mixed(b"b", TEXT.replace(b"; charset", b";\r\n\tcharset"), PDF)),
    "NUL and 8-bit in headers": signed_mail(mixed(b"b", b"Content-Type: text/plain; charset=\x00\xff\r\n"
                                                        b"X-\xe9: \x00\r\n\r\n\xff\x00")),
    "charset unknown": signed_mail(TEXT.replace(b"utf-8", b"x-nothing")),
    "text not UTF-8": signed_mail(TEXT + b"\xff\xfe"),
    "quoted-printable text": signed_mail(b"Content-Type: text/plain\r\nContent-Transfer-Encoding: "
                                         b"quoted-printable\r\n\r\na=3Db=\r\nc=FF"),
    "base64 text, broken": signed_mail(b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64"
                                       b"\r\n\r\naGVsbG8=x!"),
    "uuencoded text": signed_mail(b"Content-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode"
                                  b"\r\n\r\nbegin 644 x\r\n#86)C\r\n`\r\nend\r\n"),
    "protected headers": signed_mail(b'Content-Type: text/plain; protected-headers="v1"\r\nFrom: '
                                     b"=?utf-8?q?Al=C3=AFce?= <alice@police.test>\r\nTo: lers@gateway.test"
                                     b"\r\nSubject: =?utf-8?b?w6k=?=\r\nSubject: \xff\r\n\r\nhi"),
    "digest": signed_mail(b'Content-Type: multipart/digest; boundary="d"\r\n\r\n--d\r\n\r\nFrom: a@b.c\r\n'
                          b"\r\nhi\r\n--d\r\nContent-Type: text/plain\r\n\r\nx\r\n--d--"),
    "forwarded message": signed_mail(mixed(b"b", TEXT, b"Content-Type: message/rfc822\r\n\r\nFrom: a@b.c\r\n"
                                                      b"Content-Type: multipart/mixed; boundary=z\r\n\r\n--z"
                                                      b"\r\n\r\nx\r\n--z--")),
    "delivery status": signed_mail(mixed(b"b", TEXT, b"Content-Type: message/delivery-status\r\n\r\nA: b\r\n"
                                                      b"\r\nC: d\r\n\r\n")),
    "nested deeply": signed_mail(b"".join(b'Content-Type: multipart/mixed; boundary="n%d"\r\n\r\n--n%d\r\n'
                                          % (i, i) for i in range(14)) + TEXT),
    "huge From": signed_mail(TEXT).replace(b"From: alice", b"From: " + b"(" * 5000 + b"alice"),
    "header block too large": signed_mail(mixed(b"b", b"X-A: " + b"a" * 70_000 + b"\r\n" + TEXT)),
    "LF line endings": signed_mail(mixed(b"b", TEXT, PDF)).replace(b"\r\n", b"\n"),
    "CR line endings": signed_mail(mixed(b"b", TEXT, PDF)).replace(b"\r\n", b"\r"),
    "signature part first": signed_mail(TEXT).replace(b"--outer\r\nContent-Type: text/plain", b"--outer\r\n"
                                                      b"Content-Type: application/pgp-signature", 1),
    "two From headers": b"From: bob@police.test\r\n" + signed_mail(TEXT),
}


@pytest.mark.parametrize("raw", EDGES.values(), ids=EDGES.keys())
def test_each_shortcut_at_its_edges(raw: bytes) -> None:
    judge_everything(raw)
    body = mime.split_head_body(canonical_line_endings(raw))[1]
    read_both_ways(bytes(body))  # the body as an entity of its own: multipart/signed read as content


@SETTINGS
@given(boundary=st.text(ms.BCHARS + "-\r\n \t", min_size=1, max_size=6),
       pieces=st.lists(st.sampled_from([b"--", b"\r\n", b" ", b"\t", b"x", b"-", b"B", b"--B", b"\r\n--B",
                                        b"\r\n--B--", b"\r\n--B \r\n"]), max_size=30))
@example(boundary="B", pieces=[b"\r\n--B"] * 70)
@example(boundary="-", pieces=[b"\r\n--", b"-", b"-", b"\r\n"])
@example(boundary="X\r\n--", pieces=[b"\r\n--B", b"X\r\n--", b"\r\n"])  # overlapping candidates
def test_delimiters_are_found_where_the_expression_finds_them(boundary: str, pieces: list[bytes]) -> None:
    """`_delimited_parts` (bytes.find) against the old compiled expression, on bodies made of the
    boundary's own pieces, strict or not, as bytes and as a view."""
    body = b"".join(pieces).replace(b"B", boundary.encode())
    for strict in (False, True):
        for given_body in (body, memoryview(body)):
            ours = mime._delimited_parts(given_body, boundary, strict)
            reference = old._delimited_parts(given_body, boundary, strict)
            assert (None if ours is None else [bytes(p) for p in ours]) == (
                None if reference is None else [bytes(p) for p in reference])


def state(message: Any) -> dict[str, Any]:
    """Everything a parse leaves on a message, defects by kind."""
    fields = {k: v for k, v in vars(message).items() if k not in ("defects", "policy")}
    return {**fields, "defects": [(type(d), str(d)) for d in message.defects]}


@SETTINGS
@given(raw=st.one_of(ms.outer_headers(), ms.leaf_entities(), ms.mutated(ms.leaf_entities()),
                     ms.mutated(ms.outer_headers()), st.binary(max_size=200)))
@example(raw=b"From x\r\nA: b\r\nFrom y\r\n\r\n")
@example(raw=b" x\r\n: y\r\nA: b\r\nno header\r\nFrom z\r\nC: d")
def test_a_header_block_is_rebuilt_as_the_parser_leaves_it(raw: bytes) -> None:
    """`parse_headers` and `_part_headers` rebuild a message from the kept reading of its header
    block (`RawHead`): it must be what a parse of the block leaves, field for field."""
    head = mime.split_head_body(canonical_line_endings(raw))[0]
    for _ in range(2):  # the second time, from the cache
        assert state(mime.parse_headers(head)) == state(old.parse_headers(head))
        try:
            ours = state(mime._part_headers(head))
        except mime._Irregular:
            ours = None
        try:
            reference = state(old._part_headers(head))
        except old._Irregular:
            reference = None
        assert ours == reference


def test_the_shortcuts_are_taken() -> None:
    """The equivalence above is only worth something if the new paths run: a regular signed request
    finds its delimiters without an expression made for its boundary and reads its text part
    without parsing it again; a body of many delimiter-like lines still takes the expression."""
    calls: dict[str, int] = {"matched": 0, "parsed": 0}
    matched, parsed = mime._matched_delimiters, mime._parsed

    def counting(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any) -> Any:
            calls[name] += 1
            return function(*args)
        return counted

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mime, "_matched_delimiters", counting("matched", matched))
        patch.setattr(mime, "_parsed", counting("parsed", parsed))
        structure = mime.split_signed(EDGES["with a PDF"], allow_inline=False)
        assert isinstance(structure, PgpMimeSigned)
        content = mime.read_signed_content(structure.signed_bytes)
        assert content.text and content.attachments and calls == {"matched": 0, "parsed": 0}
        mime.split_signed(EDGES["many delimiter-like lines"], allow_inline=False)
        assert calls["matched"] > 0
