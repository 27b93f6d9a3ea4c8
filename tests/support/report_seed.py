"""A generated year of requests for the transparency report's tests, written through the models.

Each request is built from a scenario that says what became of it (the outcome a reader of the
report should see) and writes the rows the gateway itself writes on that path: the reviews
(four-eyes first approvals, questions, notes, the final decision), the status, the production
and its outcome, the preservation or freeze, the user notices. `Seeded` keeps what the test needs
to compute every figure on its own, without the report's code.

The agencies' countries are chosen so that the grouping rule has work: some countries above the
threshold, one exactly at it, three below it (one of which also has many requests outside the
period), and requests with no country.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from gateway.db import Database
from gateway.models import Agency, Hold, Notice, Officer, Production, Request, Review, Reviewer

DATA_TYPES = ("emergency_disclosure", "subpoena", "court_order", "search_warrant", "mlat")
# countries with exact counts inside the period (threshold 5): PL at it, IS/LU/MT below, None apart
FIXED_COUNTRIES = {"PL": 5, "IS": 1, "LU": 3, "MT": 4, None: 2}
BIG_COUNTRIES = ("DE", "FR", "US", "GB", "NL")
BIG_WEIGHTS = (30, 20, 25, 15, 10)


@dataclass(frozen=True)
class Seeded:
    ref: str
    type: str | None
    country: str | None
    emergency: bool
    ndo: str  # until_date | indefinite | none
    created_at: datetime
    minutes_to_decision: int | None
    expected: str  # what became of it, in the words of handlers/outcomes.py's OUTCOMES keys
    notices: tuple[str, ...]  # the states of its user notices
    in_period: bool


@dataclass(frozen=True)
class Route:
    """One way a request goes: its status, the reviews in order, production, hold, decided or not."""

    expected: str
    status: str
    reviews: tuple[str, ...]
    production: str | None = None
    hold: tuple[str, str, int] | None = None  # kind, state, extensions

    @property
    def decided(self) -> bool:
        return any(r in ("approve", "partial", "reject") for r in self.reviews)


DATA_PATHS = (
    (30, Route("produced_in_full", "fulfilled", ("approve",), "data")),
    (8, Route("produced_in_full", "fulfilled", ("note", "approve_first", "approve"), "data")),
    (8, Route("produced_in_part", "fulfilled", ("partial",), "data")),
    # four-eyes: the second approver narrowed the first's approval, so the final act is a partial
    (5, Route("produced_in_part", "fulfilled", ("approve_first", "partial"), "data")),
    (6, Route("no_data", "fulfilled", ("approve",), "no_data")),
    (3, Route("no_data", "fulfilled", ("partial",), "no_data")),
    (3, Route("production_pending", "approved", ("approve",))),
    (12, Route("rejected", "rejected", ("reject",))),
    (4, Route("rejected", "rejected", ("ask", "reject"))),
    # a first approval, then the second approver rejects
    (3, Route("rejected", "rejected", ("approve_first", "reject"))),
    (5, Route("open", "received", ())),
    (4, Route("open", "under_review", ("note", "approve_first"))),
    (3, Route("open", "awaiting_info", ("ask",))),
    (3, Route("withdrawn", "withdrawn", ())),
    # approved, then withdrawn before the data was produced: nothing went out
    (2, Route("withdrawn", "withdrawn", ("approve",))),
)
PRESERVATION_PATHS = (
    (10, Route("preserved", "preserved", ("approve",), hold=("preservation", "active", 0))),
    (5, Route("preservation_extended", "extended", ("approve",), hold=("preservation", "active", 1))),
    (6, Route("preservation_expired", "expired", ("approve",), hold=("preservation", "expired", 0))),
    (3, Route("preservation_expired", "expired", ("partial",), hold=("preservation", "expired", 2))),
    (3, Route("rejected", "rejected", ("reject",))),
    (2, Route("open", "received", ())),
    (2, Route("withdrawn", "withdrawn", ("approve",), hold=("preservation", "released", 0))),
)
FREEZE_PATHS = (
    (6, Route("frozen", "approved", ("approve",), hold=("freeze", "active", 0))),
    (3, Route("freeze_expired", "approved", ("approve",), hold=("freeze", "expired", 0))),
    (3, Route("freeze_released", "approved", ("approve",), hold=("freeze", "released", 0))),
    (2, Route("rejected", "rejected", ("reject",))),
    (1, Route("open", "under_review", ())),
)
RELEASE_PATHS = (
    (4, Route("freeze_release_done", "fulfilled", ("approve",))),
    (1, Route("rejected", "rejected", ("reject",))),
)
EXTENSION_PATHS = (  # a standalone preservation extension: approved, but there is nothing to extend
    (1, Route("approved_no_action", "approved", ("approve",))),
)
MISSING_TYPE_PATHS = (
    (2, Route("open", "awaiting_info", ())),
    (1, Route("rejected", "rejected", ("reject",))),
    (1, Route("withdrawn", "withdrawn", ())),
)
TYPE_WEIGHTS = (
    ("emergency_disclosure", 10), ("subpoena", 30), ("court_order", 20), ("search_warrant", 10),
    ("mlat", 5), ("preservation", 15), ("preservation_extension", 1), ("asset_freeze", 5),
    ("freeze_release", 2), (None, 2),
)


def routes_for(request_type: str | None) -> tuple[tuple[int, Route], ...]:
    if request_type in DATA_TYPES:
        return DATA_PATHS
    return {"preservation": PRESERVATION_PATHS, "asset_freeze": FREEZE_PATHS,
            "freeze_release": RELEASE_PATHS, "preservation_extension": EXTENSION_PATHS,
            None: MISSING_TYPE_PATHS}[request_type]


async def seed_year(db: Database, start: date, *, count: int = 400, seed: int = 10) -> list[Seeded]:
    """`count` requests over the 365 days from `start`, plus a few just outside that period."""
    rng = random.Random(seed)
    begin = datetime.combine(start, time(), UTC)
    end = begin + timedelta(days=365)
    countries: list[str | None] = [c for c, n in FIXED_COUNTRIES.items() for _ in range(n)]
    countries += rng.choices(BIG_COUNTRIES, BIG_WEIGHTS, k=count - len(countries))
    rng.shuffle(countries)
    arrivals = [begin + timedelta(seconds=rng.randrange(365 * 86400)) for _ in range(count - 2)]
    arrivals += [begin, end - timedelta(seconds=1)]  # the first and the last second of the period
    plan = [(arrival, country, True) for arrival, country in zip(arrivals, countries, strict=True)]
    # outside the period: a second early, on the next day, and many from a country grouped inside it
    plan += [(begin - timedelta(seconds=1), "DE", False), (end, "FR", False)]
    plan += [(begin - timedelta(days=rng.randrange(1, 300)), "IS", False) for _ in range(10)]

    seeded: list[Seeded] = []
    async with db.transaction() as session:
        reviewers = [Reviewer(telegram_id=9000 + n, name=f"Reviewer {n}", role="approver") for n in range(2)]
        session.add_all(reviewers)
        officers: dict[str | None, Officer] = {}
        for country in (*BIG_COUNTRIES, *FIXED_COUNTRIES):
            name = country or "none"
            agency = Agency(name=f"Police {name}", domain=f"police-{name.lower()}.test", country=country)
            session.add(agency)
            await session.flush()
            officers[country] = Officer(email=f"officer@police-{name.lower()}.test", agency_id=agency.id,
                                        key_fingerprint=f"{agency.id:040X}")
            session.add(officers[country])
        await session.flush()
        for number, (arrival, country, in_period) in enumerate(sorted(plan, key=lambda p: p[0]), 1):
            kinds, weights = zip(*TYPE_WEIGHTS, strict=True)
            request_type = rng.choices(kinds, weights)[0]
            route = rng.choices([p for _, p in routes_for(request_type)],
                               [w for w, _ in routes_for(request_type)])[0]
            emergency = request_type == "emergency_disclosure" or rng.random() < 0.05
            ndo = rng.choices(("none", "until_date", "indefinite"), (60, 30, 10))[0]
            minutes = None
            if route.decided:
                minutes = rng.randrange(10, 12 * 60) if emergency else rng.randrange(30, 30 * 24 * 60)
            officer = officers[country]
            request = Request(
                ref=f"LERS-{arrival.year}-{number:06d}", type=request_type, status=route.status,
                emergency=emergency, officer_id=officer.id, agency_id=officer.agency_id,
                thread_message_id="", created_at=arrival,
                decided_at=arrival + timedelta(minutes=minutes) if minutes is not None else None,
                nondisclosure_until=(arrival + timedelta(days=rng.randrange(30, 700))).date()
                if ndo == "until_date" else None,
                nondisclosure_indefinite=ndo == "indefinite",
                emergency_justification="imminent danger" if emergency else None)
            session.add(request)
            await session.flush()
            for order, action in enumerate(route.reviews):
                session.add(Review(request_id=request.id, reviewer_id=reviewers[order % 2].id, action=action,
                                   created_at=arrival + timedelta(minutes=order + 1)))
            if route.production:
                session.add(Production(request_id=request.id, outcome=route.production, manifest_signature="",
                                       zip_sha256="0" * 64, zip_bytes=100, parts=1,
                                       rows=0 if route.production == "no_data" else rng.randrange(1, 500)))
            if route.hold:
                kind, state, extensions = route.hold
                expires = arrival + timedelta(days=90 * (1 + extensions))
                session.add(Hold(request_id=request.id, kind=kind, state=state, subjects=[],
                                 starts_at=arrival, expires_at=expires, extensions=extensions))
            states = _notices(rng, route, ndo, emergency)
            final = next((r for r in reversed(route.reviews) if r in ("approve", "partial", "reject")),
                         "approve")
            for index, state in enumerate(states):
                session.add(Notice(request_id=request.id, email=f"user{index}@{number}.example",
                                   subject_type="account_id", subject_value=str(number * 10 + index),
                                   language="en", decision=final, state=state,
                                   hold="none" if state == "sent" else "ndo"))
            seeded.append(Seeded(request.ref, request_type, country, emergency, ndo, arrival, minutes,
                                 route.expected, tuple(states), in_period))
    return seeded


def _notices(rng: random.Random, route: Route, ndo: str, emergency: bool) -> list[str]:
    """Notices are made at the decision: none for an undecided request; cancelled on withdrawal."""
    if not route.decided:
        return []
    count = rng.choice((0, 1, 1, 2))
    if route.status == "withdrawn":
        return ["cancelled"] * count
    if ndo != "none" or (emergency and rng.random() < 0.5):
        return ["held"] * count
    return ["sent"] * count
