"""`lers db copy`: move a gateway's whole database to another backend (SQLite → PostgreSQL).

Both databases are brought to this version's schema by the migrations; the target must be
empty. Tables are copied parent before child, in batches, rows exactly as they are (the audit
chain's hashes cover the values, so `lers audit verify` on the target proves the copy).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import func, insert, select, text

from gateway.db import Database, SchemaError
from gateway.models import Base
from gateway.vault import ACTIVE_VAULT

# every table but derived ones (`info["derived"]`: the request tallies), which the target's
# triggers fill as the rows they count are copied
COPIED = [table for table in Base.metadata.sorted_tables if not table.info.get("derived")]
BATCH = 500
CHUNK_BATCH = 8  # rows of message_chunks / attachment_chunks hold 1 MiB each: a few at a time


async def copy_database(source_url: str, target_url: str,
                        progress: Callable[[str, int], None] = lambda table, rows: None,
                        total: Callable[[int], None] = lambda rows: None) -> dict[str, int]:
    """Copy every row; returns rows copied per table. `total` is told the number of rows to copy
    before the copy starts, `progress` the table and the number of rows of each batch copied."""
    source, target = Database(source_url), Database(target_url)
    token = ACTIVE_VAULT.set(None)  # sealed values are copied as they are, never opened
    try:
        await source.ensure_schema()
        current, head, tables = await target.schema_state()
        if tables and current == head and not await _empty(target):
            raise SchemaError("the target database already holds data: copy into an empty one")
        if tables and current != head:
            raise SchemaError("the target database has other tables: copy into an empty one")
        await target.upgrade()
        total(sum((await _counts(source)).values()))
        copied: dict[str, int] = {}
        for table in COPIED:
            count = 0
            async with source.engine.connect() as reader, target.engine.begin() as writer:
                result = await reader.stream(select(table).order_by(*table.primary_key.columns))
                size = CHUNK_BATCH if table.name.endswith("_chunks") else BATCH
                async for batch in result.mappings().partitions(size):
                    await writer.execute(insert(table), [dict(row) for row in batch])
                    count += len(batch)
                    progress(table.name, len(batch))
            copied[table.name] = count
        if not target.is_sqlite:
            await _reset_sequences(target)
        return copied
    finally:
        ACTIVE_VAULT.reset(token)
        await source.dispose()
        await target.dispose()


async def _empty(db: Database) -> bool:
    return not any((await _counts(db)).values())


async def _counts(db: Database) -> dict[str, int]:
    async with db.engine.connect() as conn:
        return {table.name: await conn.scalar(select(func.count()).select_from(table)) or 0
                for table in COPIED}


async def _reset_sequences(db: Database) -> None:
    """PostgreSQL's id sequences must continue after the copied ids."""
    async with db.engine.begin() as conn:
        for table in COPIED:
            columns = [c for c in table.primary_key.columns if c.autoincrement is True
                       or (c.autoincrement == "auto" and c.type.python_type is int)]
            if len(columns) != 1 or table.name in ("ref_counters",):
                continue
            column = columns[0].name
            await conn.execute(text(
                f"SELECT setval(pg_get_serial_sequence('{table.name}', '{column}'), "
                f"COALESCE((SELECT MAX({column}) FROM {table.name}), 0) + 1, false)"))
