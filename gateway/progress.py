"""Progress bars for the operator's long commands (`lers db copy`, `lers backup`,
`lers imap import`): drawn on stderr when it is a terminal, nothing at all otherwise, so that
pipes, cron mails and log files get the commands' plain result lines only."""

from __future__ import annotations

import sys
from typing import IO, Any

from tqdm import tqdm


def is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real file
        return False


def bar(description: str, *, total: float | None = None, unit: str = "it",
        stream: IO[str] | None = None, **options: Any) -> tqdm[Any]:
    """A tqdm bar on stderr, disabled (a no-op) unless stderr is a terminal."""
    out = stream if stream is not None else sys.stderr
    return tqdm(total=total, desc=description, unit=unit, file=out, disable=not is_terminal(out),
                dynamic_ncols=True, leave=True, **options)
