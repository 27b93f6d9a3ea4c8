"""A large inbound message's raw bytes, stored as sealed chunks of about 1 MiB (message_chunks).

Each chunk is sealed on its own (gateway/vault.py) with the message id, its place and whether it
is the last one as associated data, so a chunk moved to another message or place, or a message
cut short, fails to open. Writing and reading hold one chunk at a time, never the whole message
more than once (issue 8, item 5). Small messages keep their bytes in `messages.raw`.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Iterator

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.models import Message, MessageChunk
from gateway.vault import ACTIVE_VAULT, Vault, VaultError


def purpose(message_id: int, seq: int, last: bool) -> str:
    return f"messages.raw/{message_id}/{seq}" + ("/end" if last else "")


def _vault() -> Vault:
    vault = ACTIVE_VAULT.get()
    if vault is None:
        raise VaultError("message_chunks: refusing to store or open chunks without a vault")
    return vault


async def store_chunks(session: AsyncSession, message: Message, pieces: Iterator[bytes]) -> None:
    """Seal and insert the pieces (read and sealed in a thread, one at a time), and record their
    number on the message; `message` must have its id (flushed)."""
    vault = _vault()
    upcoming = await asyncio.to_thread(next, pieces, None)
    seq = 0
    while upcoming is not None:
        piece = upcoming
        upcoming = await asyncio.to_thread(next, pieces, None)
        sealed = await asyncio.to_thread(vault.seal, piece, purpose(message.id, seq, upcoming is None))
        del piece
        await session.execute(insert(MessageChunk), {"message_id": message.id, "seq": seq, "data": sealed})
        seq += 1
    message.chunks = seq


async def raw_chunks(session: AsyncSession, message: Message) -> AsyncIterator[bytes]:
    """The message's raw bytes, piece by piece (the inline value as one piece)."""
    if not message.chunks:
        yield message.raw
        return
    vault = _vault()
    for seq in range(message.chunks):
        sealed = await session.scalar(select(MessageChunk.data).where(
            MessageChunk.message_id == message.id, MessageChunk.seq == seq))
        if sealed is None:
            raise VaultError(f"message {message.id}: chunk {seq} of {message.chunks} is missing")
        yield await asyncio.to_thread(vault.open, sealed, purpose(message.id, seq, seq == message.chunks - 1))


async def raw_bytes(session: AsyncSession, message: Message) -> bytes:
    """The whole raw message in one buffer (one copy: for the readers that need it whole)."""
    if not message.chunks:
        return message.raw
    whole = bytearray(message.size)
    at = 0
    async for piece in raw_chunks(session, message):
        whole[at:at + len(piece)] = piece
        at += len(piece)
    if at != message.size:
        raise VaultError(f"message {message.id}: its chunks hold {at} bytes, not {message.size}")
    return whole  # type: ignore[return-value]  # bytes-like; callers only read it


async def raw_head(session: AsyncSession, message: Message) -> bytes:
    """The first chunk (headers and more) without reading the rest."""
    async for piece in raw_chunks(session, message):
        return piece
    return b""


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
