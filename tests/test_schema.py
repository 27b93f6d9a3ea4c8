"""The migrations and the models describe the same schema (a model change needs a migration),
and the look-ups made for every new request find their rows through an index."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from gateway.db import alembic_config
from gateway.models import Base
from handlers.reputation import HISTORY


def test_migrations_at_head_match_the_models(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'schema.db'}")
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "head")
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == [], "run `make migration MSG=...` for: " + repr(differences)


def test_downgrade_to_nothing_and_back(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'schema.db'}")
    with engine.begin() as connection:
        config = alembic_config(connection)
        command.upgrade(config, "head")
        command.downgrade(config, "base")
        command.upgrade(config, "head")
        assert MigrationContext.configure(connection).get_current_revision() is not None


def test_the_new_request_notice_history_reads_no_whole_table(tmp_path: Path) -> None:
    """The officer's and agency's earlier requests and the refused mail in the officer's name are
    counted in the transaction that records every new request: a scan of `requests` or of the
    inbound `messages` (forged floods included) would grow with every request ever received."""
    engine = create_engine(f"sqlite:///{tmp_path / 'schema.db'}")
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "head")
        compiled = HISTORY.compile(dialect=connection.dialect)
        values = compiled.construct_params({"officer_id": 1, "agency_id": 1, "request_id": 0,
                                            "email": "officer@police.test", "since": "2026-01-01"})
        positional = tuple(values[name] for name in compiled.positiontup or ())
        plan = [row[-1] for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", positional)]
    assert [step for step in plan if step.startswith("SCAN")] == [], plan
    assert sum("USING COVERING INDEX" in step or "USING INDEX" in step for step in plan) == 3, plan
