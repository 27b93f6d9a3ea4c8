"""The migrations and the models describe the same schema (a model change needs a migration)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from gateway.db import alembic_config
from gateway.models import Base


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
