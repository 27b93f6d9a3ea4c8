"""`lers report`: compute the figures, draw the charts, write the page and its data files.

The database is read once; each chart is drawn in a worker thread (asyncio.to_thread) so the
event loop never blocks; files are written in a thread too. `advance` is called after each step,
for the progress bar the command shows in a terminal.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import date
from pathlib import Path

from gateway.config import Settings
from gateway.db import Database
from gateway.report.export import to_csv, to_json
from gateway.report.figures import Report, compute
from gateway.report.render import to_html

FILES = ("report.html", "report.csv", "report.json")


class ReportError(Exception):
    """The report cannot be written (the output directory); the message says why."""


def steps(figures: int) -> int:
    """Progress steps: the figures, one per chart, the files."""
    return 1 + figures + 1


async def write_report(db: Database, settings: Settings, start: date, end: date, out: Path,
                       advance: Callable[[str], None] = lambda step: None,
                       total: Callable[[int], None] = lambda steps: None) -> tuple[Report, list[Path]]:
    """Write report.html, report.csv, report.json and charts/*.png into `out`; the files written."""
    # matplotlib is imported only when a report is made; its first import on a machine builds a
    # font cache and says so as a warning: not something for the operator's terminal or cron mail
    logging.getLogger("matplotlib").setLevel(logging.ERROR)
    from gateway.report.charts import bar_chart

    await asyncio.to_thread(_prepare, out)
    report = await compute(db, settings, start, end)
    total(steps(len(report.figures)))
    advance("figures")
    charts: dict[str, bytes] = {}
    for figure in report.figures:
        charts[figure.name] = await asyncio.to_thread(bar_chart, figure)
        advance(figure.name)
    contents: dict[str, bytes] = {
        "report.html": to_html(report, charts).encode(),
        "report.csv": to_csv(report).encode(),
        "report.json": to_json(report).encode(),
        **{f"charts/{name}.png": png for name, png in charts.items()},
    }
    written = await asyncio.to_thread(_write, out, contents)
    advance("files")
    return report, written


def _prepare(out: Path) -> None:
    try:
        (out / "charts").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"cannot write to {out}: {exc.strerror or exc}") from exc


def _write(out: Path, contents: dict[str, bytes]) -> list[Path]:
    written = []
    for name, data in contents.items():
        path = out / name
        try:
            path.write_bytes(data)
        except OSError as exc:
            raise ReportError(f"cannot write {path}: {exc.strerror or exc}") from exc
        written.append(path)
    return written
