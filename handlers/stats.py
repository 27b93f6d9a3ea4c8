"""`/stats`: the headline figures reviewers and their managers ask for, from the requests table.

Over the last 30 days (by arrival): requests received, by type and by outcome (the outcomes of
the transparency report, from handlers/outcomes.py, so the two never disagree), emergencies and
their outcomes, and the median time from arrival to decision; and the queue as it is now: how
many are open, the oldest, how many are overdue. Read-only, and audited like every command.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import select

from gateway import audit
from gateway.clock import utcnow
from gateway.models import Request, Reviewer
from handlers.outcomes import OUTCOMES, outcomes
from handlers.review import OPEN_STATES, ChatReply, ReviewContext, actor

WINDOW = timedelta(days=30)


async def show_stats(ctx: ReviewContext, reviewer: Reviewer) -> ChatReply:
    now = utcnow()
    since = now - WINDOW
    async with ctx.db.transaction() as session:
        recent = list(await session.execute(
            select(Request.id, Request.type, Request.status, Request.emergency, Request.created_at,
                   Request.decided_at).where(Request.created_at >= since)))
        outcome = await outcomes(session, Request.created_at >= since)  # one arriving meanwhile: open
        queue = list(await session.execute(
            select(Request.ref, Request.created_at, Request.deadline)
            .where(Request.status.in_(OPEN_STATES)).order_by(Request.created_at, Request.id)))
        await audit.record(session, actor(reviewer), "review.stats", None)
    lines = [f"Last 30 days (since {since:%Y-%m-%d %H:%M} UTC):",
             f"Requests received: {len(recent)}"]
    if recent:
        by_type = Counter(r.type or "(type missing)" for r in recent)
        lines.append("By type: " + ", ".join(f"{kind} {n}" for kind, n in sorted(by_type.items())))
        lines.append("Outcomes: " + _outcomes(outcome.get(r.id, "open") for r in recent))
        emergencies = [r for r in recent if r.emergency]
        of_emergencies = _outcomes(outcome.get(r.id, "open") for r in emergencies)
        lines.append(f"Emergencies: {len(emergencies)}" + (f" ({of_emergencies})" if emergencies else ""))
        waits = [(r.decided_at - r.created_at).total_seconds() / 3600 for r in recent if r.decided_at]
        lines.append(f"Median time to decision: {statistics.median(waits):.1f} h ({len(waits)} decided)"
                     if waits else "Median time to decision: none decided yet")
    lines += ["", "Queue now:", f"Open: {len(queue)}"]
    if queue:
        oldest = queue[0]
        lines.append(f"Oldest open: {oldest.ref}, {_age(now, oldest.created_at)} old "
                     f"(since {oldest.created_at:%Y-%m-%d %H:%M} UTC)")
        lines.append(f"Overdue: {sum(1 for r in queue if r.deadline is not None and r.deadline < now)}")
    return ChatReply("\n".join(lines))


def _outcomes(keys: Iterable[str]) -> str:
    counts = Counter(keys)
    return ", ".join(f"{label} {counts[key]}" for key, label in OUTCOMES.items() if counts[key])


def _age(now: datetime, since: datetime) -> str:
    hours = (now - since).total_seconds() / 3600
    return f"{hours:.0f}h" if hours < 48 else f"{hours / 24:.0f}d"
