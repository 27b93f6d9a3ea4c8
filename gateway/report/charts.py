"""One PNG bar chart per figure of the transparency report, drawn with matplotlib's Agg backend.

Only matplotlib's object API is used (a Figure with its own Agg canvas, never pyplot), so there is
no global figure state and a chart can be drawn in a worker thread, off the event loop. Drawing is
CPU work: callers run `bar_chart` with asyncio.to_thread.
"""

from __future__ import annotations

import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as PlotFigure

from gateway.report.figures import Figure

BAR_COLOUR = "#2b6cb0"
WIDTH_INCHES, DPI = 8.0, 100


def bar_chart(figure: Figure) -> bytes:
    """Horizontal bars, one per row, largest first at the top as in the table, each with its count."""
    rows = figure.rows
    plot = PlotFigure(figsize=(WIDTH_INCHES, 0.9 + 0.42 * max(len(rows), 1)), dpi=DPI)
    FigureCanvasAgg(plot)
    axes = plot.add_subplot()
    labels = [_plain(row.label) for row in rows]
    counts = [row.count for row in rows]
    positions = range(len(rows))
    bars = axes.barh(positions, counts, color=BAR_COLOUR)
    axes.set_yticks(list(positions), labels)
    axes.invert_yaxis()  # the first row on top, the table's order
    axes.bar_label(bars, labels=[str(c) for c in counts], padding=3)
    axes.set_xlim(0, max([*counts, 1]) * 1.15)
    axes.set_xlabel(f"Number of {figure.unit}")
    axes.set_title(_plain(figure.title), loc="left", fontsize=12)
    axes.xaxis.get_major_locator().set_params(integer=True)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    plot.tight_layout()
    out = io.BytesIO()
    plot.savefig(out, format="png", metadata={"Software": None})
    return out.getvalue()


def _plain(text: str) -> str:
    """matplotlib reads $...$ as mathematics; a country code or label is shown as written."""
    return text.replace("$", r"\$")
