"""IMAP ingress: read a mailbox at the platform's mail provider and hand each message to `ingest`.

Exactly once, without trusting the server or ourselves to stay up:

- A message is unprocessed while it sits in `mailbox` (when `processed_mailbox` is set: we move
  it there) or lacks our keyword `$LersProcessed` (otherwise). \\Seen is never used: people read
  the shared mailbox too.
- Bodies are fetched with `BODY.PEEK[]` (no flag changes), one message at a time, committed
  through `ingest`, and only then moved or flagged, a batch at a time. A crash between the commit
  and the move leaves the message unprocessed on the server; the next pass fetches it again and
  `ingest`'s sha256 dedupe recognises it. Nothing is lost, nothing is processed twice.
- UIDVALIDITY and the last processed UID are kept in `imap_state`. The last UID is a progress
  figure for `lers imap status`, not the source of truth: which messages are unprocessed is always
  asked of the server, so a UIDVALIDITY change (a rebuilt or migrated mailbox) only means a rescan
  whose doubles the dedupe absorbs.
- IDLE when the server offers it (re-issued well inside the 29 minutes RFC 2177 allows), with a
  full pass every `poll_seconds` as a safety net; plain polling otherwise.
- Any failure closes the connection and reconnects with capped exponential back-off; each distinct
  failure is logged once until the account works again.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import re
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import suppress
from typing import Any, TypeVar

import aioimaplib
from sqlalchemy import select

from gateway.clock import utcnow
from gateway.config import ImapAccount, Settings
from gateway.db import Database
from gateway.ingest import ingest
from gateway.models import ImapState

log = logging.getLogger(__name__)

KEYWORD = "$LersProcessed"
IDLE_RENEW_SECONDS = 25 * 60.0  # servers may drop an IDLE after 30 minutes (RFC 2177)
# UIDs per STORE/MOVE/COPY/size FETCH: aioimaplib parses the lines of one read recursively, so a
# response of about a thousand lines (one per message) ends in RecursionError and a dropped link
UIDS_PER_COMMAND = 100
T = TypeVar("T")
_COMMAND_TIMEOUT = -1.0  # _guard's default: the poller's command timeout

_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
_PERMANENTFLAGS = re.compile(rb"\[PERMANENTFLAGS \(([^)]*)\)\]")
_FETCH = re.compile(rb"^\d+ FETCH \(")
_UID = re.compile(rb"\bUID (\d+)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_EXISTS = re.compile(rb"^\* \d+ EXISTS\b", re.IGNORECASE)


class ImapError(Exception):
    """The server refused something we need; the poller disconnects and tries again later."""


class ImapPoller:
    """One IMAP account: connect, drain the mailbox into `ingest`, wait for more, repeat.

    `run(stop)` is the long-running task (one per enabled account); `poll_once()` does one full
    pass on a connection kept open for the next call (tests, or a `--once` command), and `close()`
    ends that connection. The back-off and timeout arguments exist so tests need not wait a minute.
    """

    def __init__(self, settings: Settings, account: ImapAccount, db: Database,
                 on_stored: Callable[[], None] | None = None, *,
                 backoff_base: float = 1.0, backoff_max: float = 60.0,
                 command_timeout: float = 30.0,
                 idle_renew_seconds: float = IDLE_RENEW_SECONDS) -> None:
        self.settings = settings
        self.account = account
        self.db = db
        self.on_stored = on_stored or (lambda: None)
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.timeout = command_timeout
        self.idle_renew_seconds = idle_renew_seconds
        self.max_message_bytes = settings.smtp.max_message_bytes  # the same cap as SMTP ingress
        self.connected = False
        self.connect_attempts = 0
        self.idling = asyncio.Event()  # set while an IDLE is in progress (tests wait for it)
        self._client: aioimaplib.IMAP4 | None = None
        self._capabilities: frozenset[str] = frozenset()
        self._lost = asyncio.Event()
        self._new_mail = asyncio.Event()
        self._tls: ssl.SSLContext | None = None
        self._oversize: set[int] = set()  # UIDs left in the mailbox, warned about once
        self._idle_refused = False
        self._stop: asyncio.Event | None = None  # run()'s stop event: checked between messages
        # progress of a pass, for `lers imap import`: messages found waiting, messages handled
        self.on_waiting: Callable[[int], None] = lambda count: None
        self.on_handled: Callable[[int], None] = lambda count: None

    # -- the long-running task ---------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until `stop` is set. Never raises for a server or network problem, never spins."""
        if not self.account.enabled:
            log.info("IMAP account disabled", extra=self._log_extra())
            return
        self._stop = stop
        failures = 0
        reported: str | None = None  # the failure already logged; cleared once a pass succeeds
        with suppress(Exception):  # a previous process may have died while connected
            await self._record(connected=False)
        while not stop.is_set():
            try:
                if not await _unless_stopped(stop, self._connect()):
                    break
                while not stop.is_set():
                    await self._drain(stop)
                    failures = 0
                    if reported is not None:
                        log.info("IMAP account working again", extra=self._log_extra())
                        reported = None
                    if stop.is_set():
                        break
                    await self._wait_for_mail(stop)
            except Exception as exc:
                failures += 1
                problem = _describe(exc)
                if problem != reported:
                    log.warning("IMAP account failed; retrying with back-off",
                                extra={**self._log_extra(), "error": problem})
                    reported = problem
                else:
                    log.debug("IMAP account still failing", extra={**self._log_extra(), "error": problem})
                with suppress(Exception):
                    await self._record(connected=False, last_error=problem, last_error_at=utcnow())
            finally:
                await self._disconnect()
            if failures and not stop.is_set():
                await _sleep_unless(stop, self._backoff(failures))

    async def poll_once(self) -> int:
        """Connect if need be and process everything waiting; return how many new messages."""
        try:
            if self._client is not None and self._lost.is_set():
                await self._disconnect()  # the server went away since the last call
            if self._client is None:
                await self._connect()
            return await self._drain(None)
        except Exception as exc:
            with suppress(Exception):
                await self._record(connected=False, last_error=_describe(exc), last_error_at=utcnow())
            await self._disconnect()
            raise

    async def close(self) -> None:
        await self._disconnect()

    def _backoff(self, failures: int) -> float:
        delay = min(self.backoff_max, self.backoff_base * 2 ** min(failures - 1, 30))
        return delay * random.uniform(0.5, 1.0)  # several gateways must not retry in step

    def _log_extra(self) -> dict[str, Any]:
        return {"imap_account": self.account.name, "host": self.account.host,
                "mailbox": self.account.mailbox}

    # -- connection ----------------------------------------------------------------------

    async def _connect(self) -> None:
        account = self.account
        self.connect_attempts += 1
        self._lost = asyncio.Event()
        self._new_mail = asyncio.Event()
        self._oversize.clear()
        self._idle_refused = False
        password = await asyncio.to_thread(self.settings.imap_password, account)
        context = await self._tls_context() if account.tls != "none" else None
        lost = self._lost
        client = aioimaplib.IMAP4(host=account.host, port=account.port, timeout=self.timeout,
                                  conn_lost_cb=lambda _exc: lost.set(),
                                  ssl_context=context if account.tls == "implicit" else None)
        self._client = client
        self._watch_for_new_mail(client)
        await self._guard(client.wait_hello_from_server())
        if account.tls == "starttls":
            assert context is not None
            await self._starttls(client, context)
        response = await self._guard(client.login(aioimaplib.quoted(account.username), password))
        if response.result != "OK":
            raise ImapError(f"LOGIN refused: {_text(response)}")
        # the capabilities after login, asked for explicitly (the greeting's list is shorter)
        await self._guard(client.protocol.capability())
        self._capabilities = frozenset(c.upper() for c in client.protocol.capabilities)
        if account.processed_mailbox:
            await self._ensure_mailbox(account.processed_mailbox)
        await self._select()
        self.connected = True
        await self._record(connected=True)
        log.info("IMAP connected", extra={**self._log_extra(), "idle": "IDLE" in self._capabilities})

    async def _tls_context(self) -> ssl.SSLContext:
        """Certificate and host name are always checked; `ca_file` replaces the system's CAs."""
        if self._tls is None:
            cafile = str(self.settings.base_dir / self.account.ca_file) if self.account.ca_file else None

            def make() -> ssl.SSLContext:
                context = ssl.create_default_context(cafile=cafile)
                context.minimum_version = ssl.TLSVersion.TLSv1_2
                return context

            self._tls = await asyncio.to_thread(make)  # reads certificate files
        return self._tls

    async def _starttls(self, client: aioimaplib.IMAP4, context: ssl.SSLContext) -> None:
        """aioimaplib has no STARTTLS: send the command, then upgrade the transport in place.

        Capabilities from before TLS are discarded (they could have been forged) and asked again.
        """
        protocol = client.protocol
        if "STARTTLS" not in {c.upper() for c in protocol.capabilities}:
            raise ImapError("the server does not offer STARTTLS (tls = \"starttls\")")
        command = aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)
        response = await self._guard(protocol.execute(command))
        if response.result != "OK":
            raise ImapError(f"STARTTLS refused: {_text(response)}")
        loop = asyncio.get_running_loop()
        transport = await self._guard(loop.start_tls(protocol.transport, protocol, context,
                                                     server_hostname=self.account.host))
        if transport is None:
            raise ConnectionError("connection closed during the TLS handshake")
        protocol.transport = transport
        protocol.capabilities = set()
        await self._guard(protocol.capability())

    def _watch_for_new_mail(self, client: aioimaplib.IMAP4) -> None:
        """Notice every `* n EXISTS`, not only those aioimaplib hands over during IDLE.

        The server reports new mail at the end of whatever command is running; aioimaplib drops
        such a report unless an IDLE or NOOP is pending. Mail announced at the end of our last
        SEARCH would then wait for the next safety-net poll. This hooks a private method; if
        another aioimaplib version lacks it, IDLE pushes and polls still find the mail.
        """
        protocol = client.protocol
        original = getattr(protocol, "_untagged_response", None)
        if original is None:
            return
        new_mail = self._new_mail

        def untagged(line: bytes) -> Any:
            if _EXISTS.match(line):
                new_mail.set()
            return original(line)

        protocol._untagged_response = untagged

    async def _ensure_mailbox(self, name: str) -> None:
        """Create the processed mailbox on first use (LIST first: CREATE's NO is not specific)."""
        client = self._require_client()
        listed = await self._guard(client.list('""', _mailbox_arg(name)))
        if listed.result == "OK" and any(isinstance(line, bytes) and line.startswith(b"(")
                                         for line in listed.lines[:-1]):
            return
        created = await self._guard(client.create(_mailbox_arg(name)))
        if created.result != "OK" and b"ALREADYEXISTS" not in b" ".join(_bytes_lines(created)):
            raise ImapError(f"cannot create mailbox {name!r}: {_text(created)}")
        log.info("IMAP mailbox created", extra={**self._log_extra(), "new_mailbox": name})

    async def _select(self) -> None:
        client = self._require_client()
        response = await self._guard(client.select(_mailbox_arg(self.account.mailbox)))
        if response.result != "OK":
            raise ImapError(f"SELECT {self.account.mailbox!r} refused: {_text(response)}")
        joined = b"\n".join(_bytes_lines(response))
        if b"[READ-ONLY]" in joined.upper():
            raise ImapError(f"mailbox {self.account.mailbox!r} is read-only for this user")
        found = _UIDVALIDITY.search(joined)
        if found is None:
            raise ImapError("the server did not report UIDVALIDITY")
        uidvalidity = int(found.group(1))
        if not self.account.processed_mailbox:
            flags = _PERMANENTFLAGS.search(joined)
            allowed = flags.group(1).split() if flags else []
            if b"\\*" not in allowed and KEYWORD.encode() not in allowed:
                raise ImapError(f"the server does not keep the {KEYWORD} keyword in "
                                f"{self.account.mailbox!r}; set processed_mailbox instead")
        async with self.db.transaction() as session:
            state = await self._state(session)
            if state.uidvalidity is not None and state.uidvalidity != uidvalidity:
                log.warning("IMAP UIDVALIDITY changed: rescanning the mailbox (the dedupe "
                            "skips messages already stored)",
                            extra={**self._log_extra(), "old": state.uidvalidity, "new": uidvalidity})
                state.last_uid = 0
            state.uidvalidity = uidvalidity

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        self.idling.clear()
        if client is None:
            return
        self.connected = False
        if not self._lost.is_set() and not client.has_pending_idle():
            with suppress(Exception):
                await asyncio.wait_for(client.logout(), min(self.timeout, 5.0))
        transport = client.protocol.transport
        if transport is not None:
            transport.close()
        for task in [*getattr(client, "tasks", ()), *getattr(client.protocol, "tasks", ())]:
            task.cancel()
        with suppress(Exception):
            await self._record(connected=False)

    # -- one pass over the mailbox ---------------------------------------------------------

    async def _drain(self, stop: asyncio.Event | None) -> int:
        """Ingest everything unprocessed, a batch at a time; again while new mail is announced.

        A UID is handled at most once per pass, so a server that accepts our flag but does not
        keep it costs one wasted pass per poll, never a loop.
        """
        new = 0
        handled: set[int] = set()
        while stop is None or not stop.is_set():
            self._new_mail.clear()
            waiting = [uid for uid in await self._search() if uid not in self._oversize]
            todo = [uid for uid in waiting if uid not in handled]
            await self._record(backlog=len(waiting), last_poll_at=utcnow())
            if not todo:
                if self._new_mail.is_set():
                    continue
                break
            self.on_waiting(len(todo))
            for start in range(0, len(todo), self.account.batch_size):
                if stop is not None and stop.is_set():
                    break
                batch = todo[start:start + self.account.batch_size]
                new += await self._process_batch(batch, backlog=len(todo) - start - len(batch))
                handled.update(batch)
                self.on_handled(len(batch))
        return new

    async def _search(self) -> list[int]:
        client = self._require_client()
        criteria = ("ALL",) if self.account.processed_mailbox else ("UNKEYWORD", KEYWORD)
        response = await self._guard(client.uid_search(*criteria, charset=None))
        if response.result != "OK":
            raise ImapError(f"UID SEARCH refused: {_text(response)}")
        uids: set[int] = set()
        for line in _bytes_lines(response)[:-1]:  # the last line is the completion text
            words = line.split()
            if words and words[0].upper() == b"SEARCH":
                words = words[1:]
            uids.update(int(word) for word in words if word.isdigit())
        return sorted(uids)

    async def _process_batch(self, uids: Sequence[int], backlog: int) -> int:
        """Fetch and commit each message, then mark the batch. What was committed is marked
        (and counted) even when a later message of the batch fails."""
        sizes = await self._sizes(uids)
        committed: list[int] = []
        new = 0
        error: Exception | None = None
        try:
            for uid in uids:
                if self._stop is not None and self._stop.is_set():
                    break  # shut down promptly; what was committed is still marked below
                size = sizes.get(uid)
                if size is None:
                    continue  # expunged meanwhile by someone else
                if size > self.max_message_bytes:
                    self._oversize.add(uid)
                    log.warning("IMAP message larger than smtp.max_message_bytes left in the mailbox",
                                extra={**self._log_extra(), "uid": uid, "size": size})
                    await self._record(last_error=f"UID {uid}: {size} bytes is over the size limit; "
                                                  "left in the mailbox", last_error_at=utcnow())
                    continue
                raw = await self._fetch(uid)
                if raw is None:
                    continue
                result = await ingest(self.db, raw, transport="imap", peer=f"imap:{self.account.name}")
                committed.append(uid)
                if not result.duplicate:
                    new += 1
                    self.on_stored()
                log.info("message stored", extra={**self._log_extra(), "uid": uid,
                                                  "message_id": result.message_id,
                                                  "duplicate": result.duplicate, "size": len(raw)})
        except Exception as exc:
            error = exc
        marked = False
        if committed and (error is None or not self._lost.is_set()):
            try:
                await self._mark(committed)
                marked = True
            except Exception as exc:
                error = error or exc
        try:
            async with self.db.transaction() as session:
                state = await self._state(session)
                if marked:
                    state.last_uid = max(state.last_uid or 0, *committed)
                state.messages_ingested = (state.messages_ingested or 0) + new
                if error is None:
                    state.backlog = backlog
                state.last_poll_at = utcnow()
        except Exception:
            if error is None:
                raise
        if error is not None:
            raise error
        return new

    async def _sizes(self, uids: Sequence[int]) -> dict[int, int]:
        """Sizes first, so a message over the limit is never pulled into memory."""
        client = self._require_client()
        sizes: dict[int, int] = {}
        for chunk in _chunks(uids, UIDS_PER_COMMAND):
            response = await self._guard(client.uid("fetch", _uid_set(chunk), "(UID RFC822.SIZE)"),
                                         limit=None)  # aioimaplib times out a silent fetch itself
            if response.result != "OK":
                raise ImapError(f"UID FETCH RFC822.SIZE refused: {_text(response)}")
            for line in _bytes_lines(response):
                uid, size = _UID.search(line), _SIZE.search(line)
                if _FETCH.match(line) and uid and size:
                    sizes[int(uid.group(1))] = int(size.group(1))
        return sizes

    async def _fetch(self, uid: int) -> bytes | None:
        """One message's bytes (`BODY.PEEK[]` leaves \\Seen alone); None if it is gone."""
        client = self._require_client()
        response = await self._guard(client.uid("fetch", str(uid), "BODY.PEEK[]"), limit=None)
        if response.result != "OK":
            raise ImapError(f"UID FETCH {uid} refused: {_text(response)}")
        lines = response.lines
        for index, item in enumerate(lines):
            if not isinstance(item, bytearray) or index == 0:
                continue
            head = lines[index - 1]
            tail = lines[index + 1] if index + 1 < len(lines) else b""
            if not isinstance(head, bytes) or not _FETCH.match(head) or b"BODY[]" not in head.upper():
                continue
            found = _UID.search(head + b" " + (tail if isinstance(tail, bytes) else b""))
            if found is None or int(found.group(1)) == uid:
                return bytes(item)
        return None

    async def _mark(self, uids: Sequence[int]) -> None:
        """Move to the processed mailbox, or set our keyword: only ever after the commit."""
        for chunk in _chunks(uids, UIDS_PER_COMMAND):
            await self._mark_chunk(chunk)

    async def _mark_chunk(self, uids: Sequence[int]) -> None:
        client = self._require_client()
        uid_set = _uid_set(uids)
        target = self.account.processed_mailbox
        if not target:
            await self._ok("UID STORE", client.uid("store", uid_set, "+FLAGS.SILENT", f"({KEYWORD})"))
        elif "MOVE" in self._capabilities:
            await self._ok("UID MOVE", client.uid("move", uid_set, _mailbox_arg(target)))
        else:
            # a crash between COPY and EXPUNGE leaves a second copy in the processed mailbox:
            # harmless, and the message is deduped if it is fetched again
            await self._ok("UID COPY", client.uid("copy", uid_set, _mailbox_arg(target)))
            await self._ok("UID STORE", client.uid("store", uid_set, "+FLAGS.SILENT", "(\\Deleted)"))
            if "UIDPLUS" in self._capabilities:
                await self._ok("UID EXPUNGE", client.uid("expunge", uid_set))
            else:
                await self._ok("EXPUNGE", client.expunge())

    async def _ok(self, what: str, command: Awaitable[Any]) -> None:
        response = await self._guard(command)
        if response.result != "OK":
            raise ImapError(f"{what} refused: {_text(response)}")

    # -- waiting for mail -------------------------------------------------------------------

    async def _wait_for_mail(self, stop: asyncio.Event) -> None:
        """IDLE until mail is announced or the safety-net poll is due; plain wait without IDLE."""
        wait = min(self.account.poll_seconds, self.idle_renew_seconds)
        if "IDLE" not in self._capabilities or self._idle_refused:
            await _first_of([stop, self._lost], wait)
            if self._lost.is_set():
                raise ConnectionError("connection to the IMAP server lost")
            return
        client = self._require_client()
        try:
            idle = await self._guard(client.idle_start(timeout=wait + self.timeout))
        except aioimaplib.Abort as exc:
            # advertised but refused: poll on this connection rather than reconnect in a loop
            log.warning("IMAP server refused IDLE; polling instead",
                        extra={**self._log_extra(), "error": _describe(exc)})
            self._idle_refused = True
            return
        self.idling.set()
        try:
            await _first_of([stop, self._new_mail, self._lost], wait)
        finally:
            self.idling.clear()
        if self._lost.is_set():
            raise ConnectionError("connection to the IMAP server lost")
        if client.has_pending_idle():  # DONE only ends our own IDLE, never a finished one
            client.idle_done()
        response = await self._guard(idle)
        if response.result != "OK":
            raise ImapError(f"IDLE ended with {response.result}: {_text(response)}")
        queue = client.protocol.idle_queue  # the pushes themselves: _new_mail already told us
        while not queue.empty():
            queue.get_nowait()

    # -- helpers ---------------------------------------------------------------------------

    def _require_client(self) -> aioimaplib.IMAP4:
        if self._client is None:
            raise ConnectionError("not connected")
        return self._client

    async def _guard(self, awaitable: Awaitable[T], limit: float | None = _COMMAND_TIMEOUT) -> T:
        """Await an IMAP exchange, but give up as soon as the connection drops.

        aioimaplib leaves a command waiting forever when the server goes away mid-command; the
        connection-lost callback sets `_lost`, which ends the wait here. By default the wait is
        bounded by the command timeout; None relies on the command's own inactivity timer (a
        FETCH of a large message may take long, but never silently).
        """
        if limit == _COMMAND_TIMEOUT:
            limit = self.timeout
        task: asyncio.Future[T] = asyncio.ensure_future(awaitable)
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            await asyncio.wait({task, lost}, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            if not task.done():
                task.cancel()
        if task.done() and not task.cancelled():
            return task.result()
        if self._lost.is_set():
            raise ConnectionError("connection to the IMAP server lost")
        raise TimeoutError(f"no answer from the IMAP server within {limit}s")

    async def _state(self, session: Any) -> ImapState:
        state = await session.get(ImapState, self.account.name)
        if state is None:
            state = ImapState(account=self.account.name, last_uid=0, connected=False,
                              messages_ingested=0)
            session.add(state)
        return state

    async def _record(self, **values: Any) -> None:
        async with self.db.transaction() as session:
            state = await self._state(session)
            for key, value in values.items():
                setattr(state, key, value)


async def imap_status(db: Database, settings: Settings) -> list[dict[str, Any]]:
    """Per configured account, what `lers imap status` shows (plain dicts, JSON-ready).

    `connected` is what the running gateway last wrote; `last_poll_at` tells whether it is fresh.
    """
    async with db.transaction() as session:
        rows = {row.account: row for row in await session.scalars(select(ImapState))}
    out = []
    for account in settings.imap:
        row = rows.get(account.name)
        out.append({
            "name": account.name, "enabled": account.enabled, "host": account.host,
            "port": account.port, "mailbox": account.mailbox,
            "processed_mailbox": account.processed_mailbox or None,
            "connected": bool(row and row.connected),
            "uidvalidity": row.uidvalidity if row else None,
            "last_uid": row.last_uid if row else None,
            "backlog": row.backlog if row else None,
            "messages_ingested": row.messages_ingested if row else 0,
            "last_error": row.last_error if row else None,
            "last_error_at": row.last_error_at.isoformat() if row and row.last_error_at else None,
            "last_poll_at": row.last_poll_at.isoformat() if row and row.last_poll_at else None,
        })
    return out


# -- small pure helpers ------------------------------------------------------------------


async def _unless_stopped(stop: asyncio.Event, work: Awaitable[None]) -> bool:
    """Run `work` unless `stop` is set first (then cancel it); True if it completed."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not task.done():
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        return False
    task.result()  # re-raises the connection's failure
    return True


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _first_of(events: Iterable[asyncio.Event], seconds: float) -> None:
    """Return when any event is set or after `seconds`."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def _chunks(items: Sequence[int], size: int) -> list[Sequence[int]]:
    return [items[start:start + size] for start in range(0, len(items), size)]


def _uid_set(uids: Iterable[int]) -> str:
    """`1:3,7,9:10`: short command lines even for a large batch."""
    ordered = sorted(set(uids))
    ranges: list[str] = []
    start = previous = ordered[0]
    for uid in ordered[1:]:
        if uid != previous + 1:
            ranges.append(f"{start}:{previous}" if start != previous else str(start))
            start = uid
        previous = uid
    ranges.append(f"{start}:{previous}" if start != previous else str(start))
    return ",".join(ranges)


def _mailbox_arg(name: str) -> str:
    """A mailbox name as a quoted IMAP string, non-ASCII in modified UTF-7 (RFC 3501 5.1.3)."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            encoded = base64.b64encode("".join(pending).encode("utf-16-be")).rstrip(b"=")
            out.append("&" + encoded.decode("ascii").replace("/", ",") + "-")
            pending.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return aioimaplib.quoted("".join(out))


def _bytes_lines(response: Any) -> list[bytes]:
    return [bytes(line) for line in response.lines if isinstance(line, bytes)]


def _text(response: Any) -> str:
    lines = _bytes_lines(response)
    return (lines[-1] if lines else b"").decode("utf-8", "replace")[:300]


def _describe(exc: BaseException) -> str:
    """One stable line per kind of failure: the same failure repeated logs once."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
