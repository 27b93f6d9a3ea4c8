"""SMTP ingress: a thin aiosmtpd handler over `ingest`.

Unknown recipients are refused at RCPT, the size limit is enforced by aiosmtpd (552), and 250 is
answered only after the raw bytes are committed; a storage failure answers 451 so the sending
server keeps the message and tries again.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from gateway.config import ConfigError, Settings
from gateway.db import Database
from gateway.ingest import GroupCommit
from gateway.pgp import OpenPGP
from gateway.smtpdata import SpoolingSMTP
from gateway.spool import Spool
from gateway.triage import NORMAL, priority

log = logging.getLogger(__name__)


class RateLimit:
    """At most `limit` events per key in any sliding minute (memory bounded by the keys seen)."""

    def __init__(self, limit: int, window_seconds: float = 60.0) -> None:
        self.limit, self.window = limit, window_seconds
        self.events: dict[str, deque[float]] = {}

    def allow(self, key: str) -> bool:
        if not self.limit:
            return True
        now = time.monotonic()
        events = self.events.setdefault(key, deque())
        while events and now - events[0] > self.window:
            events.popleft()
        if len(events) >= self.limit:
            return False
        events.append(now)
        if len(self.events) > 100_000:  # forget idle keys rather than grow without bound
            self.events = {k: v for k, v in self.events.items() if v and now - v[-1] <= self.window}
        return True


class SmtpIngress:
    """The aiosmtpd handler (see aiosmtpd's handler API: handle_MAIL, handle_RCPT, handle_DATA)."""

    def __init__(self, settings: Settings, db: Database, on_stored: Callable[[], None],
                 pgp: OpenPGP | None = None) -> None:
        self.recipients = settings.recipients
        self.pgp = pgp  # for triage: without it, every message has the normal priority
        self.known: frozenset[str] = frozenset()
        self.known_at = -1e9
        self._refreshing: asyncio.Task[None] | None = None
        self.db = db
        self.writer = GroupCommit(db)  # messages arriving together share one commit
        self.on_stored = on_stored
        self.per_client = RateLimit(settings.smtp.max_messages_per_minute_per_client)
        self.per_sender = RateLimit(settings.smtp.max_messages_per_minute_per_sender)

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          mail_options: list[str]) -> str:
        client = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        if not self.per_client.allow(client):
            log.warning("rate limit: sender told to retry later", extra={"peer": client})
            return TOO_MANY
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        self.writer.starting(session)
        return "250 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if address.lower() not in self.recipients:
            return f"550 5.1.1 <{address}>: no such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw: bytes | Spool | None = getattr(envelope, "spool", None)  # from SpoolingSMTP
        if raw is None:
            raw = envelope.original_content or b""
        head = raw.head if isinstance(raw, Spool) else raw
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        try:
            rank = await self.triage(head, raw)
            # the envelope sender is anyone's to claim: a flood in an officer's name must not use
            # up the officer's own mail's share, so mail that looks signed by a key we hold is not
            # limited by its sender (its client still is, at MAIL FROM)
            if rank != NORMAL and not self.per_sender.allow((envelope.mail_from or "").lower()):
                log.warning("rate limit: sender told to retry later", extra={"peer": peer})
                return TOO_MANY
            result = await self.writer.store(raw, transport="smtp", peer=peer,
                                             envelope_from=envelope.mail_from,
                                             envelope_to=list(envelope.rcpt_tos), priority=rank)
        except Exception:
            log.exception("could not store an inbound message", extra={"peer": peer})
            return "451 4.3.0 Temporarily unable to store the message, try again later"
        finally:
            self.writer.finished(session)
        self.on_stored()  # the writer logged the message with the rest of its commit
        return f"250 2.0.0 Stored as message {result.message_id}"


    async def triage(self, head: bytes, whole: bytes | Spool) -> int:
        """The job's priority (gateway/triage.py); the keyring's key ids are re-read at most every
        KNOWN_SECONDS (a key added meanwhile only costs its first messages their place). A spooled
        message is judged by its head and its last chunk (where a PGP/MIME signature is)."""
        if self.pgp is None:
            return NORMAL
        if time.monotonic() - self.known_at > KNOWN_SECONDS and (
                self._refreshing is None or self._refreshing.done()):
            self._refreshing = asyncio.create_task(self._refresh_known())
        if not self.known:  # the first messages wait for the list
            await asyncio.shield(self._refreshing)
        if isinstance(whole, Spool) and whole.spooled:
            return min(priority(head, self.known), priority(whole.tail, self.known))
        return priority(head, self.known)

    async def _refresh_known(self) -> None:
        assert self.pgp is not None
        self.known_at = time.monotonic()
        try:
            self.known = await self.pgp.known_key_ids()
        except Exception:
            log.exception("could not list the keyring's keys for triage")


KNOWN_SECONDS = 30.0
TOO_MANY = "451 4.7.1 Too many messages; try again later"


def smtp_factory(handler: SmtpIngress, settings: Settings) -> Callable[[], Any]:
    """aiosmtpd sessions; STARTTLS offered with the configured certificate, required if asked."""
    tls_context = None
    if settings.smtp.tls_cert_file:
        tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls_context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            tls_context.load_cert_chain(settings.base_dir / settings.smtp.tls_cert_file,
                                        settings.base_dir / settings.smtp.tls_key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"smtp.tls_cert_file / tls_key_file: cannot load: {exc}") from exc

    def make() -> SMTP:
        return SpoolingSMTP(handler, spool_dir=settings.data_dir / "spool",
                            data_size_limit=settings.smtp.max_message_bytes,
                            enable_SMTPUTF8=True, decode_data=False,
                            hostname=settings.gateway.address.rpartition("@")[2],
                            ident="lers-gateway", tls_context=tls_context,
                            require_starttls=settings.smtp.require_tls)
    return make
