"""SMTP ingress shortcuts (issue 8, item 1) answer exactly what aiosmtpd's own code answers: the
remembered MAIL FROM / RCPT TO parse (gateway/smtpdata.py) is checked against aiosmtpd's
`SMTP._getaddr` on any input, malformed ones and the local-part limit included."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from aiosmtpd.smtp import SMTP
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from gateway.smtpdata import ADDRESS_MEMO, ADDRESS_MEMO_ARG, SpoolingSMTP, _address

if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):  # no .hypothesis directory in the work tree
    set_hypothesis_home_dir(Path(tempfile.gettempdir()) / f"lers-gateway-hypothesis-{os.getuid()}")
CHECKED = settings(deadline=None, derandomize=True, database=None, max_examples=600)

# what addresses are made of, and what breaks them
ADDRESS_CHARS = st.sampled_from([*'ab.Z9-_+@<>"\\()[]:;, \t=!#é\x00\x7f', "ü", "\u2028", "@@", "..", "<>"])
LOCAL_PART_LIMITS = st.sampled_from([0, 1, 3, 8, 64])


def _servers(limit: int) -> tuple[SMTP, SMTP]:
    ours = SpoolingSMTP(None, spool_dir=Path(tempfile.gettempdir()))
    theirs = SMTP(None)
    ours.local_part_limit = theirs.local_part_limit = limit
    return ours, theirs


def _outcome(server: SMTP, arg: str) -> object:
    try:
        return server._getaddr(arg)
    except Exception as exc:  # an exception is an answer too: it must be the same one
        return (type(exc), str(exc))


def _pieces(most: int) -> st.SearchStrategy[str]:
    return st.lists(ADDRESS_CHARS, max_size=most).map("".join)


@st.composite
def mail_arguments(draw: st.DrawFn) -> str:
    """What follows MAIL FROM: / RCPT TO:, well-formed or not, with or without parameters."""
    local = draw(_pieces(12))
    domain = draw(_pieces(8))
    shape = draw(st.sampled_from(["<{}@{}>", "{}@{}", "<{}@{}> SIZE=10", " <{}@{}>", "<{}{}", "{}{}",
                                  '<"{}"@{}>']))
    return shape.format(local, domain)


@CHECKED
@given(arg=st.one_of(mail_arguments(), _pieces(30)),
       limits=st.lists(LOCAL_PART_LIMITS, min_size=1, max_size=3))
@example(arg="<" + "a" * 65 + "@police.test>", limits=[64, 0, 64])
@example(arg="<abcd@police.test>", limits=[0, 3, 8])
@example(arg="", limits=[0])
@example(arg="<>", limits=[0])
@example(arg='<"a b"@police.test> BODY=8BITMIME', limits=[0])
def test_the_remembered_address_parse_is_aiosmtpds(arg: str, limits: list[int]) -> None:
    """The same argument under several local-part limits, twice each (the second answer comes
    from the memo): every answer is the one aiosmtpd gives."""
    for limit in [*limits, *limits]:
        ours, theirs = _servers(limit)
        assert _outcome(ours, arg) == _outcome(theirs, arg), (arg, limit)


def test_the_memo_is_bounded() -> None:
    """A sender making up addresses only evicts others; a long argument is never kept."""
    ours, theirs = _servers(0)
    arg = "<" + "a" * ADDRESS_MEMO_ARG + "@police.test>"
    before = _address.cache_info()
    assert ours._getaddr(arg) == theirs._getaddr(arg) == (arg[1:-1], "")
    assert _address.cache_info()[:2] == before[:2]  # neither a hit nor a miss: not looked up
    for n in range(ADDRESS_MEMO + 10):
        ours._getaddr(f"<sender{n}@police.test>")
    assert _address.cache_info().currsize == ADDRESS_MEMO
