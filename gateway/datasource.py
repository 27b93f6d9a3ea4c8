"""The platform's own user data, read through the operator's mapping of queries (never written).

The mapping (TOML, `[data_source] mapping_file`) says, for each identifier type an officer may
name, which query finds the platform's user ids, and for each data category which query returns
it for one user and, where the category is dated, a time range. Queries are the operator's SQL
with bound parameters only (`:value`, `:user_id`, `:start`, `:end`): nothing an officer wrote is
ever pasted into SQL. Every query runs in a read-only transaction.
"""

from __future__ import annotations

import asyncio
import re
import tomllib
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from gateway.config import Settings
from gateway.demo_exchange import create_demo_exchange
from handlers.form import DATA_CATEGORIES, SUBJECT_TYPES

PARAMETER = re.compile(r"(?<!:):([A-Za-z_]\w*)")


class DataSourceError(Exception):
    """The data source or its mapping cannot do what was asked; the message says what to fix."""


@dataclass(frozen=True)
class CategoryQuery:
    sql: str
    dated: bool


@dataclass(frozen=True)
class Mapping:
    subjects: dict[str, str]
    contact: str
    categories: dict[str, CategoryQuery]
    timestamps: str  # text | datetime: how :start and :end are bound


@dataclass(frozen=True)
class Rows:
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]


def load_mapping(path: Path | None) -> Mapping:
    """Read and validate a mapping file (None: the demo database's mapping)."""
    where = str(path) if path else "the demo mapping"
    try:
        raw_text = (path.read_text("utf-8") if path else
                    (resources.files("gateway") / "demo_mapping.toml").read_text("utf-8"))
        raw = tomllib.loads(raw_text)
    except OSError as exc:
        raise DataSourceError(f"data_source.mapping_file: cannot read {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise DataSourceError(f"{where}: not valid TOML: {exc}") from exc
    problems: list[str] = []
    unknown = set(raw) - {"timestamps", "subjects", "contact", "categories"}
    problems += [f"{name}: is not a section of a mapping" for name in sorted(unknown)]
    timestamps = raw.get("timestamps", "datetime")
    if timestamps not in ("text", "datetime"):
        problems.append(f"timestamps: must be \"text\" or \"datetime\", got {timestamps!r}")
    subjects: dict[str, str] = {}
    for kind, sql in dict(raw.get("subjects", {})).items():
        if kind not in SUBJECT_TYPES:
            problems.append(f"subjects.{kind}: is not an identifier type ({', '.join(SUBJECT_TYPES)})")
        else:
            problems += _parameter_problems(f"subjects.{kind}", sql, {"value"})
            subjects[kind] = str(sql)
    contact = dict(raw.get("contact", {})).get("query", "")
    if contact:
        problems += _parameter_problems("contact.query", contact, {"user_id"})
    categories: dict[str, CategoryQuery] = {}
    for name, entry in dict(raw.get("categories", {})).items():
        if name not in DATA_CATEGORIES:
            problems.append(f"categories.{name}: is not a data category ({', '.join(DATA_CATEGORIES)})")
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("query"), str):
            problems.append(f"categories.{name}: needs query = \"SELECT ...\"")
            continue
        dated = bool(entry.get("dated", False))
        allowed = {"user_id", "start", "end"} if dated else {"user_id"}
        problems += _parameter_problems(f"categories.{name}.query", entry["query"], allowed)
        if dated and not {"start", "end"} <= set(PARAMETER.findall(entry["query"])):
            problems.append(f"categories.{name}.query: is dated, so it must use both :start and :end")
        categories[name] = CategoryQuery(entry["query"], dated)
    if problems:
        raise DataSourceError(f"{where}: " + "; ".join(problems))
    return Mapping(subjects, contact, categories, str(timestamps))


def _parameter_problems(key: str, sql: Any, allowed: set[str]) -> list[str]:
    if not isinstance(sql, str) or not sql.strip():
        return [f"{key}: must be an SQL query"]
    if not re.match(r"\s*(SELECT|WITH)\b", sql, re.IGNORECASE):
        return [f"{key}: must be a SELECT (the data source is only read)"]
    used = set(PARAMETER.findall(sql))
    required = {"value"} & allowed or {"user_id"}
    problems = [f"{key}: uses :{name}, which is not given here (only "
                f"{', '.join(':' + a for a in sorted(allowed))})" for name in sorted(used - allowed)]
    problems += [f"{key}: must use :{name}" for name in sorted(required - used)]
    return problems


def day_bounds(date_from: date | None, date_to: date | None) -> tuple[datetime, datetime]:
    """The approved dates as a half-open UTC range; an open end is the beginning/end of time."""
    start = datetime.combine(date_from, time(), UTC) if date_from else datetime(1970, 1, 1, tzinfo=UTC)
    end = (datetime.combine(date_to + timedelta(days=1), time(), UTC) if date_to
           else datetime(9999, 1, 1, tzinfo=UTC))
    return start, end


class DataSource:
    """Read access to the platform's database through the mapping."""

    def __init__(self, url: str, mapping: Mapping) -> None:
        self.url = url
        self.mapping = mapping
        self._engine: AsyncEngine | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> DataSource:
        path = settings.base_dir / settings.data_source.mapping_file if settings.data_source.mapping_file \
            else None
        return cls(settings.data_source_url, load_mapping(path))

    async def ensure_demo(self, settings: Settings) -> bool:
        """Generate the demo exchange database when it is configured (url empty) and missing."""
        if settings.data_source.url:
            return False
        path = settings.data_dir / "demo-exchange.sqlite"
        if path.exists():
            return False
        await asyncio.to_thread(create_demo_exchange, path)
        return True

    def _engine_for_reading(self) -> AsyncEngine:
        if self._engine is None:
            self._engine = create_async_engine(self.url, pool_pre_ping=True)
        return self._engine

    async def _connect(self) -> AsyncConnection:
        connection = await self._engine_for_reading().connect()
        try:  # the first statement begins the transaction; closing rolls it back
            if connection.dialect.name == "sqlite":
                await connection.execute(text("PRAGMA query_only = ON"))
            elif connection.dialect.name == "postgresql":
                await connection.execute(text("SET TRANSACTION READ ONLY"))
        except Exception:
            await connection.close()
            raise
        return connection

    async def _query(self, connection: AsyncConnection, key: str, sql: str, **params: Any) -> Rows:
        try:
            result = await connection.execute(text(sql), params)
            return Rows(tuple(result.keys()), tuple(tuple(row) for row in result.fetchall()))
        except SQLAlchemyError as exc:
            detail = str(getattr(exc, "orig", exc)).splitlines()[0][:300]
            raise DataSourceError(f"{key}: the query failed: {detail}") from exc

    def _bound(self, moment: datetime) -> Any:
        return moment.isoformat() if self.mapping.timestamps == "text" else moment

    async def find_users(self, subject_type: str, value: str) -> list[str]:
        """The platform's user ids behind one identifier (none when the mapping has no query)."""
        sql = self.mapping.subjects.get(subject_type)
        if not sql:
            return []
        connection = await self._connect()
        try:
            rows = await self._query(connection, f"subjects.{subject_type}", sql, value=value)
        finally:
            await connection.close()
        if "user_id" not in rows.columns:
            raise DataSourceError(f"subjects.{subject_type}: the query returns no user_id column")
        index = rows.columns.index("user_id")
        return sorted({str(row[index]) for row in rows.rows if row[index] is not None})

    async def contact_of(self, user_id: str) -> tuple[str | None, str | None]:
        """The user's email and language, if the platform knows them."""
        if not self.mapping.contact:
            return None, None
        connection = await self._connect()
        try:
            rows = await self._query(connection, "contact.query", self.mapping.contact,
                                     user_id=_as_key(user_id))
        finally:
            await connection.close()
        if not rows.rows or "email" not in rows.columns:
            return None, None
        record = dict(zip(rows.columns, rows.rows[0], strict=True))
        email = str(record["email"]).strip() if record.get("email") else None
        language = str(record["language"]).strip() if record.get("language") else None
        return email, language

    async def fetch(self, category: str, user_id: str, start: datetime, end: datetime) -> Rows | None:
        """One category for one user in [start, end); None when the mapping does not hold it."""
        query = self.mapping.categories.get(category)
        if query is None:
            return None
        params: dict[str, Any] = {"user_id": _as_key(user_id)}
        if query.dated:
            params |= {"start": self._bound(start), "end": self._bound(end)}
        connection = await self._connect()
        try:
            return await self._query(connection, f"categories.{category}", query.sql, **params)
        finally:
            await connection.close()

    async def check(self) -> list[str]:
        """Run every query once (with an id that matches nobody) and report what is wrong."""
        problems: list[str] = []
        start, end = day_bounds(date(2000, 1, 1), date(2000, 1, 2))
        checks: list[tuple[str, str, dict[str, Any], str | None]] = [
            (f"subjects.{kind}", sql, {"value": "lers-check"}, "user_id")
            for kind, sql in self.mapping.subjects.items()]
        if self.mapping.contact:
            checks.append(("contact.query", self.mapping.contact, {"user_id": -1}, "email"))
        for name, query in self.mapping.categories.items():
            params: dict[str, Any] = {"user_id": -1}
            if query.dated:
                params |= {"start": self._bound(start), "end": self._bound(end)}
            checks.append((f"categories.{name}.query", query.sql, params, None))
        try:
            connection = await self._connect()
        except (SQLAlchemyError, OSError) as exc:
            return [f"data_source.url: cannot connect: {str(getattr(exc, 'orig', exc)).splitlines()[0]}"]
        try:
            for key, sql, params, column in checks:
                try:
                    rows = await self._query(connection, key, sql, **params)
                except DataSourceError as exc:
                    problems.append(str(exc))
                    continue
                if column and column not in rows.columns:
                    problems.append(f"{key}: returns no {column} column (it returns "
                                    f"{', '.join(rows.columns) or 'nothing'})")
        finally:
            await connection.close()
        return problems

    def coverage(self) -> tuple[list[str], list[str]]:
        """(categories the mapping holds, categories it does not)."""
        held = [c for c in DATA_CATEGORIES if c in self.mapping.categories]
        return held, [c for c in DATA_CATEGORIES if c not in self.mapping.categories]

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None


def _as_key(user_id: str) -> Any:
    """User ids travel as text; numeric ids are bound as numbers so integer columns match."""
    return int(user_id) if user_id.lstrip("-").isdigit() else user_id
