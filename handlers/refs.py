"""Reference numbers `LERS-YYYY-NNNNNN`: gap-free per year, never reused."""

from __future__ import annotations

import re

from sqlalchemy import update
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


def find_refs(text: str) -> list[str]:
    return [m.group(0) for m in REF_PATTERN.finditer(text)]
