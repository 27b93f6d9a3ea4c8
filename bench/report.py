"""Results: per-run values, median (min–max), targets, the printed table and the JSON file."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Target:
    """A target of the issue: `op` is ">=" or "<"; `basis` says what the value is compared with."""

    op: str
    value: float
    basis: str = ""

    def met(self, measured: float) -> bool:
        return measured >= self.value if self.op == ">=" else measured < self.value

    def text(self, unit: str) -> str:
        return f"{'≥' if self.op == '>=' else '<'} {fmt(self.value, unit)}{self.basis}"


@dataclass
class Metric:
    key: str
    item: int
    label: str
    unit: str
    target: Target | None = None
    runs: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def median(self) -> float | None:
        return statistics.median(self.runs) if self.runs else None

    @property
    def status(self) -> str | None:
        if self.target is None or self.median is None:
            return None
        return "PASS" if self.target.met(self.median) else "MISS"

    def as_json(self) -> dict[str, Any]:
        return {
            "item": self.item, "label": self.label, "unit": self.unit, "runs": self.runs,
            "median": self.median, "min": min(self.runs) if self.runs else None,
            "max": max(self.runs) if self.runs else None,
            "target": None if self.target is None else {"op": self.target.op, "value": self.target.value,
                                                        "basis": self.target.basis.strip(" ()")},
            "status": self.status, "notes": self.notes,
        }


@dataclass(frozen=True)
class Todo:
    item: int
    label: str
    why: str = "not measured yet"


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile: with 300 samples, p99 is the 297th smallest, a value that occurred."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(fraction * len(ordered) - 1e-9)))
    return ordered[rank - 1]


def fmt(value: float | None, unit: str, with_unit: bool = True) -> str:
    if value is None:
        return "-"
    if unit == "s":
        number, unit = (f"{value * 1000:.0f}", "ms") if value < 10 else (f"{value:.1f}", "s")
    elif unit == "x":
        number, unit = f"{value:.2f}", ""
    else:
        number = f"{value:.0f}" if value >= 100 else f"{value:.1f}"
    return f"{number} {unit}".rstrip() if with_unit else number


@dataclass
class Report:
    meta: dict[str, Any]
    metrics: dict[str, Metric] = field(default_factory=dict)
    todos: list[Todo] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def define(self, key: str, item: int, label: str, unit: str, target: Target | None = None) -> Metric:
        self.metrics[key] = Metric(key, item, label, unit, target)
        return self.metrics[key]

    def add(self, key: str, value: float) -> None:
        self.metrics[key].runs.append(value)

    def note(self, key: str, text: str) -> None:
        if text not in self.metrics[key].notes:
            self.metrics[key].notes.append(text)

    def table(self) -> str:
        head = ("item", "measure", "median", "min – max", "target", "result")
        rows: list[tuple[int, tuple[str, ...]]] = []
        for metric in self.metrics.values():
            low, high = (fmt(f(metric.runs), metric.unit, False) if metric.runs else "-" for f in (min, max))
            target = metric.target.text(metric.unit) if metric.target else ""
            result = metric.status or ("no data" if not metric.runs else "")
            rows.append((metric.item, (str(metric.item), metric.label, fmt(metric.median, metric.unit),
                                       f"{low} – {high}" if metric.runs else "-", target, result)))
        for todo in self.todos:
            rows.append((todo.item, (str(todo.item), todo.label, "-", "-", "", f"TODO: {todo.why}")))
        rows.sort(key=lambda row: row[0])  # stable: definition order within an item
        cells = [row for _item, row in rows]
        widths = [max(len(row[i]) for row in [head, *cells]) for i in range(len(head))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                 for row in [head, *cells]]
        lines.insert(1, "  ".join("-" * width for width in widths))
        notes = [f"  {m.key}: {n}" for m in self.metrics.values() for n in m.notes]
        if notes:
            lines += ["", "notes:", *notes]
        if self.errors:
            lines += ["", "errors:", *(f"  {e}" for e in self.errors)]
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {
            "meta": self.meta,
            "metrics": {key: metric.as_json() for key, metric in self.metrics.items()},
            "todo": [{"item": t.item, "label": t.label, "status": t.why} for t in self.todos],
            "errors": self.errors,
        }

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_json(), indent=2) + "\n")
