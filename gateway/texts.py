"""The texts people receive, kept in gateway/templates/ so they can be read and edited as text."""

from __future__ import annotations

import html
from functools import cache
from importlib import resources
from string import Template


@cache
def _template(filename: str) -> Template:
    return Template((resources.files("gateway") / "templates" / filename).read_text("utf-8"))


def render(name: str, **values: object) -> str:
    """Fill a template; a missing value is a bug in our code, so it raises KeyError."""
    return _template(f"{name}.txt").substitute({k: str(v) for k, v in values.items()})


def render_html(name: str, **values: object) -> str:
    """Fill an HTML template; every value is escaped (it may hold what an officer wrote)."""
    return _template(f"{name}.html").substitute({k: html.escape(str(v)) for k, v in values.items()})


@cache
def notice_languages() -> tuple[str, ...]:
    """The languages that have both a plain-text and an HTML user notice template."""
    names = {entry.name for entry in (resources.files("gateway") / "templates").iterdir()}
    return tuple(sorted(name.split(".")[1] for name in names
                        if name.startswith("notice.") and name.endswith(".txt")
                        and name.replace(".txt", ".html") in names))
