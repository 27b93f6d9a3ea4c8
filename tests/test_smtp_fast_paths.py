"""SMTP ingress shortcuts (issue 8, item 1) answer exactly what aiosmtpd's own code answers: the
remembered MAIL FROM / RCPT TO parse (gateway/smtpdata.py) is checked against aiosmtpd's
`SMTP._getaddr` on any input, malformed ones and the local-part limit included, and the DATA
phase read in blocks against aiosmtpd's line-by-line one, over loopback."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope
from hypothesis import assume, example, given, settings
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


# -- the DATA phase, read in blocks -------------------------------------------------------------

class _Keep:
    """Keeps what each DATA delivered: aiosmtpd's `original_content`, or our spool's bytes (and
    whether its running hash is theirs)."""

    def __init__(self) -> None:
        self.got: list[tuple[bytes, bool]] = []

    async def handle_DATA(self, server: SMTP, session: object, envelope: Envelope) -> str:
        spool = getattr(envelope, "spool", None)
        if spool is None:
            data = envelope.original_content or b""
            self.got.append((data, True))
        else:
            data = spool.whole() if spool.spooled else spool.inline
            hashed = spool.digest == hashlib.sha256(data).hexdigest() and spool.size == len(data)
            self.got.append((data, hashed))
        return "250 OK"


async def _converse(port: int, pieces: list[bytes]) -> list[bytes]:
    """Send the pieces one by one (letting the server read in between), then read every reply."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0)
        return (await asyncio.wait_for(reader.read(), 20)).split(b"\r\n")
    finally:
        writer.close()


async def _both(pieces: list[bytes], limit: int | None, spool_dir: Path) -> tuple[object, object]:
    ours, theirs = _Keep(), _Keep()
    loop = asyncio.get_running_loop()
    common = {"data_size_limit": limit, "enable_SMTPUTF8": True, "decode_data": False,
              "hostname": "gw.test", "ident": "test"}
    servers = [await loop.create_server(lambda: SpoolingSMTP(ours, spool_dir=spool_dir, **common),
                                        "127.0.0.1", 0),
               await loop.create_server(lambda: SMTP(theirs, **common), "127.0.0.1", 0)]
    try:
        answers = [await _converse(server.sockets[0].getsockname()[1], pieces) for server in servers]
    finally:
        for server in servers:
            server.close()
    return (answers[0], ours.got), (answers[1], theirs.got)


LINE_PIECES = st.sampled_from([b"x", b"ab", b".", b"..", b"\r", b"\n", b".\r\n", b"\xff\xfe", b" ", b"\t"])
LONG_PIECES = st.sampled_from([997, 998, 999, 1000, 1001, 1002, 1003, 1500, 70_000]).map(lambda n: b"y" * n)


@st.composite
def data_phases(draw: st.DrawFn) -> tuple[list[bytes], int | None]:
    """A transaction whose DATA holds lines made to meet every rule (dots to unstuff, lone CR or
    LF, ".<CRLF>" inside a line, lines about the length limit, some far longer, data about the
    size limit), then a NOOP pipelined right after the final dot; cut into pieces anywhere."""
    lines = draw(st.lists(st.lists(LINE_PIECES, max_size=4).map(b"".join), max_size=12))
    if draw(st.integers(0, 3)) == 0:  # a quarter of the messages have a line about the limit
        at = draw(st.integers(0, len(lines)))
        lines.insert(at, draw(LONG_PIECES) + draw(st.sampled_from([b"", b".", b"\r"])))
    repeat = draw(st.sampled_from([1, 1, 2, 50, 400] if sum(map(len, lines)) < 5000 else [1, 2]))
    content = b"".join(line + b"\r\n" for line in lines) * repeat
    assume(b"\r\n.\r\n" not in content and not content.startswith(b".\r\n"))  # only the last dot ends it
    wire = (b"EHLO police.test\r\nMAIL FROM:<a@police.test>\r\nRCPT TO:<lers@gateway.test>\r\nDATA\r\n"
            + content + b".\r\nNOOP\r\nQUIT\r\n")
    cuts = sorted(draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    pieces = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    return [p for p in pieces if p], draw(st.sampled_from([None, 2500, 3000, 200_000]))


@settings(deadline=None, derandomize=True, database=None, max_examples=250)
@given(phase=data_phases())
@example(phase=([b"EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n", b".\r\nNOOP\r\nQUIT\r\n"], None))
@example(phase=([b"EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nab\r\n.x\r\n.\r\nQUIT\r\n"], None))
@example(phase=([b"EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n..\r\n.x\r\nx.\r\n", b"\r",
                 b"\n.", b"\r\nNOOP\r\nQUIT\r\n"], 2500))
@example(phase=([b"EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n" + b"z" * 2400 + b"\r\n"
                 + b"y" * 1002 + b"\r\n.\r\nQUIT\r\n"], 2500))  # too long comes before too much
def test_the_data_phase_answers_and_keeps_what_aiosmtpd_does(phase: tuple[list[bytes], int | None]) -> None:
    """Our DATA phase against aiosmtpd's own: the same replies (the one after the final dot,
    and those to the commands after it: the data ends exactly where aiosmtpd's ends), the same
    bytes delivered, and the spool's hash of them."""
    pieces, limit = phase
    with tempfile.TemporaryDirectory() as spool_dir:
        ours, theirs = asyncio.run(_both(pieces, limit, Path(spool_dir)))
    assert ours == theirs
