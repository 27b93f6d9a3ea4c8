"""The one source of "now", so tests can move time instead of sleeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_offset = timedelta(0)


def utcnow() -> datetime:
    """Timezone-aware UTC now, shifted by the test offset (zero in production)."""
    return datetime.now(UTC) + _offset


def set_offset(offset: timedelta) -> None:
    """Move the gateway's clock (tests only)."""
    global _offset
    _offset = offset
