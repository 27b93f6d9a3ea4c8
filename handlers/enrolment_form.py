"""What a signed message asks for beyond a data request: to be enrolled, or to change keys.

An enrolment carries `enrolment: yes` as the first line of the `Key: value` block at the top of
the signed body (or an `enrolment.toml` attachment), the officer's public key, and their
official documents as PDFs. A key rotation carries `key_rotation: yes` and the new public key.
Nothing is guessed: unknown fields and missing ones are listed, as for requests.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from typing import Any

from gateway.mime import ReceivedAttachment, SignedContent
from handlers.form import FORM_MAX_BYTES, _body_block

ENROLMENT_FILE = "enrolment.toml"
ENROLMENT_FIELDS = ("name", "rank", "unit", "agency", "country", "phone", "supervisor_name",
                    "supervisor_contact")
ROTATION_FIELDS = ("key_rotation",)
KEY_TYPES = ("application/pgp-keys",)
ARMORED_KEY = b"-----BEGIN PGP PUBLIC KEY BLOCK-----"
YES = ("yes", "true")


@dataclass
class EnrolmentForm:
    """The enrolment form's fields and every problem found with it (or with the mail)."""

    fields: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    free_text: str = ""


def purpose_of(content: SignedContent) -> str | None:
    """`enrolment` or `key_rotation` when the signed content says so; None for a request."""
    if any((a.filename or "").lower() == ENROLMENT_FILE for a in content.attachments):
        return "enrolment"
    fields, _ = _body_block(content.text)
    first = next(iter(fields.items()), None)
    if first is None or str(first[1]).strip().lower() not in YES:
        return None
    return {"enrolment": "enrolment", "key_rotation": "key_rotation"}.get(first[0])


def attached_keys(content: SignedContent) -> list[ReceivedAttachment]:
    """Attachments holding an OpenPGP public key (armored, or typed application/pgp-keys)."""
    return [a for a in content.attachments
            if a.content_type.lower() in KEY_TYPES or ARMORED_KEY in a.head[:4096]]


def read_enrolment_form(content: SignedContent, pdf_count: int) -> EnrolmentForm:
    """The form from enrolment.toml or the body block; problems name each field to fix."""
    raw, free_text, problems = _raw_fields(content)
    form = EnrolmentForm(free_text=free_text, problems=problems)
    for key, value in raw.items():
        if key == "enrolment":
            continue
        if key not in ENROLMENT_FIELDS:
            form.problems.append(f"{key}: is not a field of the enrolment form "
                                 f"(known fields: {', '.join(ENROLMENT_FIELDS)})")
        elif not isinstance(value, str):
            form.problems.append(f"{key}: must be text")
        elif value.strip():
            form.fields[key] = value.strip()[:500]
    form.problems += [f"missing: {name}" for name in ENROLMENT_FIELDS
                      if name not in form.fields and not any(p.startswith(name + ":") for p in form.problems)]
    country = form.fields.get("country", "")
    if country and not (len(country) == 2 and country.isalpha()):
        form.problems.append(f"country: {country!r} is not a two-letter ISO 3166 code")
    if pdf_count == 0:
        form.problems.append("missing: your official documents as PDF attachments (warrant card or "
                             "official ID, and a letter of authority on your agency's letterhead)")
    keys = attached_keys(content)
    if len(keys) != 1:
        form.problems.append(f"attach exactly one public key (your own, the one that signed this "
                             f"message); this message has {len(keys)}")
    return form


def _raw_fields(content: SignedContent) -> tuple[dict[str, Any], str, list[str]]:
    for attachment in content.attachments:
        if (attachment.filename or "").lower() != ENROLMENT_FILE:
            continue
        if attachment.size > FORM_MAX_BYTES:
            return {}, content.text, [f"{ENROLMENT_FILE}: is {attachment.size} bytes, more than a "
                                      f"form's {FORM_MAX_BYTES} at most"]
        try:
            data = tomllib.loads(attachment.data.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError, ValueError, RecursionError) as exc:
            return {}, content.text, [f"{ENROLMENT_FILE}: cannot be parsed ({type(exc).__name__})"]
        return data, content.text, []
    fields, rest = _body_block(content.text)
    return fields, rest, []
