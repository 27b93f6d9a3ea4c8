"""Composition root: builds the parts from the settings, starts and stops them in one event loop."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass
from functools import partial

from gateway import queue
from gateway.chat import ChatBot, notifications_disabled
from gateway.config import Settings
from gateway.db import Database
from gateway.outbox import OutboxSender, release_sending
from gateway.pgp import OpenPGP
from gateway.scheduler import Scheduler
from gateway.smtp import SmtpIngress, smtp_factory
from gateway.worker import JobHandler, Worker
from handlers.chain import ChainContext
from handlers.inbound import process_inbound

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


async def open_core(settings: Settings, check_schema: bool = True) -> Core:
    """Create the data dir (0700), the schema and the gateway key if this is the first start.

    An existing database must already be at this code's schema (`lers db upgrade` migrates it);
    `check_schema=False` is for the commands that inspect or migrate the schema itself.
    """
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(settings.data_dir, 0o700)
    db = Database(settings.database_url)
    if check_schema:
        try:
            await db.ensure_schema()
        except BaseException:
            await db.dispose()
            raise
    if db.is_sqlite:
        database_file = settings.data_dir / "lers.db"
        if database_file.exists():
            os.chmod(database_file, 0o600)
    pgp = OpenPGP(settings.gnupg_home, threads=settings.worker.gpg_threads,
                  max_plaintext_bytes=4 * settings.smtp.max_message_bytes)
    fingerprint, created = await pgp.ensure_gateway_key(settings.gateway.address,
                                                        settings.gateway.name)
    return Core(settings, db, pgp, fingerprint, created)


class Gateway:
    """The running gateway: SMTP ingress, job workers and the outbox sender."""

    def __init__(self, core: Core) -> None:
        self.core = core
        settings = core.settings
        self.ctx = ChainContext(settings, core.db, core.pgp)
        self.chat = None
        if settings.telegram.enabled:
            self.chat = ChatBot(settings, core.db, on_stored=self._wake_worker)
        closed = partial(notifications_disabled, core.db)
        handlers: dict[str, JobHandler] = {
            "inbound": self._inbound,
            "chat_notify": self.chat.notify if self.chat else closed,
            "chat_reply": self.chat.reply_job if self.chat else closed,
        }
        self.worker = Worker(core.db, handlers, lease_seconds=settings.worker.lease_seconds,
                             max_attempts=settings.worker.max_attempts,
                             poll_seconds=settings.worker.poll_seconds)
        self.outbox = OutboxSender(settings, core.db, core.pgp)
        self.scheduler = Scheduler(settings, core.db, on_work=self.worker.wakeup.set)
        self.stop_event = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self._server: asyncio.Server | None = None
        self.smtp_port: int | None = None

    def _wake_worker(self) -> None:
        self.worker.wakeup.set()

    async def _inbound(self, job: object) -> None:
        await process_inbound(self.ctx, job)  # type: ignore[arg-type]
        self.outbox.wakeup.set()

    async def start(self) -> None:
        settings = self.core.settings
        if self.core.db.is_sqlite:  # one process: whatever was running died with the last one
            jobs = await queue.release_all_leases(self.core.db)
            replies = await release_sending(self.core.db)
            if jobs or replies:
                log.warning("work cut short by the last process is due again",
                            extra={"jobs": jobs, "replies": replies})
        if self.chat is not None:  # first: a bad token stops the start before we take mail
            await self.chat.start()
        handler = SmtpIngress(settings, self.core.db, on_stored=self.worker.wakeup.set)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(smtp_factory(handler, settings),
                                                host=settings.smtp.host, port=settings.smtp.port)
        self.smtp_port = self._server.sockets[0].getsockname()[1]
        for index in range(settings.worker.gpg_threads):
            self.tasks.append(asyncio.create_task(self.worker.run(self.stop_event),
                                                   name=f"worker-{index}"))
        self.tasks.append(asyncio.create_task(self.outbox.run(self.stop_event), name="outbox"))
        self.tasks.append(asyncio.create_task(self.scheduler.run(self.stop_event), name="scheduler"))
        log.info("gateway started", extra={"smtp": f"{settings.smtp.host}:{self.smtp_port}",
                                           "fingerprint": self.core.gateway_fingerprint,
                                           "database": settings.database_url.split("://")[0]})

    async def stop(self) -> None:
        self.stop_event.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in self.tasks:
            try:
                await asyncio.wait_for(task, timeout=10)
            except TimeoutError:
                task.cancel()
        if self.chat is not None:
            await self.chat.stop()
        log.info("gateway stopped")


async def serve(settings: Settings, ready: asyncio.Event | None = None) -> None:
    """`lers serve`: run until SIGINT or SIGTERM."""
    core = await open_core(settings)
    gateway = Gateway(core)
    try:
        await gateway.start()
    except BaseException:
        await core.close()
        raise
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, gateway.stop_event.set)
    if ready is not None:
        ready.set()
    try:
        await gateway.stop_event.wait()
    finally:
        await gateway.stop()
        await core.close()
