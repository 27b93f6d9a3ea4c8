"""Worker tasks: claim a job, run its handler, finish or retry it. Several run at once so that
gpg (its own process) can use both cores while Python waits.

The tasks of one `Worker` share their claims: whichever task finds nothing ready claims, in one
transaction, a job for every task then free, and wakes the others to take theirs. Without that,
every wake-up sent each idle task into a write transaction of its own to find the same job.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from gateway import queue
from gateway.db import Database
from gateway.logs import request_scope
from gateway.models import Job

log = logging.getLogger(__name__)

JobHandler = Callable[[Job], Awaitable[None]]


class Wakeup(asyncio.Event):
    """An event that counts how often it was set: a claim that began after the last ring has
    seen everything stored before it, so the other tasks woken by that ring need no claim."""

    def __init__(self) -> None:
        super().__init__()
        self.rings = 0

    def set(self) -> None:
        self.rings += 1
        super().set()

    def wake(self) -> None:
        """Wake the waiting tasks without asking for a claim (jobs already claimed for them)."""
        super().set()


class Worker:
    def __init__(self, db: Database, handlers: dict[str, JobHandler], *, lease_seconds: float,
                 max_attempts: int, poll_seconds: float, close_kinds: frozenset[str] = frozenset(),
                 preload: queue.Preload | None = None, redoable_claims: bool = False,
                 prefetch: int = 0) -> None:
        self.db = db
        # claims that need not wait for the disk: for jobs that send nothing out themselves
        # (what they queue is sent by the outbox, which waits for the disk before it sends)
        self.redoable_claims = redoable_claims
        # jobs claimed beyond the free tasks, for the next tasks to free up: under load a task
        # frees up at a time, and claiming one job each time cost a write transaction per job
        self.prefetch = prefetch
        self.handlers = handlers
        self.preload = preload  # loads the claimed jobs' input in the claim's transaction
        self.close_kinds = close_kinds  # nothing to do for these: closed where claimed (queue.claim)
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.poll_seconds = poll_seconds
        self.wakeup = Wakeup()
        self._ready: deque[Job] = deque()  # claimed for this worker's tasks, not started yet
        self._claiming = asyncio.Lock()
        self._tasks = 0  # tasks in `run`
        self._busy = 0  # of them, running a job
        self._answered = 0  # the rings the last claim began after
        self._more = True  # the last claim took all it asked for: more may be waiting
        self._polling = False  # one idle task looks for due work every poll_seconds; the rest wait

    async def run(self, stop: asyncio.Event) -> None:
        self._tasks += 1
        try:
            while not stop.is_set():
                job = await self._next()
                if job is not None:
                    self._busy += 1
                    try:
                        await self.run_job(job)
                    finally:
                        self._busy -= 1
                    continue
                await self._idle(stop)
        finally:
            self._tasks -= 1

    async def _next(self) -> Job | None:
        """A job claimed earlier by any task of this worker, or a new claim for every free task
        when something may be waiting (a ring not yet answered, or a claim that was full)."""
        async with self._claiming:
            if not self._ready and (self.wakeup.rings != self._answered or self._more):
                self._answered = self.wakeup.rings
                free = max(1, self._tasks - self._busy)
                wanted = free + self.prefetch
                self._ready.extend(await queue.claim_batch(
                    self.db, self.lease_seconds, self.max_attempts, (*self.handlers, *self.close_kinds),
                    self.close_kinds, wanted, self.preload, self.redoable_claims))
                self._more = len(self._ready) == wanted
                if len(self._ready) > 1:
                    self.wakeup.wake()  # the other free tasks take theirs
            return self._ready.popleft() if self._ready else None

    async def _idle(self, stop: asyncio.Event) -> None:
        """Wait for a ring (work stored) or jobs claimed for us; one idle task also polls every
        poll_seconds (work that became due, a lease that ran out) and claims for the others."""
        if self._ready:
            return
        polls = not self._polling
        self._polling = True
        self.wakeup.clear()
        waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self.wakeup.wait())}
        try:
            done, _ = await asyncio.wait(waiters, timeout=self.poll_seconds if polls else None,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            if polls:
                self._polling = False
        if polls and not done:  # the poll is a ring: one claim looks; the others wake, one polls next
            self.wakeup.set()

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
