"""The threads that run gpg: the most urgent call first.

A reply to an officer (sign and encrypt) is the last step of work already accepted; a
verification starts new work. With one first-come queue, under load every reply waited behind
the verifications of mail that arrived after its request, and acknowledgements came late for
everybody. Here a call is taken by priority (the lowest number first), first come first
served among equals, by a fixed set of threads, each running one gpg at a time.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")
URGENT, NORMAL = 0, 1
Call = tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]
_STOP: tuple[int, int, Call | None] = (2, 0, None)  # after everything queued: a thread taking it ends


class PriorityPool:
    def __init__(self, threads: int, name: str) -> None:
        self._queue: queue.PriorityQueue[tuple[int, int, Call | None]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._threads = [threading.Thread(target=self._work, name=f"{name}_{n}", daemon=True)
                         for n in range(threads)]
        for thread in self._threads:
            thread.start()

    async def run(self, priority: int, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in one of the threads, when its turn comes; cancelled before it starts,
        it never runs."""
        future: Future[T] = Future()
        self._queue.put((priority, next(self._order), (future, fn, args)))
        return await asyncio.wrap_future(future)

    def shutdown(self, wait: bool = True) -> None:
        """Run what is queued, then stop the threads (waiting for them if `wait`)."""
        for _ in self._threads:
            self._queue.put(_STOP)
        if wait:
            for thread in self._threads:
                thread.join()

    def _work(self) -> None:
        while (item := self._queue.get()[2]) is not None:
            self._call(*item)
            # nothing of the call stays referenced while the thread waits for the next one: its
            # arguments may be a large message (20 of them arriving together held +33 MB)
            del item

    @staticmethod
    def _call(future: Future[Any], fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            result = fn(*args)
        except BaseException as exc:  # handed to the caller, as an executor does
            future.set_exception(exc)
        else:
            future.set_result(result)
