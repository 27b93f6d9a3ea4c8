"""The request tallies (gateway/models.py `RequestTally`) that the reviewers' notice of every new
request reads instead of counting an agency's every request: the database's triggers keep them
equal to a count of the requests through every way a request is added, changed or removed, on
each backend (`LERS_TEST_BACKEND`), and the upgrade that adds them counts the requests already
on file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from alembic import command
from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session

from gateway.clock import utcnow
from gateway.db import alembic_config
from gateway.models import Agency, Officer, Request, RequestTally
from handlers.reputation import HISTORY, history_params, reputation_text

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
    session = Session(bind=conn)
    officer = session.get_one(Officer, officers[0])
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
