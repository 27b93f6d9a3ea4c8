"""The texts people receive, kept in gateway/templates/ so they can be read and edited as text."""

from __future__ import annotations

from functools import cache
from importlib import resources
from string import Template


@cache
def _template(name: str) -> Template:
    return Template((resources.files("gateway") / "templates" / f"{name}.txt").read_text("utf-8"))


def render(name: str, **values: object) -> str:
    """Fill a template; a missing value is a bug in our code, so it raises KeyError."""
    return _template(name).substitute({k: str(v) for k, v in values.items()})
