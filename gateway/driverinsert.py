"""INSERTs for SQLite's hottest path, without SQLAlchemy's work per execution.

SMTP ingress commits each batch of messages in the one writer thread while every sender waits
for its 250 (gateway/ingest.py). Through SQLAlchemy Core, the batch's work cost 0.82 ms of CPU
per ten messages; with its INSERTs made here, 0.76 ms (issue #8). `DriverInsert` keeps the
conversion SQLAlchemy's own: each column's
`bind_processor` (sealing, JSON, UTC dates as SQLite stores them), so what is stored is the same
either way (`tests/test_driver_insert.py`). It runs through `exec_driver_sql`, so statement
counts and events still see it. SQLite only: PostgreSQL keeps the Core statements.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, Table


class DriverInsert:
    """An INSERT of fixed columns into one table, rows given as dicts holding every column."""

    def __init__(self, table: Table, columns: Sequence[str]) -> None:
        # SQLAlchemy is not there to fill a Python-side default: every such column is given
        missing = [c.name for c in table.columns if c.default is not None and c.name not in columns]
        if missing:
            raise ValueError(f"{table.name}: columns with a default must be given: {missing}")
        self.table, self.columns = table, tuple(columns)
        self.names = ", ".join(f'"{name}"' for name in self.columns)
        self.placeholders = "(" + ", ".join("?" * len(self.columns)) + ")"
        self._processors: dict[str, list[Callable[[Any], Any] | None]] = {}

    def values(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]]:
        """The rows as the driver takes them, converted as SQLAlchemy converts them."""
        processors = self._processors.get(conn.dialect.name)
        if processors is None:
            processors = [self.table.c[name].type.bind_processor(conn.dialect) for name in self.columns]
            self._processors[conn.dialect.name] = processors
        return [tuple(value if process is None else process(value)
                      for process, value in zip(processors, (row[name] for name in self.columns),
                                                strict=True))
                for row in rows]

    def execute(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
        """One executemany of the rows."""
        if rows:
            conn.exec_driver_sql(f'INSERT INTO {self.table.name} ({self.names}) VALUES {self.placeholders}',
                                 self.values(conn, rows))

    def returning(self, conn: Connection, rows: Sequence[dict[str, Any]], conflict: str,
                  returned: Sequence[str]) -> list[tuple[Any, ...]]:
        """One multi-row INSERT with an ON CONFLICT clause, returning columns of the rows inserted
        (in no particular order)."""
        if not rows:
            return []
        flat = tuple(value for row in self.values(conn, rows) for value in row)
        result = conn.exec_driver_sql(
            f'INSERT INTO {self.table.name} ({self.names}) VALUES '
            f'{", ".join([self.placeholders] * len(rows))} {conflict} '
            f'RETURNING {", ".join(returned)}', flat)
        return [tuple(row) for row in result]
