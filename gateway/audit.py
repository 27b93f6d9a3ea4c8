"""Append-only, hash-chained audit log.

Each entry's hash covers its content and the previous entry's hash, so removing, reordering or
editing any entry breaks every hash after it; `lers audit verify` finds the first broken one.
Entries are appended inside the caller's transaction: the audit and the act commit together.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, Table, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.clock import utcnow
from gateway.db import no_nul
from gateway.driverinsert import DriverInsert
from gateway.models import AuditEntry

GENESIS = "0" * 64
AUDIT_LOCK = 0x4C455253  # "LERS": the advisory lock id that serialises audit appends


# json.dumps(..., sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str), made
# once: `json.dumps` builds a new encoder for every call with options
CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def entry_hash(prev_hash: str, at: str, actor: str, action: str, subject: str | None,
               details: dict[str, Any]) -> str:
    canonical = CANONICAL.encode([prev_hash, at, actor, action, subject, details])
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def digest(value: object) -> str:
    """What the audit keeps of personal data (a note, a scope): its SHA-256, which binds the
    sealed original without revealing it."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def scope_summary(scope: dict[str, Any] | None) -> dict[str, Any] | None:
    """A scope for the audit: categories and dates as they are, subjects only counted."""
    if scope is None:
        return None
    return {"categories": scope["categories"], "subjects": len(scope["subjects"]),
            "date_from": scope["date_from"], "date_to": scope["date_to"], "sha256": digest(scope)}


async def record(session: AsyncSession, actor: str, action: str, subject: str | None = None,
                 **details: Any) -> None:
    """Append one entry; `actor` is who acted (`officer:<fpr>`, `reviewer:<id>`, `system`...)."""
    await record_many(session, [(actor, action, subject, details)])


async def record_many(session: AsyncSession,
                      entries: list[tuple[str, str, str | None, dict[str, Any]]]) -> None:
    """Append several entries (actor, action, subject, details) in order, chained in memory: one
    look-up of the last hash and one INSERT for all of them (group commit at ingress, the
    outbox's sent replies). What the session holds is flushed first, as the entries describe it."""
    await session.flush()
    await session.run_sync(lambda sync: append(sync.connection(), entries))


AUDIT = cast(Table, AuditEntry.__table__)
# built once: executing them costs no statement construction nor cache-key generation
LOCK = text("SELECT pg_advisory_xact_lock(:key)")
LAST_HASH = select(AUDIT.c.hash).order_by(AUDIT.c.id.desc()).limit(1)
INSERT = insert(AUDIT)
DRIVER_INSERT = DriverInsert(AUDIT, ["at", "actor", "action", "subject", "details", "prev_hash", "hash"])


PLAIN = (int, float, bool, type(None))  # JSON keeps these as they are


def as_stored(details: dict[str, Any]) -> dict[str, Any]:
    """`details` as JSON keeps them (dates as text, tuples as lists) with NUL replaced (PostgreSQL
    text cannot hold it), before hashing, so what is stored is exactly what was hashed. Most
    entries are already that (text without NUL, numbers, flags), and keep their dict: JSON's way
    there and back cost more than the hash (issue #8)."""
    if all(type(key) is str and "\x00" not in key
           and (type(value) in PLAIN or (type(value) is str and "\x00" not in value))
           for key, value in details.items()):
        return details
    return no_nul(json.loads(json.dumps(details, default=str)))


def append(conn: Connection, entries: list[tuple[str, str, str | None, dict[str, Any]]]) -> None:
    """`record_many`'s statements on a connection inside the caller's transaction (synchronous:
    SMTP ingress runs its whole SQLite transaction in a thread, gateway/ingest.py)."""
    if conn.dialect.name == "postgresql":
        # one appender at a time, or two could link to the same previous entry (SQLite's
        # BEGIN IMMEDIATE already serialises writers); the lock ends with the transaction
        conn.execute(LOCK, {"key": AUDIT_LOCK})
    last = conn.scalar(LAST_HASH)
    prev = last or GENESIS
    made: list[dict[str, Any]] = []
    for actor, action, subject, details in entries:
        at = utcnow()
        details = as_stored(details)
        subject = subject.replace("\x00", "\ufffd") if subject else subject
        digest_ = entry_hash(prev, at.isoformat(), actor, action, subject, details)
        made.append({"at": at, "actor": actor, "action": action, "subject": subject, "details": details,
                     "prev_hash": prev, "hash": digest_})
        prev = digest_
    # in list order, so ids follow the chain (one executemany, no RETURNING: nobody needs the ids;
    # into the table, not the ORM's bulk insert, which costs more and adds nothing here)
    if conn.dialect.name == "sqlite":
        DRIVER_INSERT.execute(conn, made)  # gateway/driverinsert.py
    else:
        conn.execute(INSERT, made)


@dataclass(frozen=True)
class ChainReport:
    entries: int
    first_bad_id: int | None
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.first_bad_id is None


async def verify_chain(session: AsyncSession) -> ChainReport:
    """Walk the whole chain in order and report the first entry that does not fit."""
    prev = GENESIS
    count = 0
    result = await session.stream_scalars(select(AuditEntry).order_by(AuditEntry.id))
    async for entry in result:
        count += 1
        if entry.prev_hash != prev:
            return ChainReport(count, entry.id, "does not link to the entry before it")
        expected = entry_hash(prev, entry.at.isoformat(), entry.actor, entry.action,
                              entry.subject, entry.details)
        if entry.hash != expected:
            return ChainReport(count, entry.id, "content does not match its hash")
        prev = entry.hash
    return ChainReport(count, None, None)
