"""IMAP ingress against a real Dovecot on loopback: exactly once, through restarts and crashes.

Each test gets its own Dovecot (tests/support/dovecot.py) and, except the end-to-end one, a bare
database: the poller needs nothing else, and 2,000 junk messages must not wake gpg workers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aioimaplib
import pytest
from sqlalchemy import func, select

from gateway.config import ImapAccount, Settings
from gateway.db import Database
from gateway.imap import KEYWORD, ImapPoller, imap_status
from gateway.models import ImapState, Job, Message
from gateway.vault import Vault, new_data_key
from tests.conftest import GatewayFactory, short_tempdir
from tests.support.dovecot import Dovecot, dovecot_binary, make_certificate
from tests.support.mail_factory import Attachment, pdf_bytes, request_body, signed_request_mail
from tests.support.officer_keys import TestKey

PROCESSED = "Processed"


@pytest.fixture
async def dovecot() -> AsyncIterator[Dovecot]:
    dovecot_binary()  # fails in CI, skips elsewhere, when Dovecot cannot run here
    root = short_tempdir("dovecot-")
    server = Dovecot(root)
    await server.start()
    yield server
    await server.kill()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def db(database_urls: Callable[[], str | None]) -> AsyncIterator[Database]:
    """SQLite, or PostgreSQL in the suite's PostgreSQL half (LERS_TEST_BACKEND=postgresql)."""
    root = short_tempdir("lers-imap-")
    database = Database(database_urls() or f"sqlite+aiosqlite:///{root}/lers.db")
    await database.ensure_schema()
    key_id, key = new_data_key()  # what open_core would unwrap with gpg
    database.vault = Vault({key_id: key}, key_id)
    yield database
    await database.dispose()
    shutil.rmtree(root, ignore_errors=True)


def account_for(server: Dovecot, **overrides: Any) -> ImapAccount:
    values: dict[str, Any] = {
        "name": "provider", "host": "127.0.0.1", "port": server.port, "tls": "none",
        "username": server.user, "password": server.password, "mailbox": "INBOX",
        "processed_mailbox": "", "poll_seconds": 60.0, "batch_size": 50,
    }
    values.update(overrides)
    return ImapAccount(**values)


def poller_for(server: Dovecot, db: Database, on_stored: Callable[[], None] | None = None,
               settings: Settings | None = None, **overrides: Any) -> ImapPoller:
    account = account_for(server, **overrides)
    settings = dataclasses.replace(settings or Settings(), imap=(account,))
    return ImapPoller(settings, account, db, on_stored, backoff_base=0.05, backoff_max=0.4,
                      command_timeout=10.0)


def mail(index: int, size: int = 0) -> bytes:
    """A small distinct message (the gateway would quarantine it; the poller does not care)."""
    padding = b"".join(b"x" * 70 + b"\r\n" for _ in range(size // 72))
    return (f"From: officer{index}@police.test\r\nTo: lers@gateway.test\r\n"
            f"Subject: message {index}\r\nMessage-ID: <m{index}@police.test>\r\n\r\n"
            f"body {index}\r\n").encode() + padding


async def count(db: Database, model: type, *where: Any) -> int:
    async with db.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def state_of(db: Database, name: str = "provider") -> ImapState:
    async with db.transaction() as session:
        state = await session.get(ImapState, name)
        assert state is not None
        return state


async def until(condition: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    """A bounded poll on a condition (for state that has no event to wait on)."""
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(0.02)


@asynccontextmanager
async def running(poller: ImapPoller) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run(stop), name="imap-poller")
    try:
        yield task
    finally:
        stop.set()
        done, _ = await asyncio.wait({task}, timeout=15)
        assert task in done, "the poller did not stop within 15s of its stop event"
        if not task.cancelled():
            task.result()  # run() must never raise


def without_capability(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make the server look as if it lacked a capability (as many providers do)."""
    original = aioimaplib.IMAP4ClientProtocol.capability

    async def capability(self: aioimaplib.IMAP4ClientProtocol) -> None:
        await original(self)
        self.capabilities.discard(name)

    monkeypatch.setattr(aioimaplib.IMAP4ClientProtocol, "capability", capability)


# -- end to end ------------------------------------------------------------------------


async def test_signed_request_in_the_mailbox_is_acknowledged(
        make_gateway: GatewayFactory, alice: TestKey, dovecot: Dovecot,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway.imap")  # every log call really formatted
    harness = await make_gateway()
    await harness.enrol(alice)
    subpoena = Attachment("subpoena.pdf", "application/pdf", pdf_bytes("Grand jury subpoena 2026-CR-0042"))
    request = signed_request_mail(harness.ring, alice, from_addr=alice.email, body=request_body(),
                                  attachments=[subpoena], message_id="<imap-1@police.test>")
    await dovecot.append([request])
    poller = poller_for(dovecot, harness.core.db, harness.gateway.worker.wakeup.set,
                        settings=harness.settings, processed_mailbox=PROCESSED)
    async with running(poller):
        await until(lambda: _one(dovecot, PROCESSED), 10, "the request moved to the processed mailbox")
        status = await imap_status(harness.core.db, poller.settings)
        assert status[0]["connected"] is True
    await harness.settle()

    [registered] = await harness.requests()
    assert registered["officer"] == alice.email and registered["status"] == "received"
    [reply] = harness.replies(to=alice.email)
    assert reply.subject == f"[{registered['ref']}] Request received"
    assert reply.outer["In-Reply-To"] == "<imap-1@police.test>"
    async with harness.core.db.transaction() as session:
        [stored] = (await session.scalars(select(Message).where(Message.direction == "inbound"))).all()
    assert stored.transport == "imap" and stored.peer == "imap:provider" and stored.raw == request

    assert await dovecot.count("INBOX") == 0
    assert await dovecot.bodies(PROCESSED) == [request]  # byte for byte
    assert await dovecot.count(PROCESSED, "UNSEEN") == 1  # BODY.PEEK[]: people still see it unread

    never = account_for(dovecot, name="never-started")
    [status, other] = await imap_status(harness.core.db, Settings(imap=(poller.account, never)))
    assert other["name"] == "never-started" and other["connected"] is False
    assert other["last_uid"] is None and other["messages_ingested"] == 0
    assert status["name"] == "provider" and status["mailbox"] == "INBOX"
    assert status["connected"] is False  # stopped
    assert status["uidvalidity"] == await dovecot.uidvalidity("INBOX")
    assert status["last_uid"] == 1 and status["backlog"] == 0 and status["messages_ingested"] == 1
    assert status["last_error"] is None and status["last_poll_at"] is not None
    assert any(r.getMessage() == "IMAP mailbox created" for r in caplog.records)


async def _one(server: Dovecot, mailbox: str) -> bool:
    return await server.count(mailbox, missing_ok=True) == 1


# -- waiting for mail ------------------------------------------------------------------


async def test_idle_picks_up_new_mail_within_a_second(db: Database, dovecot: Dovecot) -> None:
    stored = asyncio.Event()
    poller = poller_for(dovecot, db, stored.set, poll_seconds=60.0)  # only IDLE can be this quick
    async with running(poller):
        await asyncio.wait_for(poller.idling.wait(), 10)
        started = time.monotonic()
        await dovecot.append([mail(1)])
        await asyncio.wait_for(stored.wait(), 5)
        elapsed = time.monotonic() - started
    assert elapsed < 1.0, f"IDLE took {elapsed:.2f}s"
    assert await count(db, Message) == 1
    assert await dovecot.count("INBOX", f"UNKEYWORD {KEYWORD}") == 0
    assert await dovecot.count("INBOX", "UNSEEN") == 1  # our keyword, never \Seen


async def test_without_idle_the_mailbox_is_polled(db: Database, dovecot: Dovecot,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    without_capability(monkeypatch, "IDLE")
    idles = record_idle_starts(monkeypatch)
    stored = asyncio.Event()
    poller = poller_for(dovecot, db, stored.set, poll_seconds=0.3)
    async with running(poller):
        await until(lambda: _connected(poller), 10, "connected")
        await dovecot.append([mail(1)])
        await asyncio.wait_for(stored.wait(), 5)
    assert idles == []
    assert await count(db, Message) == 1


async def test_idle_is_renewed_and_mail_still_arrives(db: Database, dovecot: Dovecot,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Servers end an IDLE after 30 minutes; the poller ends and re-issues it well before."""
    idles = record_idle_starts(monkeypatch)
    stored = asyncio.Event()
    poller = poller_for(dovecot, db, stored.set, poll_seconds=60.0)
    poller.idle_renew_seconds = 0.1
    async with running(poller):
        await until(lambda: _at_least(idles, 4), 10, "IDLE re-issued")
        await dovecot.append([mail(1)])
        await asyncio.wait_for(stored.wait(), 5)
    assert await count(db, Message) == 1 and poller.connect_attempts == 1


def record_idle_starts(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    calls: list[float] = []
    original = aioimaplib.IMAP4.idle_start

    async def idle_start(self: aioimaplib.IMAP4, *args: Any, **kwargs: Any) -> Any:
        calls.append(time.monotonic())
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(aioimaplib.IMAP4, "idle_start", idle_start)
    return calls


async def _at_least(items: list[Any], n: int) -> bool:
    return len(items) >= n


async def _connected(poller: ImapPoller) -> bool:
    return poller.connected


# -- never lose, never double ----------------------------------------------------------


async def test_server_restart_mid_run_loses_and_doubles_nothing(
        db: Database, dovecot: Dovecot, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.imap")
    dovecot.deliver_to_maildir(mail(i) for i in range(300))
    stored = 0

    def on_stored() -> None:
        nonlocal stored
        stored += 1

    async def stored_at_least(n: int) -> bool:
        return stored >= n

    poller = poller_for(dovecot, db, on_stored, batch_size=25)
    async with running(poller):
        await until(lambda: stored_at_least(60), 20, "the first batches stored")
        await dovecot.stop()  # mid-run: the poller is fetching and flagging
        await until(lambda: _disconnected(poller), 10, "the poller noticed the server went away")
        attempts = poller.connect_attempts
        down_since = time.monotonic()
        await until(lambda: _attempts_at_least(poller, attempts + 3), 10, "reconnect attempts")
        down_for = time.monotonic() - down_since
        await dovecot.start()
        await dovecot.append([mail(i) for i in range(300, 305)])
        await until(lambda: _all_flagged(dovecot, 305), 30, "every message flagged")
        await until(lambda: _stored(db, 305), 10, "every message stored")

    assert await count(db, Message) == 305
    assert await count(db, Job) == 305  # one job per message: nothing processed twice
    assert {m.decode() for m in await dovecot.bodies()} == {mail(i).decode() for i in range(305)}
    state = await state_of(db)
    assert state.messages_ingested == 305 and state.backlog == 0 and state.last_uid == 305
    assert state.last_error is not None and state.connected is False

    # back-off, not a spin: three retries took a while (0.05 s doubling, with jitter)
    assert down_for >= 0.05 * (1 + 2 + 4) * 0.5
    errors = [r.__dict__["error"] for r in caplog.records
              if r.getMessage().startswith("IMAP account failed")]
    assert errors and len(errors) == len(set(errors)), errors  # each distinct failure once...
    assert poller.connect_attempts - attempts > len(errors)  # ...however often it is retried
    assert any(r.getMessage() == "IMAP account working again" for r in caplog.records)


async def _disconnected(poller: ImapPoller) -> bool:
    return not poller.connected


async def _attempts_at_least(poller: ImapPoller, n: int) -> bool:
    return poller.connect_attempts >= n


async def _all_flagged(server: Dovecot, total: int) -> bool:
    return (await server.count("INBOX", f"KEYWORD {KEYWORD}") == total
            and await server.count("INBOX", f"UNKEYWORD {KEYWORD}") == 0)


async def _stored(db: Database, total: int) -> bool:
    return await count(db, Message) == total


class Crash(BaseException):
    """Not an Exception: nothing in the poller may catch it, as nothing survives a real crash."""


@pytest.mark.parametrize("move", [True, False], ids=["uid-move", "copy-store-expunge"])
async def test_crash_between_commit_and_move(db: Database, dovecot: Dovecot, move: bool,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    if not move:
        without_capability(monkeypatch, "MOVE")
    await dovecot.append([mail(1), mail(2)])

    def crash() -> None:  # the moment ingest has committed, the process dies
        raise Crash

    first = poller_for(dovecot, db, crash, processed_mailbox=PROCESSED, batch_size=1)
    with pytest.raises(Crash):
        await asyncio.wait_for(first.run(asyncio.Event()), 10)
    assert await count(db, Message) == 1  # committed...
    assert await dovecot.count("INBOX") == 2 and await dovecot.count(PROCESSED) == 0  # ...not moved

    second = poller_for(dovecot, db, processed_mailbox=PROCESSED, batch_size=1)  # the restart
    assert await second.poll_once() == 1  # the other message; the first is a duplicate
    await second.close()
    assert await count(db, Message) == 2 and await count(db, Job) == 2
    assert await dovecot.count("INBOX") == 0
    assert sorted(await dovecot.bodies(PROCESSED)) == sorted([mail(1), mail(2)])  # one copy each


async def test_uidvalidity_change_rescans_without_doubles(db: Database, dovecot: Dovecot) -> None:
    mailbox = "Requests"
    await dovecot.create(mailbox)
    await dovecot.append([mail(1), mail(2), mail(3)], mailbox)
    poller = poller_for(dovecot, db, mailbox=mailbox)
    assert await poller.poll_once() == 3
    await poller.close()
    before = await state_of(db)
    assert before.last_uid == 3

    # the provider rebuilds the mailbox: new UIDVALIDITY, UIDs from 1 again, our keyword gone
    await dovecot.recreate(mailbox, [mail(2), mail(4)])
    assert await dovecot.uidvalidity(mailbox) != before.uidvalidity

    assert await poller.poll_once() == 1  # mail(4); mail(2) is recognised and only flagged
    await poller.close()
    after = await state_of(db)
    assert after.uidvalidity == await dovecot.uidvalidity(mailbox)
    assert after.last_uid == 2  # reset, then advanced in the new numbering
    assert await count(db, Message) == 4 and await count(db, Job) == 4
    assert await dovecot.count(mailbox, f"UNKEYWORD {KEYWORD}") == 0


# -- TLS ---------------------------------------------------------------------------------


@pytest.mark.parametrize("tls", ["implicit", "starttls"])
async def test_tls_with_a_certificate_made_at_test_time(db: Database, dovecot: Dovecot, tls: str) -> None:
    await dovecot.append([mail(1)])
    port = dovecot.tls_port if tls == "implicit" else dovecot.port
    poller = poller_for(dovecot, db, tls=tls, port=port, host="localhost",
                        ca_file=str(dovecot.cert_file))
    assert await poller.poll_once() == 1
    await poller.close()
    assert await dovecot.count("INBOX", f"KEYWORD {KEYWORD}") == 1


async def test_an_untrusted_certificate_is_refused_and_logged_once(
        db: Database, dovecot: Dovecot, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.imap")
    other_ca, _ = make_certificate(dovecot.root / "other-ca", common_name="someone else")
    await dovecot.append([mail(1)])
    poller = poller_for(dovecot, db, tls="implicit", port=dovecot.tls_port, ca_file=str(other_ca))
    async with running(poller):
        await until(lambda: _attempts_at_least(poller, 4), 10, "several attempts")
    failures = [r for r in caplog.records if r.getMessage().startswith("IMAP account failed")]
    assert len(failures) == 1
    state = await state_of(db)
    assert "CERTIFICATE_VERIFY_FAILED" in (state.last_error or "")
    assert state.connected is False and state.last_error_at is not None
    assert await count(db, Message) == 0 and await dovecot.count("INBOX", f"UNKEYWORD {KEYWORD}") == 1


# -- large mailboxes -----------------------------------------------------------------------


async def test_two_thousand_waiting_messages_in_batches(db: Database, dovecot: Dovecot) -> None:
    total, batch = 2000, 500
    dovecot.deliver_to_maildir(mail(i, size=2000) for i in range(total))
    poller = poller_for(dovecot, db, batch_size=batch)
    batches: list[int] = []
    process_batch = poller._process_batch

    async def recording(uids: Sequence[int], backlog: int) -> int:
        batches.append(len(uids))
        return await process_batch(uids, backlog)

    poller._process_batch = recording  # type: ignore[method-assign]
    assert await poller.poll_once() == total
    await poller.close()
    assert batches == [batch] * (total // batch)
    assert await count(db, Message) == total and await count(db, Job) == total
    assert await dovecot.count("INBOX", f"UNKEYWORD {KEYWORD}") == 0
    state = await state_of(db)
    assert state.last_uid == total and state.backlog == 0 and state.messages_ingested == total


async def test_the_gateway_reads_the_mailboxes_in_its_config(
        make_gateway: GatewayFactory, alice: TestKey, dovecot: Dovecot) -> None:
    """The [[imap]] account in config.toml is polled by the running gateway itself (its `imap`
    role, under the account's lease), and `lers imap status` reports on it."""
    harness = await make_gateway(config_toml=(
        f'[[imap]]\nname = "provider"\nhost = "127.0.0.1"\nport = {dovecot.port}\ntls = "none"\n'
        f"username = {json.dumps(dovecot.user)}\npassword = {json.dumps(dovecot.password)}\n"
        f'processed_mailbox = "{PROCESSED}"\npoll_seconds = 1\n'))
    await harness.enrol(alice)
    await dovecot.append([signed_request_mail(harness.ring, alice, from_addr=alice.email,
                                              body=request_body(type="preservation"))])
    await until(lambda: _one(dovecot, PROCESSED), 15, "the gateway moved the request")
    await harness.settle()
    [registered] = await harness.requests()
    [reply] = harness.replies(to=alice.email)
    assert reply.subject == f"[{registered['ref']}] Request received"
    from gateway.cli import _imap_line

    async def status_written() -> bool:  # the poller records its state just after moving the mail
        [status] = await imap_status(harness.core.db, harness.settings)
        return status["last_uid"] == 1

    await until(status_written, 15, "the poller recorded the last UID")
    [status] = await imap_status(harness.core.db, harness.settings)
    line = _imap_line(status)
    assert line.startswith(f"provider  connected  127.0.0.1:{dovecot.port}/INBOX  last UID 1  backlog 0")
