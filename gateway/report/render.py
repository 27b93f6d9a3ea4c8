"""The transparency report as one static HTML page (gateway/templates/report.html).

No JavaScript and nothing fetched: each chart is a PNG inside the page as a data: URI, so the file
alone can be published, mailed or archived. Every chart has a table with the same figures (and an
alt text with them) for readers who cannot see it. Every value from the database or the
configuration is escaped here; the template itself holds no data.
"""

from __future__ import annotations

import base64
from functools import cache
from html import escape
from importlib import resources
from string import Template

from gateway.report.figures import Figure, Report, Stat


@cache
def _template() -> Template:
    return Template((resources.files("gateway") / "templates" / "report.html").read_text("utf-8"))


def to_html(report: Report, charts: dict[str, bytes]) -> str:
    """The page; `charts` maps a figure's name to its PNG (a figure without one gets only its table)."""
    title = f"Transparency report of {report.platform}, {report.start} to {report.end}"
    intro = (f"Requests for user data and other requests from law-enforcement and other authorities "
             f"received by {report.platform} from {report.start} to {report.end} (UTC, both days "
             f"included): {number(report_requests(report))} requests.")
    return _template().substitute(
        title=escape(title),
        intro=escape(intro),
        summary=_summary(report.summary),
        sections="\n".join(_section(figure, charts.get(figure.name)) for figure in report.figures),
        method=_method(report),
        footer=escape(f"Generated {report.generated_at.isoformat()} by lers-gateway. The same figures: ")
        + '<a href="report.csv">report.csv</a>, <a href="report.json">report.json</a>.',
    )


def report_requests(report: Report) -> int:
    return next(int(s.value or 0) for s in report.summary if s.name == "requests")


def number(value: int | float | None) -> str:
    """How a figure is written everywhere in the page: 1,234 or 12.5; a dash when there is none."""
    if value is None:
        return "—"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.1f}"


def _summary(stats: tuple[Stat, ...]) -> str:
    rows = "\n".join(f'<tr><th scope="row">{escape(s.label)}</th><td class="num">{number(s.value)}</td></tr>'
                     for s in stats)
    return (f'<table id="table-summary"><caption>Summary</caption>\n'
            f'<thead><tr><th scope="col">Figure</th><th scope="col" class="num">Value</th></tr></thead>\n'
            f"<tbody>\n{rows}\n</tbody></table>")


def _section(figure: Figure, png: bytes | None) -> str:
    name, title = escape(figure.name), escape(figure.title)
    parts = [f'<section id="{name}" aria-labelledby="h-{name}">', f'<h2 id="h-{name}">{title}</h2>']
    if figure.note:
        parts.append(f'<p class="note">{escape(figure.note)}</p>')
    if png is not None and figure.total:
        alt = f"Bar chart, {figure.title}: " + "; ".join(f"{r.label} {number(r.count)}" for r in figure.rows)
        source = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        parts.append(f'<figure><img src="{source}" alt="{escape(alt)}"></figure>')
    elif not figure.total:
        parts.append('<p class="note">None in this period.</p>')
    parts.append(_table(figure))
    parts.append("</section>")
    return "\n".join(parts)


def _table(figure: Figure) -> str:
    unit = escape(figure.unit.capitalize())
    total = figure.total
    body = "\n".join(
        f'<tr><th scope="row">{escape(r.label)}</th><td class="num">{number(r.count)}</td>'
        f'<td class="num">{_share(r.count, total)}</td></tr>' for r in figure.rows)
    return (f'<table id="table-{escape(figure.name)}"><caption>{escape(figure.title)}</caption>\n'
            f'<thead><tr><th scope="col">Category</th><th scope="col" class="num">{unit}</th>'
            f'<th scope="col" class="num">Share</th></tr></thead>\n<tbody>\n{body}\n</tbody>\n'
            f'<tfoot><tr><th scope="row">Total</th><td class="num">{number(total)}</td>'
            f'<td class="num">{"100%" if total else "—"}</td></tr></tfoot></table>')


def _share(count: int, total: int) -> str:
    return f"{100 * count / total:.1f}%" if total else "—"


def _method(report: Report) -> str:
    paragraphs = [
        "Every figure counts the requests that arrived in the period, each once, as they stand on the "
        "day the report was made: a request still open may be decided later, and a non-disclosure "
        "order may since have been lengthened or lifted.",
        "Data produced in full: approved as asked, and the data found was sent. Data produced in part: "
        "approved for only some of the accounts, kinds of data or dates asked for, and data was sent. "
        "Approved, no data found: approved, but no data was held for what was asked. Rejected: refused "
        "(for example no valid legal process, or outside our scope). Open requests are not decided yet; "
        "withdrawn requests were taken back by the requester, and nothing was sent.",
        "Preservations and asset freezes disclose no data and are counted apart from data requests.",
        f"Countries with fewer than {report.min_country_requests} requests in the period are shown "
        "together as \u201cOther countries\u201d, so that a request from a small country cannot be "
        "singled out." if report.min_country_requests > 1 else "Every country is shown.",
        "Time to decision runs from the arrival of the request to the decision (approval in full or in "
        "part, or rejection); the median is the middle value: half of the requests were decided faster.",
    ]
    return "\n".join(f"<p>{escape(p)}</p>" for p in paragraphs)
