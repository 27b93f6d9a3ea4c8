"""Chain of custody: `lers audit export REF --out DIR` writes what a court may ask for.

The folder holds the request's raw signed mails exactly as received, every reply exactly as sent,
the verification result of each, the request record with every reviewer act, and the audit
entries about it (each with its hash and the previous entry's hash). `SHA256SUMS` lists every
file; `SHA256SUMS.asc` is the gateway key's signature over that list; `gateway.asc` is the
gateway's public key. Offline check, in the folder:

    gpg --import gateway.asc && gpg --verify SHA256SUMS.asc SHA256SUMS && sha256sum -c SHA256SUMS
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select

from gateway import audit
from gateway.app import Core
from gateway.chunks import raw_bytes
from gateway.models import AuditEntry, Message, Production, Request, Review
from gateway.records import show_request
from handlers.production import manifest_file


class ExportError(Exception):
    """The export cannot be made (no such request, folder not empty)."""


async def export_request(core: Core, ref: str, out: Path, actor: str = "operator") -> list[str]:
    """Write the bundle into the empty or new folder `out`; returns the files written."""
    if await asyncio.to_thread(_not_empty, out):
        raise ExportError(f"{out} is not empty: export into a new folder")
    details = await show_request(core.db, ref)
    if details is None:
        raise ExportError(f"no request {ref}")
    async with core.db.transaction() as session:
        request = await session.scalar(select(Request).where(Request.ref == ref))
        assert request is not None
        messages = list(await session.scalars(
            select(Message).where(Message.request_id == request.id).order_by(Message.id)))
        reviews = list(await session.scalars(
            select(Review).where(Review.request_id == request.id).order_by(Review.id)))
        subjects = [ref] + [f"message:{m.id}" for m in messages]
        entries = list(await session.scalars(
            select(AuditEntry).where(or_(AuditEntry.subject.in_(subjects),
                                         AuditEntry.details["request_id"].as_integer() == request.id))
            .order_by(AuditEntry.id)))
        production = await session.scalar(select(Production).where(Production.request_id == request.id))
        await audit.record(session, actor, "custody.exported", ref, messages=len(messages))
        files: dict[str, bytes] = {}
        for message in messages:
            files[f"messages/{message.id:06d}-{message.direction}.eml"] = await raw_bytes(session, message)
    details["reviews"] = [{"at": r.created_at.isoformat(), "reviewer": r.reviewer.name,
                           "telegram_id": r.reviewer.telegram_id, "action": r.action, "text": r.text}
                          for r in reviews]
    files["request.json"] = _json(details)
    files["verification.json"] = _json([{"message": m.id, "direction": m.direction,
                                         "received_at": m.received_at.isoformat(), "sha256": m.sha256,
                                         "verification": m.verification} for m in messages])
    if production is not None:  # what was disclosed, as the officer received it, with its signature
        files["production/manifest.json"] = manifest_file(production.manifest)
        files["production/manifest.json.asc"] = production.manifest_signature.encode()
    files["audit.jsonl"] = "".join(
        json.dumps({"id": e.id, "at": e.at.isoformat(), "actor": e.actor, "action": e.action,
                    "subject": e.subject, "details": e.details, "prev_hash": e.prev_hash,
                    "hash": e.hash}, sort_keys=True, ensure_ascii=False) + "\n"
        for e in entries).encode()
    files["gateway.asc"] = (await core.pgp.export_gateway_public_key()).encode()
    sums = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in sorted(files.items()))
    files["SHA256SUMS"] = sums.encode()
    files["SHA256SUMS.asc"] = await core.pgp.sign_evidence(files["SHA256SUMS"])
    await asyncio.to_thread(_write, out, files)
    return sorted(files)


def _not_empty(out: Path) -> bool:
    return out.exists() and any(out.iterdir())


def _write(out: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _json(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n").encode()
