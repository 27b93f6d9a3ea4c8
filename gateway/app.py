"""Composition root: builds the parts from the settings, starts and stops them in one event loop."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from gateway import queue
from gateway.chat import ChatBot
from gateway.config import Settings
from gateway.datasource import DataSource
from gateway.db import Database
from gateway.health import (
    Check,
    HealthServer,
    Probe,
    check_database,
    check_gpg,
    check_imap,
    check_smarthost,
    check_telegram,
)
from gateway.imap import ImapPoller
from gateway.leases import Duty
from gateway.logs import never_log
from gateway.metrics import ProcessMetrics
from gateway.models import Job
from gateway.outbox import OutboxSender, release_sending
from gateway.pgp import OpenPGP
from gateway.scheduler import Scheduler
from gateway.smtp import SmtpIngress, smtp_factory
from gateway.vault import load_vault
from gateway.worker import JobHandler, Worker
from handlers.chain import ChainContext
from handlers.inbound import InboundPreload, process_inbound
from handlers.notices import create_notices
from handlers.production import ProductionContext, produce

log = logging.getLogger(__name__)


@dataclass
class Core:
    """What every command needs: settings, database, keyring with the gateway key loaded."""

    settings: Settings
    db: Database
    pgp: OpenPGP
    gateway_fingerprint: str
    key_created: bool

    async def close(self) -> None:
        await self.db.dispose()
        await asyncio.to_thread(self.pgp.close)


class UnsafePermissions(Exception):
    """A secret-holding file or directory is readable by other users; the message says which."""


def check_private(*paths: Path) -> None:
    """Refuse to run with the data dir, keyring or database readable by group or others."""
    for path in paths:
        if path.exists() and path.stat().st_mode & 0o077:
            mode = stat.S_IMODE(path.stat().st_mode)
            raise UnsafePermissions(
                f"{path} is readable by other users (mode {mode:04o}); it holds the gateway's secret "
                f"key and evidence: run `chmod -R go-rwx {path}` and start again")


async def open_core(settings: Settings, check_schema: bool = True) -> Core:
    """Create the data dir (0700), the schema and the gateway key if this is the first start.

    An existing database must already be at this code's schema (`lers db upgrade` migrates it);
    `check_schema=False` is for the commands that inspect or migrate the schema itself.
    """
    never_log(*settings.secrets())
    for directory in (settings.data_dir, settings.gnupg_home):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_private(settings.data_dir, settings.gnupg_home, settings.data_dir / "lers.db")
    db = Database(settings.database_url)
    if check_schema:
        try:
            await db.ensure_schema()
        except BaseException:
            await db.dispose()
            raise
    if db.is_sqlite and check_schema:  # the files a first start just created
        for name in ("lers.db", "lers.db-wal", "lers.db-shm"):
            if (settings.data_dir / name).exists():
                os.chmod(settings.data_dir / name, 0o600)
    pgp = OpenPGP(settings.gnupg_home, threads=settings.worker.gpg_threads,
                  max_plaintext_bytes=4 * settings.smtp.max_message_bytes,
                  timeout=settings.worker.gpg_timeout_seconds)
    fingerprint, created = await pgp.ensure_gateway_key(settings.gateway.address,
                                                        settings.gateway.name)
    if check_schema:  # the data keys live in the database: not for the commands that migrate it
        try:
            db.vault = await load_vault(db, pgp, settings.storage.encryption_key.upper() or fingerprint)
        except BaseException:
            await db.dispose()
            await asyncio.to_thread(pgp.close)
            raise
    return Core(settings, db, pgp, fingerprint, created)


ROLES = ("smtp", "imap", "chat", "worker", "scheduler")
CHAT_JOBS = ("chat_notify", "chat_reply")
# worker tasks per gpg thread: while one job waits for gpg, others do their Python and database
# work, so the gpg pool always has the next call queued instead of idling between jobs
WORKERS_PER_GPG_THREAD = 4
# jobs claimed ahead of the free tasks (Worker.prefetch): fewer claims under load, and a job
# claimed later with a higher priority waits behind at most these few
JOBS_AHEAD_PER_GPG_THREAD = 2


class Background:
    """A loop run as a task with its own stop signal, so a duty can be started and stopped."""

    def __init__(self, name: str, loop: Callable[[asyncio.Event], Awaitable[None]]) -> None:
        self.name, self.loop = name, loop
        self.stop_event = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.stop_event = asyncio.Event()
        self.task = asyncio.create_task(self.loop(self.stop_event), name=self.name)

    async def stop(self) -> None:
        self.stop_event.set()
        if self.task is not None:
            try:
                await asyncio.wait_for(self.task, timeout=10)
            except TimeoutError:
                self.task.cancel()


class Gateway:
    """The running gateway, in the roles given (all by default): SMTP ingress, job workers and the
    outbox, the scheduler, the reviewers' chat bot. Duties that must run once in the whole
    deployment (scheduler, chat poller) run where their lease is held (gateway/leases.py)."""

    def __init__(self, core: Core, roles: tuple[str, ...] = ROLES) -> None:
        unknown = set(roles) - set(ROLES)
        if unknown:
            raise ValueError(f"unknown roles: {', '.join(sorted(unknown))} (known: {', '.join(ROLES)})")
        self.core = core
        self.roles = roles
        settings = core.settings
        self.metrics = ProcessMetrics()
        self.ctx = ChainContext(settings, core.db, core.pgp, self.metrics)
        self.chat = None
        if settings.telegram.enabled and "chat" in roles:
            self.chat = ChatBot(settings, core.db, on_stored=self._wake_worker, pgp=core.pgp)
        self.data_source = DataSource.from_settings(settings)
        production = ProductionContext(settings, core.db, core.pgp, self.data_source)
        handlers: dict[str, JobHandler] = {
            "inbound": self._inbound,
            "produce": partial(self._then_send, partial(produce, production)),
            "notices": partial(create_notices, settings, core.db, self.data_source),
        }
        # with Telegram off nobody will send chat jobs: the worker closes them where it claims them
        closed = frozenset(CHAT_JOBS) if not settings.telegram.enabled else frozenset()
        work = settings.worker
        self.preloaded = InboundPreload()
        self._large_inbound = asyncio.Semaphore(work.gpg_threads)
        self.worker = Worker(core.db, handlers, lease_seconds=work.lease_seconds,
                             max_attempts=work.max_attempts, poll_seconds=work.poll_seconds,
                             close_kinds=closed, preload=self.preloaded, redoable_claims=True,
                             prefetch=work.gpg_threads * JOBS_AHEAD_PER_GPG_THREAD)
        self.chat_worker = None
        if self.chat is not None:  # chat jobs are sent by whichever process holds the chat duty
            self.chat_worker = Worker(
                core.db, {"chat_notify": self.chat.notify, "chat_reply": self.chat.reply_job},
                lease_seconds=work.lease_seconds, max_attempts=work.max_attempts,
                poll_seconds=work.poll_seconds)
        self.outbox = OutboxSender(settings, core.db, core.pgp)
        self.scheduler = Scheduler(settings, core.db, on_work=self.worker.wakeup.set)
        self.stop_event = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self._server: asyncio.Server | None = None
        self._ingress: SmtpIngress | None = None
        self.smtp_port: int | None = None
        self.duties: list[Duty] = []
        self.chat_duty: Duty | None = None
        self.health: HealthServer | None = None
        if settings.health.enabled:
            self.health = HealthServer(settings, core.db, self.metrics, self._probes())

    def _probes(self) -> dict[str, Probe]:
        """The checks of the parts this process runs (the database and gpg always)."""
        core, settings = self.core, self.core.settings
        probes: dict[str, Probe] = {
            "database": partial(check_database, core.db),
            "gpg": partial(check_gpg, core.pgp, core.gateway_fingerprint),
        }
        if "worker" in self.roles:  # the outbox sends replies through the smarthost
            probes["smarthost"] = partial(check_smarthost, settings, self.outbox.tls_context)
        if "imap" in self.roles:
            for account in settings.imap:
                if account.enabled:
                    probes[f"imap:{account.name}"] = partial(check_imap, core.db, account)
        if self.chat is not None:
            chat = self.chat

            async def telegram() -> Check:
                polling = self.chat_duty is not None and self.chat_duty.active
                return check_telegram(polling, chat.pulse.last_ok, chat.pulse.last_error,
                                      settings.telegram.poll_timeout_seconds)
            probes["telegram"] = telegram
        return probes

    def _wake_worker(self) -> None:
        self.worker.wakeup.set()
        if self.chat_worker is not None:
            self.chat_worker.wakeup.set()

    async def _inbound(self, job: Job) -> None:
        stored = self.preloaded.take(job.message_id)
        if stored is not None:
            await process_inbound(self.ctx, job, stored)
        else:  # a large message: no more of them at once than before there were more workers
            async with self._large_inbound:
                await process_inbound(self.ctx, job)
        self.outbox.wakeup.set()
        if self.chat_worker is not None:
            self.chat_worker.wakeup.set()

    async def _then_send(self, handler: JobHandler, job: Job) -> None:
        await handler(job)
        self.outbox.wakeup.set()

    def _spawn(self, name: str, loop: Callable[[asyncio.Event], Awaitable[None]]) -> None:
        self.tasks.append(asyncio.create_task(loop(self.stop_event), name=name))

    async def start(self) -> None:
        settings, db = self.core.settings, self.core.db
        if db.is_sqlite:  # one process: whatever was running died with the last one
            jobs = await queue.release_all_leases(db)
            replies = await release_sending(db)
            if jobs or replies:
                log.warning("work cut short by the last process is due again",
                            extra={"jobs": jobs, "replies": replies})
        if await self.data_source.ensure_demo(settings):
            log.info("demo exchange database created", extra={"data_source": self.data_source.url})
        if self.chat is not None:  # first: a bad token stops the start before we take mail
            await self.chat.initialize()
        if "smtp" in self.roles:
            handler = self._ingress = SmtpIngress(settings, db, on_stored=self._wake_worker,
                                                        pgp=self.core.pgp)
            loop = asyncio.get_running_loop()
            self._server = await loop.create_server(smtp_factory(handler, settings),
                                                    host=settings.smtp.host, port=settings.smtp.port)
            self.smtp_port = self._server.sockets[0].getsockname()[1]
        if self.health is not None:  # before any task starts: a port in use stops the start cleanly
            await self.health.start()
        if "worker" in self.roles:
            for index in range(settings.worker.gpg_threads * WORKERS_PER_GPG_THREAD):
                self._spawn(f"worker-{index}", self.worker.run)
            self._spawn("outbox", self.outbox.run)
        ttl = settings.worker.duty_lease_seconds
        if "scheduler" in self.roles:
            scheduler = Background("scheduler", self.scheduler.run)
            self.duties.append(Duty(db, "scheduler", scheduler.start, scheduler.stop, ttl))
        if "imap" in self.roles:  # each mailbox is read by one process at a time
            for account in settings.imap:
                if account.enabled:
                    poller = ImapPoller(settings, account, db, on_stored=self._wake_worker)
                    reader = Background(f"imap-{account.name}", poller.run)
                    self.duties.append(Duty(db, f"imap:{account.name}", reader.start, reader.stop, ttl))
        if self.chat is not None and self.chat_worker is not None:
            chat, chat_jobs = self.chat, Background("chat-jobs", self.chat_worker.run)

            async def start_chat() -> None:
                await chat.start_polling()
                await chat_jobs.start()

            async def stop_chat() -> None:
                await chat_jobs.stop()
                await chat.stop_polling()

            self.chat_duty = Duty(db, "chat", start_chat, stop_chat, ttl)
            self.duties.append(self.chat_duty)
        for duty in self.duties:
            self._spawn(f"duty-{duty.name}", duty.run)
        log.info("gateway started", extra={"roles": ",".join(self.roles),
                                           "smtp": f"{settings.smtp.host}:{self.smtp_port}",
                                           "fingerprint": self.core.gateway_fingerprint,
                                           "database": settings.database_url.split("://")[0]})

    async def stop(self) -> None:
        self.stop_event.set()
        if self.health is not None:
            await self.health.stop()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._ingress is not None:
            await self._ingress.writer.close()
        for task in self.tasks:
            try:
                await asyncio.wait_for(task, timeout=15)
            except TimeoutError:
                task.cancel()
        if self.chat is not None:
            await self.chat.shutdown()
        await self.data_source.close()
        log.info("gateway stopped")


async def serve(settings: Settings, roles: tuple[str, ...] = ROLES) -> None:
    """`lers serve`: run until SIGINT or SIGTERM."""
    core = await open_core(settings)
    gateway = Gateway(core, roles)
    try:
        await gateway.start()
    except BaseException:
        await core.close()
        raise
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, gateway.stop_event.set)
    try:
        await gateway.stop_event.wait()
    finally:
        await gateway.stop()
        await core.close()
