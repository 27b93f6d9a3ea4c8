"""Worker tasks: claim a job, run its handler, finish or retry it. Several run at once so that
gpg (its own process) can use both cores while Python waits."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from gateway import queue
from gateway.db import Database
from gateway.logs import request_scope
from gateway.models import Job

log = logging.getLogger(__name__)

JobHandler = Callable[[Job], Awaitable[None]]


class Worker:
    def __init__(self, db: Database, handlers: dict[str, JobHandler], *, lease_seconds: float,
                 max_attempts: int, poll_seconds: float, close_kinds: frozenset[str] = frozenset()) -> None:
        self.db = db
        self.handlers = handlers
        self.close_kinds = close_kinds  # nothing to do for these: closed where claimed (queue.claim)
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.poll_seconds = poll_seconds
        self.wakeup = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            job = await queue.claim(self.db, self.lease_seconds, self.max_attempts,
                                    (*self.handlers, *self.close_kinds), self.close_kinds)
            if job is not None:
                await self.run_job(job)
                continue
            self.wakeup.clear()
            waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self.wakeup.wait())}
            await asyncio.wait(waiters, timeout=self.poll_seconds, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()

    async def run_job(self, job: Job) -> None:
        with request_scope(job.payload.get("ref") if isinstance(job.payload, dict) else None):
            await self._run_job(job)

    async def _run_job(self, job: Job) -> None:
        handler = self.handlers.get(job.kind)
        try:
            if handler is None:
                raise LookupError(f"no handler for job kind {job.kind!r}")
            await handler(job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("job failed", extra={"job_id": job.id, "kind": job.kind})
            state = await queue.mark_failed(self.db, job, f"{type(exc).__name__}: {exc}",
                                            self.max_attempts)
            log.warning("job will be retried" if state == "queued" else "job shunted",
                        extra={"job_id": job.id, "attempts": job.attempts})
