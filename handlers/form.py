"""Read the structured request an officer sends, and say exactly what is wrong with it.

The fields come from a `request.toml` or `request.json` attachment inside the signed part, or a
`Key: value` block at the top of the signed body (DESIGN.md, "The request an officer sends").
Nothing is guessed: an unknown value or a malformed date is a `problem`, a required field that is
absent is `missing`, and the reply lists both.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from gateway.mime import ReceivedAttachment
from handlers.refs import REF_PATTERN

REQUEST_TYPES = (
    "preservation", "preservation_extension", "emergency_disclosure", "subpoena", "court_order",
    "search_warrant", "mlat", "asset_freeze", "freeze_release",
)
SUBJECT_TYPES = ("account_id", "email", "phone", "wallet_address", "tx_hash")
DATA_CATEGORIES = (
    "subscriber_information", "kyc_documents", "login_ip_addresses", "transaction_history",
    "wallet_addresses", "device_information", "account_balances", "support_communications",
)
OFFICER_ACTIONS = ("withdraw",)
NO_FORM = ("no request form found: put the fields in a `Key: value` block at the top of the "
           "message, or attach request.toml or request.json")
FIELDS = (
    "reference", "action", "type", "case_number", "legal_basis", "subjects", "data_categories",
    "date_from", "date_to",
    "nondisclosure_until", "emergency", "emergency_justification", "supervisor",
    "investigation_status",
)
# Types that must come with a legal document (PDF) attached.
DOCUMENT_REQUIRED = {"subpoena", "court_order", "search_warrant", "mlat", "asset_freeze"}
# Types that ask for data and so must say which categories.
CATEGORIES_REQUIRED = {"emergency_disclosure", "subpoena", "court_order", "search_warrant", "mlat",
                       "preservation"}
KEY_VALUE = re.compile(r"^([A-Za-z_][A-Za-z0-9_ -]*?)\s*:\s*(.*)$")
FORM_FILENAMES = ("request.toml", "request.json")
FORM_MAX_BYTES = 256 * 1024  # a form is a few hundred bytes: a larger one is not read (nor parsed)


@dataclass(frozen=True)
class Subject:
    type: str
    value: str


@dataclass
class RequestForm:
    """The parsed request, the fields that are missing, and the values that are wrong."""

    type: str | None = None
    case_number: str | None = None
    legal_basis: str | None = None
    subjects: list[Subject] = field(default_factory=list)
    data_categories: list[str] = field(default_factory=list)
    date_from: date | None = None
    date_to: date | None = None
    nondisclosure_until: date | None = None
    nondisclosure_indefinite: bool = False
    emergency: bool = False
    emergency_justification: str | None = None
    supervisor: str | None = None
    investigation_status: str | None = None
    reference: str | None = None  # set when the officer answers about an existing request
    action: str | None = None  # "withdraw", with a reference
    source: str = "body"
    free_text: str = ""
    missing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def found(self) -> bool:
        """Did the mail carry a request form at all (as opposed to plain prose)?"""
        return self.source != "none"


def read_request_form(body: str, attachments: tuple[ReceivedAttachment, ...] | list[ReceivedAttachment],
                      *, has_document: bool) -> RequestForm:
    """Find the form (attachment first, then body block), validate it, list what is missing."""
    raw, source, free_text, problems = _find_raw_fields(body, attachments)
    form = RequestForm(source=source, free_text=free_text, problems=problems)
    if source == "none" and not problems:
        return form
    _validate(raw, form, structured=source != "body")
    form.missing = missing_fields(form, has_document)
    return form


def _find_raw_fields(body: str, attachments: Any) -> tuple[dict[str, Any], str, str, list[str]]:
    for attachment in attachments:
        name = (attachment.filename or "").lower()
        if name not in FORM_FILENAMES:
            continue
        if attachment.size > FORM_MAX_BYTES:
            return {}, name, body, [f"{name}: is {attachment.size} bytes, more than a form's "
                                    f"{FORM_MAX_BYTES} at most"]
        try:
            text = attachment.data.decode("utf-8")
        except UnicodeDecodeError:
            return {}, name, body, [f"{name}: is not UTF-8 text"]
        try:
            data = tomllib.loads(text) if name.endswith(".toml") else json.loads(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
            return {}, name, body, [f"{name}: cannot be parsed: {exc}"]
        except (ValueError, RecursionError) as exc:  # e.g. absurdly long numbers, deep nesting
            return {}, name, body, [f"{name}: cannot be parsed ({type(exc).__name__})"]
        if not isinstance(data, dict):
            return {}, name, body, [f"{name}: must hold a table/object of fields"]
        return data, name, body, []
    fields, rest = _body_block(body)
    if not fields:
        return {}, "none", body, []
    return fields, "body", rest, []


def _body_block(body: str) -> tuple[dict[str, Any], str]:
    """`Key: value` lines at the top of the body, up to the first blank line."""
    lines = body.replace("\r\n", "\n").lstrip("\n").split("\n")
    fields: dict[str, Any] = {}
    index = 0
    for index, line in enumerate(lines):  # noqa: B007 - index is used after the loop
        if not line.strip():
            break
        match = KEY_VALUE.match(line)
        if not match:
            return {}, body
        key = match.group(1).strip().lower().replace(" ", "_").replace("-", "_")
        fields[key] = match.group(2).strip()
    else:
        index = len(lines)
    return fields, "\n".join(lines[index + 1 :]).strip()


def _validate(raw: dict[str, Any], form: RequestForm, *, structured: bool) -> None:
    for key in raw:
        if key not in FIELDS:
            form.problems.append(f"{key}: is not a field of the request form "
                                 f"(known fields: {', '.join(FIELDS)})")
    form.type = _choice(raw, "type", REQUEST_TYPES, form)
    reference = raw.get("reference")
    if reference not in (None, ""):
        if isinstance(reference, str) and REF_PATTERN.fullmatch(reference.strip()):
            form.reference = reference.strip()
        else:
            form.problems.append(f"reference: {reference!r} is not a reference like LERS-2026-000123")
    form.action = _choice(raw, "action", OFFICER_ACTIONS, form)
    if form.action and not form.reference:
        form.problems.append(f"action: {form.action} needs the reference of the request, as in "
                             "reference: LERS-2026-000123")
    for name in ("case_number", "legal_basis", "emergency_justification", "supervisor",
                 "investigation_status"):
        value = raw.get(name)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            form.problems.append(f"{name}: must be text")
            continue
        setattr(form, name, value.strip())
    form.subjects = _subjects(raw.get("subjects"), form, structured=structured)
    form.data_categories = _categories(raw.get("data_categories"), form, structured=structured)
    form.date_from = _date(raw, "date_from", form)
    form.date_to = _date(raw, "date_to", form)
    if form.date_from and form.date_to and form.date_from > form.date_to:
        form.problems.append("date_to: is before date_from")
    ndo = raw.get("nondisclosure_until")
    if isinstance(ndo, str) and ndo.strip().lower() == "indefinite":
        form.nondisclosure_indefinite = True
    else:
        form.nondisclosure_until = _date(raw, "nondisclosure_until", form,
                                         hint='a date (YYYY-MM-DD) or "indefinite"')
    form.emergency = _boolean(raw, "emergency", form)
    if form.type == "emergency_disclosure":
        form.emergency = True


def _choice(raw: dict[str, Any], name: str, allowed: tuple[str, ...], form: RequestForm) -> str | None:
    value = raw.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or value.strip() not in allowed:
        form.problems.append(f"{name}: {value!r} is not one of: {', '.join(allowed)}")
        return None
    return value.strip()


def _subjects(value: Any, form: RequestForm, *, structured: bool) -> list[Subject]:
    if value is None or value == "" or value == []:
        return []
    items: list[Any]
    if isinstance(value, str) and not structured:
        items = [item.strip() for item in value.split(",") if item.strip()]
    elif isinstance(value, list):
        items = value
    else:
        form.problems.append("subjects: must be a list of {type, value}")
        return []
    subjects: list[Subject] = []
    for item in items:
        if isinstance(item, str):
            kind, sep, ident = item.partition(":")
            kind, ident = kind.strip(), ident.strip()
            if not sep:
                form.problems.append(f"subjects: {item!r} needs a type, as in account_id:{item}")
                continue
        elif isinstance(item, dict):
            kind, ident = str(item.get("type", "")).strip(), str(item.get("value", "")).strip()
        else:
            form.problems.append(f"subjects: {item!r} is not a {{type, value}} pair")
            continue
        if kind not in SUBJECT_TYPES:
            form.problems.append(f"subjects: identifier type {kind!r} is not one of: "
                                 f"{', '.join(SUBJECT_TYPES)}")
            continue
        if not ident:
            form.problems.append(f"subjects: the {kind} has no value")
            continue
        subjects.append(Subject(kind, ident))
    return subjects


def _categories(value: Any, form: RequestForm, *, structured: bool) -> list[str]:
    if value is None or value == "" or value == []:
        return []
    if isinstance(value, str) and not structured:
        items = [item.strip() for item in value.split(",") if item.strip()]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = [v.strip() for v in value]
    else:
        form.problems.append("data_categories: must be a list of category names")
        return []
    categories = []
    for item in items:
        if item not in DATA_CATEGORIES:
            form.problems.append(f"data_categories: {item!r} is not one of: "
                                 f"{', '.join(DATA_CATEGORIES)}")
        elif item not in categories:
            categories.append(item)
    return categories


def _date(raw: dict[str, Any], name: str, form: RequestForm,
          hint: str = "a date written YYYY-MM-DD") -> date | None:
    value = raw.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, date) and not isinstance(value, datetime):  # TOML also has datetimes
        return value
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    form.problems.append(f"{name}: {value!r} is not {hint}")
    return None


def _boolean(raw: dict[str, Any], name: str, form: RequestForm) -> bool:
    value = raw.get(name)
    if value is None or value == "":
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    form.problems.append(f"{name}: {value!r} must be true or false")
    return False


def missing_fields(form: RequestForm, has_document: bool) -> list[str]:
    """The required fields this form lacks, given the type it asks for (DESIGN.md vocabulary)."""
    required = ["type", "case_number", "legal_basis"]
    missing = [name for name in required if not getattr(form, name)]
    if not form.subjects:
        missing.append("subjects")
    if form.type in CATEGORIES_REQUIRED and not form.data_categories:
        missing.append("data_categories")
    if form.emergency:
        missing += [n for n in ("emergency_justification", "supervisor") if not getattr(form, n)]
    if form.type == "preservation_extension" and not form.reference:
        missing.append("reference (of the preservation to extend)")
    if form.type in DOCUMENT_REQUIRED and not has_document:
        missing.append(f"the legal document (a PDF of the {form.type.replace('_', ' ')})")
    # a field already reported as malformed is not also "missing"
    reported = {p.split(":", 1)[0] for p in form.problems}
    return [m for m in missing if m not in reported]
