"""Large values stored as sealed chunks of about 1 MiB: a large inbound message's raw bytes
(message_chunks) and a large attachment (attachment_chunks).

Each chunk is sealed on its own (gateway/vault.py) with the column, the owner's id, its place and
whether it is the last one as associated data, so a chunk moved to another owner or place, or a
value cut short, fails to open. Writing and reading hold one chunk at a time, never the whole
value more than once (issue 8, item 5). Small values stay in their column (`messages.raw`,
`attachments.data`), with `chunks` 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.models import Attachment, AttachmentChunk, Message, MessageChunk
from gateway.spool import CHUNK
from gateway.vault import ACTIVE_VAULT, Vault, VaultError


@dataclass(frozen=True)
class Chunked:
    """Where one kind of value keeps its chunks."""

    table: Any  # the chunk model: MessageChunk or AttachmentChunk
    owner: str  # its column naming the owner
    purpose: str  # the owner's column, as in the inline value's associated data

    def seal_purpose(self, owner_id: int, seq: int, last: bool) -> str:
        return f"{self.purpose}/{owner_id}/{seq}" + ("/end" if last else "")


MESSAGE = Chunked(MessageChunk, "message_id", "messages.raw")
ATTACHMENT = Chunked(AttachmentChunk, "attachment_id", "attachments.data")


def _vault() -> Vault:
    vault = ACTIVE_VAULT.get()
    if vault is None:
        raise VaultError("chunks: refusing to store or open chunks without a vault")
    return vault


async def store_chunks(session: AsyncSession, kind: Chunked, owner_id: int, pieces: Iterator[bytes]) -> int:
    """Seal and insert the pieces (each read and sealed in a thread, one at a time); returns
    their number, for the owner's `chunks`."""
    vault = _vault()
    upcoming = await asyncio.to_thread(next, pieces, None)
    seq = 0
    while upcoming is not None:
        piece = upcoming
        upcoming = await asyncio.to_thread(next, pieces, None)
        purpose = kind.seal_purpose(owner_id, seq, upcoming is None)
        sealed = await asyncio.to_thread(vault.seal, piece, purpose)
        del piece
        await session.execute(insert(kind.table), {kind.owner: owner_id, "seq": seq, "data": sealed})
        seq += 1
    return seq


def pieces_of(data: bytes | bytearray | memoryview) -> Iterator[bytes]:
    """A value in memory, a chunk at a time (each piece a copy of one chunk only)."""
    view = memoryview(data)
    for at in range(0, len(view), CHUNK):
        yield bytes(view[at:at + CHUNK])


async def chunks_of(session: AsyncSession, kind: Chunked, owner_id: int, count: int) -> AsyncIterator[bytes]:
    vault = _vault()
    column = getattr(kind.table, kind.owner)
    for seq in range(count):
        sealed = await session.scalar(
            select(kind.table.data).where(column == owner_id, kind.table.seq == seq))
        if sealed is None:
            raise VaultError(f"{kind.purpose} of {owner_id}: chunk {seq} of {count} is missing")
        yield await asyncio.to_thread(vault.open, sealed, kind.seal_purpose(owner_id, seq, seq == count - 1))


async def _whole(session: AsyncSession, kind: Chunked, owner_id: int, count: int, size: int) -> bytes:
    """The chunks in one buffer (one copy, for the readers that need the value whole)."""
    whole = bytearray(size)
    at = 0
    async for piece in chunks_of(session, kind, owner_id, count):
        whole[at:at + len(piece)] = piece
        at += len(piece)
    if at != size:
        raise VaultError(f"{kind.purpose} of {owner_id}: its chunks hold {at} bytes, not {size}")
    return whole  # type: ignore[return-value]  # bytes-like; callers only read it


async def raw_bytes(session: AsyncSession, message: Message) -> bytes:
    """A message's raw bytes, from its column or its chunks."""
    if not message.chunks:
        return message.raw
    return await _whole(session, MESSAGE, message.id, message.chunks, message.size)


async def raw_head(session: AsyncSession, message: Message) -> bytes:
    """The first chunk of a message (headers and more) without reading the rest."""
    if not message.chunks:
        return message.raw
    async for piece in chunks_of(session, MESSAGE, message.id, message.chunks):
        return piece
    return b""


async def attachment_bytes(session: AsyncSession, attachment: Attachment) -> bytes:
    """An attachment's bytes, from its column or its chunks."""
    if not attachment.chunks:
        return attachment.data
    return await _whole(session, ATTACHMENT, attachment.id, attachment.chunks, attachment.size)


TURN_BYTES = 8 * 1024 * 1024  # messages this large are processed one at a time


def turn_payload(size: int) -> dict[str, Any] | None:
    """The inbound job's payload: marks a message that must wait for `large_message_turn`."""
    return {"large": True} if size >= TURN_BYTES else None


_TURNS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


@contextlib.asynccontextmanager
async def large_message_turn(payload: object) -> AsyncIterator[None]:
    """One large message processed at a time in this process (its job's payload says "large",
    see gateway/ingest.py): each costs a few times its size while it is judged, twenty at once
    would cost twenty times that. Small messages never wait for it."""
    if not (isinstance(payload, dict) and payload.get("large")):
        yield
        return
    loop = asyncio.get_running_loop()
    turn = _TURNS.setdefault(loop, asyncio.Lock())
    async with turn:
        yield
