"""SQLAlchemy 2 async engine and sessions.

SQLite runs in WAL mode and every transaction starts with BEGIN IMMEDIATE: one writer at a time,
waiting (busy_timeout) instead of failing, which is what an embedded single-process gateway
wants. Look-ups that write nothing use `reading()`, a deferred BEGIN: WAL readers see the last
commit and neither wait for the writer nor make it wait. PostgreSQL needs none of this.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, inspect, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session

from gateway.vault import ACTIVE_VAULT, Vault

MIGRATIONS = Path(__file__).parent / "migrations"
READ_ONLY = "lers_read_only"  # execution option of `Database.reading()` sessions
REDOABLE = "lers_redoable"  # execution option: a SQLite commit that need not wait for the disk
T = TypeVar("T")
WRITE_WAIT_SECONDS = 30.0  # = PRAGMA busy_timeout


class SchemaError(Exception):
    """The database is not at the schema this code needs; the message says what to do."""


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.engine: AsyncEngine = create_async_engine(url)
        if self.is_sqlite:
            _configure_sqlite(self.engine.sync_engine)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._readers = async_sessionmaker(self.engine.execution_options(**{READ_ONLY: True}),
                                           expire_on_commit=False)
        self.vault: Vault | None = None  # set by open_core once gpg has unwrapped the data keys
        self._writer: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self._threaded: Engine | None = None  # SQLite: for `write_in_thread`, made on first use
        self._threaded_reader: Engine | None = None  # the same, with deferred BEGIN (`read_sync`)
        self._redoable: Engine | None = None  # the same, commits not waiting for the disk
        # its own thread: a commit never waits in the shared pool behind sealing or gpg's callers
        self._write_thread: ThreadPoolExecutor | None = None
        self._read_threads: ThreadPoolExecutor | None = None  # `read_sync`'s, apart from the writer's
        # a second engine reaches the same database only through a file
        self.threaded_writes = self.is_sqlite and make_url(url).database not in (None, "", ":memory:")

    async def upgrade(self, revision: str = "head") -> None:
        """Apply the Alembic migrations (the only way the schema is created or changed)."""
        async with self.engine.begin() as conn:
            await conn.run_sync(lambda sync: command.upgrade(alembic_config(sync), revision))

    async def schema_state(self) -> tuple[str | None, str, bool]:
        """(the database's revision, the code's head revision, whether any table exists)."""
        async with self.engine.connect() as conn:
            current, tables = await conn.run_sync(
                lambda sync: (MigrationContext.configure(sync).get_current_revision(),
                              bool(set(inspect(sync).get_table_names()) - {"alembic_version"})))
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        assert head is not None
        return current, head, tables

    async def ensure_schema(self) -> None:
        """Create the schema in an empty database; refuse to run on an out-of-date one."""
        current, head, tables = await self.schema_state()
        if current == head:
            return
        if current is None and not tables:
            await self.upgrade()
            return
        if current is None:
            raise SchemaError("the database has tables but no schema revision (it was made by a "
                              "pre-release gateway): start with a new data dir or storage.url")
        raise SchemaError(f"the database schema is at revision {current or '(none)'}, this version "
                          f"of the gateway needs {head}: back up the database, then run `lers db upgrade`")

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on success, rolled back on any error."""
        token = ACTIVE_VAULT.set(self.vault)  # sealed columns seal and open with this database's keys
        try:
            async with self._write_turn(), self._sessions() as session, session.begin():
                yield session
        finally:
            ACTIVE_VAULT.reset(token)

    async def write_in_thread(self, work: Callable[[Connection], T], *, redoable: bool = False) -> T:
        """SQLite: `work` in one transaction run whole in a worker thread, on a synchronous
        connection to the same file (same write turn, pragmas and vault as `transaction`). An
        async transaction hands every step of every statement (cursor, execute, fetch, close) to
        aiosqlite's thread and back, a wake-up of the event loop each: at SMTP ingress, those
        round trips, not the work, were most of what the senders waited for.

        `redoable`: work the gateway does again if it is lost (a job claimed, a verdict and its
        reply recorded before anything has left the gateway, replies recorded as sent) commits
        without waiting for the disk (synchronous=NORMAL: safe from a crash of the process, not
        from one of the machine). The next commit that does wait (every commit before something
        leaves the gateway: the SMTP 250, the outbox's claim before sending, a chat job's claim)
        makes it durable too: WAL frames reach the disk in order. Each wait for the disk cost
        1 to 3 ms in the one writer, and every other write queued behind it (issue #8)."""
        if not self.threaded_writes:
            raise RuntimeError("write_in_thread is for a SQLite file; use transaction()")
        engine = self._threaded_engine()
        if redoable:
            if self._redoable is None:
                self._redoable = engine.execution_options(**{REDOABLE: True})
            engine = self._redoable
        run = _in_transaction(engine, self.vault, work)
        if self._write_thread is None:
            self._write_thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        async with self._write_turn():
            return await asyncio.get_running_loop().run_in_executor(self._write_thread, run)

    def _threaded_engine(self) -> Engine:
        """The synchronous engine on the same SQLite file, made on first use."""
        if self._threaded is None:
            self._threaded = create_engine(self.url.replace("+aiosqlite", "+pysqlite", 1),
                                           connect_args={"check_same_thread": False})
            _configure_sqlite(self._threaded)
        return self._threaded

    async def read_sync(self, work: Callable[[Connection], T]) -> T:
        """`work`'s look-ups in one read transaction, like `reading()`: on a SQLite file, one trip
        to a reader thread (a deferred BEGIN: neither waits for the writer nor makes it wait, and
        no turn in the writer's thread), elsewhere through the async driver (`run_sync`). An
        awaited statement on aiosqlite costs several hand-overs to its thread and back; a
        reading session's BEGIN, look-ups and COMMIT here cost one."""
        if not self.threaded_writes:
            async with self.reading() as session:
                conn = await session.connection()
                return await conn.run_sync(work)
        if self._threaded_reader is None:
            self._threaded_reader = self._threaded_engine().execution_options(**{READ_ONLY: True})
        run = _in_transaction(self._threaded_reader, self.vault, work)
        if self._read_threads is None:
            self._read_threads = ThreadPoolExecutor(2, thread_name_prefix="sqlite-reader")
        return await asyncio.get_running_loop().run_in_executor(self._read_threads, run)

    async def write_sync(self, work: Callable[[Connection], T], *, redoable: bool = False) -> T:
        """`work` in one write transaction, the same code on every backend: on a SQLite file one
        trip to the writer thread (`write_in_thread`, which says what `redoable` means; on
        PostgreSQL every commit waits for the disk), elsewhere a `transaction()` whose statements
        run through the async driver (`run_sync`). For hot paths written as Core statements."""
        if self.threaded_writes:
            return await self.write_in_thread(work, redoable=redoable)
        async with self.transaction() as session:
            conn = await session.connection()
            return await conn.run_sync(work)

    @asynccontextmanager
    async def _write_turn(self) -> AsyncIterator[None]:
        """SQLite: this process's writers queue on an asyncio lock (first come, first served)
        before BEGIN IMMEDIATE. In SQLite's busy handler a waiting writer sleeps ever longer
        (up to 100 ms a look) and loses to whoever asks while it sleeps: with many workers, one
        could wait seconds. Other processes (the CLI) still meet the busy handler."""
        if not self.is_sqlite:
            yield
            return
        loop = asyncio.get_running_loop()
        if self._writer is None or self._writer[0] is not loop:
            self._writer = (loop, asyncio.Lock())
        lock = self._writer[1]
        async with asyncio.timeout(WRITE_WAIT_SECONDS):  # as long as busy_timeout would wait
            await lock.acquire()
        try:
            yield
        finally:
            lock.release()

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncSession]:
        """A session for look-ups only: one consistent snapshot that does not take SQLite's write
        lock, so the identity and replay checks of one job never queue behind another's writes."""
        token = ACTIVE_VAULT.set(self.vault)
        try:
            async with self._readers() as session, session.begin():
                yield session
                if session.new or session.dirty or session.deleted:
                    raise RuntimeError("Database.reading() is for look-ups: write in transaction()")
        finally:
            ACTIVE_VAULT.reset(token)

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self._write_thread is not None:
            writer, self._write_thread = self._write_thread, None
            await asyncio.to_thread(writer.shutdown)  # a write under way finishes first
        if self._read_threads is not None:
            readers, self._read_threads = self._read_threads, None
            await asyncio.to_thread(readers.shutdown)
        if self._threaded is not None:
            await asyncio.to_thread(self._threaded.dispose)


def _in_transaction(engine: Engine, vault: Vault | None, work: Callable[[Connection], T]) -> Callable[[], T]:
    """`work` in one transaction on `engine`, with the database's vault, for another thread to run
    (a context variable set on the event loop is not seen there)."""

    def run() -> T:
        token = ACTIVE_VAULT.set(vault)
        try:
            with engine.begin() as conn:
                return work(conn)
        finally:
            ACTIVE_VAULT.reset(token)

    return run


@event.listens_for(Session, "before_flush")
def _no_nul_in_text(session: Session, _context: Any, _instances: Any) -> None:
    """Untrusted text (headers, file names, form fields) may hold NUL, which PostgreSQL text
    cannot store: it becomes U+FFFD. Raw bytes (LargeBinary) are kept exactly as received.
    Only values about to be written are looked at: what was loaded was checked when written,
    and a column not loaded (deferred raw bytes) stays unloaded."""
    for obj in (*session.new, *session.dirty):
        state = inspect(obj)
        keys = set(state.dict if state.key is None else state.committed_state)
        for attribute in state.mapper.column_attrs:
            if attribute.key not in keys:
                continue
            value = state.dict.get(attribute.key)
            cleaned = no_nul(value)
            if cleaned is not value:
                setattr(obj, attribute.key, cleaned)


def no_nul(value: T) -> T:
    """`value` as `_no_nul_in_text` would store it: NUL in text, or in the text of a JSON value,
    becomes U+FFFD; anything else (bytes, numbers, dates) is returned as it is."""
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\ufffd")  # type: ignore[return-value]
    # the JSON text is only a quick test (NUL is always escaped in it); the replacing is done in
    # the value's strings, as the text's "\\u0000" may also be an escaped backslash before "u0000"
    if isinstance(value, dict | list) and "\\u0000" in json.dumps(value):
        return _no_nul_json(value)  # type: ignore[no-any-return]
    return value


def _no_nul_json(value: Any) -> Any:
    """A JSON value with NUL in its strings (keys too) replaced: a copy where one was, else the
    value itself (so a flush does not see a change that is none)."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, dict):
        cleaned = {_no_nul_json(key): _no_nul_json(item) for key, item in value.items()}
        same = all(a is b and k is j for (k, a), (j, b) in zip(value.items(), cleaned.items(), strict=True))
        return value if same else cleaned
    if isinstance(value, list | tuple):
        items = [_no_nul_json(item) for item in value]
        return value if all(a is b for a, b in zip(value, items, strict=True)) else items
    return value


def no_nul_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row for a Core INSERT or UPDATE, NUL replaced as an ORM flush replaces it."""
    return {key: no_nul(value) for key, value in row.items()}


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let us issue BEGIN ourselves (the driver's implicit BEGIN is DEFERRED).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA cache_size=-512")  # per connection: 1 MiB chunks pass through it (issue 8)
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        options = conn.get_execution_options()
        if options.get(READ_ONLY):
            conn.exec_driver_sql("BEGIN")
            return
        # set per transaction, before it begins (`write_in_thread`'s `redoable`); FULL unless asked
        level = "NORMAL" if options.get(REDOABLE) else "FULL"
        if conn.info.get("synchronous", "FULL") != level:
            conn.exec_driver_sql(f"PRAGMA synchronous={level}")
            conn.info["synchronous"] = level
        conn.exec_driver_sql("BEGIN IMMEDIATE")
