"""Prometheus metrics for /metrics.

Two kinds, on purpose. Figures about the whole deployment (messages received, accepted and
refused, outbox and job queues, open requests) are computed from the database at scrape time,
so every gateway process sharing one PostgreSQL database reports the same, correct numbers and
a restart resets nothing. The received and refused counts come from the append-only audit log
(never purged, so they only grow, as counters must), counted once per process and then only
for the entries appended since the last scrape (`AuditTally`); the accepted count from accepted
messages (which are never purged either). Figures about this process's own work (how long gpg
verification takes) are in-process: a histogram per process, summed by Prometheus.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Select, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.clock import utcnow
from gateway.db import Database
from gateway.models import AuditEntry, Job, Message, Notice, Outbox, Request

OPEN_STATES = ("received", "under_review", "awaiting_info")  # as handlers/review.py
OUTBOX_WAITING = ("pending", "sending")
VERIFY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# the audit actions counted, each by one of its details
TALLIED = {"inbound.received": "transport", "inbound.refused": "reason"}


class ProcessMetrics:
    """What this process measures itself (one per gateway, so tests' gateways do not mix)."""

    def __init__(self) -> None:
        self.verification_seconds = Histogram(
            "lers_verification_seconds", "Time gpg took to verify (or decrypt and verify) one "
            "inbound message, in this process", buckets=VERIFY_BUCKETS, registry=None)
        self.audit_tally = AuditTally()

    @contextmanager
    def verifying(self) -> Iterator[None]:
        started = time.perf_counter()  # a duration, not a date: the injectable clock is not needed
        try:
            yield
        finally:
            self.verification_seconds.observe(time.perf_counter() - started)


class AuditTally:
    """Audit entries of the `TALLIED` actions counted by their detail, read only once: each scrape
    reads the entries appended since the last one (by id), not the whole log, which grows by an
    entry or more for every message ever received. Exact because ids are committed in order:
    SQLite has one writer, and on PostgreSQL appenders hold the audit lock until they commit
    (gateway/audit.py), so no entry with a lower id can appear after a scrape has passed it."""

    def __init__(self) -> None:
        self.counted_to = 0  # the last audit id counted
        self.counts: Counter[tuple[str, str | None]] = Counter()
        self._lock = asyncio.Lock()  # two scrapes at once would count the same entries twice

    async def update(self, session: AsyncSession) -> None:
        async with self._lock:
            top = await session.scalar(select(func.max(AuditEntry.id))) or 0
            if top <= self.counted_to:
                return
            for action in TALLIED:
                rows = await session.execute(tally_query(action), {"after": self.counted_to, "top": top})
                for value, count in rows:
                    self.counts[(action, value)] += count
            self.counted_to = top

    def by(self, action: str) -> list[tuple[str | None, int]]:
        """(detail value, count) of one action, in the order of the values."""
        return sorted(((value, n) for (kind, value), n in self.counts.items() if kind == action),
                      key=lambda item: item[0] or "")


def tally_query(action: str) -> Select[Any]:
    """(detail value, count) of one action's audit entries with ids in (:after, :top]."""
    label = AuditEntry.details[TALLIED[action]].as_string()
    return (select(label, func.count())
            .where(AuditEntry.id > bindparam("after"), AuditEntry.id <= bindparam("top"),
                   AuditEntry.action == action).group_by(label))


async def notices_due(session: AsyncSession, now: datetime) -> int:
    """Notices to users whose hold has ended (as last judged by the scheduler) but not yet sent:
    more than a few for longer than a scheduler interval means the scheduler is not running."""
    return int(await session.scalar(select(func.count()).select_from(Notice).where(
        Notice.state == "held", Notice.not_before.is_not(None), Notice.not_before <= now)) or 0)


async def database_metrics(db: Database, tally: AuditTally) -> list[Metric]:
    """The deployment-wide figures, read in one snapshot that takes no write lock (on SQLite a
    scrape in a write transaction made every writer, SMTP's 250s included, wait for it)."""
    now = utcnow()
    async with db.reading() as session:
        await tally.update(session)
        received = CounterMetricFamily("lers_messages_received", "Inbound messages stored, by "
                                       "transport (duplicates of stored bytes excluded)",
                                       labels=["transport"])
        for transport, count in tally.by("inbound.received"):
            received.add_metric([transport or "unknown"], count)
        refused = CounterMetricFamily("lers_messages_refused", "Inbound messages refused, by reason "
                                      "(a released message refused again counts again)",
                                      labels=["reason"])
        for reason, count in tally.by("inbound.refused"):
            refused.add_metric([reason or "unknown"], count)
        accepted = CounterMetricFamily("lers_messages_accepted", "Inbound messages that passed "
                                       "every acceptance rule (requests, follow-ups, STATUS queries)")
        accepted.add_metric([], await session.scalar(
            select(func.count()).select_from(Message).where(Message.direction == "inbound",
                                                            Message.state == "accepted")) or 0)

        outbox = GaugeMetricFamily("lers_outbox_messages", "Replies in the outbox, by state",
                                   labels=["state"])
        for state, count in await session.execute(
                select(Outbox.state, func.count()).group_by(Outbox.state)):
            outbox.add_metric([state], count)
        oldest = await session.scalar(select(func.min(Outbox.created_at))
                                      .where(Outbox.state.in_(OUTBOX_WAITING)))
        depth = GaugeMetricFamily("lers_outbox_depth", "Replies waiting to be sent (pending or "
                                  "being sent)")
        depth.add_metric([], await session.scalar(select(func.count()).select_from(Outbox)
                                                  .where(Outbox.state.in_(OUTBOX_WAITING))) or 0)
        age = GaugeMetricFamily("lers_outbox_oldest_pending_age_seconds", "Age of the oldest reply "
                                "still waiting to be sent (0 when none waits)")
        age.add_metric([], max(0.0, (now - oldest).total_seconds()) if oldest else 0.0)

        jobs = GaugeMetricFamily("lers_jobs", "Jobs in the queue, by kind and state",
                                 labels=["kind", "state"])
        for kind, state, count in await session.execute(
                select(Job.kind, Job.state, func.count()).group_by(Job.kind, Job.state)):
            jobs.add_metric([kind, state], count)

        open_requests = GaugeMetricFamily("lers_requests_open", "Requests received, under review or "
                                          "awaiting information")
        open_requests.add_metric([], await session.scalar(
            select(func.count()).select_from(Request).where(Request.status.in_(OPEN_STATES))) or 0)
        overdue = GaugeMetricFamily("lers_requests_overdue", "Open requests past their deadline")
        overdue.add_metric([], await session.scalar(
            select(func.count()).select_from(Request).where(
                Request.status.in_(OPEN_STATES), Request.deadline < now)) or 0)
        notices = GaugeMetricFamily("lers_notices_due", "Data-subject notices due and not yet sent")
        notices.add_metric([], await notices_due(session, now))
    return [received, accepted, refused, outbox, depth, age, jobs, open_requests, overdue, notices]


class _Fixed(Collector):
    """Metric families computed beforehand (asynchronously), handed to the synchronous exposition."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


async def exposition(db: Database, process: ProcessMetrics) -> bytes:
    """The /metrics body in the Prometheus text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(await database_metrics(db, process.audit_tally)))
    registry.register(process.verification_seconds)
    return generate_latest(registry)
