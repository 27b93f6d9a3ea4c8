"""An officer's and an agency's life after enrolment: suspension, reinstatement, revoked keys,
and the list of officers. Used by the `lers` CLI and by reviewers in chat; every act audited.

A suspension takes effect at once: the chain refuses the officer's next message
(`officer_suspended` / `agency_suspended`) and the outbox holds replies not yet sent to them,
releasing them only if they are reinstated.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gateway import audit
from gateway.clock import utcnow
from gateway.db import Database
from gateway.models import Agency, Key, Officer, Outbox
from gateway.outbox import SUSPENDED_HOLD
from gateway.pgp import OpenPGP


class OfficerError(Exception):
    """No such officer or agency, or the act does not apply; the message says which."""


async def _officer(session: AsyncSession, email: str) -> Officer:
    officer = await session.scalar(select(Officer).where(Officer.email == email.strip().lower()))
    if officer is None:
        raise OfficerError(f"no officer with address {email.strip()} (see `lers officer list`)")
    return officer


async def _agency(session: AsyncSession, name: str) -> Agency:
    agency = await session.scalar(select(Agency).where(Agency.name == name))
    if agency is None:
        raise OfficerError(f"no agency named {name!r}")
    return agency


async def suspend_officer(db: Database, email: str, reason: str, actor: str) -> Officer:
    if not reason.strip():
        raise OfficerError("a reason is required")
    async with db.transaction() as session:
        officer = await _officer(session, email)
        officer.status, officer.status_reason = "suspended", reason.strip()
        await audit.record(session, actor, "officer.suspended", officer.email, reason=reason.strip())
        return officer


async def reinstate_officer(db: Database, email: str, actor: str) -> tuple[Officer, int]:
    """Active again; replies held because of the suspension are released. Returns how many."""
    async with db.transaction() as session:
        officer = await _officer(session, email)
        if officer.status == "active":
            raise OfficerError(f"{officer.email} is not suspended")
        officer.status, officer.status_reason = "active", None
        released = await _release_held(session, [officer.email])
        await audit.record(session, actor, "officer.reinstated", officer.email, released=released)
        return officer, released


async def _release_held(session: AsyncSession, emails: list[str]) -> int:
    result = await session.execute(
        update(Outbox).where(Outbox.recipient.in_(emails), Outbox.state == "held",
                             Outbox.last_error == SUSPENDED_HOLD)
        .values(state="pending", last_error=None, next_attempt_at=utcnow()))
    return result.rowcount or 0  # type: ignore[attr-defined]


async def suspend_agency(db: Database, name: str, reason: str, actor: str) -> tuple[Agency, int]:
    """The agency and so every officer of it; returns how many officers are affected."""
    if not reason.strip():
        raise OfficerError("--reason is required")
    async with db.transaction() as session:
        agency = await _agency(session, name)
        agency.status, agency.status_reason = "suspended", reason.strip()
        officers = list(await session.scalars(select(Officer.email).where(Officer.agency_id == agency.id)))
        await audit.record(session, actor, "agency.suspended", agency.name, reason=reason.strip(),
                           officers=officers)
        return agency, len(officers)


async def reinstate_agency(db: Database, name: str, actor: str) -> tuple[Agency, int]:
    async with db.transaction() as session:
        agency = await _agency(session, name)
        if agency.status == "active":
            raise OfficerError(f"{agency.name} is not suspended")
        agency.status, agency.status_reason = "active", None
        officers = list(await session.scalars(select(Officer.email).where(
            Officer.agency_id == agency.id, Officer.status == "active")))
        released = await _release_held(session, officers)
        await audit.record(session, actor, "agency.reinstated", agency.name, released=released)
        return agency, released


async def revoke_key(db: Database, pgp: OpenPGP, data: bytes, actor: str) -> list[str]:
    """Import a revocation certificate; says whose key it revoked. gpg holds the revocation, so
    the chain refuses the key (`revoked_key`) and the outbox holds replies encrypted to it."""
    fingerprints = await pgp.import_revocation(data)
    owners = []
    async with db.transaction() as session:
        for fingerprint in fingerprints:
            row = await session.get(Key, fingerprint)
            if row is not None:
                row.revoked = True
            officer = await session.scalar(select(Officer).where(Officer.key_fingerprint == fingerprint))
            agency = await session.scalar(select(Agency).where(Agency.key_fingerprint == fingerprint))
            owner = (f"officer {officer.email}" if officer else
                     f"agency {agency.name}" if agency else "no officer or agency")
            owners.append(f"{fingerprint} ({owner})")
            await audit.record(session, actor, "key.revoked", fingerprint,
                               officer=officer.email if officer else None,
                               agency=agency.name if agency else None)
    return owners


async def list_officers(db: Database) -> list[dict[str, Any]]:
    """Every officer with status, agency, how they were enrolled, and their key's expiry."""
    async with db.transaction() as session:
        officers = list(await session.scalars(select(Officer).order_by(Officer.email)))
        keys = {k.fingerprint: k for k in await session.scalars(
            select(Key).where(Key.fingerprint.in_([o.key_fingerprint for o in officers])))}
    rows = []
    for officer in officers:
        key = keys.get(officer.key_fingerprint)
        status = officer.status if officer.agency.status == "active" else "agency_suspended"
        rows.append({
            "email": officer.email, "name": officer.name, "agency": officer.agency.name,
            "status": status, "reason": officer.status_reason or officer.agency.status_reason,
            "enrolled_via": officer.enrolled_via, "key": officer.key_fingerprint,
            "key_expires_at": key.expires_at.isoformat() if key and key.expires_at else None,
            "key_revoked": bool(key and key.revoked),
            "enrolled_at": officer.created_at.isoformat(),
        })
    return rows
