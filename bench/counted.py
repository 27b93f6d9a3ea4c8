"""`python -m bench.counted FILE SCRIPT ARGS...`: run SCRIPT with every SQL statement counted.

A listener on every SQLAlchemy engine counts cursor executions; a daemon thread writes the total
to FILE ten times a second, so `bench/cost.py` can read it from outside without signals, and
how often each statement ran to FILE.sql.
"""

from __future__ import annotations

import os
import runpy
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

COUNT = [0]
STATEMENTS: Counter[str] = Counter()  # the statements themselves, when FILE.sql is asked for


@event.listens_for(Engine, "before_cursor_execute")
def _count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
    COUNT[0] += 1
    STATEMENTS[" ".join(statement.split())[:90] + _caller()] += 1


def _caller() -> str:
    """Where in our own code the statement came from (when LERS_COUNT_CALLERS is set)."""
    if not os.environ.get("LERS_COUNT_CALLERS"):
        return ""
    import greenlet  # SQLAlchemy's async layer runs the statement in a greenlet of its own

    frame, current = sys._getframe(2), greenlet.getcurrent()
    while True:
        while frame is not None:
            name = frame.f_code.co_filename
            if ("/gateway/" in name or "/handlers/" in name) and not name.endswith("db.py"):
                return f" @ {name.rpartition('/')[2]}:{frame.f_lineno} {frame.f_code.co_name}"
            frame = frame.f_back
        current = current.parent
        if current is None:
            return ""
        frame = current.gr_frame


def _write(path: Path) -> None:
    listing = path.with_suffix(".sql")
    while True:
        path.write_text(str(COUNT[0]))
        listing.write_text("".join(f"{n}\t{s}\n" for s, n in STATEMENTS.most_common()))
        time.sleep(0.1)


def main() -> None:
    path, script = Path(sys.argv[1]), sys.argv[2]
    threading.Thread(target=_write, args=(path,), daemon=True).start()
    sys.argv = [script, *sys.argv[3:]]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
