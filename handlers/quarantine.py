"""The quarantine: refused messages kept with their reason, for an operator to inspect, release
for another pass through the same rules (after enrolling an officer, say), or purge when their
retention has run out. Releasing never bypasses a rule: the message is judged again from scratch."""

from __future__ import annotations

from datetime import timedelta
from email.parser import BytesHeaderParser
from typing import Any

from sqlalchemy import delete, select, update

from gateway import audit, queue
from gateway.chunks import raw_bytes, turn_payload
from gateway.clock import utcnow
from gateway.db import Database
from gateway.mime import MAX_HEADER_BLOCK
from gateway.models import Job, Message, MessageChunk, Outbox


class QuarantineError(Exception):
    """No such quarantined message, or it cannot be acted on; the message says which."""


async def _quarantined(session: Any, message_id: int) -> Message:
    message = await session.get(Message, message_id)
    if message is None or message.direction != "inbound" or message.state != "quarantined":
        raise QuarantineError(f"no quarantined message {message_id} (see `lers quarantine list`)")
    return message


async def show(db: Database, message_id: int, actor: str = "operator") -> tuple[dict[str, Any], bytes]:
    """Everything known about one refused message, and its raw bytes."""
    async with db.transaction() as session:
        message = await _quarantined(session, message_id)
        raw = await raw_bytes(session, message)
        head = BytesHeaderParser().parsebytes(bytes(raw[:MAX_HEADER_BLOCK]), headersonly=True)
        await audit.record(session, actor, "quarantine.shown", f"message:{message_id}")
        return {
            "id": message.id, "received_at": message.received_at.isoformat(),
            "transport": message.transport, "peer": message.peer,
            "envelope_from": message.envelope_from, "envelope_to": message.envelope_to,
            "reason": message.reason, "detail": message.reason_detail,
            "verification": message.verification, "size": message.size, "sha256": message.sha256,
            # outer headers are not covered by any signature: shown for orientation only
            "unverified_headers": {name: str(head.get(name, ""))[:300]
                                   for name in ("From", "To", "Subject", "Date", "Message-ID")},
        }, raw


async def release(db: Database, message_id: int, actor: str = "operator") -> None:
    """Send the message through the acceptance rules again."""
    async with db.transaction() as session:
        message = await _quarantined(session, message_id)
        previous = message.reason
        message.state, message.reason, message.reason_detail = "received", None, None
        message.replay_key = None
        queue.enqueue(session, "inbound", message_id=message.id,
                      payload=turn_payload(message.size))
        await audit.record(session, actor, "quarantine.released", f"message:{message_id}",
                           previous_reason=previous)


async def purge(db: Database, older_than_days: float, actor: str = "system") -> int:
    """Delete quarantined messages received more than `older_than_days` ago; returns how many."""
    cutoff = utcnow() - timedelta(days=older_than_days)
    async with db.transaction() as session:
        rows = list(await session.execute(
            select(Message.id, Message.sha256).where(
                Message.direction == "inbound", Message.state == "quarantined",
                Message.received_at < cutoff)))
        ids = [row.id for row in rows]
        if not ids:
            return 0
        await session.execute(delete(Job).where(Job.message_id.in_(ids)))
        await session.execute(update(Outbox).where(Outbox.in_reply_to_message.in_(ids))
                              .values(in_reply_to_message=None))
        await session.execute(delete(MessageChunk).where(MessageChunk.message_id.in_(ids)))
        await session.execute(delete(Message).where(Message.id.in_(ids)))
        await audit.record(session, actor, "quarantine.purged", None, count=len(ids),
                           older_than_days=older_than_days, sha256=[row.sha256 for row in rows])
        return len(ids)
