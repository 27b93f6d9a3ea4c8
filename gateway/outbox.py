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

import aiosmtplib
from sqlalchemy import insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gateway import audit, compose
from gateway.clock import utcnow
from gateway.config import Settings
from gateway.db import Database
from gateway.logs import request_scope
from gateway.models import Agency, Message, Officer, Outbox
from gateway.pgp import OpenPGP, OpenPGPError
from handlers.refs import find_refs

log = logging.getLogger(__name__)
# the one kind of outbound mail that is not encrypted: notices to the platform's own users
NOTICE_KIND = "user_notice"
NOTICE_RECIPIENT = "(a user: the address is sealed in the content)"
SUSPENDED_HOLD = "the officer is suspended"  # released by reinstatement (handlers/officers.py)


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
    message_id = new_message_id(settings)
    content = reply_content(settings, message_id=message_id, recipient=recipient, subject=subject,
                            body=body, attachments=attachments)
    row = Outbox(
        kind=kind, request_id=request_id, in_reply_to_message=reply_to_message,
        recipient=recipient, recipient_fingerprint=recipient_fingerprint,
        sender=settings.gateway.address, header_message_id=message_id, subject=subject,
        in_reply_to=in_reply_to, references=list(references or []),
        content=content, next_attempt_at=utcnow(),
    )
    session.add(row)
    return row


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


async def _suspended_recipients(session: AsyncSession, recipients: set[str]) -> set[str]:
    """The addresses of suspended officers (or of officers of a suspended agency) among these."""
    if not recipients:
        return set()
    # `not Officer.active` in SQL: only the addresses come back, not officers and their agencies
    # as ORM objects (this runs on every outbox pass and again before each batch is sent)
    suspended = await session.scalars(
        select(Officer.email).join(Agency, Agency.id == Officer.agency_id)
        .where(Officer.email.in_(recipients),
               or_(Officer.status != "active", Agency.status != "active")))
    return set(suspended)


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
    """The next reply ready, with every other one ready by then; None at the end of the pass."""
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
    """Sends due outbox rows; one pass is `send_due()`, the loop is `run()`."""

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
        while not stop.is_set():
            try:
                await self.send_due()
            except Exception:
                log.exception("outbox pass failed")
            self.wakeup.clear()
            stop_wait = asyncio.ensure_future(stop.wait())
            wake_wait = asyncio.ensure_future(self.wakeup.wait())
            await asyncio.wait({stop_wait, wake_wait}, timeout=self.settings.worker.poll_seconds,
                               return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            wake_wait.cancel()

    async def send_due(self, limit: int = 20) -> int:
        """Take up to `limit` due rows (leasing them), send each; returns how many were sent."""
        now = utcnow()
        lease = timedelta(seconds=self.settings.outbound.timeout_seconds * 2 + 30)
        due = (Outbox.state.in_(["pending", "sending"]), Outbox.next_attempt_at <= now)
        async with self.db.transaction() as session:
            candidates = select(Outbox.id).where(*due).order_by(Outbox.id).limit(limit)
            if not self.db.is_sqlite:  # several gateway processes: each row goes to one sender
                candidates = candidates.with_for_update(skip_locked=True)
            # compare-and-set: a row another sender took meanwhile no longer matches `due`;
            # a crash mid-send leaves the row to be retried when the lease runs out
            claimed = await session.scalars(
                update(Outbox).where(Outbox.id.in_(candidates.scalar_subquery()), *due)
                .values(state="sending", next_attempt_at=now + lease)
                .returning(Outbox.id).execution_options(synchronize_session=False))
            ids = sorted(claimed)
            rows = list(await session.scalars(select(Outbox).where(Outbox.id.in_(ids))
                                              .order_by(Outbox.id))) if ids else []
            suspended = await _suspended_recipients(session, {row.recipient for row in rows})
        # as many rows at once as gpg has threads: signing one reply while the next is encrypted,
        # instead of one after the other
        slots = asyncio.Semaphore(max(1, self.settings.worker.gpg_threads))

        # each reply goes to the smarthost as soon as it is ready, not after the whole pass
        ready: asyncio.Queue[Ready | None] = asyncio.Queue()

        async def prepare(row: Outbox) -> None:
            async with slots:
                if row.recipient in suspended:  # sent nothing until reinstated
                    await self._hold(row, SUSPENDED_HOLD)
                    return
                with _scope(row):
                    try:
                        prepared = await self._prepare(row)
                    except Exception as exc:
                        log.exception("reply could not be prepared", extra={"outbox_id": row.id})
                        await self._failed_attempt(row, f"{type(exc).__name__}: {exc}")
                        return
                if prepared is not None:
                    ready.put_nowait(prepared)

        async def prepare_all() -> None:
            try:
                await asyncio.gather(*(prepare(row) for row in rows))
            finally:
                ready.put_nowait(None)  # the end of the pass
        preparing = asyncio.ensure_future(prepare_all())
        sent: list[Ready] = []
        try:
            await self._deliver(ready, sent)
        finally:
            await preparing
            await self._record_sent(sent)  # what the smarthost took, even if the pass broke off
        return len(sent)

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

    async def _deliver(self, ready: asyncio.Queue[Ready | None], accepted: list[Ready]) -> None:
        """Hand the replies to the smarthost as they become ready, over one connection (a new one
        after any error), until the end of the pass; adds those it accepted to `accepted`. A reply
        it refuses, or cannot be reached for, is retried later."""
        client: aiosmtplib.SMTP | None = None
        try:
            while (batch := await _ready_now(ready)) is not None:
                for item in await self._not_suspended(batch):
                    with _scope(item.row):
                        try:
                            if client is None:
                                client = self._client()
                                await client.connect()
                            await client.sendmail(item.row.sender, [item.recipient], item.raw)
                        except Exception as exc:
                            if not isinstance(exc, aiosmtplib.SMTPException | OSError | TimeoutError):
                                log.exception("reply could not be sent", extra={"outbox_id": item.row.id})
                            client = await _closed(client)
                            await self._failed_attempt(item.row, f"{type(exc).__name__}: {exc}")
                            continue
                    accepted.append(item)
        finally:
            await _closed(client)

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
        """One transaction for every reply of the pass the smarthost accepted: marked sent, kept
        as the outbound message it was, audited (a crash before it only sends them again)."""
        if not sent:
            return
        now = utcnow()
        async with self.db.transaction() as session:
            await session.execute(update(Outbox), [
                {"id": r.row.id, "state": "sent", "sent_at": now, "attempts": r.row.attempts + 1,
                 "sent_raw": r.raw} for r in sent])
            await session.execute(insert(Message), [
                {"direction": "outbound", "transport": "smtp", "sha256": hashlib.sha256(r.raw).hexdigest(),
                 "raw": r.raw, "size": len(r.raw), "header_message_id": r.row.header_message_id,
                 "envelope_from": r.row.sender, "envelope_to": [r.recipient], "state": "sent",
                 "request_id": r.row.request_id, "received_at": now} for r in sent])
            # a user's address stays out of the audit log: the notice's id says who
            await audit.record_many(session, [
                ("system", "outbox.sent", f"outbox:{r.row.id}",
                 {"kind": r.row.kind, "recipient": r.row.recipient, "message_id": r.row.header_message_id,
                  "request_id": r.row.request_id}) for r in sent])
        for r in sent:
            with _scope(r.row):
                log.info("reply sent", extra={"outbox_id": r.row.id, "kind": r.row.kind})

    async def _suspended_now(self, recipients: set[str]) -> set[str]:
        """Which of these officers (or their agencies) are suspended, as of now."""
        if not recipients:
            return set()
        async with self.db.reading() as session:
            return await _suspended_recipients(session, recipients)

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
