"""What reviewers should know about who is asking, shown with every request: is this the
officer's (or agency's) first request, how earlier ones ended, how they were enrolled, and
whether mail claiming their address was refused lately (a hijacked mailbox shows here first)."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, func, literal, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.clock import utcnow
from gateway.models import Message, Officer, Request, RequestTally

SPOOF_WINDOW_DAYS = 30
# refused mail in the officer's name is counted up to this many, the latest first: a flood of
# forged mail claiming an officer's address (kept for `quarantine_retention_days`) must not be
# read whole by the transaction that records each of that officer's requests
REFUSED_COUNTED = 100
ENROLLED_VIA = {"operator": "by an operator", "enrolment": "by reviewers after an out-of-band check",
                "agency": "by its agency's key certification"}


# the reasons of the latest refused mail in the officer's name (one more than is counted: to
# know there was more)
LATEST_REFUSED = (
    select(Message.reason)
    .where(Message.direction == "inbound", Message.claimed_from == bindparam("email"),
           Message.state == "quarantined", Message.received_at >= bindparam("since"))
    .order_by(Message.received_at.desc()).limit(REFUSED_COUNTED + 1).subquery())

# all in one statement. The officer's and the agency's requests are read from their tallies
# (kept by triggers, gateway/models.py): a few rows per officer and agency, however many requests
# they sent; the request being shown is taken off them (-1: it is not an earlier one). Refused
# mail is counted over a 30-day window through its index, REFUSED_COUNTED (and one) at most.
# Built once (executed with its parameters): no construction nor cache-key generation per request.
HISTORY = union_all(
    select(literal("officer"), RequestTally.status, RequestTally.total)
    .where(RequestTally.scope == "officer", RequestTally.owner_id == bindparam("officer_id"),
           RequestTally.total > 0),
    select(literal("agency"), literal(""), func.coalesce(func.sum(RequestTally.total), 0))
    .where(RequestTally.scope == "agency", RequestTally.owner_id == bindparam("agency_id")),
    select(literal("officer"), Request.status, literal(-1))
    .where(Request.id == bindparam("request_id"), Request.officer_id == bindparam("officer_id")),
    select(literal("agency"), literal(""), literal(-1))
    .where(Request.id == bindparam("request_id"), Request.agency_id == bindparam("agency_id")),
    select(literal("refused"), LATEST_REFUSED.c.reason, func.count()).group_by(LATEST_REFUSED.c.reason))


def history_params(officer: Officer, request_id: int | None) -> dict[str, Any]:
    """`HISTORY`'s parameters; `request_id` is the one being shown (not counted as earlier)."""
    return {"officer_id": officer.id, "agency_id": officer.agency_id, "request_id": request_id or 0,
            "email": officer.email, "since": utcnow() - timedelta(days=SPOOF_WINDOW_DAYS)}


async def reputation_lines(session: AsyncSession, officer: Officer, request_id: int | None) -> list[str]:
    """Short lines for /show and the new-request notice; `request_id` is the one being shown."""
    rows = (await session.execute(HISTORY, history_params(officer, request_id))).all()
    return reputation_text(officer, [tuple(row) for row in rows])


def reputation_text(officer: Officer, rows: list[tuple[str, str, int]]) -> list[str]:
    """The lines, from `HISTORY`'s rows (kind, key, count)."""
    earlier: Counter[str] = Counter()
    for kind, key, n in rows:
        if kind == "officer":
            earlier[key] += n
    earlier = +earlier  # without the statuses left at nothing
    agency_count = sum(n for kind, _key, n in rows if kind == "agency")
    refused = {key: n for kind, key, n in rows if kind == "refused"}
    if earlier:
        outcomes = ", ".join(f"{n} {status.replace('_', ' ')}"
                             for status, n in earlier.most_common())
        lines = [f"History: {sum(earlier.values())} earlier request(s) from this officer ({outcomes}); "
                 f"{agency_count} from {officer.agency.name}"]
    elif agency_count:
        lines = [f"History: first request from this officer; {agency_count} earlier from "
                 f"{officer.agency.name}"]
    else:
        lines = [f"History: first request from this officer and from {officer.agency.name}"]
    lines.append(f"Enrolled {officer.created_at:%Y-%m-%d} "
                 f"{ENROLLED_VIA.get(officer.enrolled_via, officer.enrolled_via)}")
    if refused:
        reasons = ", ".join(f"{reason} ×{n}" for reason, n in Counter(refused).most_common())
        total = sum(refused.values())
        counted = f"{total} refused message(s)"
        if total > REFUSED_COUNTED:
            counted = f"more than {REFUSED_COUNTED} refused messages"
            reasons = f"{reasons} among the latest {total}"
        lines.append(f"⚠️ {counted} claimed {officer.email} in the last {SPOOF_WINDOW_DAYS} days: {reasons} "
                     "(lers quarantine list)")
    return lines
