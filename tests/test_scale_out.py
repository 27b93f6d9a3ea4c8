"""Several gateway processes on one PostgreSQL: jobs done exactly once, a dead worker's job
reclaimed, the scheduler failing over, references allocated without gaps or duplicates.

These start real `python run.py serve --roles ...` processes against a throw-away cluster; they
run only in the PostgreSQL half of the suite (`LERS_TEST_BACKEND=postgresql`, as `make test` does).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP
from sqlalchemy import func, select

from gateway.audit import verify_chain
from gateway.chunks import attachment_bytes, raw_bytes
from gateway.config import load_settings
from gateway.db import Database, SchemaError
from gateway.dbcopy import copy_database
from gateway.ingest import ingest
from gateway.models import Attachment as StoredAttachment
from gateway.models import AuditEntry, Job, Lease, Message, RequestTally
from gateway.outbox import queue_reply
from gateway.records import list_requests
from gateway.spool import CHUNK
from handlers.enrolment import add_agency, add_officer
from handlers.refs import allocate_ref, allocate_ref_in
from tests.conftest import BACKEND, GatewayRunner, SinkHandler, short_tempdir
from tests.support.mail_factory import Attachment, request_body, signed_request_mail, unsigned_mail
from tests.support.officer_keys import OfficerKeyring, TestKey

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(
    BACKEND != "postgresql", reason="runs in the PostgreSQL half of the suite (LERS_TEST_BACKEND=postgresql)")


class Deployment:
    """One shared database and data dir; any number of gateway processes with chosen roles."""

    def __init__(self, home: Path, url: str) -> None:
        self.home, self.url = home, url
        self.config = home / "config.toml"
        self.config.write_text(f"""
[gateway]
address = "lers@gateway.test"
data_dir = "data"
[storage]
url = "{url}"
[worker]
poll_seconds = 0.05
lease_seconds = 3
duty_lease_seconds = 1.5
gpg_threads = 2
[outbound]
port = 9
""")
        self.processes: list[subprocess.Popen[bytes]] = []

    def spawn(self, roles: str) -> subprocess.Popen[bytes]:
        with open(self.home / f"serve-{len(self.processes)}.log", "ab") as log:
            process = subprocess.Popen([sys.executable, "run.py", "--config", str(self.config), "--roles",
                                        roles], cwd=REPO, stdout=log, stderr=log)
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
async def deployment(database_urls: Callable[[], str | None]) -> AsyncIterator[tuple[Deployment, Database]]:
    home = short_tempdir("scale-")
    url = database_urls()
    assert url is not None
    deployment = Deployment(home, url)
    settings = load_settings(deployment.config, environ={})
    from gateway.app import open_core
    core = await open_core(settings)  # creates the schema and the shared gateway key
    yield deployment, core.db
    await asyncio.to_thread(deployment.stop_all)
    await core.close()
    shutil.rmtree(home, ignore_errors=True)


async def wait_until(condition: Callable[[], object], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await condition():  # type: ignore[misc]
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"not within {within}s: {what}")


async def unfinished_jobs(db: Database) -> int:
    async with db.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(Job).where(
            Job.state.in_(["queued", "running"]))) or 0)


async def test_three_worker_processes_do_each_of_1000_jobs_once(
        deployment: tuple[Deployment, Database]) -> None:
    setup, db = deployment
    for n in range(1000):  # unsigned mail: refused by structure, so the jobs are cheap
        await ingest(db, f"From: x{n}@example.org\r\nSubject: {n}\r\n\r\nhello {n}\r\n".encode(),
                     transport="smtp")
    for _ in range(3):
        setup.spawn("worker")
    await wait_until(lambda: _none_left(db), 120, "all 1000 jobs done")
    async with db.transaction() as session:
        refusals = await session.execute(
            select(AuditEntry.subject, func.count()).where(AuditEntry.action == "inbound.refused")
            .group_by(AuditEntry.subject))
        counts = dict(refusals.all())
        states = dict((await session.execute(
            select(Message.state, func.count()).group_by(Message.state))).all())
    assert len(counts) == 1000 and set(counts.values()) == {1}, "a job was done twice"
    assert states == {"quarantined": 1000}
    async with db.transaction() as session:
        assert (await verify_chain(session)).ok, "three processes forked the audit chain"


async def _none_left(db: Database) -> bool:
    return await unfinished_jobs(db) == 0


async def test_a_killed_workers_job_is_reclaimed_after_its_lease(
        deployment: tuple[Deployment, Database]) -> None:
    setup, db = deployment
    for n in range(300):
        await ingest(db, f"From: y{n}@example.org\r\n\r\nhello {n}\r\n".encode(), transport="smtp")
    first = setup.spawn("worker")
    await wait_until(lambda: _some_done(db), 60, "the first worker started")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    setup.spawn("worker")
    await wait_until(lambda: _none_left(db), 120, "the second worker finished everything")
    async with db.transaction() as session:
        counts = dict((await session.execute(
            select(AuditEntry.subject, func.count()).where(AuditEntry.action == "inbound.refused")
            .group_by(AuditEntry.subject))).all())
    assert len(counts) == 300 and set(counts.values()) == {1}


async def _some_done(db: Database) -> bool:
    return await unfinished_jobs(db) < 290


async def test_the_scheduler_fails_over_when_its_process_dies(
        deployment: tuple[Deployment, Database]) -> None:
    setup, db = deployment
    a = setup.spawn("scheduler")
    b = setup.spawn("scheduler")

    async def holder() -> str | None:
        async with db.transaction() as session:
            lease = await session.get(Lease, "scheduler")
            return lease.holder if lease is not None else None

    await wait_until(holder, 30, "someone holds the scheduler lease")
    first = await holder()
    assert first is not None
    pids = {a.pid: a, b.pid: b}
    leader = pids[int(first.rsplit(":", 1)[1])]
    follower = b if leader is a else a
    await asyncio.sleep(2)  # several lease periods: the follower must not take it meanwhile
    assert await holder() == first
    leader.send_signal(signal.SIGKILL)
    leader.wait(timeout=10)

    async def follower_took_over() -> bool:
        current = await holder()
        return current is not None and current.endswith(f":{follower.pid}")

    await wait_until(follower_took_over, 15, "the surviving process took the scheduler over")


async def test_concurrent_reference_allocation_is_gap_free(database_urls: Callable[[], str | None]) -> None:
    url = database_urls()
    assert url is not None
    db = Database(url)
    await db.upgrade()

    async def one() -> str:
        async with db.transaction() as session:
            return await allocate_ref(session)

    refs = await asyncio.gather(*(one() for _ in range(200)))
    await db.dispose()
    numbers = sorted(int(r.rsplit("-", 1)[1]) for r in refs)
    assert numbers == list(range(1, 201))


async def test_reference_allocation_is_gap_free_across_processes_and_both_code_paths(
        database_urls: Callable[[], str | None]) -> None:
    """The inbound fast path allocates on a synchronous connection (`allocate_ref_in`, the year's
    counter made with ON CONFLICT DO NOTHING), other handlers in an AsyncSession: two "processes"
    (two engines) allocating both ways at once, from a year without a counter yet, get every
    number once and leave no gap."""
    url = database_urls()
    assert url is not None
    first, second = Database(url), Database(url)
    await first.upgrade()

    async def in_session(db: Database) -> str:
        async with db.transaction() as session:
            return await allocate_ref(session)

    async def on_connection(db: Database) -> str:
        return await db.write_sync(allocate_ref_in)

    calls = [make(db) for _ in range(50) for db in (first, second) for make in (in_session, on_connection)]
    refs = await asyncio.gather(*calls)
    await first.dispose()
    await second.dispose()
    numbers = sorted(int(r.rsplit("-", 1)[1]) for r in refs)
    assert numbers == list(range(1, 201))


async def test_db_copy_round_trip_sqlite_to_postgresql_and_back(
        database_urls: Callable[[], str | None], officer_ring: OfficerKeyring, alice: TestKey) -> None:
    runner = GatewayRunner(officer_ring)  # SQLite, as a first deployment would be
    harness = await runner.start()
    try:
        await harness.enrol(alice)
        await harness.send(signed_request_mail(officer_ring, alice, from_addr=alice.email,
                                               body=request_body(type="preservation")))
        await harness.send(unsigned_mail(from_addr="x@example.org", body="hello"))
        large = Attachment("records.bin", "application/octet-stream", os.urandom(2 * CHUNK + 5))
        await harness.send(signed_request_mail(officer_ring, alice, from_addr=alice.email,
                                               body=request_body(type="subpoena"), attachments=[large]))
        await harness.settle()
        before = await list_requests(harness.core.db)
        sqlite_url = harness.settings.database_url
        await harness.gateway.stop()
    except BaseException:
        await runner.stop_all()
        raise
    postgres_url = database_urls()
    assert postgres_url is not None
    home = short_tempdir("copy-")
    back_url = f"sqlite+aiosqlite:///{home / 'back.db'}"
    try:
        forward = await copy_database(sqlite_url, postgres_url)
        assert forward["requests"] == 2 and forward["messages"] >= 4 and forward["audit"] > 5
        assert forward["message_chunks"] >= 3 and forward["attachment_chunks"] == 3
        with pytest.raises(SchemaError, match="already holds data"):
            await copy_database(sqlite_url, postgres_url)
        backward = await copy_database(postgres_url, back_url)
        assert backward == forward
        assert "request_tallies" not in forward  # derived: the target's triggers count the requests
        tallies = await _tallies(sqlite_url)
        assert sum(tallies.values()) == 4, tallies  # 2 requests, by officer and by agency
        for url in (postgres_url, back_url):
            db = Database(url)
            db.vault = harness.core.db.vault  # the copy holds the same (wrapped) data keys
            async with db.transaction() as session:
                assert (await verify_chain(session)).ok
            assert await list_requests(db) == before
            assert await _tallies(url) == tallies
            async with db.transaction() as session:  # large values open from their copied chunks
                for message in await session.scalars(select(Message).where(Message.chunks > 0)):
                    assert hashlib.sha256(await raw_bytes(session, message)).hexdigest() == message.sha256
                files = await session.scalars(select(StoredAttachment).where(StoredAttachment.chunks > 0))
                for attachment in files:
                    assert bytes(await attachment_bytes(session, attachment)) == large.data
            async with db.transaction() as session:  # ids continue after the copied ones
                session.add(AuditEntry(actor="test", action="t", prev_hash="0" * 64,
                                       hash=url[-20:] + "x" * 44))
            await db.dispose()
    finally:
        await runner.stop_all()
        shutil.rmtree(home, ignore_errors=True)


async def _tallies(url: str) -> dict[tuple[str, int, str], int]:
    db = Database(url)
    try:
        async with db.engine.connect() as conn:
            rows = await conn.execute(select(RequestTally.scope, RequestTally.owner_id, RequestTally.status,
                                             RequestTally.total).where(RequestTally.total > 0))
            return {(scope, owner, status): total for scope, owner, status, total in rows}
    finally:
        await db.dispose()


async def test_each_reply_is_sent_once_by_several_processes(
        deployment: tuple[Deployment, Database], officer_ring: OfficerKeyring, alice: TestKey) -> None:
    setup, db = deployment
    sink = SinkHandler()
    server = await asyncio.get_running_loop().create_server(lambda: SMTP(sink), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    text = setup.config.read_text().replace("[outbound]\nport = 9", f"[outbound]\nport = {port}")
    setup.config.write_text(text)
    settings = load_settings(setup.config, environ={})
    from gateway.app import open_core
    core = await open_core(settings)
    await add_agency(core, "Test Police", "police.test")
    await add_officer(core, alice.email, "Test Police", alice.public_armored)
    async with db.transaction() as session:
        for n in range(150):
            queue_reply(session, settings, kind="test", recipient=alice.email,
                        recipient_fingerprint=alice.fingerprint, subject=f"reply {n}", body="hello")
    await core.close()
    for _ in range(3):
        setup.spawn("worker")

    async def all_sent() -> bool:
        return len(sink.received) >= 150

    try:
        await wait_until(all_sent, 90, "150 replies sent")
        await asyncio.sleep(1)  # any duplicate would arrive now
        subjects = [e.original_content.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0]
                    for e in sink.received if e.original_content]
        assert len(subjects) == 150 and len(set(subjects)) == 150, "a reply was sent twice"
    finally:
        server.close()
