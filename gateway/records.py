"""Read-only views of requests and the quarantine, as plain dicts (for the CLI, JSON and tests)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from gateway.chunks import raw_head
from gateway.db import Database
from gateway.models import Message, Outbox, Request
from handlers.chain import outer_from_address


async def list_requests(db: Database) -> list[dict[str, Any]]:
    async with db.transaction() as session:
        rows = await session.scalars(select(Request).order_by(Request.id))
        return [{
            "ref": r.ref, "status": r.status, "type": r.type, "emergency": r.emergency,
            "officer": r.officer.email, "agency": r.officer.agency.name,
            "case_number": r.case_number, "created_at": r.created_at.isoformat(),
        } for r in rows]


async def show_request(db: Database, ref: str) -> dict[str, Any] | None:
    async with db.transaction() as session:
        request = await session.scalar(select(Request).where(Request.ref == ref))
        if request is None:
            return None
        messages = await session.scalars(
            select(Message).where(Message.request_id == request.id).order_by(Message.id))
        replies = await session.scalars(
            select(Outbox).where(Outbox.request_id == request.id).order_by(Outbox.id))
        return {
            "ref": request.ref, "status": request.status, "type": request.type,
            "emergency": request.emergency, "case_number": request.case_number,
            "legal_basis": request.legal_basis,
            "subjects": [{"type": s.type, "value": s.value} for s in request.subjects],
            "data_categories": request.data_categories,
            "date_from": _iso(request.date_from), "date_to": _iso(request.date_to),
            "nondisclosure_until": "indefinite" if request.nondisclosure_indefinite
            else _iso(request.nondisclosure_until),
            "emergency_justification": request.emergency_justification,
            "supervisor": request.supervisor,
            "investigation_status": request.investigation_status,
            "missing_fields": request.missing_fields,
            "officer": {"email": request.officer.email, "name": request.officer.name,
                        "agency": request.officer.agency.name,
                        "key": request.officer.key_fingerprint},
            "documents": [{"filename": a.original_filename, "stored_name": a.stored_name,
                           "content_type": a.content_type, "size": a.size, "sha256": a.sha256,
                           "text_extracted": a.extracted_text is not None,
                           "extraction_error": a.extraction_error} for a in request.attachments],
            "messages": [{"id": m.id, "direction": m.direction, "received_at": m.received_at.isoformat(),
                          "state": m.state, "verification": m.verification} for m in messages],
            "replies": [{"id": o.id, "kind": o.kind, "subject": o.subject, "state": o.state,
                         "attempts": o.attempts, "sent_at": _iso(o.sent_at)} for o in replies],
            "created_at": request.created_at.isoformat(),
        }


async def list_quarantine(db: Database) -> list[dict[str, Any]]:
    async with db.transaction() as session:
        rows = await session.scalars(
            select(Message).where(Message.direction == "inbound", Message.state == "quarantined")
            .order_by(Message.id))
        result = []
        for m in rows:
            claimed = outer_from_address(await raw_head(session, m))
            result.append({
                "id": m.id, "received_at": m.received_at.isoformat(), "transport": m.transport,
                "peer": m.peer, "reason": m.reason, "detail": m.reason_detail,
                "claimed_from": claimed if isinstance(claimed, str) else None,
                "signer": m.signer_fingerprint, "size": m.size, "sha256": m.sha256,
            })
        return result


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
