"""The transparency report's figures, computed from the database.

Every figure counts the requests received in the period (arrival time, UTC, both dates
included), as they stand when the report is made; each request's outcome comes from
handlers/outcomes.py, the function `/stats` uses too. The figures are plain data (Report,
Figure, Row) so that the HTML page, its charts, the CSV and the JSON all show the same numbers.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import select

from gateway.clock import utcnow
from gateway.config import Settings
from gateway.db import Database
from gateway.models import Agency, Notice, Request
from handlers.form import REQUEST_TYPES
from handlers.outcomes import GROUP_OUTCOMES, OUTCOMES, UNDECIDED, group, outcomes

TYPE_LABELS = {
    "preservation": "Preservation", "preservation_extension": "Preservation extension",
    "emergency_disclosure": "Emergency disclosure", "subpoena": "Subpoena", "court_order": "Court order",
    "search_warrant": "Search warrant", "mlat": "MLAT / letters rogatory", "asset_freeze": "Asset freeze",
    "freeze_release": "Freeze release", "type_missing": "Type not given (yet)",
}
NDO_LABELS = {"until_date": "Order until a date", "indefinite": "Indefinite order", "none": "No order"}
NOTICE_LABELS = {"sent": "Sent", "held": "Held (an order or emergency delay runs)",
                 "cancelled": "Cancelled (request withdrawn)"}
# time from arrival to decision: (category, label, upper bound in hours)
WAIT_BUCKETS = (("under_4h", "Under 4 hours", 4.0), ("4h_to_1d", "4 to 24 hours", 24.0),
                ("1d_to_3d", "1 to 3 days", 72.0), ("3d_to_10d", "3 to 10 days", 240.0),
                ("over_10d", "More than 10 days", float("inf")))


@dataclass(frozen=True)
class Row:
    category: str  # stable key (CSV, JSON)
    label: str  # what a reader sees
    count: int


@dataclass(frozen=True)
class Figure:
    name: str
    title: str
    rows: tuple[Row, ...]
    unit: str = "requests"
    note: str = ""

    @property
    def total(self) -> int:
        return sum(row.count for row in self.rows)


@dataclass(frozen=True)
class Stat:
    name: str
    label: str
    value: int | float | None  # None: nothing to compute it from (e.g. no request decided)


@dataclass(frozen=True)
class Report:
    platform: str
    start: date
    end: date
    generated_at: datetime
    min_country_requests: int
    summary: tuple[Stat, ...]
    figures: tuple[Figure, ...]


@dataclass(frozen=True)
class RequestRow:
    """The facts about one request that the figures need."""

    type: str | None
    country: str | None
    emergency: bool
    ndo: str  # until_date | indefinite | none
    hours_to_decision: float | None
    outcome: str


def period_bounds(start: date, end: date) -> tuple[datetime, datetime]:
    """[start 00:00 UTC, the day after end 00:00 UTC): both dates included."""
    if start > end:
        raise ValueError(f"the period starts ({start}) after it ends ({end})")
    return datetime.combine(start, time(), UTC), datetime.combine(end + timedelta(days=1), time(), UTC)


async def compute(db: Database, settings: Settings, start: date, end: date) -> Report:
    """Read the period's requests, their outcomes and their notices, and make the figures."""
    begin, stop = period_bounds(start, end)
    period = (Request.created_at >= begin, Request.created_at < stop)
    async with db.transaction() as session:
        outcome = await outcomes(session, *period)
        found = await session.execute(
            select(Request.id, Request.type, Request.emergency, Request.nondisclosure_until,
                   Request.nondisclosure_indefinite, Request.created_at, Request.decided_at, Agency.country)
            .join(Agency, Request.agency_id == Agency.id).where(*period))
        rows = [_row(r, outcome.get(r.id, "open")) for r in found]
        notices = Counter(state for (state,) in await session.execute(
            select(Notice.state).join(Request, Notice.request_id == Request.id).where(*period)))
    return build(rows, notices, settings.report_platform, start, end, settings.report.min_country_requests)


def _row(r: Any, outcome: str) -> RequestRow:
    ndo = "indefinite" if r.nondisclosure_indefinite else "until_date" if r.nondisclosure_until else "none"
    hours = (r.decided_at - r.created_at).total_seconds() / 3600 if r.decided_at else None
    country = r.country.strip().upper() if r.country and r.country.strip() else None
    return RequestRow(r.type, country, bool(r.emergency), ndo, hours, outcome)


def build(rows: Sequence[RequestRow], notices: Counter[str], platform: str, start: date, end: date,
          min_country_requests: int) -> Report:
    """The figures from the requests' facts (pure: no database, no clock but the stamp)."""
    by_outcome = Counter(r.outcome for r in rows)
    in_group = {kind: Counter(r.outcome for r in rows if group(r.type) == kind) for kind in GROUP_OUTCOMES}
    types = Counter(r.type or "type_missing" for r in rows)
    waits = [r.hours_to_decision for r in rows if r.hours_to_decision is not None]
    emergency_waits = [r.hours_to_decision for r in rows if r.emergency and r.hours_to_decision is not None]
    emergency = Counter(r.outcome for r in rows if r.emergency)
    ndo = Counter(r.ndo for r in rows)
    decided_data = sum(in_group["data"].values()) - sum(in_group["data"][k] for k in UNDECIDED)
    produced = in_group["data"]["produced_in_full"] + in_group["data"]["produced_in_part"]
    figures = (
        Figure("by_country", "Requests by country of the requesting authority",
               by_country(Counter(r.country for r in rows), min_country_requests),
               note=f"Countries with fewer than {min_country_requests} requests in the period are "
                    "shown together." if min_country_requests > 1 else ""),
        Figure("by_type", "Requests by type", tuple(
            Row(kind, TYPE_LABELS[kind], types[kind])
            for kind in (*REQUEST_TYPES, "type_missing") if kind != "type_missing" or types[kind])),
        Figure("data_outcomes", "Data requests by outcome", _outcome_rows("data", in_group["data"]),
               note="Emergency disclosures, subpoenas, court orders, search warrants and MLAT requests "
                    "that were decided. Open and withdrawn requests are counted apart."),
        Figure("preservation_outcomes", "Preservation requests by outcome",
               _outcome_rows("preservation", in_group["preservation"]),
               note="A preservation keeps data from deletion until the authority sends legal process; "
                    "it discloses nothing."),
        Figure("freeze_outcomes", "Asset freezes and freeze releases by outcome",
               _outcome_rows("freeze", in_group["freeze"]), note="A freeze discloses nothing."),
        Figure("undecided", "Open and withdrawn requests (all types)",
               tuple(Row(key, _cap(OUTCOMES[key]), by_outcome[key]) for key in UNDECIDED)),
        Figure("emergency_outcomes", "Emergency requests by outcome",
               tuple(Row(key, _cap(label), n) for key, label in OUTCOMES.items() if (n := emergency[key])),
               note="Requests made as emergencies (a danger of death or serious injury), all types."),
        Figure("nondisclosure", "Requests under a non-disclosure order",
               tuple(Row(key, label, ndo[key]) for key, label in NDO_LABELS.items()),
               note="An order that forbids telling the user, as it stands now."),
        Figure("notices", "Notices to users", tuple(
            Row(key, label, notices[key]) for key, label in NOTICE_LABELS.items()), unit="notices",
               note="Notices telling users that a request concerned their account, for the requests "
                    "of the period."),
        Figure("time_to_decision", "Time from arrival to decision", _wait_rows(waits),
               note="Requests decided (approved in full or in part, or rejected)."),
    )
    summary = (
        Stat("requests", "Requests received", len(rows)),
        Stat("emergency_requests", "Emergency requests", sum(1 for r in rows if r.emergency)),
        Stat("decided", "Requests decided", len(waits)),
        Stat("data_produced_percent", "Decided data requests where data was produced (%)",
             _percent(produced, decided_data)),
        Stat("nondisclosure_percent", "Requests under a non-disclosure order (%)",
             _percent(ndo["until_date"] + ndo["indefinite"], len(rows))),
        Stat("median_hours_to_decision", "Median time to decision (hours)", _median(waits)),
        Stat("median_hours_to_decision_emergency", "Median time to decision, emergencies (hours)",
             _median(emergency_waits)),
        Stat("notices_sent", "Notices to users sent", notices["sent"]),
        Stat("notices_held", "Notices to users held", notices["held"]),
    )
    return Report(platform, start, end, utcnow().replace(microsecond=0), min_country_requests, summary,
                  figures)


def by_country(counts: Counter[str | None], minimum: int) -> tuple[Row, ...]:
    """Most requests first; countries below `minimum` together, then requests with no country."""
    shown = sorted(((c, n) for c, n in counts.items() if c is not None and n >= minimum),
                   key=lambda item: (-item[1], item[0]))
    rows = [Row(country, country, n) for country, n in shown]
    grouped = sum(n for c, n in counts.items() if c is not None and n < minimum)
    if grouped:
        rows.append(Row("other", f"Other countries (fewer than {minimum} requests each)", grouped))
    if counts[None]:
        rows.append(Row("unknown", "Country not recorded", counts[None]))
    return tuple(rows)


def _outcome_rows(kind: str, counts: Counter[str]) -> tuple[Row, ...]:
    return tuple(Row(key, _cap(OUTCOMES[key]), counts[key]) for key in GROUP_OUTCOMES[kind])


def _wait_rows(hours: list[float]) -> tuple[Row, ...]:
    counts: Counter[str] = Counter()
    for value in hours:
        counts[next(key for key, _, bound in WAIT_BUCKETS if value < bound)] += 1
    return tuple(Row(key, label, counts[key]) for key, label, _ in WAIT_BUCKETS)


def _percent(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 1) if whole else None


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def _cap(label: str) -> str:
    return label[:1].upper() + label[1:]
