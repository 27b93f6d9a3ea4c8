"""Reference numbers `LERS-YYYY-NNNNNN`: gap-free per year, never reused."""

from __future__ import annotations

import re
from typing import cast

from sqlalchemy import Connection, Table, bindparam, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.clock import utcnow
from gateway.models import RefCounter

REF_PATTERN = re.compile(r"\bLERS-(\d{4})-(\d{6})\b")


async def allocate_ref(session: AsyncSession) -> str:
    """Take the next number inside the caller's transaction (one atomic UPDATE ... RETURNING)."""
    year = utcnow().year
    increment = (update(RefCounter).where(RefCounter.year == year)
                 .values(last=RefCounter.last + 1).returning(RefCounter.last)
                 .execution_options(synchronize_session=False))  # no counter object is kept in use
    with session.no_autoflush:  # the caller's pending changes go out with its next flush, not now
        number = await session.scalar(increment)
    if number is None:  # the year's first request: create its counter (another process may race us)
        try:
            async with session.begin_nested():
                session.add(RefCounter(year=year, last=0))
        except IntegrityError:
            pass
        number = await session.scalar(increment)
    assert number is not None
    return f"LERS-{year}-{number:06d}"


COUNTERS = cast(Table, RefCounter.__table__)
# built once: executing them costs no statement construction nor cache-key generation
INCREMENT = (update(COUNTERS).where(COUNTERS.c.year == bindparam("b_year"))
             .values(last=COUNTERS.c.last + 1).returning(COUNTERS.c.last))
NEW_YEAR = {name: dialect.insert(COUNTERS).values(year=bindparam("b_year"), last=0)
            .on_conflict_do_nothing(index_elements=["year"])
            for name, dialect in (("sqlite", sqlite), ("postgresql", postgresql))}


def allocate_ref_in(conn: Connection) -> str:
    """`allocate_ref` on a synchronous connection inside the caller's transaction: the same atomic
    UPDATE ... RETURNING; the year's first request creates the counter (a racing process's row
    is left as it is, ON CONFLICT DO NOTHING, instead of a savepoint)."""
    year = utcnow().year
    number = conn.execute(INCREMENT, {"b_year": year}).scalar()
    if number is None:
        conn.execute(NEW_YEAR[conn.dialect.name], {"b_year": year})
        number = conn.execute(INCREMENT, {"b_year": year}).scalar()
    assert number is not None
    return f"LERS-{year}-{number:06d}"


def find_refs(text: str) -> list[str]:
    return [m.group(0) for m in REF_PATTERN.finditer(text)]
