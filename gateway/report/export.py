"""The transparency report's figures as data: report.json and report.csv, for people who chart
or compare them themselves. Both hold exactly the numbers of the HTML page."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from gateway.report.figures import Report


def as_dict(report: Report) -> dict[str, Any]:
    return {
        "platform": report.platform,
        "period": {"from": report.start.isoformat(), "to": report.end.isoformat(), "timezone": "UTC"},
        "generated_at": report.generated_at.isoformat(),
        "min_country_requests": report.min_country_requests,
        "summary": {stat.name: stat.value for stat in report.summary},
        "figures": {
            figure.name: {
                "title": figure.title, "unit": figure.unit, "note": figure.note, "total": figure.total,
                "rows": [{"category": r.category, "label": r.label, "count": r.count} for r in figure.rows],
            } for figure in report.figures
        },
    }


def to_json(report: Report) -> str:
    return json.dumps(as_dict(report), indent=2, ensure_ascii=False) + "\n"


def to_csv(report: Report) -> str:
    """Long format, one line per figure and category: `figure,category,count`. The summary's
    values come first as figure `summary` (a median in hours, a share in percent; empty: none)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["figure", "category", "count"])
    for stat in report.summary:
        writer.writerow(["summary", stat.name, "" if stat.value is None else stat.value])
    for figure in report.figures:
        for row in figure.rows:
            writer.writerow([figure.name, _cell(row.category), row.count])
    return out.getvalue()


def _cell(text: str) -> str:
    """A country code is whatever an operator typed: never let a spreadsheet read it as a formula."""
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text
