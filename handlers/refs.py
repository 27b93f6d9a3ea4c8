"""Reference numbers `LERS-YYYY-NNNNNN`: gap-free per year, never reused."""

from __future__ import annotations

import re

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.clock import utcnow
from gateway.models import RefCounter

REF_PATTERN = re.compile(r"\bLERS-(\d{4})-(\d{6})\b")


async def allocate_ref(session: AsyncSession) -> str:
    """Take the next number inside the caller's transaction (one atomic UPDATE ... RETURNING)."""
    year = utcnow().year
    number = await session.scalar(
        update(RefCounter).where(RefCounter.year == year)
        .values(last=RefCounter.last + 1).returning(RefCounter.last)
    )
    if number is None:
        session.add(RefCounter(year=year, last=1))
        await session.flush()
        number = 1
    return f"LERS-{year}-{number:06d}"


def find_refs(text: str) -> list[str]:
    return [m.group(0) for m in REF_PATTERN.finditer(text)]
