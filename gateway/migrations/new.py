"""Write the next migration by comparing the models with a scratch database at head.

    python -m gateway.migrations.new "what changed"     (or: make migration MSG="...")
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from alembic import command
from sqlalchemy import create_engine

from gateway.db import MIGRATIONS, alembic_config


def main(message: str) -> None:
    if not message.strip():
        sys.exit('usage: make migration MSG="what changed"')
    number = len(list((MIGRATIONS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))) + 1
    with tempfile.TemporaryDirectory() as scratch:
        engine = create_engine(f"sqlite:///{Path(scratch) / 'scratch.db'}")
        with engine.begin() as connection:
            config = alembic_config(connection)
            command.upgrade(config, "head")
            command.revision(config, message=message, autogenerate=True, rev_id=f"{number:04d}")


if __name__ == "__main__":
    main(" ".join(sys.argv[1:]))
