"""Officers who are not enrolled yet, and enrolled officers changing keys, by signed mail.

An enrolment (a key nobody holds, the key attached, the From a user ID of it) becomes a pending
`Enrolment` for reviewers: the key is trusted for nothing until they enrol it after an
out-of-band check. A key certified by a registered agency's key is enrolled at once, in the name
of that agency. A key rotation, signed with the current key, moves the officer to the attached
new key, which must carry a certification by the current key (so the transition is provable
from the keys alone).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway import audit
from gateway.clock import utcnow
from gateway.config import Settings
from gateway.documents import Document, display_name
from gateway.mime import Refusal, SignedContent
from gateway.models import Agency, Enrolment, EnrolmentDocument, Key, Message, Officer
from gateway.outbox import queue_reply
from gateway.pgp import KeyImportError, KeyStatus, OpenPGP
from gateway.texts import render
from handlers.chain import Evaluation
from handlers.enrolment_form import attached_keys, read_enrolment_form
from handlers.intake import bullets
from handlers.notify import notify_reviewers
from handlers.threading import reply_threading


def bind_officer(session: AsyncSession, *, email: str, agency: Agency, key: KeyStatus,
                 name: str | None, via: str, telegram_id: int | None = None) -> Officer:
    """The Officer row bound to one key, and the Key row that records what we know of it."""
    officer = Officer(email=email, name=name, agency_id=agency.id, agency=agency,
                      key_fingerprint=key.fingerprint, telegram_id=telegram_id, enrolled_via=via)
    session.add(officer)
    return officer


async def record_key(session: AsyncSession, officer: Officer, key: KeyStatus) -> None:
    """Key rows mirror the keyring for reports (expiry, revocation); gpg stays the authority."""
    await session.flush()
    row = await session.get(Key, key.fingerprint)
    if row is None:
        session.add(Key(fingerprint=key.fingerprint, owner_type="officer", owner_id=officer.id,
                        user_ids=list(key.user_ids), expires_at=key.expires_at, revoked=key.revoked))
    else:
        row.owner_type, row.owner_id = "officer", officer.id
        row.user_ids, row.expires_at, row.revoked = list(key.user_ids), key.expires_at, key.revoked


def _received(message: Message) -> str:
    return f"{message.received_at:%Y-%m-%d %H:%M} UTC"


async def handle_enrolment(session: AsyncSession, settings: Settings, message: Message,
                           evaluation: Evaluation, documents: list[Document],
                           limits: Sequence[Refusal] = ()) -> Enrolment | None:
    """Store a signed enrolment as pending, acknowledge it to the key that signed it, tell reviewers.
    A message over a content limit (`limits`) is refused under that limit's reason code."""
    assert evaluation.content is not None and evaluation.check is not None
    fingerprint = evaluation.check.signer_fingerprint
    email = evaluation.from_address
    assert fingerprint is not None and email is not None
    in_reply_to, references = reply_threading(message, evaluation.content)
    form = read_enrolment_form(evaluation.content, sum(d.is_pdf for d in documents))
    form.problems += key_problems(evaluation.signer_key, email)
    pending = await session.scalar(select(Enrolment.id).where(
        Enrolment.email == email, Enrolment.status == "pending"))
    if pending is not None:
        form.problems.append(f"an enrolment for {email} (number {pending}) is already waiting for "
                             "review; you will be told the decision")
    actor = f"candidate:{fingerprint}"
    reply = dict(recipient=email, recipient_fingerprint=fingerprint, in_reply_to=in_reply_to,
                 references=references, reply_to_message=message.id)
    if limits:
        form.problems = [r.detail for r in limits]
    if form.problems:
        message.state, message.reason = "quarantined", limits[0].reason if limits else "invalid_enrolment"
        message.reason_detail = "; ".join(form.problems)[:4000]
        await audit.record(session, actor, "inbound.refused", f"message:{message.id}",
                           reason=message.reason, problems=form.problems, claimed_from=email)
        queue_reply(session, settings, kind="enrolment_problems", subject="Your enrolment could not be "
                    "accepted", body=render("enrolment_problems", problems=bullets(form.problems)), **reply)
        return None
    enrolment = Enrolment(email=email, key_fingerprint=fingerprint, form=form.fields,
                          message_id=message.id, created_at=utcnow())
    enrolment.documents = [EnrolmentDocument(
        original_filename=d.attachment.filename, stored_name=d.stored_name,
        content_type=d.attachment.content_type, sha256=d.sha256, size=d.attachment.size,
        data=await asyncio.to_thread(lambda d=d: d.attachment.data),  # a spooled file is read
        extracted_text=d.text, extraction_error=d.error) for d in documents]
    session.add(enrolment)
    await session.flush()
    message.state = "accepted"
    await audit.record(session, actor, "enrolment.received", f"enrolment:{enrolment.id}", email=email,
                       key=fingerprint, message_id=message.id, form=form.fields,
                       documents=[{"name": d.stored_name, "sha256": d.sha256} for d in documents])
    queue_reply(session, settings, kind="enrolment_received",
                subject=f"Enrolment {enrolment.id} received: waiting for review",
                body=render("enrolment_received", enrolment_id=enrolment.id,
                            officer_name=form.fields.get("name", ""),
                            agency=form.fields.get("agency", ""),
                            fingerprint=fingerprint, received_at=_received(message),
                            documents=_document_lines(documents)), **reply)
    notify_reviewers(session, enrolment_notice(enrolment))
    return enrolment


def enrolment_notice(enrolment: Enrolment) -> str:
    f = enrolment.form
    return (f"🪪 Enrolment {enrolment.id} waits for review: {f.get('name')}, {f.get('rank')}, "
            f"{f.get('unit')}, {f.get('agency')} ({f.get('country')}) <{enrolment.email}>, key "
            f"{enrolment.key_fingerprint}, {len(enrolment.documents)} document(s). "
            f"/enrolment {enrolment.id}")


def _document_lines(documents: list[Document]) -> str:
    if not documents:
        return ""
    return "\nDocuments received:\n" + "\n".join(
        f"  - {display_name(d.attachment.filename) or d.stored_name} (sha256 {d.sha256})" for d in documents)


async def enrol_certified(session: AsyncSession, evaluation: Evaluation) -> Officer:
    """A key certified by a registered agency's key: enrolled now, in that agency's name."""
    assert evaluation.signer_key is not None and evaluation.certified_by is not None
    assert evaluation.from_address is not None
    agency = await session.get(Agency, evaluation.certified_by)
    assert agency is not None
    key = evaluation.signer_key
    officer = bind_officer(session, email=evaluation.from_address, agency=agency, key=key,
                           name=_uid_name(key, evaluation.from_address), via="agency")
    await record_key(session, officer, key)
    await audit.record(session, f"agency:{agency.key_fingerprint}", "officer.enrolled",
                       officer.email, via="agency_certification", agency=agency.name,
                       key=key.fingerprint, certification=evaluation.certification)
    return officer


def _uid_name(key: KeyStatus, email: str) -> str | None:
    for uid in key.user_ids:
        if uid.lower().endswith(f"<{email}>"):
            return uid[: uid.rindex("<")].strip() or None
    return None


async def handle_key_rotation(session: AsyncSession, settings: Settings, message: Message,
                              officer: Officer, evaluation: Evaluation) -> None:
    """Move the officer to the new key the chain checked (`evaluation.rotation`), or refuse."""
    assert evaluation.content is not None
    rotation = evaluation.rotation or {}
    in_reply_to, references = reply_threading(message, evaluation.content)
    actor = f"officer:{officer.key_fingerprint}"
    problems = list(rotation.get("problems", []))
    new_key: KeyStatus | None = rotation.get("key")
    if new_key is not None and new_key.fingerprint != officer.key_fingerprint and await session.scalar(
            select(Officer.id).where(Officer.key_fingerprint == new_key.fingerprint)):
        problems.append(f"the key {new_key.fingerprint} is registered to another officer")
    if problems or new_key is None:
        message.state, message.reason = "quarantined", "invalid_key_rotation"
        message.reason_detail = "; ".join(problems)[:4000]
        await audit.record(session, actor, "inbound.refused", f"message:{message.id}",
                           reason="invalid_key_rotation", problems=problems)
        queue_reply(session, settings, kind="key_rotation_refused", recipient=officer.email,
                    recipient_fingerprint=officer.key_fingerprint,
                    subject="Your key change could not be accepted",
                    body=render("key_rotation_refused", problems=bullets(problems)),
                    in_reply_to=in_reply_to, references=references, reply_to_message=message.id)
        return
    old = officer.key_fingerprint
    officer.key_fingerprint = new_key.fingerprint
    officer.key_expiry_warned_at = None
    await record_key(session, officer, new_key)
    message.state = "accepted"
    action = "officer.key_updated" if old == new_key.fingerprint else "officer.key_rotated"
    await audit.record(session, actor, action, officer.email, old_key=old, new_key=new_key.fingerprint,
                       message_id=message.id,
                       expires_at=new_key.expires_at.isoformat() if new_key.expires_at else None)
    body = render("key_rotated", old_fingerprint=old, new_fingerprint=new_key.fingerprint,
                  changed_at=f"{utcnow():%Y-%m-%d %H:%M} UTC")
    for fingerprint in dict.fromkeys((new_key.fingerprint, old)):  # the old key hears of it too
        queue_reply(session, settings, kind="key_rotated", recipient=officer.email,
                    recipient_fingerprint=fingerprint, subject="Your key has been changed", body=body,
                    in_reply_to=in_reply_to, references=references, reply_to_message=message.id)
    if old != new_key.fingerprint:
        notify_reviewers(session, f"🔑 {officer.email} ({officer.agency.name}) changed keys: "
                         f"{old} → {new_key.fingerprint}")


async def inspect_rotation(pgp: OpenPGP, officer_email: str, old_fingerprint: str,
                           content: SignedContent) -> dict[str, Any]:
    """The gpg half of a key rotation, before any write: the attached new key must have a user ID
    for the officer's address, be usable, and carry a certification by the current key
    (`gpg --local-user OLD --quick-sign-key NEW`). The same key attached again is an update
    (e.g. a new expiry date) and needs no certification."""
    keys = attached_keys(content)
    if len(keys) != 1:
        return {"problems": [f"attach exactly one public key, the new one; this message has {len(keys)}"]}
    try:
        fingerprints = await pgp.import_public_key(keys[0].data)
    except KeyImportError as exc:
        return {"problems": [str(exc)]}
    if len(fingerprints) != 1:
        return {"problems": [f"the attached file holds {len(fingerprints)} keys; attach only the new one"]}
    key = await pgp.key_status(fingerprints[0])
    problems = key_problems(key, officer_email)
    if key is not None and key.fingerprint != old_fingerprint and not any(
            c.issuer_fingerprint == old_fingerprint and c.uid_email == officer_email
            and c.valid_at(utcnow()) for c in await pgp.certifications_of(key.fingerprint)):
        problems.append(f"the new key {key.fingerprint} must be certified by your current key "
                        f"{old_fingerprint}: gpg --local-user {old_fingerprint} --quick-sign-key "
                        f"{key.fingerprint} {officer_email}, then export and attach it again")
    return {"key": key, "problems": problems}


def key_problems(key: KeyStatus | None, email: str) -> list[str]:
    """What makes a key unusable as an officer's key (the same rules as `lers officer add`)."""
    if key is None:
        return ["the key could not be read back from the keyring"]
    problems = []
    if email not in key.emails:
        problems.append(f"the key {key.fingerprint} has no user ID for {email}")
    if key.revoked or key.expired:
        problems.append(f"the key {key.fingerprint} is {'revoked' if key.revoked else 'expired'}")
    if not key.can_encrypt:
        problems.append(f"the key {key.fingerprint} cannot encrypt, so replies could not be sent")
    return problems
