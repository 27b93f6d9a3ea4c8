"""INSERTs for SQLite's hottest path, without SQLAlchemy's work per execution.

SMTP ingress commits each batch of messages in the one writer thread while every sender waits
for its 250 (gateway/ingest.py). Through SQLAlchemy Core, the batch's work cost 0.82 ms of CPU
per ten messages; with its INSERTs made here, 0.70 ms (issue #8). What is stored is what Core
stores (`tests/test_driver_insert.py`): each column is converted by its type's SQLAlchemy
`bind_processor` for SQLite, or by the type's own `sqlite_bind`, which does our types' two
conversions (ours, then SQLAlchemy's: a UTC date, then its text; sealed JSON, then the JSON of
the sealed text) in one step. It runs through `exec_driver_sql`, so statement counts and events
still see it. SQLite only: PostgreSQL keeps the Core statements.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import itemgetter
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
        self._pick = itemgetter(*self.columns) if len(self.columns) > 1 else lambda row: (row[columns[0]],)
        self._conversions: list[tuple[int, Callable[[Any], Any]]] | None = None

    def conversions(self, conn: Connection) -> list[tuple[int, Callable[[Any], Any]]]:
        """(position, conversion) of the columns converted before binding: our own types' one-step
        `sqlite_bind` where they have one, else the type's SQLAlchemy `bind_processor`."""
        if self._conversions is None:
            found: list[tuple[int, Callable[[Any], Any]]] = []
            for position, name in enumerate(self.columns):
                kind = self.table.c[name].type
                convert = (getattr(kind, "sqlite_bind", None)
                           or kind.dialect_impl(conn.dialect).bind_processor(conn.dialect))
                if convert is not None:
                    found.append((position, convert))
            self._conversions = found
        return self._conversions

    def values(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]]:
        """The rows as the driver takes them, converted as SQLAlchemy converts them."""
        conversions, pick = self.conversions(conn), self._pick
        converted: list[tuple[Any, ...]] = []
        for row in rows:
            values = list(pick(row))
            for position, convert in conversions:
                values[position] = convert(values[position])
            converted.append(tuple(values))
        return converted

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
