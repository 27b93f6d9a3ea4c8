"""Reference numbers `LERS-YYYY-NNNNNN`: gap-free per year, never reused."""

from __future__ import annotations

import re
from typing import cast

from sqlalchemy import Connection, Table, bindparam, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.clock import utcnow
from gateway.models import RefCounter

REF_PATTERN = re.compile(r"\bLERS-(\d{4})-(\d{6})\b")


async def allocate_ref(session: AsyncSession) -> str:
    """Take the next number inside the caller's transaction (`allocate_ref_in` on its connection:
    Core statements, so the session's pending changes go out with its next flush, not now)."""
    return await session.run_sync(lambda sync: allocate_ref_in(sync.connection()))


COUNTERS = cast(Table, RefCounter.__table__)
# built once: executing them costs no statement construction nor cache-key generation
INCREMENT = (update(COUNTERS).where(COUNTERS.c.year == bindparam("b_year"))
             .values(last=COUNTERS.c.last + 1).returning(COUNTERS.c.last))
NEW_YEAR = {name: dialect.insert(COUNTERS).values(year=bindparam("b_year"), last=0)
            .on_conflict_do_nothing(index_elements=["year"])
            for name, dialect in (("sqlite", sqlite), ("postgresql", postgresql))}


def allocate_ref_in(conn: Connection) -> str:
    """The next number, inside the caller's transaction on a synchronous connection: one atomic
    UPDATE ... RETURNING; the year's first request creates the counter (a racing process's row is
    left as it is, ON CONFLICT DO NOTHING)."""
    year = utcnow().year
    number = conn.execute(INCREMENT, {"b_year": year}).scalar()
    if number is None:
        conn.execute(NEW_YEAR[conn.dialect.name], {"b_year": year})
        number = conn.execute(INCREMENT, {"b_year": year}).scalar()
    assert number is not None
    return f"LERS-{year}-{number:06d}"


def find_refs(text: str) -> list[str]:
    return [m.group(0) for m in REF_PATTERN.finditer(text)]
