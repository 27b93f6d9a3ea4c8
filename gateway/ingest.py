"""The one door in: every transport hands raw bytes here.

The raw message is committed (with the job that will process it) before this returns, which is
what lets SMTP answer 250 and IMAP mark the message as read. A message already stored (same
bytes, same sha256) is not stored or processed again: that is an SMTP retransmission or an IMAP
re-fetch, not a new request.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from gateway import audit, queue
from gateway.db import Database
from gateway.models import Message

LARGE = 1024 * 1024  # hash bigger messages in a thread, off the event loop


@dataclass(frozen=True)
class IngestResult:
    message_id: int
    duplicate: bool


async def ingest(db: Database, raw: bytes, *, transport: str, peer: str | None = None,
                 envelope_from: str | None = None,
                 envelope_to: list[str] | None = None) -> IngestResult:
    """Store the raw bytes and enqueue their processing, in one transaction."""
    digest = (hashlib.sha256(raw).hexdigest() if len(raw) < LARGE
              else await asyncio.to_thread(lambda: hashlib.sha256(raw).hexdigest()))
    try:
        async with db.transaction() as session:
            existing = await session.scalar(
                select(Message.id).where(Message.direction == "inbound", Message.sha256 == digest)
            )
            if existing is not None:
                await audit.record(session, "system", "inbound.duplicate", f"message:{existing}",
                                   transport=transport, peer=peer, sha256=digest)
                return IngestResult(existing, duplicate=True)
            message = Message(
                direction="inbound", transport=transport, sha256=digest, raw=raw, size=len(raw),
                header_message_id=_header_message_id(raw), peer=peer,
                envelope_from=envelope_from, envelope_to=list(envelope_to or []),
            )
            session.add(message)
            await session.flush()
            queue.enqueue(session, "inbound", message_id=message.id)
            await audit.record(session, "system", "inbound.received", f"message:{message.id}",
                               transport=transport, peer=peer, sha256=digest, size=len(raw))
            return IngestResult(message.id, duplicate=False)
    except IntegrityError:
        # Two deliveries of the same bytes raced; the other one won.
        async with db.transaction() as session:
            existing = await session.scalar(
                select(Message.id).where(Message.direction == "inbound", Message.sha256 == digest)
            )
        if existing is None:
            raise
        return IngestResult(existing, duplicate=True)


def _header_message_id(raw: bytes) -> str | None:
    """For display and threading hints only: outer headers are not covered by the signature."""
    headers = BytesHeaderParser(policy=compat32).parsebytes(raw[:65536], headersonly=True)
    value = headers.get("Message-ID")
    return "".join(str(value).split())[:998] if value else None  # unfolded, no whitespace at all
