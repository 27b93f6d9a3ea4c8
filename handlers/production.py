"""The data production: exactly what the approval allows, from the platform's data source.

The `produce` job reads the approved scope (handlers/scope.py) stored with the final approval,
queries one CSV per approved category for the accounts behind each approved subject, within the
approved dates, and zips them. A JSON manifest lists every file with its SHA-256 and row count;
the gateway's detached signature over the manifest is the certificate of authenticity. The ZIP,
the manifest and its signature go to the officer as signed, encrypted mail through the outbox
(in numbered parts when the ZIP is larger than `[production] max_part_bytes`). The audit records
the hashes and what was disclosed. A request withdrawn meanwhile produces nothing.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway import audit, queue
from gateway.clock import utcnow
from gateway.config import Settings
from gateway.datasource import DataSource, day_bounds
from gateway.db import Database
from gateway.models import Job, Production, Request, Review
from gateway.outbox import queue_reply
from gateway.pgp import OpenPGP
from gateway.texts import render
from handlers.scope import Scope, describe

# request types whose approval sends data; the others record a decision (handlers/holds.py)
DISCLOSURE_TYPES = ("emergency_disclosure", "subpoena", "court_order", "search_warrant", "mlat")
PRODUCIBLE_STATES = ("approved", "partially_approved")
MANIFEST_FORMAT = "lers-production/1"


@dataclass(frozen=True)
class ProductionContext:
    settings: Settings
    db: Database
    pgp: OpenPGP
    data_source: DataSource


@dataclass
class Collected:
    """The CSV files of one production and what the manifest says about the subjects."""

    files: dict[str, bytes] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    accounts: list[dict[str, Any]] = field(default_factory=list)
    not_held: list[str] = field(default_factory=list)


def enqueue_production(session: AsyncSession, request: Request, review: Review) -> None:
    queue.enqueue(session, "produce", payload={"request_id": request.id, "review_id": review.id})


async def produce(ctx: ProductionContext, job: Job) -> None:
    """The `produce` job (idempotent: a request has at most one production)."""
    async with ctx.db.transaction() as session:
        request = await session.get(Request, job.payload["request_id"])
        review = await session.get(Review, job.payload["review_id"])
        assert request is not None and review is not None and review.scope is not None
        done = await session.scalar(select(Production.id).where(Production.request_id == request.id))
        if done is not None or request.status not in PRODUCIBLE_STATES:
            queue.mark_done(session, await session.get(Job, job.id) or job)
            return
        scope: Scope = dict(review.scope)
        approvals = await _approvals(session, request)
        header = _manifest_header(request, approvals, scope)
    collected = await collect(ctx.data_source, scope)
    archive = await asyncio.to_thread(build_zip, collected.files, utcnow())
    chunks = split(archive, ctx.settings.production.max_part_bytes)
    manifest = header | {
        "produced_at": utcnow().isoformat(timespec="seconds"),
        "gateway_key": ctx.pgp.gateway_fingerprint,
        "files": [{"name": name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                   "rows": collected.rows[name]} for name, data in collected.files.items()],
        "zip": {"name": "production.zip", "sha256": hashlib.sha256(archive).hexdigest(),
                "bytes": len(archive),
                "parts": [{"name": name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
                          for name, data in chunks] if len(chunks) > 1 else []},
        "subjects": collected.accounts,
        "categories_not_held": collected.not_held,
    }
    manifest_bytes = manifest_file(manifest)
    signature = await ctx.pgp.sign_evidence(manifest_bytes)
    async with ctx.db.transaction() as session:
        request = await session.scalar(select(Request).where(Request.id == job.payload["request_id"])
                                       .with_for_update(of=Request))
        fresh_job = await session.get(Job, job.id)
        assert request is not None and fresh_job is not None
        if request.status in PRODUCIBLE_STATES:  # not withdrawn while we were querying
            _record(session, ctx.settings, request, manifest, manifest_bytes, signature, chunks, archive)
            request.status = "fulfilled"
            await audit.record(session, "system", "production.sent", request.ref,
                               zip_sha256=manifest["zip"]["sha256"], zip_bytes=len(archive),
                               parts=len(chunks), files=manifest["files"], scope=audit.scope_summary(scope),
                               manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
                               accounts=sum(len(s["accounts"]) for s in collected.accounts),
                               review_id=job.payload["review_id"])
        queue.mark_done(session, fresh_job)


def manifest_file(manifest: dict[str, Any]) -> bytes:
    """The manifest as the officer receives it (and as `lers audit export` writes it again): the
    bytes the gateway's signature covers."""
    return (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode()


async def _approvals(session: AsyncSession, request: Request) -> list[Review]:
    reviews = await session.scalars(select(Review).where(
        Review.request_id == request.id,
        Review.action.in_(["approve", "partial", "approve_first", "partial_first"])).order_by(Review.id))
    return list(reviews)


def _manifest_header(request: Request, approvals: list[Review], scope: Scope) -> dict[str, Any]:
    officer = request.officer
    return {
        "format": MANIFEST_FORMAT,
        "request": request.ref,
        "request_type": request.type,
        "case_number": request.case_number,
        "officer": {"name": officer.name, "email": officer.email,
                    "key_fingerprint": officer.key_fingerprint},
        "agency": {"name": officer.agency.name, "country": officer.agency.country},
        "approvals": [{"id": r.id, "action": r.action, "reviewer": r.reviewer.name,
                       "at": r.created_at.isoformat(timespec="seconds")} for r in approvals],
        "scope": scope,
    }


async def collect(data_source: DataSource, scope: Scope) -> Collected:
    """Query each approved category for each approved subject's accounts; nothing else."""
    result = Collected()
    start, end = day_bounds(_day(scope["date_from"]), _day(scope["date_to"]))
    subject_accounts: list[tuple[str, str, list[str]]] = []
    for kind, value in scope["subjects"]:
        accounts = await data_source.find_users(kind, value)
        subject_accounts.append((kind, value, accounts))
        result.accounts.append({"type": kind, "value": value, "accounts": accounts})
    for category in scope["categories"]:
        if category not in data_source.mapping.categories:
            result.not_held.append(category)
            continue
        buffer = io.StringIO(newline="")
        writer: Any = None
        count = 0
        for kind, value, accounts in subject_accounts:
            for account in accounts:
                rows = await data_source.fetch(category, account, start, end)
                assert rows is not None  # the category is held
                if writer is None:
                    writer = csv.writer(buffer, lineterminator="\r\n")
                    writer.writerow(("subject", "account", *rows.columns))
                for row in rows.rows:
                    writer.writerow((f"{kind}:{value}", account, *(_cell(v) for v in row)))
                    count += 1
        if writer is None:  # no account found: the file still says which columns there would be
            buffer.write("subject,account\r\n")
        name = f"{category}.csv"
        result.files[name] = buffer.getvalue().encode("utf-8")
        result.rows[name] = count
    return result


def _day(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def build_zip(files: dict[str, bytes], when: datetime) -> bytes:
    """A ZIP of the CSV files, with fixed times so that the same data gives the same bytes."""
    buffer = io.BytesIO()
    stamp = (max(when.year, 1980), when.month, when.day, when.hour, when.minute, when.second)
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return buffer.getvalue()


def split(archive: bytes, part_bytes: int) -> list[tuple[str, bytes]]:
    """production.zip as is, or production.zip.001, .002... of at most part_bytes each."""
    if len(archive) <= part_bytes:
        return [("production.zip", archive)]
    return [(f"production.zip.{n + 1:03d}", archive[offset:offset + part_bytes])
            for n, offset in enumerate(range(0, len(archive), part_bytes))]


def _record(session: AsyncSession, settings: Settings, request: Request, manifest: dict[str, Any],
            manifest_bytes: bytes, signature: bytes, chunks: list[tuple[str, bytes]],
            archive: bytes) -> None:
    """The production row and its mails, in the transaction that marks the request fulfilled."""
    total_rows = sum(f["rows"] for f in manifest["files"])
    session.add(Production(
        request_id=request.id, outcome="data" if total_rows else "no_data", scope=manifest["scope"],
        manifest=manifest, manifest_signature=signature.decode("ascii"),
        zip_sha256=manifest["zip"]["sha256"], zip_bytes=len(archive), parts=len(chunks), rows=total_rows))
    decision = "approved in part" if request.status == "partially_approved" else "approved"
    notes = _notes(manifest)
    for number, (name, data) in enumerate(chunks, start=1):
        part = f", part {number} of {len(chunks)}" if len(chunks) > 1 else ""
        files = "\n".join(f"  {f['name']}: {f['rows']} rows, sha256 {f['sha256']}" for f in manifest["files"])
        files = (f"  {name}: {'part of ' if len(chunks) > 1 else ''}the ZIP of these files:\n{files}\n"
                 "  manifest.json and manifest.json.asc")
        parts_help = ("" if len(chunks) == 1 else
                      f"\nThe ZIP comes in {len(chunks)} parts, one per mail. Join them in order:\n"
                      f"    cat production.zip.0* > production.zip\n")
        queue_reply(
            session, settings, kind="production", recipient=request.officer.email,
            recipient_fingerprint=request.officer.key_fingerprint,
            subject=f"[{request.ref}] Data production{part}",
            body=render("production", ref=request.ref, decision=decision, scope=describe(manifest["scope"]),
                        files=files, fingerprint=manifest["gateway_key"], parts_help=parts_help,
                        notes=notes),
            request_id=request.id, in_reply_to=request.thread_message_id or None,
            references=list(request.thread_references),
            attachments=[(name, data, "application/zip" if len(chunks) == 1 else "application/octet-stream"),
                         ("manifest.json", manifest_bytes, "application/json"),
                         ("manifest.json.asc", signature, "application/pgp-signature")])


def _notes(manifest: dict[str, Any]) -> str:
    lines = []
    for subject in manifest["subjects"]:
        if not subject["accounts"]:
            lines.append(f"No account was found for {subject['type']}:{subject['value']}.")
    for category in manifest["categories_not_held"]:
        lines.append(f"The platform holds no {category.replace('_', ' ')}.")
    if not any(f["rows"] for f in manifest["files"]):
        lines.append("No records matched the approved scope.")
    return ("\n" + "\n".join(lines) + "\n") if lines else ""
