"""The secrets the tests use (tokens, passwords, passphrases). conftest searches the logs of the
whole run for every one of them at the end: none may ever reach a log line."""

from __future__ import annotations

SECRETS: set[str] = set()


def secret(value: str) -> str:
    """Register a secret; returns it, so a constant can be declared and registered at once."""
    SECRETS.add(value)
    return value
