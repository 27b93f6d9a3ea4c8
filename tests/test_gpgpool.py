"""gateway/gpgpool.py: the gpg threads take the most urgent call first (a reply before the
verifications queued ahead of it), first come first served among equals."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref

import pytest

from gateway.gpgpool import NORMAL, URGENT, PriorityPool


async def _blocked(pool: PriorityPool) -> tuple[threading.Event, asyncio.Future[None]]:
    """The pool's one thread held busy until the event is set."""
    started, release = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        release.wait(10)

    busy = asyncio.ensure_future(pool.run(NORMAL, hold))
    assert await asyncio.to_thread(started.wait, 10)
    return release, busy


async def test_an_urgent_call_goes_before_those_queued_ahead_of_it() -> None:
    pool = PriorityPool(1, "t")
    try:
        release, busy = await _blocked(pool)
        ran: list[str] = []
        calls = [asyncio.ensure_future(pool.run(priority, ran.append, name))
                 for priority, name in ((NORMAL, "verify 1"), (NORMAL, "verify 2"), (URGENT, "reply"),
                                        (NORMAL, "verify 3"), (URGENT, "reply 2"))]
        await asyncio.sleep(0.05)  # all queued while the thread is busy
        release.set()
        await asyncio.gather(busy, *calls)
        assert ran == ["reply", "reply 2", "verify 1", "verify 2", "verify 3"]
    finally:
        pool.shutdown()


async def test_a_call_cancelled_before_its_turn_never_runs_and_errors_reach_the_caller() -> None:
    pool = PriorityPool(1, "t")
    try:
        release, busy = await _blocked(pool)
        ran: list[str] = []
        cancelled = asyncio.ensure_future(pool.run(NORMAL, ran.append, "cancelled"))
        kept = asyncio.ensure_future(pool.run(NORMAL, ran.append, "kept"))
        await asyncio.sleep(0.05)
        cancelled.cancel()
        await asyncio.sleep(0.05)  # the cancellation reaches the queued call on the loop's next turns
        release.set()
        await asyncio.gather(busy, kept)
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert ran == ["kept"]
        with pytest.raises(ZeroDivisionError):
            await pool.run(URGENT, lambda: 1 / 0)
    finally:
        pool.shutdown()


async def test_shutdown_runs_what_is_queued_then_stops_the_threads() -> None:
    pool = PriorityPool(2, "t")
    release, busy = await _blocked(pool)
    ran: list[int] = []
    calls = [asyncio.ensure_future(pool.run(NORMAL, ran.append, n)) for n in range(5)]
    await asyncio.sleep(0.05)
    release.set()
    await asyncio.to_thread(pool.shutdown)
    await asyncio.gather(busy, *calls)
    assert sorted(ran) == [0, 1, 2, 3, 4]
    assert not any(thread.is_alive() for thread in pool._threads)


async def test_a_finished_call_keeps_nothing_of_its_arguments_alive() -> None:
    """A thread waiting for its next call must not hold the last one's arguments: they may be a
    25 MB message (item 5 of the benchmark found twenty such mails holding 33 MB more)."""

    class Message:
        pass

    pool = PriorityPool(1, "t")
    try:
        message = Message()
        kept = weakref.ref(message)
        await pool.run(NORMAL, lambda m: None, message)
        del message
        await asyncio.sleep(0.05)  # the thread is back, waiting for the next call
        gc.collect()
        assert kept() is None
    finally:
        pool.shutdown()
