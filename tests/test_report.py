"""`lers report`: the transparency report over a generated year of requests.

The database is seeded through the models with a year of requests whose fate the seed chose
(tests/support/report_seed.py); `lers report` runs as a real process, and every figure in
report.json is checked against figures this file computes on its own from the seed. The HTML
page's tables, the CSV and the JSON must hold the same numbers, and the page must render in
headless Chromium with its charts visible.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import shutil
import statistics
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gateway.app import open_core
from gateway.config import load_settings
from gateway.models import Request
from handlers.outcomes import OUTCOMES, Facts, outcome, outcomes
from tests.conftest import short_tempdir
from tests.support.report_seed import DATA_TYPES, FIXED_COUNTRIES, Seeded, seed_year
from tests.test_cli import lers
from tests.test_progress import BAR_BYTES, in_terminal

START, END = date(2025, 1, 1), date(2025, 12, 31)
THRESHOLD = 5
PLATFORM = 'Example <Exchange> & "Sons"'  # the page must escape it
BAR_RGB = (0x2B, 0x6C, 0xB0)  # the charts' bar colour (gateway/report/charts.py)


@dataclass
class Made:
    work: Path
    out: Path
    seeded: list[Seeded]
    computed: dict[str, str]  # ref -> handlers.outcomes.outcomes() on the seeded database
    run: subprocess.CompletedProcess[str]

    @property
    def inside(self) -> list[Seeded]:
        return [s for s in self.seeded if s.in_period]

    def json(self) -> dict[str, Any]:
        return json.loads((self.out / "report.json").read_text())


@pytest.fixture(scope="module")
def made(database_urls: Any) -> Iterator[Made]:
    work = short_tempdir("report-")
    url = database_urls()
    config = ['[gateway]', 'address = "lers@gateway.test"',
              '[report]', f'min_country_requests = {THRESHOLD}', f'platform_name = {json.dumps(PLATFORM)}']
    if url:
        config += ['[storage]', f'url = "{url}"']
    (work / "config.toml").write_text("\n".join(config) + "\n")
    settings = load_settings(work / "config.toml", environ={})

    async def seed() -> tuple[list[Seeded], dict[str, str]]:
        core = await open_core(settings)
        try:
            seeded = await seed_year(core.db, START)
            async with core.db.transaction() as session:
                by_id = await outcomes(session)
                refs = {i: ref for i, ref in await session.execute(select(Request.id, Request.ref))}
            return seeded, {refs[i]: found for i, found in by_id.items()}
        finally:
            await core.close()

    seeded, computed = asyncio.run(seed())
    run = lers(work, "report", "--from", str(START), "--to", str(END), "--out", "out")
    yield Made(work, work / "out", seeded, computed, run)
    subprocess.run(["gpgconf", "--homedir", str(work / "data" / "gnupg"), "--kill", "gpg-agent"],
                   capture_output=True, check=False)
    shutil.rmtree(work, ignore_errors=True)


# -- what the figures must be, computed from the seed alone ---------------------------------------

def group_of(request_type: str | None) -> str:
    if request_type in ("preservation", "preservation_extension"):
        return "preservation"
    if request_type in ("asset_freeze", "freeze_release"):
        return "freeze"
    assert request_type is None or request_type in DATA_TYPES
    return "data"


def nonzero(counter: Counter[Any]) -> dict[Any, int]:
    return {key: n for key, n in counter.items() if n}


def rows(report: dict[str, Any], figure: str) -> dict[str, int]:
    return {r["category"]: r["count"] for r in report["figures"][figure]["rows"]}


def test_the_seed_covers_every_outcome_and_the_edges_of_the_period(made: Made) -> None:
    """Otherwise the other tests could pass without meaning much."""
    assert {s.expected for s in made.inside} == set(OUTCOMES)
    assert len(made.inside) == 400 and len(made.seeded) == 412
    arrivals = sorted(s.created_at for s in made.inside)
    assert arrivals[0].isoformat() == "2025-01-01T00:00:00+00:00"
    assert arrivals[-1].isoformat() == "2025-12-31T23:59:59+00:00"


def test_each_request_gets_the_outcome_its_history_says(made: Made) -> None:
    """The one outcome function, over the real rows, agrees with what the seed made happen."""
    assert made.computed == {s.ref: s.expected for s in made.seeded}


@pytest.mark.parametrize(("facts", "expected"), [
    (Facts("subpoena", "fulfilled", "approve", "data"), "produced_in_full"),
    (Facts("court_order", "fulfilled", "partial", "data"), "produced_in_part"),
    (Facts("mlat", "fulfilled", "partial", "no_data"), "no_data"),
    (Facts("search_warrant", "approved", "approve"), "production_pending"),
    (Facts("search_warrant", "approved"), "production_pending"),  # no review kept: the status says
    (Facts("subpoena", "rejected", "reject"), "rejected"),
    (Facts("subpoena", "under_review"), "open"),
    (Facts(None, "awaiting_info"), "open"),
    (Facts("subpoena", "withdrawn", "approve"), "withdrawn"),
    (Facts("preservation", "preserved", "approve", hold="active"), "preserved"),
    (Facts("preservation", "extended", "approve", hold="active"), "preservation_extended"),
    (Facts("preservation", "expired", "partial", hold="expired"), "preservation_expired"),
    (Facts("preservation_extension", "approved", "approve"), "approved_no_action"),
    (Facts("asset_freeze", "approved", "approve", hold="active"), "frozen"),
    (Facts("asset_freeze", "approved", "approve", hold="expired"), "freeze_expired"),
    (Facts("asset_freeze", "approved", "approve", hold="released"), "freeze_released"),
    (Facts("freeze_release", "fulfilled", "approve"), "freeze_release_done"),
    (Facts("asset_freeze", "rejected", "reject"), "rejected"),
])
def test_the_outcome_function(facts: Facts, expected: str) -> None:
    assert outcome(facts) == expected


def test_report_json_holds_the_figures_of_the_seed(made: Made) -> None:
    assert made.run.returncode == 0, made.run.stderr
    report = made.json()
    inside = made.inside
    assert report["platform"] == PLATFORM
    assert report["period"] == {"from": "2025-01-01", "to": "2025-12-31", "timezone": "UTC"}
    assert report["min_country_requests"] == THRESHOLD

    countries = Counter(s.country for s in inside)
    big = sorted(((c, n) for c, n in countries.items() if c and n >= THRESHOLD), key=lambda x: (-x[1], x[0]))
    expected_countries = [*big, ("other", sum(n for c, n in countries.items() if c and n < THRESHOLD)),
                          ("unknown", countries[None])]
    figure = report["figures"]["by_country"]
    assert [(r["category"], r["count"]) for r in figure["rows"]] == expected_countries
    # the seed's fixed countries, written out: PL (5) is shown, IS, LU and MT are grouped (1 + 3 + 4),
    # whatever IS had outside the period
    by_country = rows(report, "by_country")
    assert by_country["PL"] == FIXED_COUNTRIES["PL"] == 5
    assert by_country["other"] == 8 and by_country["unknown"] == 2
    assert not {"IS", "LU", "MT"} & set(by_country)
    other = next(r for r in report["figures"]["by_country"]["rows"] if r["category"] == "other")
    assert other["label"] == "Other countries (fewer than 5 requests each)"

    types = Counter(s.type or "type_missing" for s in inside)
    assert nonzero(Counter(rows(report, "by_type"))) == nonzero(types)
    for name in ("data", "preservation", "freeze"):
        decided = Counter(s.expected for s in inside
                          if group_of(s.type) == name and s.expected not in ("open", "withdrawn"))
        assert nonzero(Counter(rows(report, f"{name}_outcomes"))) == nonzero(decided), name
    assert rows(report, "undecided") == {"open": sum(s.expected == "open" for s in inside),
                                         "withdrawn": sum(s.expected == "withdrawn" for s in inside)}
    assert rows(report, "emergency_outcomes") == nonzero(Counter(s.expected for s in inside if s.emergency))
    assert rows(report, "nondisclosure") == {key: sum(s.ndo == key for s in inside)
                                             for key in ("until_date", "indefinite", "none")}
    notices = Counter(state for s in inside for state in s.notices)
    assert rows(report, "notices") == {key: notices[key] for key in ("sent", "held", "cancelled")}

    hours = [s.minutes_to_decision / 60 for s in inside if s.minutes_to_decision is not None]
    emergency_hours = [s.minutes_to_decision / 60 for s in inside
                       if s.emergency and s.minutes_to_decision is not None]
    buckets = Counter("under_4h" if h < 4 else "4h_to_1d" if h < 24 else "1d_to_3d" if h < 72
                      else "3d_to_10d" if h < 240 else "over_10d" for h in hours)
    assert nonzero(Counter(rows(report, "time_to_decision"))) == nonzero(buckets)

    data = [s for s in inside if group_of(s.type) == "data" and s.expected not in ("open", "withdrawn")]
    produced = sum(s.expected in ("produced_in_full", "produced_in_part") for s in data)
    assert report["summary"] == {
        "requests": 400,
        "emergency_requests": sum(s.emergency for s in inside),
        "decided": len(hours),
        "data_produced_percent": round(100 * produced / len(data), 1),
        "nondisclosure_percent": round(100 * sum(s.ndo != "none" for s in inside) / len(inside), 1),
        "median_hours_to_decision": round(statistics.median(hours), 1),
        "median_hours_to_decision_emergency": round(statistics.median(emergency_hours), 1),
        "notices_sent": notices["sent"],
        "notices_held": notices["held"],
    }
    # every figure over requests adds up to the requests of the period, each counted once
    for name in ("by_country", "by_type", "nondisclosure"):
        assert report["figures"][name]["total"] == 400, name
    assert sum(report["figures"][name]["total"] for name in
               ("data_outcomes", "preservation_outcomes", "freeze_outcomes", "undecided")) == 400


class Tables(HTMLParser):
    """The page's tables as {table id: [(row header, first number cell)]}, and its visible text."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[tuple[str, str]]] = {}
        self.text: list[str] = []
        self._table: str | None = None
        self._cells: list[str] | None = None
        self._cell: list[str] | None = None
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "title"):
            self._hidden += 1
        if tag == "table":
            self._table = dict(attrs).get("id") or ""
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self._cells = []
        elif tag in ("th", "td") and self._cells is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "title"):
            self._hidden -= 1
        if tag in ("th", "td") and self._cells is not None and self._cell is not None:
            self._cells.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._cells is not None and self._table is not None:
            if len(self._cells) >= 2 and self._cells[0] not in ("Category", "Figure", "Total"):
                self.tables[self._table].append((self._cells[0], self._cells[1]))
            self._cells = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if not self._hidden:
            self.text.append(data)


def parse(page: str) -> Tables:
    tables = Tables()
    tables.feed(page)
    return tables


def shown(value: int | float | None) -> str:
    return "—" if value is None else f"{value:,}" if isinstance(value, int) else f"{value:,.1f}"


def assert_page_has_the_figures(page: str, report: dict[str, Any]) -> None:
    tables = parse(page)
    for name, figure in report["figures"].items():
        expected = [(r["label"], shown(r["count"])) for r in figure["rows"]]
        assert tables.tables[f"table-{name}"] == expected, name
    summary = dict(tables.tables["table-summary"])
    assert summary["Requests received"] == "400"
    assert summary["Median time to decision (hours)"] == shown(report["summary"]["median_hours_to_decision"])
    text = " ".join(" ".join(tables.text).split())
    assert "Other countries (fewer than 5 requests each)" in text
    assert f"Transparency report of {PLATFORM}, 2025-01-01 to 2025-12-31" in text


def test_html_csv_and_json_agree(made: Made) -> None:
    report = made.json()
    page = (made.out / "report.html").read_text()
    assert_page_has_the_figures(page, report)
    # escaped, not interpreted: the platform's name is text, never markup
    assert PLATFORM not in page and "Example &lt;Exchange&gt; &amp; &quot;Sons&quot;" in page
    assert "<script" not in page and "http://" not in page and "https://" not in page  # nothing fetched
    images = page.count('<img src="data:image/png;base64,')
    assert images == sum(1 for f in report["figures"].values() if f["total"]) == 10
    assert sorted(p.name for p in (made.out / "charts").iterdir()) == sorted(
        f"{name}.png" for name in report["figures"])

    lines = list(csv.reader(io.StringIO((made.out / "report.csv").read_text())))
    assert lines[0] == ["figure", "category", "count"]
    expected = [["summary", key, "" if value is None else str(value)]
                for key, value in report["summary"].items()]
    expected += [[name, r["category"], str(r["count"])]
                 for name, f in report["figures"].items() for r in f["rows"]]
    assert lines[1:] == expected


def test_the_page_renders_in_headless_chromium(made: Made) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        if os.environ.get("LERS_REQUIRE_CHROMIUM"):
            pytest.fail("LERS_REQUIRE_CHROMIUM is set, but chromium is not installed")
        pytest.skip("chromium is not installed (Debian package chromium; CI installs it)")
    from PIL import Image

    page = (made.out / "report.html").resolve().as_uri()
    profile = made.work / "chromium"
    base = [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
            "--window-size=1200,3000"]
    shot = made.work / "shot.png"
    subprocess.run([*base, f"--screenshot={shot}", page], capture_output=True, timeout=60, check=True)
    dom = subprocess.run([*base, "--dump-dom", page], capture_output=True, text=True, timeout=60, check=True)

    with Image.open(shot) as image:
        assert image.format == "PNG" and image.size == (1200, 3000)
        pixels = image.convert("RGB")
        colours = pixels.getcolors(maxcolors=1 << 24)
    assert colours is not None and len(colours) > 100  # not blank: text, tables, charts
    bar_pixels = sum(n for n, rgb in colours if rgb == BAR_RGB)
    assert bar_pixels > 5000  # the charts' bars are on screen: the data: images decoded and showed
    assert_page_has_the_figures(dom.stdout, made.json())


def test_progress_in_a_terminal_and_quiet_in_a_pipe(made: Made) -> None:
    assert made.run.returncode == 0 and made.run.stderr == ""
    assert not any(token in made.run.stdout for token in BAR_BYTES)
    assert made.run.stdout.splitlines()[0] == (
        "transparency report 2025-01-01 to 2025-12-31: 400 requests; 13 files in out")
    status, output = in_terminal(made.work, "report", "--from", str(START), "--to", str(END), "--out", "tty")
    assert status == 0, output
    assert "report: 100%|" in output and "12/12" in output
    assert json.loads((made.work / "tty" / "report.json").read_text())["summary"] == made.json()["summary"]


def test_errors_are_one_line(made: Made) -> None:
    from tests.test_cli import assert_one_line_error
    def report(start: str, end: str, out: str = "x") -> subprocess.CompletedProcess[str]:
        return lers(made.work, "report", "--from", start, "--to", end, "--out", out)

    assert_one_line_error(report("2025-12-31", "2025-01-01"), "--from 2025-12-31 is after --to 2025-01-01")
    assert_one_line_error(report("2025-02-30", "2025-03-01"), "--from: not a date (YYYY-MM-DD): '2025-02-30'")
    assert_one_line_error(report("2025-01-01", "31/12/2025"), "--to: not a date")
    assert_one_line_error(report("2025-01-01", "2025-12-31", "config.toml/report"),
                          "cannot write to config.toml/report: Not a directory")
    assert not (made.work / "x").exists()
