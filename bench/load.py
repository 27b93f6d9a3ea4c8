"""The load generator: a process of its own that delivers mail over SMTP and is the gateway's smarthost.

Keeping senders and the sink out of the benchmark's main process means the gateway competes with
one load process for the cores, as it would with real peers, and the main process stays free to
sample the gateway's memory. Send times and acknowledgement times are taken here, on one clock.

The main process drives it through a pipe: `LoadProcess.call("ingress" | "deliver", ...)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import re
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiosmtplib
from aiosmtpd.smtp import SMTP, Envelope, Session

from bench.deploy import BenchError
from bench.mails import FLOOD_TEMPLATE_ID, GATEWAY_ADDRESS, INGRESS_TEMPLATE_ID, OFFICER_EMAIL, load

SMTP_TIMEOUT = 120.0
IN_REPLY_TO = re.compile(rb"^In-Reply-To:\s*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)
SUBJECT = re.compile(rb"^Subject:[ \t]*(.*)$", re.IGNORECASE | re.MULTILINE)
REF = re.compile(r"LERS-\d{4}-\d{6}")


@dataclass(frozen=True)
class Delivery:
    """One SMTP transaction: when it started, when the final reply came, whether it was 250."""

    message_id: str
    start: float
    done: float
    ok: bool
    reply: str = ""


class AckSink:
    """The smarthost: notes when each reply arrives, keyed by the request it answers (In-Reply-To)."""

    def __init__(self) -> None:
        self.acks: dict[str, float] = {}
        self.subjects: dict[str, str] = {}
        self.later: dict[str, list[tuple[float, str]]] = {}  # every reply after the first (decisions)
        self.unmatched = 0
        self.changed = asyncio.Event()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        now = time.monotonic()
        raw = envelope.original_content or b""
        head = raw[: raw.find(b"\r\n\r\n")] if b"\r\n\r\n" in raw else raw[:8192]
        match = IN_REPLY_TO.search(head)
        if match is None:
            self.unmatched += 1
        else:
            key = match.group(1).decode()
            subject = SUBJECT.search(head)
            text = subject.group(1).decode(errors="replace").strip() if subject else ""
            if key in self.acks:
                self.later.setdefault(key, []).append((now, text))
            self.acks.setdefault(key, now)
            self.subjects.setdefault(key, text)
        self.changed.set()
        return "250 2.0.0 OK"

    def forget(self, ids: Iterable[str]) -> None:
        """Warm-up mails are reused on every fresh gateway: their old acknowledgements must not count."""
        for mid in ids:
            self.acks.pop(mid, None)
            self.subjects.pop(mid, None)
            self.later.pop(mid, None)

    async def wait_for(self, ids: set[str], deadline: float) -> set[str]:
        """Wait (until `deadline`) for a reply to each id; returns the ids still unanswered."""
        missing = ids - self.acks.keys()
        while missing and time.monotonic() < deadline:
            self.changed.clear()
            missing = ids - self.acks.keys()
            if not missing:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), timeout=min(0.5, deadline - time.monotonic()))
        return ids - self.acks.keys()


async def _connect(port: int) -> aiosmtplib.SMTP:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=SMTP_TIMEOUT)
    await client.connect()
    return client


async def persistent_sender(port: int, mails: Iterator[tuple[str, bytes]], out: list[Delivery],
                            stop_at: float | None = None) -> None:
    """One connection, messages back to back (as an MTA with connection caching sends)."""
    client = await _connect(port)
    try:
        while stop_at is None or time.monotonic() < stop_at:
            item = next(mails, None)  # shared by all senders: each mail goes out once
            if item is None:
                break
            mid, raw = item
            start = time.monotonic()
            ok, reply = False, ""
            try:
                errors, _ = await client.sendmail(OFFICER_EMAIL, [GATEWAY_ADDRESS], raw)
                ok = not errors
            except aiosmtplib.SMTPResponseException as refused:  # 4xx/5xx: the connection stays usable
                reply = f"{refused.code} {refused.message}"
            except (aiosmtplib.SMTPException, OSError) as exc:
                reply = f"{type(exc).__name__}: {exc}"
                client.close()
                client = await _connect(port)
            out.append(Delivery(mid, start, time.monotonic(), ok, reply))
    finally:
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            await client.quit()
        client.close()


async def one_shot(port: int, mid: str, raw: bytes) -> Delivery:
    """A connection of its own for one mail (as each officer's mail server delivers)."""
    start = time.monotonic()
    ok, reply = False, ""
    try:
        errors, _ = await aiosmtplib.send(raw, sender=OFFICER_EMAIL, recipients=[GATEWAY_ADDRESS],
                                          hostname="127.0.0.1", port=port, timeout=SMTP_TIMEOUT)
        ok = not errors
    except aiosmtplib.SMTPResponseException as refused:
        reply = f"{refused.code} {refused.message}"
    except (aiosmtplib.SMTPException, OSError) as exc:
        reply = f"{type(exc).__name__}: {exc}"
    return Delivery(mid, start, time.monotonic(), ok, reply)


async def ingress(sink: AckSink, *, port: int, template: bytes, tag: str, count: int, senders: int,
                  warmup: float, duration: float) -> dict[str, Any]:
    """Messages/s answered 250 by `senders` back-to-back senders, counted in a window after a warm-up.

    The copies differ only in Message-ID; they are made before the clock starts.
    """
    marker = INGRESS_TEMPLATE_ID.encode()
    mails = [(mid, template.replace(marker, mid.encode(), 1))
             for mid in (f"<bench-{tag}-{i:06d}@police.test>" for i in range(count))]
    feed = iter(mails)
    out: list[Delivery] = []
    start = time.monotonic()
    opens, closes = start + warmup, start + warmup + duration
    await asyncio.gather(*(persistent_sender(port, feed, out, stop_at=closes) for _ in range(senders)))
    window = [d for d in out if d.ok and opens <= d.done < closes]
    counted = len(window)
    times = sorted(d.done - d.start for d in window)
    refused = [d.reply for d in out if not d.ok]
    return {"rate": counted / duration, "counted": counted, "accepted": sum(d.ok for d in out),
            "p99": times[min(len(times) - 1, int(0.99 * len(times)))] if times else 0.0,
            "refused": len(refused), "first_refusal": refused[0] if refused else "",
            "exhausted": next(feed, None) is None}


async def deliver(sink: AckSink, *, port: int, path: str, mode: str, senders: int = 10,
                  rate: float | None = None, ack_timeout: float = 120.0) -> dict[str, Any]:
    """Send a prepared set and wait for the acknowledgement of each accepted mail.

    mode "burst": `senders` back-to-back senders drain the set (throughput);
    "paced": one new connection every 1/`rate` s, whether or not earlier ones finished (open loop);
    "together": every mail at once, each on its own connection.
    """
    mails = load(Path(path))
    sink.forget(mid for mid, _ in mails)
    out: list[Delivery] = []
    start = time.monotonic()
    if mode == "burst":
        feed = iter(mails)
        await asyncio.gather(*(persistent_sender(port, feed, out) for _ in range(senders)))
    elif mode == "paced":
        if not rate or rate <= 0:
            raise ValueError("paced delivery needs a positive rate")
        tasks = []
        for index, (mid, raw) in enumerate(mails):
            await asyncio.sleep(max(0.0, start + index / rate - time.monotonic()))
            tasks.append(asyncio.create_task(one_shot(port, mid, raw)))
        out = list(await asyncio.gather(*tasks))
    elif mode == "together":
        out = list(await asyncio.gather(*(one_shot(port, mid, raw) for mid, raw in mails)))
    else:
        raise ValueError(f"unknown mode {mode!r}")
    del mails
    all_accepted = time.monotonic()
    missing = await sink.wait_for({d.message_id for d in out if d.ok}, time.monotonic() + ack_timeout)
    return {
        "start": start, "all_accepted": all_accepted,
        "deliveries": [(d.message_id, d.start, d.done, d.ok) for d in out],
        "refusals": [d.reply for d in out if not d.ok],
        "acks": {d.message_id: sink.acks[d.message_id] for d in out if d.message_id in sink.acks},
        "subjects": {d.message_id: sink.subjects[d.message_id] for d in out if d.message_id in sink.subjects},
        "missing": sorted(missing), "unmatched": sink.unmatched,
    }


def _latencies(out: list[Delivery], acks: dict[str, float], deadline: float) -> list[float]:
    """Arrival to acknowledgement per accepted mail; a missing one counts as the whole wait."""
    return [acks.get(d.message_id, deadline) - d.start for d in out if d.ok]


async def flood(sink: AckSink, *, port: int, templates: list[bytes], tag: str, rate: float, duration: float,
                senders: int, real_path: str, real_rate: float, ack_timeout: float) -> dict[str, Any]:
    """Item 4: forged mail at `rate`/s on `senders` persistent connections for `duration` s (each copy
    made distinct by its Message-ID), while real signed requests arrive at `real_rate`/s, each on a
    connection of its own as an officer's mail server sends it. The flood is open loop: copy i is
    due at start + i/rate, and a sender that falls behind sends the next at once (the achieved rate
    says how much the gateway took)."""
    marker = FLOOD_TEMPLATE_ID.encode()
    real = load(Path(real_path))
    sink.forget(mid for mid, _ in real)
    counter = iter(range(10**9))
    flood_out: list[Delivery] = []
    start = time.monotonic()
    closes = start + duration

    def forged() -> Iterator[tuple[str, bytes]]:
        while True:
            i = next(counter)
            due = start + i / rate
            if due >= closes:
                return
            mid = f"<flood-{tag}-{i:07d}@police.test>"
            yield mid, templates[i % len(templates)].replace(marker, mid.encode(), 1)

    feed = forged()

    async def flood_sender() -> None:
        client = await _connect(port)
        try:
            for mid, raw in feed:
                index = int(mid.split("-")[-1].split("@")[0])
                await asyncio.sleep(max(0.0, start + index / rate - time.monotonic()))
                if time.monotonic() >= closes:
                    break
                began, ok, reply = time.monotonic(), False, ""
                try:
                    errors, _ = await client.sendmail(OFFICER_EMAIL, [GATEWAY_ADDRESS], raw)
                    ok = not errors
                except aiosmtplib.SMTPResponseException as refused:
                    reply = f"{refused.code} {refused.message}"
                except (aiosmtplib.SMTPException, OSError) as exc:
                    reply = f"{type(exc).__name__}: {exc}"
                    client.close()
                    client = await _connect(port)
                flood_out.append(Delivery(mid, began, time.monotonic(), ok, reply))
        finally:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await client.quit()
            client.close()

    async def real_sender() -> list[Delivery]:
        tasks = []
        for index, (mid, raw) in enumerate(real):
            await asyncio.sleep(max(0.0, start + 0.5 + index / real_rate - time.monotonic()))
            tasks.append(asyncio.create_task(one_shot(port, mid, raw)))
        return list(await asyncio.gather(*tasks))

    results = await asyncio.gather(real_sender(), *(flood_sender() for _ in range(senders)))
    real_out: list[Delivery] = results[0]
    flood_ended = time.monotonic()
    deadline = time.monotonic() + ack_timeout
    missing = await sink.wait_for({d.message_id for d in real_out if d.ok}, deadline)
    accepted = [d for d in flood_out if d.ok]
    in_window = [d for d in accepted if d.done < closes]
    return {
        "latencies": _latencies(real_out, sink.acks, deadline),
        "real_refusals": [d.reply for d in real_out if not d.ok],
        "missing": sorted(missing),
        "subjects": {d.message_id: sink.subjects.get(d.message_id, "") for d in real_out},
        "flood_sent": len(flood_out), "flood_accepted": len(accepted),
        "flood_rate": len(in_window) / duration,
        "flood_refused": sorted({d.reply for d in flood_out if not d.ok})[:3],
        "flood_p99": sorted(d.done - d.start for d in accepted)[int(0.99 * (len(accepted) - 1))]
        if accepted else 0.0,
        "overrun": flood_ended - closes,
    }


class Reviewers:
    """The stand-in Bot API (tests/support/telegram_stub.py) with one approver in a private chat."""

    USER = 4242
    TOKEN = "424242:bench-token"

    def __init__(self) -> None:
        from tests.support.telegram_stub import FakeBotApi

        self.api = FakeBotApi(self.TOKEN, max_poll_timeout=1.0)


REVIEWERS: list[Reviewers] = []


async def telegram(sink: AckSink) -> dict[str, Any]:
    """Start the stand-in Bot API in this process (once); the gateway's [telegram] points at it."""
    if not REVIEWERS:
        reviewers = Reviewers()
        await reviewers.api.start()
        REVIEWERS.append(reviewers)
    api = REVIEWERS[0].api
    return {"base_url": api.base_url, "base_file_url": api.base_file_url, "token": Reviewers.TOKEN,
            "user": Reviewers.USER}


def _says(chat: int | None, text: str, call: Any) -> bool:
    return (chat is None or call.chat_id == chat) and text in str(call.params.get("text", ""))


async def reviewer_path(sink: AckSink, *, port: int, path: str, ack_timeout: float) -> dict[str, Any]:
    """Item 6: for each request, one after the other: send it, wait for its acknowledgement, then the
    reviewer types `/approve REF` in the chat; timed from the update's arrival at the Bot API to the
    decision mail at the smarthost (and to the bot's answer in the chat)."""
    api, user = REVIEWERS[0].api, Reviewers.USER
    mails = load(Path(path))
    sink.forget(mid for mid, _ in mails)
    to_mail, to_chat = [], []
    for mid, raw in mails:
        delivery = await one_shot(port, mid, raw)
        if not delivery.ok:
            raise BenchError(f"request refused: {delivery.reply}")
        if await sink.wait_for({mid}, time.monotonic() + ack_timeout):
            raise BenchError(f"no acknowledgement of {mid} within {ack_timeout:.0f} s")
        found = REF.search(sink.subjects[mid])
        if found is None:
            raise BenchError(f"no reference in the acknowledgement's subject {sink.subjects[mid]!r}")
        ref = found.group(0)
        await api.wait_for_sent(partial(_says, None, ref), timeout=ack_timeout)  # the new-request notice
        mark = len(api.sent)
        approved = time.monotonic()
        api.inject_message(user, user, f"/approve {ref} bench")
        answer = await api.wait_for_sent(partial(_says, user, f"{ref} approved"), timeout=ack_timeout,
                                         after=mark)
        to_chat.append(time.monotonic() - approved)
        deadline = time.monotonic() + ack_timeout
        while time.monotonic() < deadline:
            decided = [t for t, subject in sink.later.get(mid, []) if "approved" in subject]
            if decided:
                to_mail.append(decided[0] - approved)
                break
            sink.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sink.changed.wait(), timeout=0.5)
        else:
            raise BenchError(f"no decision mail for {ref} within {ack_timeout:.0f} s "
                             f"(chat said: {answer.params.get('text')!r})")
    return {"to_mail": to_mail, "to_chat": to_chat}


Command = Callable[..., Awaitable[dict[str, Any]]]
COMMANDS: dict[str, Command] = {"ingress": ingress, "deliver": deliver, "flood": flood, "telegram": telegram,
                                "reviewer_path": reviewer_path}


async def _serve(conn: Connection) -> None:
    sink = AckSink()
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(sink, hostname="smarthost.test", ident="bench-sink", decode_data=False),
        host="127.0.0.1", port=0)
    conn.send(("ready", server.sockets[0].getsockname()[1]))
    try:
        while True:
            try:
                command, kwargs = await asyncio.to_thread(conn.recv)
            except EOFError:  # the main process is gone
                break
            if command == "stop":
                break
            try:
                conn.send(("ok", await COMMANDS[command](sink, **kwargs)))
            except Exception:
                conn.send(("error", traceback.format_exc()))
    finally:
        server.close()
        for reviewers in REVIEWERS:
            await reviewers.api.stop()


def child_main(conn: Connection) -> None:
    asyncio.run(_serve(conn))


class LoadTimeout(BenchError):
    """The load process did not answer in time: its pipe is out of step, so the benchmark stops."""


class LoadProcess:
    """The main process's handle on the load process (spawned, so it shares nothing with us)."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=child_main, args=(child,), name="bench-load", daemon=True)
        self.process.start()
        child.close()
        kind, port = self._receive(60)
        if kind != "ready":
            raise BenchError(f"the load process did not start: {port}")
        self.sink_port: int = port

    def _receive(self, timeout: float) -> tuple[str, Any]:
        if not self.conn.poll(timeout):
            raise LoadTimeout(f"the load process did not answer within {timeout:.0f} s")
        kind, value = self.conn.recv()
        return kind, value

    def call(self, command: str, timeout: float, **kwargs: Any) -> dict[str, Any]:
        self.conn.send((command, kwargs))
        kind, value = self._receive(timeout)
        if kind != "ok":
            raise BenchError(f"load process, {command}:\n{value}")
        result: dict[str, Any] = value
        return result

    def close(self) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            self.conn.send(("stop", {}))
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(10)
        self.conn.close()
