"""aiosmtpd's DATA phase, spooling: the message goes into a `Spool` as it arrives instead of a list
of lines joined at the end (several whole copies of a large message per connection).

Written against aiosmtpd 1.4.6 (requirements.lock), whose `SMTP.smtp_DATA` has no hook for
this: the checks and answers are aiosmtpd's own, in the same order (503 without RCPT, 501 with
an argument, 354; a line longer than the limit is 500 and too much data is 552, both after the
whole DATA was read; dot-unstuffing per RFC 5321 4.5.2). The handler's `handle_DATA` finds the
spool in `envelope.spool`; a message that stayed small is also in `envelope.original_content`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from pathlib import Path
from types import SimpleNamespace

from aiosmtpd.smtp import MISSING, SMTP

from gateway.spool import Spool

log = logging.getLogger(__name__)

TOO_LONG = "500 Line too long (see RFC5321 4.5.3.1.6)"
TOO_MUCH = "552 Error: Too much mail data"
BLOCK = 64 * 1024  # read at most this much at a time (the reader may hold more)
ADDRESS_MEMO = 4096  # distinct MAIL FROM / RCPT TO arguments remembered (senders repeat them)
ADDRESS_MEMO_ARG = 1024  # longer arguments are parsed each time, not remembered


@functools.lru_cache(maxsize=ADDRESS_MEMO)
def _address(arg: str, local_part_limit: int) -> tuple[str | None, str | None]:
    """aiosmtpd's own `SMTP._getaddr`, remembered: it builds a class and runs the stdlib's header
    parser on every MAIL FROM and RCPT TO, about a tenth of the gateway's CPU per message. It
    reads nothing of the server but `local_part_limit`, which is part of the key; an argument that
    makes it raise is not remembered (the exception goes to the caller each time)."""
    return SMTP._getaddr(SimpleNamespace(local_part_limit=local_part_limit), arg)  # type: ignore[arg-type]


class SpoolingSMTP(SMTP):
    def __init__(self, handler: object, *, spool_dir: Path, **kwargs: object) -> None:
        super().__init__(handler, **kwargs)  # type: ignore[arg-type]
        self.spool_dir = spool_dir

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        if len(arg) > ADDRESS_MEMO_ARG:
            return super()._getaddr(arg)
        return _address(arg, self.local_part_limit)

    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        spool = Spool(self.spool_dir)
        try:
            refusal = await self._receive(spool)
            if refusal is not None:
                await self.push(refusal)
                self._set_post_data_state()
                return
            self.envelope.original_content = self.envelope.content = spool.inline
            self.envelope.spool = spool  # type: ignore[attr-defined]
            status = await self._call_handler_hook("DATA") if "DATA" in self._handle_hooks else MISSING
            self._set_post_data_state()
            await self.push("250 OK" if status is MISSING else status)
        finally:
            spool.close(unless_handed_over=True)

    async def _receive(self, spool: Spool) -> str | None:
        """Read up to the lone dot; the refusal to answer, or None when the spool holds it all.

        The answers are those of aiosmtpd's line-by-line DATA phase, but the data is read in
        blocks (up to the next ".<CRLF>", or what aiosmtpd's reader holds) and checked, unstuffed
        and hashed a block at a time with bytes operations: reading line by line was a tenth of
        the gateway's CPU per message. A line that overruns the reader's limit (as aiosmtpd's
        `readuntil` does: longer than it, CRLF not counted) is "too long" at once; otherwise each
        line is counted whole at its end, the size limit before the line length limit. Once a
        message is refused the rest is drained and never held (a line that never ends would
        otherwise grow without bound); before that, at most one unfinished line is."""
        reader = self._reader
        overrun = reader._limit  # type: ignore[attr-defined]  # aiosmtpd's reader: line_length_limit
        fine = min(self.line_length_limit, overrun + 2)  # the longest line (with CRLF) not refused
        limit = self.data_size_limit
        counted = 0  # bytes of the whole lines so far, dots and CRLFs included (the size limit's)
        carry = b""  # the unfinished line, while nothing is refused
        tail = b"\r\n"  # the last two bytes read: DATA starts at the start of a line
        refusal: str | None = None
        while self.transport is not None:
            try:
                try:
                    block = await reader.readuntil(b".\r\n")
                except asyncio.LimitOverrunError as exc:  # no ".<CRLF>" within the reader's limit
                    block, end = await reader.read(min(exc.consumed, BLOCK)), False
                else:  # the lone dot: ".<CRLF>" at the start of a line
                    before = len(block) - 3
                    end = ((block[before - 2:before] if before >= 2 else (tail + block[:before])[-2:])
                           == b"\r\n")
            except asyncio.CancelledError:
                log.info("connection lost during DATA")
                self._writer.close()
                raise
            if end:
                data = block[:-3]
            else:
                data, tail = block, block[-2:]  # a block is never shorter (the reader's limit >= 1)
            if refusal is None:
                if carry:
                    data = carry + data
                cut = data.rfind(b"\r\n") + 2  # whole lines up to here
                if cut == 1:
                    lines, carry = b"", data
                else:
                    lines, carry = data[:cut], data[cut:]
                if lines:
                    if (limit and counted + len(lines) > limit) or (
                            len(lines) > fine and max(map(len, lines.split(b"\r\n"))) + 2 > fine):
                        refusal = self._refused(lines, counted)
                    else:
                        counted += len(lines)
                        if b"\r\n." in lines:  # RFC 5321 4.5.2: a leading dot was doubled by the sender
                            lines = lines.replace(b"\r\n.", b"\r\n")
                        if spool.write(memoryview(lines)[1:] if lines[:1] == b"." else lines):
                            block = data = lines = b""  # not held while the spool writes
                            await spool.flush()
                if refusal is None and len(carry) > overrun + 1:  # the reader would overrun on it
                    refusal = TOO_LONG
                if refusal is not None:
                    carry = b""
            if end:
                break
        return refusal

    def _refused(self, lines: bytes, counted: int) -> str:
        """Whole lines, one of which is refused: which refusal comes first, line by line."""
        limit, overrun = self.data_size_limit, self._reader._limit  # type: ignore[attr-defined]
        for line in lines.split(b"\r\n")[:-1]:
            if len(line) > overrun:
                return TOO_LONG
            counted += len(line) + 2
            if limit and counted > limit:
                return TOO_MUCH
            if len(line) + 2 > self.line_length_limit:
                return TOO_LONG
        raise AssertionError("no line refused")
