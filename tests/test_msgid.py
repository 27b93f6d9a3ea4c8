"""The Message-ID read at ingress without the email parser gives what the parser gives, for
well-formed and hostile header blocks alike (the parser is the reference, run on the same bytes)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.msgid import BLANK, header_end, header_message_id, parsed_message_id
from tests.support.mail_strategies import (
    apply_mutations,
    mutation_ops,
    outer_headers,
    set_line_endings,
    unsigned_mails,
)

ODD = [
    b"Message-ID: <a@b>\r\n\r\nbody",
    b"message-id:<a@b>\n\nbody",
    b"MESSAGE-ID: \t <a@b>\r\n (comment)\r\n\tx\r\n\r\n",
    b"Message-ID:\r\n <folded@b>\r\n\r\n",
    b"Message-ID:\r\n\r\n",
    b"Message-ID: \x0b\r\n\r\n",
    b"Message-ID: <a\x1cb@c>\r\n\r\n",
    b"Message-ID: <a\x00b@police.test>\r\nSubject: s\r\n\r\nhello\r\n",
    b"Subject: x\r\nMessage-ID: <first@b>\r\nMessage-ID: <second@b>\r\n\r\n",
    b"X-Message-ID: <not@b>\r\nResent-Message-ID: <no@b>\r\n\r\n",
    b"Subject: x\r\n\r\nMessage-ID: <in-body@b>\r\n",
    b"From someone Mon Jan 1\r\nMessage-ID: <after-unixfrom@b>\r\n\r\n",
    b"Subject: x\r\nFrom nobody\r\nMessage-ID: <a@b>\r\n\r\n",
    b"Bad header line\r\nMessage-ID: <a@b>\r\n\r\n",
    b":empty-name\r\nMessage-ID: <a@b>\r\n\r\n",
    b" leading continuation\r\nMessage-ID: <a@b>\r\n\r\n",
    b"Message-ID : <space-before-colon@b>\r\n\r\n",
    b"Subject: lone\rCR\r\nMessage-ID: <a@b>\r\n\r\n",
    b"Message-ID: <caf\xc3\xa9@b>\r\n\r\n",
    b"Message-ID: <a@b>",
    b"Message-ID: <no-blank-line@b>\r\n",
    b"\r\nMessage-ID: <a@b>\r\n\r\n",
    b"Message-ID: <a@b>\n\r\nbody",
    b"Message-ID: <" + b"x" * 2000 + b"@b>\r\n\r\n",
    b"Subject: " + b"y" * 70000 + b"\r\nMessage-ID: <late@b>\r\n\r\n",
    b"",
]


def test_odd_header_blocks_read_as_the_parser_reads_them() -> None:
    for raw in ODD:
        assert header_message_id(raw) == parsed_message_id(raw), raw[:120]


@settings(max_examples=300, deadline=None)
@given(headers=outer_headers(), mutations=mutation_ops(min_size=0),
       ending=st.sampled_from([b"\r\n", b"\n", b"mixed"]))
def test_generated_headers_read_as_the_parser_reads_them(headers: bytes, mutations: list,
                                                          ending: bytes) -> None:
    raw = apply_mutations(set_line_endings(headers + b"\r\nbody\r\n", ending), mutations)
    assert header_message_id(raw) == parsed_message_id(raw)


@settings(max_examples=100, deadline=None)
@given(raw=unsigned_mails())
def test_generated_mails_read_as_the_parser_reads_them(raw: bytes) -> None:
    assert header_message_id(raw) == parsed_message_id(raw)


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(head=st.lists(st.sampled_from([b"\r", b"\n", b"a", b":", b"\r\n"]), max_size=30).map(b"".join))
def test_the_end_of_the_header_block_is_where_the_regex_finds_it(head: bytes) -> None:
    blank = BLANK.search(head)
    expected = -1 if blank is None else blank.start() + (2 if head[blank.start()] == 13 else 1)
    assert header_end(head) == expected
