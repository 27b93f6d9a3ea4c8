"""Replies: composed by handlers into the outbox, signed, encrypted and sent from here.

A handler calls `queue_reply` inside its own transaction, so a reply exists exactly when the
decision that caused it was committed. `OutboxSender` takes due rows, signs them with the gateway
key, encrypts them to the officer's key (RFC 3156 PGP/MIME, signed and encrypted in one OpenPGP
message), hands them to the smarthost with aiosmtplib, and retries with exponential back-off.
Rows survive restarts because they are rows. Encryption happens at send time, so a key revoked
while a reply waits stops the reply, and so does the suspension of the officer or their agency.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.utils import format_datetime, formataddr
from functools import cache
from typing import Any, cast

import aiosmtplib
from sqlalchemy import Connection, Integer, Table, bindparam, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gateway import audit, compose
from gateway.clock import utcnow
from gateway.config import Settings
from gateway.db import Database, no_nul_row
from gateway.logs import request_scope
from gateway.models import Agency, Message, Officer, Outbox
from gateway.pgp import OpenPGP, OpenPGPError
from handlers.refs import find_refs

log = logging.getLogger(__name__)
# the one kind of outbound mail that is not encrypted: notices to the platform's own users
NOTICE_KIND = "user_notice"
NOTICE_RECIPIENT = "(a user: the address is sealed in the content)"
SUSPENDED_HOLD = "the officer is suspended"  # released by reinstatement (handlers/officers.py)
# replies claimed and not yet recorded as sent (or failed, or held): what the sender holds in
# memory at once, and how far it claims ahead of gpg
MAX_IN_FLIGHT = 20


@cache
def _from_header(name: str, address: str) -> str:
    """The gateway's From header, parsed by the email package once (a header object is stored
    as it is; parsing the address again for every reply cost more than the rest of its headers)."""
    return policy.SMTP.header_store_parse("From", formataddr((name, address)))[1]


@cache
def _from_field(name: str, address: str) -> bytes:
    """The From header field as written, CRLF included."""
    return policy.SMTP.fold_binary("From", _from_header(name, address))


def new_message_id(settings: Settings) -> str:
    domain = settings.gateway.address.rpartition("@")[2]
    return f"<lers.{uuid.uuid4().hex}@{domain}>"


def queue_reply(session: AsyncSession, settings: Settings, *, kind: str, recipient: str,
                recipient_fingerprint: str, subject: str, body: str,
                request_id: int | None = None, in_reply_to: str | None = None,
                references: list[str] | None = None,
                reply_to_message: int | None = None,
                attachments: Sequence[tuple[str, bytes, str]] = ()) -> Outbox:
    """Put a reply in the outbox, inside the caller's transaction. Attachments are (file name,
    bytes, MIME type); they are encrypted with the rest of the reply when it is sent."""
    row = Outbox(**reply_values(
        settings, kind=kind, recipient=recipient, recipient_fingerprint=recipient_fingerprint,
        subject=subject, body=body, request_id=request_id, in_reply_to=in_reply_to,
        references=references, reply_to_message=reply_to_message, attachments=attachments))
    session.add(row)
    return row


def queue_reply_in(conn: Connection, settings: Settings, **fields: Any) -> None:
    """`queue_reply` on a synchronous connection (a Core INSERT, no unit of work): the same row,
    text with NUL replaced as a flush replaces it."""
    conn.execute(INSERT_REPLY, no_nul_row(reply_values(settings, **fields)))


def reply_values(settings: Settings, *, kind: str, recipient: str, recipient_fingerprint: str,
                 subject: str, body: str, request_id: int | None = None, in_reply_to: str | None = None,
                 references: list[str] | None = None, reply_to_message: int | None = None,
                 attachments: Sequence[tuple[str, bytes, str]] = ()) -> dict[str, Any]:
    """The outbox row of a reply (`queue_reply`'s arguments), its content composed."""
    message_id = new_message_id(settings)
    content = reply_content(settings, message_id=message_id, recipient=recipient, subject=subject,
                            body=body, attachments=attachments)
    return {"kind": kind, "request_id": request_id, "in_reply_to_message": reply_to_message,
            "recipient": recipient, "recipient_fingerprint": recipient_fingerprint,
            "sender": settings.gateway.address, "header_message_id": message_id, "subject": subject,
            "in_reply_to": in_reply_to, "references": list(references or []), "content": content,
            "next_attempt_at": utcnow()}


def reply_content(settings: Settings, *, message_id: str, recipient: str, subject: str, body: str,
                  attachments: Sequence[tuple[str, bytes, str]] = ()) -> bytes:
    """The reply as it is encrypted: From, To and Subject inside it too ("protected headers" v1),
    the text quoted-printable. A text-only reply is written by gateway/compose.py (the email
    package's header objects cost more than the rest of the reply); one with attachments, which
    is rare, by the email package."""
    if attachments:
        return _reply_with_attachments(settings, message_id, recipient, subject, body, attachments)
    return b"".join([
        _from_field(settings.gateway.name, settings.gateway.address),
        compose.address_field("To", recipient),
        compose.unstructured_field("Subject", subject),
        compose.msg_id_field("Message-ID", [message_id]),
        b"Content-Transfer-Encoding: quoted-printable\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: text/plain; charset="utf-8"; protected-headers="v1"\r\n'
        b"\r\n",
        compose.quoted_printable_body(body),
    ])


def _reply_with_attachments(settings: Settings, message_id: str, recipient: str, subject: str,
                            body: str, attachments: Sequence[tuple[str, bytes, str]]) -> bytes:
    inner = EmailMessage(policy=policy.SMTP)
    inner["From"] = _from_header(settings.gateway.name, settings.gateway.address)
    inner["To"] = recipient
    inner["Subject"] = subject
    inner["Message-ID"] = message_id
    inner.set_content(body, charset="utf-8", cte="quoted-printable")
    for filename, data, mime_type in attachments:
        maintype, _, subtype = mime_type.partition("/")
        inner.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    inner.set_param("protected-headers", "v1")
    return inner.as_bytes()


def queue_notice(session: AsyncSession, settings: Settings, *, recipient: str, subject: str,
                 text: str, html: str, request_id: int) -> Outbox:
    """A notice to one of the platform's users: plain text and HTML, not encrypted (they have no
    key we know), and holding nothing but what the notice template says."""
    message_id = new_message_id(settings)
    message = EmailMessage(policy=policy.SMTP)
    message["From"] = formataddr((settings.notices.platform_name, settings.gateway.address))
    message["To"] = recipient
    message["Reply-To"] = settings.notice_contact
    message["Subject"] = subject
    message["Message-ID"] = message_id
    message.set_content(text, charset="utf-8", cte="quoted-printable")
    message.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    # the user's address is personal data: it travels only inside the sealed content
    row = Outbox(kind=NOTICE_KIND, request_id=request_id, recipient=NOTICE_RECIPIENT,
                 recipient_fingerprint=None, sender=settings.gateway.address,
                 header_message_id=message_id, subject=subject, references=[],
                 content=message.as_bytes(), next_attempt_at=utcnow())
    session.add(row)
    return row


def plain_notice(row: Outbox) -> tuple[str, bytes]:
    """A notice as sent (its message with the date of sending), and the user it goes to."""
    date = policy.SMTP.fold_binary("Date", format_datetime(utcnow()))
    recipient = BytesHeaderParser(policy=policy.SMTP).parsebytes(row.content, headersonly=True)["To"]
    return str(recipient), date + row.content


def pgp_mime_encrypted(settings: Settings, row: Outbox, armored: bytes) -> bytes:
    """The outer message: visible headers plus the RFC 3156 multipart/encrypted body."""
    boundary = f"lers-{uuid.uuid4().hex}"
    fields = [
        _from_field(settings.gateway.name, settings.gateway.address),
        compose.address_field("To", row.recipient),
        compose.unstructured_field("Subject", row.subject),
        compose.date_field("Date", format_datetime(utcnow())),
        compose.msg_id_field("Message-ID", [row.header_message_id]),
    ]
    if row.in_reply_to:
        fields.append(compose.msg_id_field("In-Reply-To", [row.in_reply_to]))
    if row.references:
        fields.append(compose.msg_id_field("References", list(row.references)))
    fields += [
        b"MIME-Version: 1.0\r\n",
        b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";\r\n'
        b' boundary="' + boundary.encode("ascii") + b'"\r\n',
    ]
    folded = b"".join(fields)
    lines = [
        folded.rstrip(b"\r\n"), b"",
        b"This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)",
        f"--{boundary}".encode(),
        b"Content-Type: application/pgp-encrypted",
        b"Content-Description: PGP/MIME version identification", b"",
        b"Version: 1", b"",
        f"--{boundary}".encode(),
        b'Content-Type: application/octet-stream; name="encrypted.asc"',
        b"Content-Description: OpenPGP encrypted message",
        b'Content-Disposition: inline; filename="encrypted.asc"', b"",
        armored.replace(b"\r\n", b"\n").rstrip(b"\n").replace(b"\n", b"\r\n"),
        f"--{boundary}--".encode(), b"",
    ]
    return b"\r\n".join(lines)


async def release_sending(db: Database) -> int:
    """At start of a single-process gateway, sends cut short by a crash are due again at once."""
    async with db.transaction() as session:
        result = await session.execute(
            update(Outbox).where(Outbox.state == "sending").values(state="pending",
                                                                   next_attempt_at=utcnow()))
        return result.rowcount or 0


SUSPENDED = (select(Officer.email).join(Agency, Agency.id == Officer.agency_id)
             .where(Officer.email.in_(bindparam("b_recipients", expanding=True)),
                    or_(Officer.status != "active", Agency.status != "active")))


def suspended_recipients_in(conn: Connection, recipients: set[str]) -> set[str]:
    """The addresses of suspended officers (or of officers of a suspended agency) among these:
    only the addresses come back, not officers and their agencies as ORM objects."""
    if not recipients:
        return set()
    return set(conn.scalars(SUSPENDED, {"b_recipients": sorted(recipients)}))


OUTBOX = cast(Table, Outbox.__table__)
INSERT_REPLY = insert(OUTBOX)  # state, attempts and created_at: the columns' defaults
_DUE = (OUTBOX.c.state.in_(["pending", "sending"]),
        OUTBOX.c.next_attempt_at <= bindparam("b_now", type_=OUTBOX.c.next_attempt_at.type))


def _claim_statement(skip_locked: bool) -> Any:
    """Due rows, oldest first, leased (state `sending` until `b_until`) and returned whole. A
    compare-and-set: a row another sender took meanwhile no longer matches the due condition;
    a crash mid-send leaves the row to be taken again when the lease runs out. On PostgreSQL
    rows another process holds are skipped (several gateway processes: each row to one sender)."""
    candidates = select(OUTBOX.c.id).where(*_DUE).order_by(OUTBOX.c.id).limit(
        bindparam("b_limit", type_=Integer))
    if skip_locked:
        candidates = candidates.with_for_update(skip_locked=True)
    return (update(OUTBOX).where(OUTBOX.c.id.in_(candidates.scalar_subquery()), *_DUE)
            .values(state="sending",
                    next_attempt_at=bindparam("b_until", type_=OUTBOX.c.next_attempt_at.type))
            .returning(*OUTBOX.c))


CLAIM = {False: _claim_statement(False), True: _claim_statement(True)}  # built once
SENT = (update(OUTBOX).where(OUTBOX.c.id == bindparam("b_id"))
        .values(state="sent", sent_at=bindparam("b_sent_at"), attempts=bindparam("b_attempts")))
OUTBOUND = insert(cast(Table, Message.__table__))


def claim_due(conn: Connection, limit: int, lease: timedelta) -> tuple[list[Outbox], set[str]]:
    """Up to `limit` due rows, leased to this sender, as transient `Outbox` objects in id order,
    and which of their recipients are suspended: one write transaction (on SQLite one trip to
    the writer thread)."""
    now = utcnow()
    statement = CLAIM[conn.dialect.name == "postgresql"]
    rows = conn.execute(statement, {"b_now": now, "b_until": now + lease, "b_limit": limit}).mappings()
    claimed = sorted((Outbox(**row) for row in rows), key=lambda row: row.id)
    return claimed, suspended_recipients_in(conn, {row.recipient for row in claimed})


def record_sent_in(conn: Connection, sent: list[Ready]) -> None:
    """Replies the smarthost accepted: marked sent, kept as the outbound messages they were
    (the exact bytes, sealed), audited; one transaction for all of them."""
    now = utcnow()
    conn.execute(SENT, [{"b_id": r.row.id, "b_sent_at": now, "b_attempts": r.row.attempts + 1}
                        for r in sent])
    conn.execute(OUTBOUND, [
        {"direction": "outbound", "transport": "smtp", "sha256": hashlib.sha256(r.raw).hexdigest(),
         "raw": r.raw, "size": len(r.raw), "chunks": 0, "header_message_id": r.row.header_message_id,
         "envelope_from": r.row.sender, "envelope_to": [r.recipient], "state": "sent",
         "request_id": r.row.request_id, "received_at": now} for r in sent])
    # a user's address stays out of the audit log: the notice's id says who
    audit.append(conn, [
        ("system", "outbox.sent", f"outbox:{r.row.id}",
         {"kind": r.row.kind, "recipient": r.row.recipient, "message_id": r.row.header_message_id,
          "request_id": r.row.request_id}) for r in sent])


@dataclass(frozen=True)
class Ready:
    """A reply ready for the smarthost."""

    row: Outbox
    recipient: str
    raw: bytes
    encrypted: bool  # to an officer: held instead if they are suspended when it is sent


def _scope(row: Outbox) -> AbstractContextManager[None]:
    refs = find_refs(row.subject)  # our own subject: "[REF] ..." when about a request
    return request_scope(refs[0] if refs else None)


async def _ready_now(ready: asyncio.Queue[Ready | None]) -> list[Ready] | None:
    """The next reply ready, with every other one ready by then; None at the end."""
    first = await ready.get()
    if first is None:
        return None
    batch = [first]
    while not ready.empty():
        item = ready.get_nowait()
        if item is None:
            ready.put_nowait(None)  # seen again on the next call
            break
        batch.append(item)
    return batch


async def _closed(client: aiosmtplib.SMTP | None) -> None:
    """Say QUIT if the connection still stands, and forget it."""
    if client is not None and client.is_connected:
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            client.close()
    return None


class OutboxSender:
    """Sends due outbox rows. `run()` keeps a pipeline going: rows are claimed whenever a reply
    was queued (or every poll_seconds) while fewer than MAX_IN_FLIGHT are under way, signed and
    encrypted as many at once as gpg has threads, handed to the smarthost as each is ready, and
    recorded as sent in one transaction for all that were sent meanwhile. `send_due()` is one
    pass through the same pipeline (tests; it may run beside `run()`: claims are compare-and-set)."""

    def __init__(self, settings: Settings, db: Database, pgp: OpenPGP) -> None:
        self.settings = settings
        self.db = db
        self.pgp = pgp
        self.wakeup = asyncio.Event()
        out = settings.outbound
        self.tls_context = None
        if out.tls != "none":  # certificates are always verified; ca_file replaces the system CAs
            self.tls_context = ssl.create_default_context(
                cafile=str(settings.base_dir / out.ca_file) if out.ca_file else None)

    async def run(self, stop: asyncio.Event) -> None:
        pipeline = _Pipeline(self)
        try:
            while not stop.is_set():
                self.wakeup.clear()  # a reply queued while the claim runs rings again
                pipeline.room_freed.clear()
                try:
                    full = await pipeline.claim(pipeline.room())
                except Exception:
                    log.exception("outbox claim failed")
                    full = False
                if full and pipeline.room():
                    continue  # more may be due
                # a full pipeline waits for room, an empty claim for a ring; both poll
                waiters = {asyncio.ensure_future(stop.wait()),
                           asyncio.ensure_future(pipeline.room_freed.wait() if full else self.wakeup.wait())}
                try:
                    await asyncio.wait(waiters, timeout=self.settings.worker.poll_seconds,
                                       return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiter in waiters:
                        waiter.cancel()
        finally:
            await pipeline.close()  # what was claimed is sent (or retried) and recorded first

    async def send_due(self, limit: int = MAX_IN_FLIGHT) -> int:
        """One pass: take up to `limit` due rows (leasing them), send each, record what was sent;
        returns how many were sent."""
        pipeline = _Pipeline(self)
        try:
            await pipeline.claim(limit)
        finally:
            await pipeline.close()
        return pipeline.sent

    async def _prepare(self, row: Outbox) -> Ready | None:
        """The message as the smarthost gets it: signed and encrypted to the recipient's key
        (checked now: a key revoked while the reply waited holds it), or a user's notice."""
        if row.kind == NOTICE_KIND and row.recipient_fingerprint is None:
            recipient, raw = plain_notice(row)
            return Ready(row, recipient, raw, encrypted=False)
        key = await self.pgp.key_status(row.recipient_fingerprint or "")
        if key is None or key.revoked or key.expired:
            problem = "missing" if key is None else ("revoked" if key.revoked else "expired")
            await self._hold(row, f"the recipient's key is {problem}")
            return None
        try:
            armored = await self.pgp.sign_and_encrypt_for_officer(row.content,
                                                                 row.recipient_fingerprint or "")
        except OpenPGPError as exc:
            await self._failed_attempt(row, str(exc))
            return None
        return Ready(row, row.recipient, pgp_mime_encrypted(self.settings, row, armored), encrypted=True)

    async def _not_suspended(self, batch: list[Ready]) -> list[Ready]:
        """A last look just before the smarthost gets them: a suspension takes effect at once,
        also for a reply prepared meanwhile (one look for all the replies ready now)."""
        late = await self._suspended_now({r.row.recipient for r in batch if r.encrypted})
        for held in [r for r in batch if r.encrypted and r.row.recipient in late]:
            await self._hold(held.row, SUSPENDED_HOLD)
        return [r for r in batch if not (r.encrypted and r.row.recipient in late)]

    def _client(self) -> aiosmtplib.SMTP:
        out = self.settings.outbound
        password = (self.settings.outbound_password() or None) if out.username else None
        return aiosmtplib.SMTP(hostname=out.host, port=out.port, start_tls=out.tls == "starttls",
                               use_tls=out.tls == "implicit", tls_context=self.tls_context,
                               username=out.username or None, password=password,
                               timeout=out.timeout_seconds)

    async def _record_sent(self, sent: list[Ready]) -> None:
        """One transaction for every reply the smarthost accepted since the last one (a crash
        before it only sends them again)."""
        if not sent:
            return
        # redoable: lost with the machine, a reply is only sent again
        await self.db.write_sync(lambda conn: record_sent_in(conn, sent), redoable=True)
        for r in sent:
            with _scope(r.row):
                log.info("reply sent", extra={"outbox_id": r.row.id, "kind": r.row.kind})

    async def _suspended_now(self, recipients: set[str]) -> set[str]:
        """Which of these officers (or their agencies) are suspended, as of now (one statement,
        on SQLite one trip to a reader thread: this runs before every batch is sent)."""
        if not recipients:
            return set()
        return await self.db.read_sync(lambda conn: suspended_recipients_in(conn, recipients))

    async def _failed_attempt(self, row: Outbox, error: str) -> None:
        async with self.db.transaction() as session:
            fresh = await session.get(Outbox, row.id)
            assert fresh is not None
            fresh.attempts += 1
            fresh.state = "pending"
            fresh.last_error = error[:2000]
            out = self.settings.outbound
            if utcnow() - fresh.created_at > timedelta(hours=out.give_up_after_hours):
                fresh.state = "failed"
                await audit.record(session, "system", "outbox.gave_up", f"outbox:{row.id}",
                                   error=error[:300], attempts=fresh.attempts)
            else:
                delay = min(out.first_retry_seconds * 2 ** (fresh.attempts - 1),
                            out.max_retry_seconds)
                fresh.next_attempt_at = utcnow() + timedelta(seconds=delay)
        log.warning("reply not sent, will retry",
                    extra={"outbox_id": row.id, "error": error[:200]})

    async def _hold(self, row: Outbox, why: str) -> None:
        async with self.db.transaction() as session:
            fresh = await session.get(Outbox, row.id)
            assert fresh is not None
            fresh.state = "held"
            fresh.last_error = why
            await audit.record(session, "system", "outbox.held", f"outbox:{row.id}", reason=why)
        log.warning("reply held", extra={"outbox_id": row.id, "reason": why})


class _Pipeline:
    """Claimed rows on their way: `gpg_threads` preparers sign and encrypt them, one deliverer
    hands them to the smarthost over one connection (kept while replies keep coming, closed
    when none is ready or being prepared), and records those sent in one transaction whenever
    nothing else is ready to send. A row leaves the pipeline when it is recorded as sent, held,
    or given back for a later attempt (`room_freed` is set then); one that meets an error none
    of these could record stays leased, and is taken again when its lease runs out."""

    def __init__(self, sender: OutboxSender) -> None:
        self.sender = sender
        self.in_flight = 0
        self.sent = 0
        self.room_freed = asyncio.Event()
        # each row with whether its recipient was suspended when it was claimed
        self._claimed: asyncio.Queue[tuple[Outbox, bool] | None] = asyncio.Queue()
        self._ready: asyncio.Queue[Ready | None] = asyncio.Queue()
        self._preparing = 0
        settings = sender.settings
        self._lease = timedelta(seconds=settings.outbound.timeout_seconds * 2 + 30)
        self._preparers = [asyncio.ensure_future(self._prepare_loop())
                           for _ in range(max(1, settings.worker.gpg_threads))]
        self._deliverer = asyncio.ensure_future(self._deliver_loop())

    def room(self) -> int:
        return max(0, MAX_IN_FLIGHT - self.in_flight)

    async def claim(self, limit: int) -> bool:
        """Claim up to `limit` due rows into the pipeline; True if it took all it asked for."""
        if limit <= 0:
            return True
        # not `redoable`: what is sent next must be on disk first (also what was only redone)
        rows, suspended = await self.sender.db.write_sync(lambda conn: claim_due(conn, limit, self._lease))
        self.in_flight += len(rows)
        for row in rows:
            self._claimed.put_nowait((row, row.recipient in suspended))
        return len(rows) == limit

    def _done(self, count: int = 1) -> None:
        if count:
            self.in_flight -= count
            self.room_freed.set()

    async def close(self) -> None:
        """Let everything claimed go through (sent and recorded, held, or given back)."""
        for _ in self._preparers:
            self._claimed.put_nowait(None)
        try:
            await asyncio.gather(*self._preparers)
        finally:
            self._ready.put_nowait(None)
            await self._deliverer

    async def _prepare_loop(self) -> None:
        while (claimed := await self._claimed.get()) is not None:
            row, suspended = claimed
            self._preparing += 1
            try:
                with _scope(row):
                    prepared = await self._prepare(row, suspended)
            except Exception:
                log.exception("reply left to its lease", extra={"outbox_id": row.id})
                prepared = None
            finally:
                self._preparing -= 1
            if prepared is None:
                self._done()
            else:
                self._ready.put_nowait(prepared)

    async def _prepare(self, row: Outbox, suspended: bool) -> Ready | None:
        """The row as sent, or None if it was held or given back for a later attempt."""
        sender = self.sender
        if suspended:  # sent nothing until reinstated
            await sender._hold(row, SUSPENDED_HOLD)
            return None
        try:
            return await sender._prepare(row)
        except Exception as exc:
            log.exception("reply could not be prepared", extra={"outbox_id": row.id})
            await sender._failed_attempt(row, f"{type(exc).__name__}: {exc}")
            return None

    async def _deliver_loop(self) -> None:
        """Hand the replies to the smarthost as they become ready, over one connection (a new one
        after any error); a reply it refuses, or cannot be reached for, is retried later."""
        client: aiosmtplib.SMTP | None = None
        accepted: list[Ready] = []
        try:
            while (batch := await _ready_now(self._ready)) is not None:
                settled: list[Ready] = []  # held, or given back for a later attempt
                try:
                    client = await self._deliver(batch, client, accepted, settled)
                except Exception:
                    log.exception("replies left to their lease",
                                  extra={"outbox_ids": [r.row.id for r in batch]})
                    client = await _closed(client)
                    settled = [r for r in batch if r not in accepted]
                self._done(len(settled))
                if self._ready.empty():  # nothing else to send now: record, and maybe hang up
                    await self._record(accepted)
                    accepted = []
                    if not self._preparing:
                        client = await _closed(client)
        finally:
            await _closed(client)
            await self._record(accepted)  # what the smarthost took, even if delivery broke off

    async def _deliver(self, batch: list[Ready], client: aiosmtplib.SMTP | None,
                       accepted: list[Ready], settled: list[Ready]) -> aiosmtplib.SMTP | None:
        """Send `batch`: those the smarthost took go to `accepted`; those held (their officer
        suspended meanwhile) or given back for a later attempt, to `settled`. Returns the
        connection to go on with (None after an error)."""
        sender = self.sender
        sendable = await sender._not_suspended(batch)
        settled.extend(r for r in batch if r not in sendable)
        for item in sendable:
            with _scope(item.row):
                try:
                    if client is None:
                        client = sender._client()
                        await client.connect()
                    await client.sendmail(item.row.sender, [item.recipient], item.raw)
                except Exception as exc:
                    if not isinstance(exc, aiosmtplib.SMTPException | OSError | TimeoutError):
                        log.exception("reply could not be sent", extra={"outbox_id": item.row.id})
                    client = await _closed(client)
                    await sender._failed_attempt(item.row, f"{type(exc).__name__}: {exc}")
                    settled.append(item)
                    continue
            accepted.append(item)
        return client

    async def _record(self, accepted: list[Ready]) -> None:
        """Record replies as sent; if that fails they stay leased and are sent again later."""
        if not accepted:
            return
        try:
            await self.sender._record_sent(accepted)
            self.sent += len(accepted)
        except Exception:
            log.exception("sent replies not recorded: sent again when their lease runs out",
                          extra={"outbox_ids": [r.row.id for r in accepted]})
        finally:
            self._done(len(accepted))
