"""Shared fixtures: officers' keys, a real gateway on loopback, and a real smarthost sink.

The gateway runs in the test's event loop with its own data dir (SQLite file, keyring with a
freshly generated gateway key). Replies go to an aiosmtpd sink standing in for the smarthost;
tests decrypt them with the officers' keys exactly as an officer's mail client would.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import io
import logging
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message as EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import aiosmtplib
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import func, select

from gateway.app import Core, Gateway, open_core
from gateway.config import Settings, load_settings
from gateway.logs import JsonFormatter, setup_logging
from gateway.models import Job, Message, Outbox
from gateway.records import list_quarantine, list_requests
from handlers.enrolment import add_agency, add_officer
from tests.support.officer_keys import OfficerKeyring, TestKey
from tests.support.postgres import PostgresCluster, PostgresUnavailable
from tests.support.secrets import SECRETS

GATEWAY_ADDRESS = "lers@gateway.test"
AGENCY = "Test Police"
# `LERS_TEST_BACKEND=postgresql` runs every test that starts a gateway against PostgreSQL.
BACKEND = os.environ.get("LERS_TEST_BACKEND", "sqlite")
GATEWAY_FIXTURES = {"database_urls"}  # every gateway a test starts gets its database here


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On PostgreSQL, run the tests that start gateways; the rest do not depend on the backend."""
    if BACKEND != "postgresql":
        return
    selected = [i for i in items if GATEWAY_FIXTURES & set(getattr(i, "fixturenames", ()))
                and not i.get_closest_marker("sqlite_only")]
    config.hook.pytest_deselected(items=[i for i in items if i not in selected])
    items[:] = selected


@pytest.fixture(scope="session")
def database_urls() -> Iterator[Callable[[], str | None]]:
    """New empty databases: None (an SQLite file in the data dir) or a fresh PostgreSQL database."""
    if BACKEND != "postgresql":
        yield lambda: None
        return
    try:
        cluster = PostgresCluster()
    except PostgresUnavailable as exc:
        if os.environ.get("LERS_REQUIRE_POSTGRES"):
            pytest.fail(f"LERS_REQUIRE_POSTGRES is set, but {exc}")
        pytest.skip(f"LERS_TEST_BACKEND=postgresql, but {exc}")
    cluster.start()
    yield cluster.new_database
    cluster.stop()


class _EveryLogLine(logging.Handler):
    """Every line the gateway logs in this test process, formatted as in production (JSON)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.lines.append(self.format(record))


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_log() -> Iterator[None]:
    """At the end of the run: no registered secret appears in any log line of any test."""
    root = logging.getLogger()
    handler, saved_level = _EveryLogLine(), root.level
    root.addHandler(handler)
    root.setLevel(min(saved_level, logging.INFO))
    yield
    root.removeHandler(handler)
    root.setLevel(saved_level)
    leaked = sorted({s for s in SECRETS for line in handler.lines if s in line})
    if leaked:
        pytest.fail(f"{len(leaked)} secret(s) appear in the logs of this run", pytrace=False)


@contextmanager
def production_logs() -> Iterator[io.StringIO]:
    """The gateway's own log set-up (JSON lines, INFO), written to a buffer a test can search."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_levels = {name: logging.getLogger(name).level for name in logging.root.manager.loggerDict}
    buffer = io.StringIO()
    setup_logging()
    root.handlers[0].setStream(buffer)  # type: ignore[attr-defined]
    try:
        yield buffer
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        for name, level in saved_levels.items():
            logging.getLogger(name).setLevel(level)


def short_tempdir(prefix: str) -> Path:
    """gpg-agent's socket path must stay short, so not pytest's deep tmp_path."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def officer_ring() -> Iterator[OfficerKeyring]:
    home = short_tempdir("ring-")
    ring = OfficerKeyring(home / "gnupg")
    yield ring
    ring.close()
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def alice(officer_ring: OfficerKeyring) -> TestKey:
    return officer_ring.create_key("alice@police.test", "Alice Officer")


@pytest.fixture(scope="session")
def bob(officer_ring: OfficerKeyring) -> TestKey:
    return officer_ring.create_key("bob@police.test", "Bob Officer")


@dataclass
class SinkHandler:
    """The smarthost: keeps every message it is handed; can be told to refuse for a while."""

    received: list[Envelope] = field(default_factory=list)
    peers: list[object] = field(default_factory=list)  # the connection each one came over
    refuse: bool = False

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.refuse:
            return "451 4.3.0 smarthost busy"
        self.received.append(envelope)
        self.peers.append(session.peer)
        return "250 OK"


@dataclass
class Harness:
    """A running gateway plus the means to talk to it the way officers and operators do."""

    settings: Settings
    core: Core
    gateway: Gateway
    sink: SinkHandler
    ring: OfficerKeyring
    sink_server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.gateway.smtp_port is not None
        return self.gateway.smtp_port

    async def send(
        self, raw: bytes, *, rcpt: str = GATEWAY_ADDRESS, mail_from: str = "sender@police.test"
    ) -> tuple[int, str]:
        """Deliver over real SMTP; returns the server's final reply (code, text)."""
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=self.port, timeout=20) as client:
            try:
                await client.ehlo()
                await client.mail(mail_from)
                await client.rcpt(rcpt)
                response = await client.data(raw)
            except aiosmtplib.SMTPResponseException as refused:
                return refused.code, refused.message
        return response.code, response.message

    async def http_get(self, path: str) -> tuple[int, str]:
        """GET the operators' health/metrics endpoint over real HTTP: (status, body)."""
        assert self.gateway.health is not None and self.gateway.health.port is not None
        url = f"http://127.0.0.1:{self.gateway.health.port}{path}"
        async with aiohttp.ClientSession() as client, client.get(url) as response:
            return response.status, await response.text()

    async def enrol(self, key: TestKey, agency: str = AGENCY) -> None:
        async with self.core.db.transaction() as session:
            from gateway.models import Agency

            exists = await session.scalar(select(Agency).where(Agency.name == agency))
        if exists is None:
            await add_agency(self.core, agency, domain="police.test", country="XX")
        await add_officer(self.core, key.email, agency, key.public_armored, key.name)

    async def import_key(self, armored: bytes) -> None:
        await self.core.pgp.import_public_key(armored)

    async def settle(self, within: float = 30.0) -> None:
        """Wait until no job is queued or running and no reply is pending and due (bounded)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            async with self.core.db.transaction() as session:
                jobs = await session.scalar(
                    select(func.count()).select_from(Job).where(Job.state.in_(["queued", "running"]))
                )
                pending = await session.scalar(
                    select(func.count()).select_from(Outbox).where(
                        Outbox.state.in_(["pending", "sending"]))
                )
            if not jobs and (not pending or self.sink.refuse):
                return
            self.gateway.worker.wakeup.set()
            self.gateway.outbox.wakeup.set()
            await asyncio.sleep(0.05)
        raise AssertionError(f"gateway did not settle within {within}s")

    async def stop_workers(self) -> None:
        """Stop the job workers and the outbox, leaving SMTP ingress running."""
        self.gateway.stop_event.set()
        await asyncio.gather(*self.gateway.tasks)

    async def message(self, message_id: int) -> Message:
        async with self.core.db.transaction() as session:
            found = await session.get(Message, message_id)
            assert found is not None
            return found

    async def quarantine(self) -> list[dict[str, Any]]:
        return await list_quarantine(self.core.db)

    async def requests(self) -> list[dict[str, Any]]:
        return await list_requests(self.core.db)

    def replies(self, to: str | None = None) -> list[Reply]:
        """Every message to officers the smarthost got (for `to`), decrypted with their keys."""
        out = []
        for envelope in self.sink.received:
            if to is not None and to not in envelope.rcpt_tos:
                continue
            if is_user_notice(envelope):
                continue
            out.append(Reply.open(envelope, self.ring))
        return out

    def notices(self, to: str | None = None) -> list[EmailMessage]:
        """The notices to the platform's users the smarthost got, as their mail client sees them."""
        return [email.message_from_bytes(e.original_content or b"", policy=email.policy.default)
                for e in self.sink.received
                if is_user_notice(e) and (to is None or to in e.rcpt_tos)]


def is_user_notice(envelope: Envelope) -> bool:
    """Notices go to the platform's users in clear (multipart/alternative), never to officers."""
    head = (envelope.original_content or b"").split(b"\r\n\r\n", 1)[0].lower()
    return b"multipart/alternative" in head and "@police.test" not in " ".join(envelope.rcpt_tos)


@dataclass
class Reply:
    """One reply as the officer's mail client sees it: outer headers and the decrypted inside."""

    outer: EmailMessage
    inner: EmailMessage
    signed_by: str | None
    rcpt_tos: list[str]

    @classmethod
    def open(cls, envelope: Envelope, ring: OfficerKeyring) -> Reply:
        raw = envelope.original_content or b""
        outer = email.message_from_bytes(raw)
        assert outer.get_content_type() == "multipart/encrypted"
        parts = outer.get_payload()
        assert isinstance(parts, list) and len(parts) == 2
        ciphertext = parts[1].get_payload(decode=True)
        plaintext, status = ring.decrypt_with_status(ciphertext)
        valid = status.lines("VALIDSIG")
        signed_by = valid[0][-1] if valid and status.has("GOODSIG") else None
        return cls(outer, email.message_from_bytes(plaintext), signed_by, list(envelope.rcpt_tos))

    @property
    def subject(self) -> str:
        return str(self.outer["Subject"])

    @property
    def text(self) -> str:
        payload = self.inner.get_payload(decode=True)
        assert isinstance(payload, bytes)
        return payload.decode("utf-8")


GatewayFactory = Callable[..., Any]


class GatewayRunner:
    """Starts gateways (with optional setting overrides) and stops them all at the end."""

    def __init__(self, ring: OfficerKeyring, database_url: Callable[[], str | None] = lambda: None) -> None:
        self.ring = ring
        self.database_url = database_url
        self.running: list[tuple[Harness, asyncio.Server, Path]] = []

    async def start(self, config_toml: str = "", **overrides: str) -> Harness:
        """A gateway with test defaults, `overrides` (section__key=value) and, for what overrides
        cannot say (e.g. [[imap]] tables), a config file holding `config_toml`."""
        sink = SinkHandler()
        loop = asyncio.get_running_loop()
        sink_server = await loop.create_server(lambda: SMTP(sink), "127.0.0.1", 0)
        sink_port = sink_server.sockets[0].getsockname()[1]
        data_dir = short_tempdir("lers-")
        values = {
            "gateway.address": GATEWAY_ADDRESS,
            "gateway.data_dir": str(data_dir / "data"),
            "smtp.port": "0",
            "outbound.port": str(sink_port),
            "outbound.first_retry_seconds": "0.2",
            "worker.poll_seconds": "0.05",
            "health.enabled": "true",
            "health.listen": "127.0.0.1:0",  # a free port; Harness.http_get finds it
        }
        url = self.database_url()
        if url:
            values["storage.url"] = url
        values.update({k.replace("__", "."): v for k, v in overrides.items()})
        config_file = None
        if config_toml:
            config_file = data_dir / "config.toml"
            config_file.write_text(config_toml)
        settings = load_settings(config_file, values, environ={})
        core = await open_core(settings)
        gateway = Gateway(core)
        try:
            await gateway.start()
        except BaseException:
            await core.close()
            sink_server.close()
            shutil.rmtree(data_dir, ignore_errors=True)
            raise
        # officers hold the gateway's public key, to check the signatures on its replies
        self.ring.import_key((await core.pgp.export_gateway_public_key()).encode())
        harness = Harness(settings, core, gateway, sink, self.ring, sink_server)
        self.running.append((harness, sink_server, data_dir))
        return harness

    async def stop_all(self) -> None:
        for harness, sink_server, data_dir in self.running:
            await harness.gateway.stop()
            await harness.core.close()
            sink_server.close()
            shutil.rmtree(data_dir, ignore_errors=True)
        self.running.clear()


@pytest.fixture
async def make_gateway(officer_ring: OfficerKeyring,
                       database_urls: Callable[[], str | None]) -> AsyncIterator[GatewayFactory]:
    runner = GatewayRunner(officer_ring, database_urls)
    yield runner.start
    await runner.stop_all()


@pytest.fixture
async def gateway(make_gateway: GatewayFactory, alice: TestKey, bob: TestKey) -> Harness:
    """A gateway with two enrolled officers of one agency, alice and bob."""
    harness: Harness = await make_gateway()
    await harness.enrol(alice)
    await harness.enrol(bob)
    return harness
