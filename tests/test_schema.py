"""The migrations and the models describe the same schema (a model change needs a migration),
and the look-ups made for every message, every new request and every metrics scrape find their
rows through an index, not by reading a table that grows with every message ever received."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Executable, create_engine
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.db import alembic_config
from gateway.metrics import TALLIED, tally_query
from gateway.models import Base
from gateway.queue import _candidates
from handlers.chain import IDENTITY
from handlers.reputation import HISTORY


def test_migrations_at_head_match_the_models(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'schema.db'}")
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "head")
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == [], "run `make migration MSG=...` for: " + repr(differences)


async def test_downgrade_to_nothing_and_back(tmp_path: Path, database_urls: Callable[[], str | None]) -> None:
    """On each backend (`LERS_TEST_BACKEND`): some migrations name what they change by dialect."""
    engine = create_async_engine(database_urls() or f"sqlite+aiosqlite:///{tmp_path / 'schema.db'}")
    try:
        async with engine.begin() as connection:
            revision = await connection.run_sync(_down_and_up)
    finally:
        await engine.dispose()
    assert revision == ScriptDirectory.from_config(alembic_config()).get_current_head()


def _down_and_up(connection: Connection) -> str | None:
    config = alembic_config(connection)
    command.upgrade(config, "head")
    command.downgrade(config, "base")
    command.upgrade(config, "head")
    return MigrationContext.configure(connection).get_current_revision()


def test_per_message_look_ups_read_no_whole_table(tmp_path: Path) -> None:
    """Who signed (every inbound message, forged floods included), the job claim (done jobs are
    kept, and a flood can queue thousands) and the history the reviewers' notice shows (read in
    the transaction that records every new request: the officer's and agency's request tallies,
    the latest refused mail in the officer's name) are found through indexes: a scan would grow
    with every officer, request, job and message the gateway has ever seen."""
    engine = create_engine(f"sqlite:///{tmp_path / 'schema.db'}")
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "head")
        identity = _plan(connection, IDENTITY, {"fingerprint": "A" * 40, "message_id": 1, "replay_key": "k"})
        history = _plan(connection, HISTORY, {"officer_id": 1, "agency_id": 1, "request_id": 0,
                                              "email": "officer@police.test", "since": "2026-01-01"})
        claim = _plan(connection, _candidates(("inbound", "chat"), False),
                      {"b_now": datetime(2026, 1, 1, tzinfo=UTC), "b_limit": 4})
    # a scan of a subquery's rows is bounded by its LIMIT (the latest refused mail, the first
    # runnable jobs of each state and kind)
    scans = [step for step in identity + history + claim
             if step.startswith("SCAN") and not step.startswith("SCAN anon_")]
    assert scans == [], (identity, history, claim)
    # the officer's and agency's requests come from their tallies, the shown request by its id
    assert sum("request_tallies USING INDEX" in step for step in history) == 2, history
    assert all("PRIMARY KEY" in step for step in history if " requests " in step), history
    assert sum("INDEX" in step for step in history) == 3, history
    assert any("INDEX ix_officers_key_fingerprint" in step for step in identity), identity
    # the claim reads each state and kind in its index's order (no sort of the backlog): two
    # states for each of the two kinds, then the jobs those found by their ids
    jobs = [step for step in claim if step.startswith("SEARCH jobs")]
    assert jobs.count("SEARCH jobs USING INDEX ix_jobs_state_kind_priority (state=? AND kind=?)") == 4, claim
    assert jobs.count("SEARCH jobs USING INTEGER PRIMARY KEY (rowid=?)") == 1 and len(jobs) == 5, claim


def _plan(connection: Connection, statement: Executable, params: dict[str, Any]) -> list[str]:
    """SQLite's EXPLAIN QUERY PLAN of a statement, a line per step."""
    compiled = statement.compile(dialect=connection.dialect)
    values = compiled.construct_params(params)
    positional = tuple(values[name] for name in compiled.positiontup or ())
    return [row[-1] for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", positional)]


def test_a_metrics_scrape_reads_only_the_audit_entries_added_since_the_last(tmp_path: Path) -> None:
    """The received and refused counters are kept per process and topped up from the audit
    entries appended since the previous scrape: a range of ids, not the whole log."""
    engine = create_engine(f"sqlite:///{tmp_path / 'schema.db'}")
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "head")
        plans = [_plan(connection, tally_query(action), {"after": 100, "top": 200}) for action in TALLIED]
    for plan in plans:
        assert any("USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)" in step for step in plan), plan
