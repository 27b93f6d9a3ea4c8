"""gateway/driverinsert.py: SQLite's hottest INSERTs (SMTP ingress's batch, audit entries) skip
SQLAlchemy's work per execution but not its conversions: a row written through `DriverInsert`
reads back, through SQLAlchemy and the vault, exactly as the same row written by a Core INSERT,
sealed columns sealed (never plain text on disk) and dates in SQLite's one stored format."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import Connection, Table, create_engine, insert, select

from gateway.audit import DRIVER_INSERT as AUDIT_ROWS
from gateway.db import Database
from gateway.driverinsert import DriverInsert
from gateway.ingest import JOBS, MESSAGES, NEW_JOBS, NEW_MESSAGES
from gateway.models import AuditEntry, UTCDateTime
from gateway.vault import ACTIVE_VAULT, SealedJSON, Vault, new_data_key

AT = datetime(2026, 11, 24, 13, 5, 7, tzinfo=UTC)  # whole seconds: SQLAlchemy's text keeps ".000000"
MESSAGE = {"direction": "inbound", "transport": "smtp", "sha256": "ab" * 32,
           "raw": b"From: a@police.test\r\n\r\nsecret body\x00\xff", "size": 39, "chunks": 0,
           "header_message_id": "<m1@police.test>", "peer": "127.0.0.1", "envelope_from": "a@police.test",
           "envelope_to": ["requests@platform.test", "ünïcode@platform.test"], "received_at": AT,
           "state": "received"}
AUDIT = cast(Table, AuditEntry.__table__)
SQLITE = create_engine("sqlite://").dialect  # with its driver: bytes are bound as the driver binds them


def _rows(conn: Connection, table: Table) -> list[dict[str, Any]]:
    return [dict(row._mapping) for row in conn.execute(select(table).order_by(table.c.id))]


@pytest.mark.parametrize("table, driver, row", [
    (MESSAGES, NEW_MESSAGES, MESSAGE),
    (JOBS, NEW_JOBS, {"kind": "inbound", "message_id": None, "priority": 1, "payload": {"large": True},
                      "state": "queued", "attempts": 0, "run_after": AT, "created_at": AT}),
    (AUDIT, AUDIT_ROWS, {"at": AT, "actor": "system", "action": "inbound.received", "subject": "message:1",
                         "details": {"transport": "smtp", "size": 39, "note": "ünïcode"},
                         "prev_hash": "0" * 64, "hash": "1" * 64}),
], ids=["messages", "jobs", "audit"])
async def test_a_row_reads_back_as_a_core_insert_wrote_it(tmp_path: Path, table: Table, driver: DriverInsert,
                                                          row: dict[str, Any]) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'd.db'}")
    await db.ensure_schema()
    key_id, key = new_data_key()
    db.vault = Vault({key_id: key}, key_id)
    try:
        second = {**row, **({"sha256": "cd" * 32} if table is MESSAGES else {}),
                  **({"hash": "2" * 64} if table is AUDIT else {})}
        await db.write_in_thread(lambda conn: conn.execute(insert(table), [row]))
        if table is MESSAGES:  # as ingress inserts them: a stored copy is skipped, not an error
            conflict = "ON CONFLICT (direction, sha256) DO NOTHING"
            inserted = await db.write_in_thread(
                lambda conn: driver.returning(conn, [second], conflict, ("sha256", "id")))
            assert [sha256 for sha256, _id in inserted] == ["cd" * 32]
            again = await db.write_in_thread(lambda conn: driver.returning(conn, [second], conflict, ("id",)))
            assert again == []
        else:
            await db.write_in_thread(lambda conn: driver.execute(conn, [second]))
        core, driven = await db.write_in_thread(lambda conn: _rows(conn, table))
    finally:
        await db.dispose()
    for column in ("id", "sha256", "hash"):
        core.pop(column, None)
        driven.pop(column, None)
    assert driven == core
    # as SQLite holds them: the same storage class in every column (text dates, blobs, JSON text)
    stored = sqlite3.connect(tmp_path / "d.db").execute(f"SELECT * FROM {table.name} ORDER BY id").fetchall()
    assert [type(value) for value in stored[0]] == [type(value) for value in stored[1]]
    dates = ", ".join(column.name for column in table.columns if isinstance(column.type, UTCDateTime))
    as_text = sqlite3.connect(tmp_path / "d.db").execute(
        f"SELECT {dates} FROM {table.name} ORDER BY id").fetchall()
    assert as_text[0] == as_text[1]  # dates in the one text format SQLAlchemy writes
    if table is MESSAGES:  # sealed either way: neither the body nor an address is on disk in clear
        on_disk = repr(stored)
        assert "secret body" not in on_disk and "requests@platform.test" not in on_disk


def test_a_column_with_a_default_must_be_given() -> None:
    """SQLAlchemy fills Python-side defaults (a state, a creation time); a driver INSERT cannot,
    so leaving such a column out is refused when the statement is made, not found in the data."""
    with pytest.raises(ValueError, match="state"):
        DriverInsert(JOBS, ["kind", "message_id", "priority", "payload", "attempts", "run_after",
                            "created_at"])


INDIA = timezone(timedelta(hours=5, minutes=30))


@pytest.mark.parametrize("value", [None, AT, AT.replace(microsecond=7), AT.replace(year=999),
                                   datetime(2026, 11, 24, 18, 35, 7, 250, tzinfo=INDIA)],
                         ids=["none", "utc", "microseconds", "year-999", "other-zone"])
def test_a_date_is_stored_as_sqlalchemy_stores_it(value: datetime | None) -> None:
    """`UTCDateTime.sqlite_bind` is the column's two conversions in one: the same text."""
    column_type = MESSAGES.c.received_at.type
    assert column_type.sqlite_bind(value) == column_type.dialect_impl(SQLITE).bind_processor(SQLITE)(value)


def test_a_naive_date_is_refused_as_sqlalchemy_refuses_it() -> None:
    column_type = MESSAGES.c.received_at.type
    with pytest.raises(ValueError, match="naive"):
        column_type.sqlite_bind(datetime(2026, 11, 24))
    with pytest.raises(ValueError, match="naive"):
        column_type.dialect_impl(SQLITE).bind_processor(SQLITE)(datetime(2026, 11, 24))


@pytest.mark.parametrize("column, value", [
    (MESSAGES.c.raw, b"secret \x00\xff body"), (MESSAGES.c.raw, None),
    (MESSAGES.c.reason_detail, "secret ünïcode"), (MESSAGES.c.reason_detail, None),
    (MESSAGES.c.envelope_to, ["secret@platform.test", 'quote"and\\slash']), (MESSAGES.c.envelope_to, None),
    (JOBS.c.payload, {}),
], ids=["bytes", "bytes-none", "text", "text-none", "json", "json-none", "json-empty"])
def test_a_sealed_value_is_stored_as_sqlalchemy_stores_it(column: Any, value: Any) -> None:
    """Sealed columns' `sqlite_bind`: what it stores opens to what SQLAlchemy's conversion's
    value opens to (each seal has its own nonce, so the sealed bytes differ), in the same Python
    type the driver binds the same way; never the value in clear."""
    key_id, key = new_data_key()
    token = ACTIVE_VAULT.set(Vault({key_id: key}, key_id))
    try:
        fused = column.type.sqlite_bind(value)
        reference = column.type.dialect_impl(SQLITE).bind_processor(SQLITE)(value)
        assert (fused is None) == (reference is None)
        if reference is None:
            return
        assert isinstance(fused, bytes | bytearray) == isinstance(reference, bytes | bytearray | memoryview)
        assert "secret" not in repr(fused)
        back = column.type.process_result_value
        loaded = json.loads if isinstance(column.type, SealedJSON) else (lambda stored: stored)
        assert back(loaded(fused), SQLITE) == back(loaded(reference), SQLITE)
    finally:
        ACTIVE_VAULT.reset(token)
