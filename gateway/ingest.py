"""The one door in: every transport hands raw bytes here.

The raw message is committed (with the job that will process it) before this returns, which is
what lets SMTP answer 250 and IMAP mark the message as read. A message already stored (same
bytes, same sha256) is not stored or processed again: that is an SMTP retransmission or an IMAP
re-fetch, not a new request.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Connection, Insert, Table, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from gateway import audit, queue
from gateway.chunks import MESSAGE, pieces_of, store_chunks, turn_payload
from gateway.clock import utcnow
from gateway.db import Database
from gateway.driverinsert import DriverInsert
from gateway.models import Job, Message
from gateway.msgid import header_message_id
from gateway.spool import CHUNK, Spool

LARGE = 1024 * 1024  # hash bigger messages in a thread, off the event loop
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestResult:
    message_id: int
    duplicate: bool


async def sha256_of(raw: bytes) -> str:
    return (hashlib.sha256(raw).hexdigest() if len(raw) < LARGE
            else await asyncio.to_thread(lambda: hashlib.sha256(raw).hexdigest()))


async def ingest(db: Database, raw: bytes, *, transport: str, peer: str | None = None,
                 envelope_from: str | None = None,
                 envelope_to: list[str] | None = None, priority: int = 0) -> IngestResult:
    """Store the raw bytes and enqueue their processing, in one transaction."""
    digest = await sha256_of(raw)
    try:
        async with db.transaction() as session:
            existing = await session.scalar(
                select(Message.id).where(Message.direction == "inbound", Message.sha256 == digest)
            )
            if existing is not None:
                await audit.record(session, "system", "inbound.duplicate", f"message:{existing}",
                                   transport=transport, peer=peer, sha256=digest)
                return IngestResult(existing, duplicate=True)
            large = len(raw) > CHUNK  # kept in sealed chunks, like a spooled message
            message = Message(
                direction="inbound", transport=transport, sha256=digest, raw=b"" if large else raw,
                size=len(raw), header_message_id=header_message_id(raw), peer=peer,
                envelope_from=envelope_from, envelope_to=list(envelope_to or []),
            )
            session.add(message)
            await session.flush()
            if large:
                message.chunks = await store_chunks(session, MESSAGE, message.id, pieces_of(raw))
            queue.enqueue(session, "inbound", message_id=message.id, priority=priority,
                          payload=turn_payload(len(raw)))
            await audit.record(session, "system", "inbound.received", f"message:{message.id}",
                               transport=transport, peer=peer, sha256=digest, size=len(raw))
            return IngestResult(message.id, duplicate=False)
    except IntegrityError as exc:
        return await _raced(db, digest, exc)


async def _raced(db: Database, digest: str, error: IntegrityError) -> IngestResult:
    """Two deliveries of the same bytes raced; the other one won (else the error stands)."""
    async with db.transaction() as session:
        existing = await session.scalar(
            select(Message.id).where(Message.direction == "inbound", Message.sha256 == digest)
        )
    if existing is None:
        raise error
    return IngestResult(existing, duplicate=True)


@dataclass
class _Pending:
    raw: bytes  # b"" when the message is in `spool`
    spool: Spool | None
    digest: str
    size: int
    transport: str
    peer: str | None
    envelope_from: str | None
    envelope_to: list[str]
    priority: int
    done: asyncio.Future[IngestResult] = field(repr=False)


class GroupCommit:
    """One writer task that stores whatever arrived meanwhile in one transaction (DESIGN.md:
    "one writer with group commit"): each caller's `store` returns only once its batch is
    committed, so SMTP still answers 250 after the commit, never before.

    A batch is what queued up while the previous one committed (at most `max_batch` messages and
    about `max_bytes`), so one sender alone waits for one commit, as before, and many senders
    share commits. If a batch fails as a whole (a copy of the same bytes stored by another
    process meanwhile, a database error), each of its messages is stored on its own with `ingest`,
    which gives every caller its own answer.
    """

    LINGER = 0.002  # at most this long for messages already on their way (see `incoming`)

    def __init__(self, db: Database, max_batch: int = 64, max_bytes: int = 32 * 1024 * 1024) -> None:
        self.db = db
        self.max_batch, self.max_bytes = max_batch, max_bytes
        # transactions that said MAIL FROM and wait for their answer (key -> when): with several
        # senders, their next messages arrive within a round trip of the last commit, and a batch
        # that waits for them (LINGER at most) commits them together instead of one by one
        self.incoming: dict[object, float] = {}
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def store(self, raw: bytes | Spool, *, transport: str, peer: str | None = None,
                    envelope_from: str | None = None,
                    envelope_to: list[str] | None = None, priority: int = 0) -> IngestResult:
        """Store raw bytes, or a spooled message (kept in chunks if it left memory; the spool
        must stay open until this returns)."""
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._write(), name="ingest-writer")
        if isinstance(raw, Spool):
            spool = raw if raw.spooled and raw.size > CHUNK else None
            if spool is not None:
                spool.hand_over()  # closed by `_write` once stored or failed
                data = b""
            elif raw.spooled:  # at most a chunk: stored inline, like any small message
                data = await asyncio.to_thread(lambda: b"".join(raw.chunks()))
            else:
                data = raw.inline or b""
            digest, size = raw.digest, raw.size
        else:
            spool, data, digest, size = None, raw, await sha256_of(raw), len(raw)
        item = _Pending(data, spool, digest, size, transport, peer, envelope_from, list(envelope_to or []),
                        priority, asyncio.get_running_loop().create_future())
        self.queue.put_nowait(item)
        return await asyncio.shield(item.done)  # a dropped connection does not cancel the batch

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def _write(self) -> None:
        while True:
            batch = [await self.queue.get()]
            size = batch[0].size
            until = time.monotonic() + self.LINGER
            while len(batch) < self.max_batch and size < self.max_bytes:
                if self.queue.empty():
                    left = until - time.monotonic()
                    if len(batch) >= self._expected() or left <= 0:
                        break
                    try:  # woken by the arrival itself: a short sleep between looks lasted up
                        # to 1 ms (epoll waits whole milliseconds) while every sender waited (issue #8)
                        async with asyncio.timeout(left):
                            batch.append(await self.queue.get())
                    except TimeoutError:
                        break
                else:
                    batch.append(self.queue.get_nowait())
                size += batch[-1].size
            try:
                results = await self._commit(batch)
            except asyncio.CancelledError:
                for item in batch:
                    if not item.done.done():
                        item.done.cancel()
                self._close_spools(batch)
                raise
            except Exception:
                if len(batch) > 1:
                    log.warning("group commit failed, storing the batch one by one",
                                extra={"count": len(batch)}, exc_info=True)
                await asyncio.gather(*(self._alone(item) for item in batch))
                self._close_spools(batch)
                continue
            for item, result in zip(batch, results, strict=True):
                if not item.done.done():
                    item.done.set_result(result)
            _log_stored(batch, results)
            self._close_spools(batch)

    @staticmethod
    def _close_spools(batch: list[_Pending]) -> None:
        for item in batch:
            if item.spool is not None:
                item.spool.close()

    def starting(self, key: object) -> None:
        """A sender said MAIL FROM: its message may join the next batch."""
        self.incoming[key] = time.monotonic()

    def finished(self, key: object) -> None:
        self.incoming.pop(key, None)

    def _expected(self) -> int:
        now = time.monotonic()
        if len(self.incoming) > 1000 or any(now - t > 10 for t in self.incoming.values()):
            self.incoming = {k: t for k, t in self.incoming.items() if now - t <= 10}  # abandoned
        return len(self.incoming)

    async def _alone(self, item: _Pending) -> None:
        try:
            if item.spool is None:
                result = await ingest(self.db, item.raw, transport=item.transport, peer=item.peer,
                                      envelope_from=item.envelope_from, envelope_to=item.envelope_to,
                                      priority=item.priority)
            else:
                try:
                    result = (await self._commit([item]))[0]
                except IntegrityError as exc:
                    result = await _raced(self.db, item.digest, exc)
        except Exception as exc:
            if not item.done.done():
                item.done.set_exception(exc)
            return
        if not item.done.done():
            item.done.set_result(result)
        _log_stored([item], [result])

    async def _commit(self, batch: list[_Pending]) -> list[IngestResult]:
        """`ingest` for several messages: one transaction, one INSERT of the messages (a look-up
        only of those already stored), one of the jobs and one of the audit entries (SQLAlchemy
        Core: the ORM's unit of work inserted them row by row and cost more CPU than aiosmtpd
        itself; Core still applies the column types, so raw bytes and envelopes are sealed). On
        SQLite, a batch of small messages is one trip to a thread (`Database.write_in_thread`)."""
        if self.db.threaded_writes and all(item.spool is None for item in batch):
            return await self.db.write_in_thread(
                lambda conn: _finish(conn, batch, *_insert_messages(conn, batch)))
        async with self.db.transaction() as session:
            conn = await session.connection()  # Core statements need no ORM session machinery
            ids, known = await conn.run_sync(_insert_messages, batch)
            for item in _new(batch, ids):  # a large message's bytes, chunk by chunk (once per digest)
                if item.spool is not None:
                    chunks = await store_chunks(session, MESSAGE, ids[item.digest], item.spool.chunks())
                    await conn.execute(update(MESSAGES).where(MESSAGES.c.id == ids[item.digest])
                                       .values(chunks=chunks))
            return await conn.run_sync(_finish, batch, ids, known)


def _insert_messages(conn: Connection, batch: list[_Pending]) -> tuple[dict[str, int], dict[str, int]]:
    """Insert the batch's messages, once per digest: (ids of those inserted, ids of those already
    stored), by digest. The INSERT skips what is stored (one statement, not a look-up before it);
    those are looked up only when there are some."""
    firsts = _firsts(batch)
    rows = [_message_row(item) for item in firsts]
    if conn.dialect.name == "sqlite":  # the writer thread's batch: see gateway/driverinsert.py
        ids = dict(NEW_MESSAGES.returning(conn, rows, "ON CONFLICT (direction, sha256) DO NOTHING",
                                          ("sha256", "id")))
    else:
        ids = dict(conn.execute(_insert_new(conn.dialect.name), rows).all())
    missing = {item.digest for item in firsts} - ids.keys()
    known = dict(conn.execute(
        select(MESSAGES.c.sha256, MESSAGES.c.id).where(MESSAGES.c.direction == "inbound",
                                                       MESSAGES.c.sha256.in_(missing))).all()
                 ) if missing else {}
    return ids, known


def _finish(conn: Connection, batch: list[_Pending], ids: dict[str, int],
            known: dict[str, int]) -> list[IngestResult]:
    """The new messages' jobs and every message's audit entry; each caller's answer."""
    new = _new(batch, ids)
    if new:
        now = utcnow()
        jobs = [{"kind": "inbound", "message_id": ids[item.digest], "priority": item.priority,
                 "payload": turn_payload(item.size) or {}, "state": "queued", "attempts": 0,
                 "run_after": now, "created_at": now} for item in new]
        if conn.dialect.name == "sqlite":
            NEW_JOBS.execute(conn, jobs)
        else:
            conn.execute(_insert_jobs(), jobs)
    results, entries, inserted = [], [], {id(item) for item in new}
    for item in batch:
        if id(item) in inserted:
            message_id = ids[item.digest]
            entries.append(("system", "inbound.received", f"message:{message_id}",
                            {"transport": item.transport, "peer": item.peer, "sha256": item.digest,
                             "size": item.size}))
            results.append(IngestResult(message_id, duplicate=False))
        else:
            existing = known.get(item.digest) or ids[item.digest]
            entries.append(("system", "inbound.duplicate", f"message:{existing}",
                            {"transport": item.transport, "peer": item.peer, "sha256": item.digest}))
            results.append(IngestResult(existing, duplicate=True))
    audit.append(conn, entries)
    return results


def _log_stored(batch: list[_Pending], results: list[IngestResult]) -> None:
    """One log line per commit, naming each message it stored: a line per message cost the
    event loop more than a tenth of its work per message at SMTP ingress (issue #8)."""
    log.info("messages stored", extra={
        "transport": batch[0].transport,
        "messages": [{"message_id": result.message_id, "peer": item.peer, "size": item.size,
                      "duplicate": result.duplicate} for item, result in zip(batch, results, strict=True)]})


def _firsts(batch: list[_Pending]) -> list[_Pending]:
    """The first message of each digest in the batch."""
    return list({item.digest: item for item in reversed(batch)}.values())[::-1]


def _new(batch: list[_Pending], ids: dict[str, int]) -> list[_Pending]:
    """The first message of each digest just inserted."""
    return [item for item in _firsts(batch) if item.digest in ids]


MESSAGES = cast(Table, Message.__table__)
JOBS = cast(Table, Job.__table__)


@functools.cache  # one per dialect: built once, its cache key computed once (every batch did both)
def _insert_new(dialect: str) -> Insert:
    """INSERT of new inbound messages that skips a digest already stored, returning (sha256, id)
    of the rows it inserted."""
    make = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return make(MESSAGES).on_conflict_do_nothing(index_elements=["direction", "sha256"]).returning(
        MESSAGES.c.sha256, MESSAGES.c.id)


@functools.cache
def _insert_jobs() -> Insert:
    return insert(JOBS)


NEW_MESSAGES = DriverInsert(MESSAGES, ["direction", "transport", "sha256", "raw", "size", "chunks",
                                       "header_message_id", "peer", "envelope_from", "envelope_to",
                                       "received_at", "state"])
NEW_JOBS = DriverInsert(JOBS, ["kind", "message_id", "priority", "payload", "state", "attempts",
                               "run_after", "created_at"])


def _message_row(item: _Pending) -> dict[str, Any]:
    """A new inbound message's columns. No ORM flush sees them, so NUL in text is replaced here
    as db.py's `_no_nul_in_text` does for ORM objects (PostgreSQL text cannot hold it)."""
    head = item.spool.head if item.spool is not None else item.raw
    return {"direction": "inbound", "transport": item.transport, "sha256": item.digest, "raw": item.raw,
            "size": item.size, "chunks": 0, "header_message_id": _no_nul(header_message_id(head)),
            "peer": _no_nul(item.peer), "envelope_from": _no_nul(item.envelope_from),
            "envelope_to": [_no_nul(address) for address in item.envelope_to], "received_at": utcnow(),
            "state": "received"}


def _no_nul(text: str | None) -> str | None:
    return text.replace("\x00", "\ufffd") if text else text
