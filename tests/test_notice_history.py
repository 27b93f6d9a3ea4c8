"""The history the reviewers' notice of every new request shows, read in the transaction that
records the request, on each backend (`LERS_TEST_BACKEND`): the officer's and the agency's
requests come from tallies (gateway/models.py `RequestTally`), which the database's triggers keep
equal to a count of the requests through every way a request is added, changed or removed (and
the upgrade that adds them counts the requests already on file); refused mail in the officer's
name is counted up to a bound, so a flood of forged mail is not read whole for each request."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

from alembic import command
from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session

from gateway.clock import utcnow
from gateway.db import alembic_config
from gateway.models import Agency, Message, Officer, Request, RequestTally
from gateway.vault import ACTIVE_VAULT, Vault, new_data_key
from handlers.reputation import HISTORY, REFUSED_COUNTED, history_params, reputation_text

Tallies = dict[tuple[str, int, str], int]
T = TypeVar("T")


async def _on_new_database(tmp_path: Path, database_urls: Callable[[], str | None],
                           work: Callable[[Connection], T], *, upgraded: bool = True) -> T:
    """`work` in one transaction on a new database of the backend under test (at the migrations'
    head unless not `upgraded`)."""
    engine = create_async_engine(database_urls() or f"sqlite+aiosqlite:///{tmp_path / 'tallies.db'}")

    def run(conn: Connection) -> T:
        if upgraded:
            command.upgrade(alembic_config(conn), "head")
        return work(conn)

    try:
        async with engine.begin() as connection:
            return await connection.run_sync(run)
    finally:
        await engine.dispose()


def _counted(conn: Connection) -> Tallies:
    """What the tallies must say: the requests counted."""
    counts: Tallies = {}
    for scope, column in (("officer", Request.officer_id), ("agency", Request.agency_id)):
        for owner, status, n in conn.execute(select(column, Request.status, func.count())
                                             .group_by(column, Request.status)):
            counts[(scope, owner, status)] = n
    return counts


def _tallied(conn: Connection) -> Tallies:
    """What the tallies say, statuses left at nothing aside."""
    rows = conn.execute(select(RequestTally.scope, RequestTally.owner_id, RequestTally.status,
                               RequestTally.total))
    return {(scope, owner, status): total for scope, owner, status, total in rows if total}


def _people(conn: Connection) -> tuple[list[int], list[int]]:
    """Two agencies; officers 0 and 1 in the first, 2 in the second. Returns (agencies, officers)."""
    agencies = [conn.execute(insert(Agency).values(name=name, domain=f"{name}.test").returning(Agency.id))
                .scalar_one() for name in ("north", "south")]
    officers = [conn.execute(insert(Officer).values(email=f"o{n}@police.test", agency_id=agency,
                                                    key_fingerprint=f"{n}" * 40).returning(Officer.id))
                .scalar_one() for n, agency in enumerate((agencies[0], agencies[0], agencies[1]))]
    return agencies, officers


def _add_request(conn: Connection, officer: int, agency: int, status: str) -> int:
    number = conn.scalar(select(func.count()).select_from(Request)) or 0
    return conn.execute(insert(Request).values(
        ref=f"LERS-T-{number:06d}", status=status, officer_id=officer, agency_id=agency,
        thread_message_id=f"<t{number}@police.test>", data_categories=[], missing_fields=[],
        thread_references=[]).returning(Request.id)).scalar_one()


def _follow_every_change(conn: Connection) -> list[Tallies]:
    """Requests added, changed and removed every way the gateway's code does (Core statements, the
    ORM's unit of work, several rows in one statement); the tallies and the counts at each step."""
    agencies, officers = _people(conn)
    seen = []

    def step() -> None:
        seen.append(_counted(conn))
        assert _tallied(conn) == seen[-1], f"after step {len(seen)}"

    first = _add_request(conn, officers[0], agencies[0], "received")
    for status in ("received", "received", "awaiting_info"):
        _add_request(conn, officers[1], agencies[0], status)
    _add_request(conn, officers[2], agencies[1], "received")
    step()
    conn.execute(update(Request).where(Request.id == first).values(status="under_review"))
    step()
    conn.execute(update(Request).where(Request.id == first).values(status="under_review",
                                                                   updated_at=utcnow()))  # no change
    step()
    session = Session(bind=conn)  # the ORM, as the review and follow-up handlers change a request
    request = session.get_one(Request, first)
    request.status = "approved"
    session.flush()
    step()
    session.close()
    conn.execute(update(Request).where(Request.officer_id == officers[1]).values(status="rejected"))
    step()
    conn.execute(update(Request).where(Request.id == first).values(officer_id=officers[2],
                                                                   agency_id=agencies[1]))
    step()
    conn.execute(delete(Request).where(Request.officer_id == officers[1], Request.id % 2 == 0))
    step()
    return seen


async def test_tallies_follow_every_change_of_a_request(
        tmp_path: Path, database_urls: Callable[[], str | None]) -> None:
    seen = await _on_new_database(tmp_path, database_urls, _follow_every_change)
    # the first step's: officers 1 / 2+1 / 1 (received / received+awaiting), agencies 3+1 / 1
    assert sorted(seen[0].values()) == [1, 1, 1, 1, 1, 2, 3], seen[0]
    assert len({tuple(sorted(s.items())) for s in seen}) == len(seen) - 1  # all but the no-change moved


def _requests_before_upgrade(conn: Connection) -> Tallies:
    config = alembic_config(conn)
    command.upgrade(config, "0010")
    agencies, officers = _people(conn)
    for n in range(7):
        _add_request(conn, officers[n % 3], agencies[n % 3 // 2], ("received", "approved")[n % 2])
    command.upgrade(config, "head")
    assert _tallied(conn) == _counted(conn)
    _add_request(conn, officers[0], agencies[0], "received")  # and the triggers carry on
    assert _tallied(conn) == _counted(conn)
    return _tallied(conn)


async def test_the_upgrade_counts_the_requests_on_file(
        tmp_path: Path, database_urls: Callable[[], str | None]) -> None:
    tallies = await _on_new_database(tmp_path, database_urls, _requests_before_upgrade, upgraded=False)
    assert sum(total for (scope, _owner, _status), total in tallies.items() if scope == "agency") == 8


def _history_of(conn: Connection) -> list[str]:
    """The notice's history line for one of an officer's requests, the others earlier."""
    agencies, officers = _people(conn)
    for status in ("approved", "approved", "rejected"):
        _add_request(conn, officers[0], agencies[0], status)
    _add_request(conn, officers[1], agencies[0], "received")  # the same agency, another officer
    _add_request(conn, officers[2], agencies[1], "received")  # another agency
    shown = _add_request(conn, officers[0], agencies[0], "received")
    return _notice_lines(conn, officers[0], shown)


def _notice_lines(conn: Connection, officer_id: int, shown: int) -> list[str]:
    """The notice's lines about the officer, for one of their requests."""
    session = Session(bind=conn)
    officer = session.get_one(Officer, officer_id)
    rows = [(kind, key, n) for kind, key, n in conn.execute(HISTORY, history_params(officer, shown))]
    lines = reputation_text(officer, rows)
    session.close()
    return lines


async def test_the_notice_counts_the_officers_and_agencys_other_requests(
        tmp_path: Path, database_urls: Callable[[], str | None]) -> None:
    lines = await _on_new_database(tmp_path, database_urls, _history_of)
    # the request shown is neither an earlier one of its officer's nor of its agency's
    assert lines[0] == ("History: 3 earlier request(s) from this officer (2 approved, 1 rejected); "
                        "4 from north")


def _flooded_history(conn: Connection) -> list[str]:
    """The history line of an officer in whose name forged mail keeps coming, beside a little
    in another officer's name and some too old to count."""
    agencies, officers = _people(conn)
    key_id, key = new_data_key()
    token = ACTIVE_VAULT.set(Vault({key_id: key}, key_id))  # messages are stored sealed
    try:
        now = utcnow()
        old = now - timedelta(days=40)
        forged = [("o0@police.test", "unsigned", now), ("o0@police.test", "bad_signature", now),
                  ("o1@police.test", "unsigned", now), ("o0@police.test", "unsigned", old)]
        rows = [{"direction": "inbound", "transport": "smtp", "sha256": f"{n:064x}", "raw": b"forged",
                 "size": 6, "chunks": 0, "envelope_to": [], "received_at": when - timedelta(seconds=n),
                 "state": "quarantined", "reason": reason, "claimed_from": claimed}
                for n, (claimed, reason, when) in enumerate(forged * (REFUSED_COUNTED + 50))]
        conn.execute(insert(Message), rows)
    finally:
        ACTIVE_VAULT.reset(token)
    shown = _add_request(conn, officers[0], agencies[0], "received")
    return _notice_lines(conn, officers[0], shown)


async def test_a_flood_in_the_officers_name_is_counted_up_to_a_bound(
        tmp_path: Path, database_urls: Callable[[], str | None]) -> None:
    lines = await _on_new_database(tmp_path, database_urls, _flooded_history)
    # 300 in the officer's name within the window, the latest first: of the latest 101, every
    # second one is unsigned (the other officer's and the old ones are not theirs to count)
    assert lines[-1] == (f"⚠️ more than {REFUSED_COUNTED} refused messages claimed o0@police.test in the "
                         f"last 30 days: unsigned ×51, bad_signature ×50 among the latest "
                         f"{REFUSED_COUNTED + 1} (lers quarantine list)")
