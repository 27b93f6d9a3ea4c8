"""What an approval allows: the categories, subjects and dates that may be disclosed.

A scope is a plain dict stored with the approval (`Review.scope`), so the audit and the
production read the same thing. A full approval's scope is the request as asked; `/partial`
narrows it; with two approvers the production uses the intersection of both approvals, so
nothing leaves that one of them did not approve.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from gateway.models import Request
from handlers.form import DATA_CATEGORIES, SUBJECT_TYPES

Scope = dict[str, Any]


class ScopeError(Exception):
    """The reviewer's narrowing does not fit the request; the text says how to write it."""


def full_scope(request: Request) -> Scope:
    return {
        "categories": list(request.data_categories),
        "subjects": [[s.type, s.value] for s in request.subjects],
        "date_from": request.date_from.isoformat() if request.date_from else None,
        "date_to": request.date_to.isoformat() if request.date_to else None,
    }


def narrow(request: Request, words: list[str]) -> tuple[Scope, str]:
    """Read `/partial` arguments: `-category`, `-type:value`, `from=DATE`, `to=DATE`, then a note.

    Returns the narrowed scope and the note. Everything excluded must be part of the request, and
    something must remain: excluding everything is a rejection.
    """
    scope = full_scope(request)
    index = 0
    changed = False
    for index, word in enumerate(words):  # noqa: B007 - the note starts at index
        if word.startswith("-") and len(word) > 1:
            _exclude(scope, word[1:])
        elif word.startswith(("from=", "to=")):
            _limit_dates(scope, word)
        else:
            break
        changed = True
    else:
        index = len(words)
    note = " ".join(words[index:]).strip()
    if not changed:
        raise ScopeError("Say what is excluded: /partial REF -category -type:value [from=YYYY-MM-DD] "
                         "[to=YYYY-MM-DD] note, e.g. /partial REF -kyc_documents -email:x@example.com "
                         "KYC not covered by the order")
    if not note:
        raise ScopeError("A partial approval needs a note after the exclusions, saying why.")
    if request.data_categories and not scope["categories"]:
        raise ScopeError("That excludes every data category: use /reject instead.")
    if request.subjects and not scope["subjects"]:
        raise ScopeError("That excludes every subject: use /reject instead.")
    return scope, note


def _exclude(scope: Scope, item: str) -> None:
    if item in DATA_CATEGORIES:
        if item not in scope["categories"]:
            raise ScopeError(f"-{item}: the request does not ask for {item} (it asks for "
                             f"{', '.join(scope['categories']) or 'no categories'}).")
        scope["categories"].remove(item)
        return
    kind, _, value = item.partition(":")
    if kind in SUBJECT_TYPES and value:
        if [kind, value] not in scope["subjects"]:
            raise ScopeError(f"-{item}: not a subject of the request (its subjects: "
                             f"{', '.join(f'{k}:{v}' for k, v in scope['subjects'])}).")
        scope["subjects"].remove([kind, value])
        return
    raise ScopeError(f"-{item}: not a data category or a subject written type:value.")


def _limit_dates(scope: Scope, word: str) -> None:
    name, _, value = word.partition("=")
    try:
        day = date.fromisoformat(value)
    except ValueError as exc:
        raise ScopeError(f"{word}: the date must be written YYYY-MM-DD.") from exc
    low = date.fromisoformat(scope["date_from"]) if scope["date_from"] else None
    high = date.fromisoformat(scope["date_to"]) if scope["date_to"] else None
    if (low and day < low) or (high and day > high):
        raise ScopeError(f"{word}: outside the requested period ({low or '…'} to {high or '…'}); "
                         "a partial approval can only shorten it.")
    if name == "from":
        scope["date_from"] = day.isoformat()
    else:
        scope["date_to"] = day.isoformat()
    if scope["date_from"] and scope["date_to"] and scope["date_from"] > scope["date_to"]:
        raise ScopeError(f"{word}: the period would end before it starts.")


def intersect(scopes: list[Scope]) -> Scope:
    """What every approver allowed (the production never goes beyond any of them)."""
    result = {k: (list(v) if isinstance(v, list) else v) for k, v in scopes[0].items()}
    for other in scopes[1:]:
        result["categories"] = [c for c in result["categories"] if c in other["categories"]]
        result["subjects"] = [s for s in result["subjects"] if s in other["subjects"]]
        froms = [d for d in (result["date_from"], other["date_from"]) if d]
        tos = [d for d in (result["date_to"], other["date_to"]) if d]
        result["date_from"] = max(froms) if froms else None
        result["date_to"] = min(tos) if tos else None
    return result


def describe(scope: Scope) -> str:
    """One paragraph a reviewer or an officer reads."""
    subjects = ", ".join(f"{k}:{v}" for k, v in scope["subjects"]) or "none"
    period = (f"{scope['date_from'] or 'the beginning'} to {scope['date_to'] or 'today'}"
              if scope["date_from"] or scope["date_to"] else "the whole history")
    return (f"data categories: {', '.join(scope['categories']) or 'none'}; subjects: {subjects}; "
            f"period: {period}")
