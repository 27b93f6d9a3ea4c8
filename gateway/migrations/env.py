"""Alembic environment: the gateway's own engine and models; no alembic.ini needed.

`gateway.db.Database.upgrade()` runs this with the connection it already has, so migrations use
the same URL and SQLite settings as the gateway.
"""

from __future__ import annotations

from alembic import context

from gateway.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,  # SQLite can only ALTER tables by copying them
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
