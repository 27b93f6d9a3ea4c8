"""aiosmtpd's DATA phase, spooling: the message goes line by line into a `Spool` instead of a list
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
        """Read up to the lone dot; the refusal to answer, or None when the spool holds it all."""
        limit = self.data_size_limit
        num_bytes = 0
        fragments: list[bytes] = []  # one line's pieces; only kept while nothing is refused
        at_line_start = True
        refusal: str | None = None
        while self.transport is not None:
            try:
                line = await self._reader.readuntil(b"\r\n")
            except asyncio.CancelledError:
                log.info("connection lost during DATA")
                self._writer.close()
                raise
            except asyncio.LimitOverrunError as exc:
                refusal = refusal or TOO_LONG
                line = await self._reader.read(exc.consumed)  # drained, not kept
            if at_line_start and line == b".\r\n":
                break
            num_bytes += len(line)
            if refusal is None and limit and num_bytes > limit:
                refusal = TOO_MUCH
            if refusal is None:  # once refused, the rest is drained, never held (a line that
                fragments.append(line)  # never ends would otherwise grow without bound)
            at_line_start = line.endswith(b"\r\n")
            if at_line_start:
                if refusal is None:
                    whole = fragments[0] if len(fragments) == 1 else b"".join(fragments)
                    if len(whole) > self.line_length_limit:
                        refusal = TOO_LONG
                    else:  # RFC 5321 4.5.2: a leading dot was doubled by the sender
                        if spool.write(memoryview(whole)[1:] if whole[:1] == b"." else whole):
                            await spool.flush()
                fragments.clear()
        return refusal
