"""Final responses: productions from the demo data source, partial approvals, preservations,
freezes, withdrawals, and the notices to users held by non-disclosure orders.

Everything runs through a real gateway: signed mail over SMTP, reviewers' decisions through the
plain review functions the chat calls, the scheduler's tasks, and the smarthost sink. Time is the
gateway's clock, moved by the tests, never slept.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from gateway import clock as gateway_clock
from gateway.clock import utcnow
from gateway.models import AuditEntry, Hold, Job, Notice, Production
from handlers.enrolment import add_reviewer
from handlers.review import ReviewContext, ReviewError, decide, set_nondisclosure
from tests.conftest import Harness, Reply
from tests.support.mail_factory import Attachment, pdf_bytes, request_body, signed_request_mail
from tests.support.officer_keys import TestKey


@pytest.fixture
def clock() -> Iterator[Callable[[timedelta], None]]:
    """Set the gateway's clock to real time plus an offset."""
    yield gateway_clock.set_offset
    gateway_clock.set_offset(timedelta(0))


@pytest.fixture
async def team(gateway: Harness) -> dict[str, Any]:
    return {
        "ctx": ReviewContext(gateway.settings, gateway.core.db),
        "anna": await add_reviewer(gateway.core, 2001, "Anna", "approver"),
        "bert": await add_reviewer(gateway.core, 2002, "Bert", "approver"),
    }


async def send_signed(gateway: Harness, officer: TestKey, body: str, *, pdf: bool = True) -> None:
    attachments = [Attachment("order.pdf", "application/pdf", pdf_bytes("Court order"))] if pdf else []
    mail = signed_request_mail(gateway.ring, officer, from_addr=officer.email, body=body,
                               attachments=attachments, at=utcnow())
    assert (await gateway.send(mail))[0] == 250
    await gateway.settle()


async def new_request(gateway: Harness, officer: TestKey, **fields: str | None) -> str:
    await send_signed(gateway, officer, request_body(**fields))
    request = (await gateway.requests())[-1]
    assert request["status"] == "received", request
    return str(request["ref"])


async def approve_twice(team: dict[str, Any], ref: str, first: str = "", second: str = "") -> None:
    for reviewer, words in ((team["anna"], first), (team["bert"], second)):
        decision = "partial" if words.startswith("-") else "approve"
        await decide(team["ctx"], reviewer, ref, decision, words)


def attachments_of(reply: Reply) -> dict[str, bytes]:
    found = {}
    for part in reply.inner.walk():
        name = part.get_filename()
        if name:
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            found[name] = payload
    return found


def body_of(reply: Reply) -> str:
    for part in reply.inner.walk():
        if part.get_content_type() == "text/plain" and not part.get_filename():
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode()
    raise AssertionError("no text part")


def productions(gateway: Harness, officer: TestKey) -> list[Reply]:
    return [r for r in gateway.replies(to=officer.email) if "Data production" in r.subject]


def read_zip(data: bytes) -> dict[str, list[dict[str, str]]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: list(csv.DictReader(io.StringIO(archive.read(name).decode())))
                for name in archive.namelist()}


async def scheduler_pass(gateway: Harness) -> int:
    done = await gateway.gateway.scheduler.run_once()
    await gateway.settle()
    return done


async def chat_texts(gateway: Harness) -> list[str]:
    async with gateway.core.db.transaction() as session:
        return [j.payload["text"] for j in await session.scalars(
            select(Job).where(Job.kind == "chat_notify").order_by(Job.id))]


# -- productions --------------------------------------------------------------------------------


async def test_full_run_from_signed_request_to_a_verifiable_encrypted_production(
        gateway: Harness, alice: TestKey, team: dict[str, Any]) -> None:
    ref = await new_request(gateway, alice, type="court_order",
                            data_categories="subscriber_information, login_ip_addresses")
    await approve_twice(team, ref)
    await gateway.settle()

    [production] = productions(gateway, alice)
    assert production.subject == f"[{ref}] Data production"
    assert production.signed_by == gateway.core.gateway_fingerprint  # signed by the gateway, encrypted
    files = attachments_of(production)
    assert sorted(files) == ["manifest.json", "manifest.json.asc", "production.zip"]
    # the certificate of authenticity: the gateway's detached signature over the manifest
    assert gateway.ring.verify_detached(files["manifest.json.asc"], files["manifest.json"])
    manifest = json.loads(files["manifest.json"])
    assert manifest["request"] == ref and manifest["officer"]["email"] == alice.email
    assert manifest["zip"]["sha256"] == hashlib.sha256(files["production.zip"]).hexdigest()
    assert [a["reviewer"] for a in manifest["approvals"]] == ["Anna", "Bert"]
    tables = read_zip(files["production.zip"])
    assert sorted(tables) == ["login_ip_addresses.csv", "subscriber_information.csv"]
    with zipfile.ZipFile(io.BytesIO(files["production.zip"])) as archive:
        for entry in manifest["files"]:
            assert hashlib.sha256(archive.read(entry["name"])).hexdigest() == entry["sha256"]
            assert len(tables[entry["name"]]) == entry["rows"]
    # both subjects name account 42; nothing of any other account, nothing outside the dates
    assert {row["account"] for rows in tables.values() for row in rows} == {"42"}
    assert [r["email"] for r in tables["subscriber_information.csv"]] == ["suspect@example.com"] * 2
    logins = tables["login_ip_addresses.csv"]
    assert logins and all("2026-01-01" <= r["at"][:10] <= "2026-06-30" for r in logins)
    assert "gpg --verify manifest.json.asc manifest.json" in body_of(production)

    assert (await gateway.requests())[0]["status"] == "fulfilled"
    async with gateway.core.db.transaction() as session:
        row = await session.scalar(select(Production))
        sent = await session.scalar(select(AuditEntry).where(AuditEntry.action == "production.sent"))
    assert row is not None and row.outcome == "data" and row.zip_sha256 == manifest["zip"]["sha256"]
    assert sent is not None and sent.subject == ref
    assert sent.details["zip_sha256"] == manifest["zip"]["sha256"]
    assert sent.details["scope"]["categories"] == ["subscriber_information", "login_ip_addresses"]
    assert sent.details["scope"]["subjects"] == 2  # counted: the identifiers stay sealed
    assert sent.details["manifest_sha256"] == hashlib.sha256(files["manifest.json"]).hexdigest()


async def test_partial_approval_excludes_a_subject_and_a_category(
        gateway: Harness, alice: TestKey, team: dict[str, Any]) -> None:
    ref = await new_request(
        gateway, alice, type="search_warrant", subjects="account_id:42, account_id:43",
        data_categories="subscriber_information, kyc_documents, transaction_history")
    # the first approver excludes the KYC documents, the second also account 43: the production
    # covers only what both allowed
    await approve_twice(team, ref, first="-kyc_documents KYC is not covered by the warrant",
                        second="-account_id:43 the warrant names one account")
    await gateway.settle()
    [production] = productions(gateway, alice)
    files = attachments_of(production)
    tables = read_zip(files["production.zip"])
    assert sorted(tables) == ["subscriber_information.csv", "transaction_history.csv"]
    assert {row["account"] for rows in tables.values() for row in rows} == {"42"}
    assert all(row["subject"] == "account_id:42" for rows in tables.values() for row in rows)
    manifest = json.loads(files["manifest.json"])
    assert manifest["scope"]["subjects"] == [["account_id", "42"]]
    assert manifest["scope"]["categories"] == ["subscriber_information", "transaction_history"]
    assert (await gateway.requests())[0]["status"] == "fulfilled"
    decision = next(r for r in gateway.replies(to=alice.email) if "partially approved" in r.subject)
    assert "account_id:42" in decision.text and "kyc_documents" not in decision.text.split("covers")[1]


async def test_partial_approval_errors_are_specific(gateway: Harness, alice: TestKey,
                                                   team: dict[str, Any]) -> None:
    ref = await new_request(gateway, alice, type="court_order")
    ctx, anna = team["ctx"], team["anna"]
    with pytest.raises(ReviewError, match="the request does not ask for kyc_documents"):
        await decide(ctx, anna, ref, "partial", "-kyc_documents note")
    with pytest.raises(ReviewError, match="not a subject of the request"):
        await decide(ctx, anna, ref, "partial", "-account_id:99 note")
    with pytest.raises(ReviewError, match="excludes every subject: use /reject"):
        await decide(ctx, anna, ref, "partial", "-account_id:42 -email:suspect@example.com note")
    with pytest.raises(ReviewError, match="a partial approval can only shorten it"):
        await decide(ctx, anna, ref, "partial", "from=2025-01-01 note")
    with pytest.raises(ReviewError, match="needs a note"):
        await decide(ctx, anna, ref, "partial", "-login_ip_addresses")


async def test_a_production_larger_than_the_part_size_comes_in_numbered_parts(
        make_gateway: Callable[..., Any], alice: TestKey) -> None:
    gateway: Harness = await make_gateway(production__max_part_bytes="3000")
    await gateway.enrol(alice)
    team = {"ctx": ReviewContext(gateway.settings, gateway.core.db),
            "anna": await add_reviewer(gateway.core, 2001, "Anna", "approver"),
            "bert": await add_reviewer(gateway.core, 2002, "Bert", "approver")}
    ref = await new_request(gateway, alice, type="court_order", date_from=None, date_to=None,
                            data_categories="login_ip_addresses, transaction_history")
    await approve_twice(team, ref)
    await gateway.settle()
    parts = sorted(productions(gateway, alice), key=lambda r: r.subject)
    assert len(parts) >= 2
    assert [r.subject for r in parts] == [f"[{ref}] Data production, part {n} of {len(parts)}"
                                          for n in range(1, len(parts) + 1)]
    chunks, manifest = [], None
    for number, part in enumerate(parts, start=1):
        assert part.signed_by == gateway.core.gateway_fingerprint
        files = attachments_of(part)
        assert gateway.ring.verify_detached(files["manifest.json.asc"], files["manifest.json"])
        manifest = json.loads(files["manifest.json"])
        chunk = files[f"production.zip.{number:03d}"]
        assert len(chunk) <= 3000
        assert hashlib.sha256(chunk).hexdigest() == manifest["zip"]["parts"][number - 1]["sha256"]
        chunks.append(chunk)
    assert manifest is not None
    joined = b"".join(chunks)
    assert hashlib.sha256(joined).hexdigest() == manifest["zip"]["sha256"]
    assert sorted(read_zip(joined)) == ["login_ip_addresses.csv", "transaction_history.csv"]


async def test_no_account_found_is_said_and_recorded_as_no_data(
        gateway: Harness, alice: TestKey, team: dict[str, Any]) -> None:
    ref = await new_request(gateway, alice, type="court_order", subjects="email:nobody@example.org")
    await approve_twice(team, ref)
    await gateway.settle()
    [production] = productions(gateway, alice)
    assert "No account was found for email:nobody@example.org." in body_of(production)
    async with gateway.core.db.transaction() as session:
        row = await session.scalar(select(Production))
    assert row is not None and row.outcome == "no_data" and row.rows == 0


# -- notices and non-disclosure orders ---------------------------------------------------------


async def test_a_rejection_notifies_the_user_at_once_with_no_data_and_no_link(
        gateway: Harness, alice: TestKey, team: dict[str, Any]) -> None:
    ref = await new_request(gateway, alice, type="subpoena")
    await decide(team["ctx"], team["anna"], ref, "reject", "not enough legal basis")
    await gateway.settle()
    assert await scheduler_pass(gateway) >= 1
    [notice] = gateway.notices(to="suspect@example.com")
    assert notice["Subject"] == "A request from an authority about your account"
    assert notice.get_content_type() == "multipart/alternative"
    text = notice.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = notice.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "Who asked: Test Police (XX)" in text
    assert "Type of request: subpoena" in text and "Our decision: rejected" in text
    assert "subscriber information, login ip addresses" in text and ref in text
    for body in (text, html):
        assert "http" not in body and "203.0.113" not in body  # no link, no data
    assert "<table>" in html
    await scheduler_pass(gateway)
    assert len(gateway.notices(to="suspect@example.com")) == 1  # once


async def test_an_ndo_holds_the_notice_through_extension_and_a_restart_then_it_goes_once(
        make_gateway: Callable[..., Any], alice: TestKey, clock: Callable[[timedelta], None],
        tmp_path: Any) -> None:
    data_dir = tmp_path / "data"
    gateway: Harness = await make_gateway(gateway__data_dir=str(data_dir))
    await gateway.enrol(alice)
    anna = await add_reviewer(gateway.core, 2001, "Anna", "approver")
    ndo_end = (utcnow() + timedelta(days=30)).date()
    ref = await new_request(gateway, alice, type="preservation", nondisclosure_until=ndo_end.isoformat())
    await decide(ReviewContext(gateway.settings, gateway.core.db), anna, ref, "approve", "")
    await gateway.settle()
    assert await scheduler_pass(gateway) == 0
    async with gateway.core.db.transaction() as session:
        [notice] = list(await session.scalars(select(Notice)))
    assert notice.state == "held" and notice.hold == "ndo"
    assert notice.not_before == datetime.combine(ndo_end + timedelta(days=1), datetime.min.time(), UTC)

    # the officer extends the order by a signed reply, 20 days in
    clock(timedelta(days=20))
    longer = ndo_end + timedelta(days=60)
    await send_signed(gateway, alice, f"reference: {ref}\nnondisclosure_until: {longer}\n\nExtended.",
                      pdf=False)
    extended = [r for r in gateway.replies(to=alice.email) if "received" in r.subject.lower()][-1]
    assert f"now runs until {longer}" in extended.text

    clock(timedelta(days=32))  # past the first end: still held
    await scheduler_pass(gateway)
    assert gateway.notices() == []
    await gateway.gateway.stop()
    await gateway.core.close()

    restarted: Harness = await make_gateway(gateway__data_dir=str(data_dir),
                                            storage__url=gateway.settings.storage.url)  # the same database
    clock(timedelta(days=80))  # restart, still inside the extended order
    await scheduler_pass(restarted)
    assert restarted.notices() == []
    clock(timedelta(days=92))  # the extended order has ended
    await scheduler_pass(restarted)
    await scheduler_pass(restarted)
    [sent] = restarted.notices(to="suspect@example.com")
    assert "Type of request: preservation" in sent.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    async with restarted.core.db.transaction() as session:
        assert [e.subject for e in await session.scalars(
            select(AuditEntry).where(AuditEntry.action == "notice.sent"))] == [ref]


async def test_an_indefinite_ndo_holds_until_a_reviewer_lifts_it(
        gateway: Harness, alice: TestKey, team: dict[str, Any], clock: Callable[[timedelta], None]) -> None:
    ref = await new_request(gateway, alice, type="preservation", nondisclosure_until="indefinite")
    await decide(team["ctx"], team["anna"], ref, "approve", "")
    await gateway.settle()
    clock(timedelta(days=3650))
    await scheduler_pass(gateway)
    assert gateway.notices() == []
    listed = await gateway_cli_notices(gateway)
    assert listed[0]["hold"] == "ndo_indefinite" and listed[0]["not_before"] is None
    answer = await set_nondisclosure(team["ctx"], team["anna"], ref, "lift")
    assert "indefinite → none" in answer.text
    await scheduler_pass(gateway)
    assert len(gateway.notices(to="suspect@example.com")) == 1


async def gateway_cli_notices(gateway: Harness) -> list[dict[str, Any]]:
    from handlers.notices import list_notices
    return await list_notices(gateway.core.db, gateway.settings, due_only=False)


async def test_an_emergency_notice_waits_for_the_configured_delay(
        gateway: Harness, alice: TestKey, team: dict[str, Any], clock: Callable[[timedelta], None]) -> None:
    ref = await new_request(gateway, alice, type="emergency_disclosure", emergency="true",
                            emergency_justification="imminent threat to life",
                            supervisor="Sgt. Smith +1 555 0100")
    await approve_twice(team, ref)
    await gateway.settle()
    assert productions(gateway, alice)  # the data went out at once
    clock(timedelta(hours=71))
    await scheduler_pass(gateway)
    assert gateway.notices() == []
    clock(timedelta(hours=72, minutes=1))
    await scheduler_pass(gateway)
    assert len(gateway.notices(to="suspect@example.com")) == 1


async def test_a_notice_is_not_sent_early_when_the_clock_is_set_back(
        gateway: Harness, alice: TestKey, team: dict[str, Any], clock: Callable[[timedelta], None]) -> None:
    ndo_end = (utcnow() + timedelta(days=10)).date()
    ref = await new_request(gateway, alice, type="preservation", nondisclosure_until=ndo_end.isoformat())
    await decide(team["ctx"], team["anna"], ref, "approve", "")
    await gateway.settle()
    clock(timedelta(days=9))
    await scheduler_pass(gateway)
    clock(timedelta(days=-30))  # someone sets the clock back
    await scheduler_pass(gateway)
    assert gateway.notices() == []
    due = await gateway_cli_notices(gateway)
    assert due[0]["due"] is False
    clock(timedelta(days=12))
    await scheduler_pass(gateway)
    assert len(gateway.notices(to="suspect@example.com")) == 1


async def test_a_reviewer_ndo_on_a_decided_request_holds_its_notices(
        gateway: Harness, alice: TestKey, team: dict[str, Any], clock: Callable[[timedelta], None]) -> None:
    ref = await new_request(gateway, alice, type="preservation")
    await decide(team["ctx"], team["anna"], ref, "approve", "")
    until = (utcnow() + timedelta(days=5)).date()
    answer = await set_nondisclosure(team["ctx"], team["anna"], ref, until.isoformat())
    assert f"none → until {until}" in answer.text
    await gateway.settle()
    await scheduler_pass(gateway)
    assert gateway.notices() == []
    clock(timedelta(days=6, hours=1))
    await scheduler_pass(gateway)
    assert len(gateway.notices()) == 1


# -- preservations, freezes, withdrawals -------------------------------------------------------


async def test_preservation_expiry_warning_and_extension(
        gateway: Harness, alice: TestKey, team: dict[str, Any], clock: Callable[[timedelta], None]) -> None:
    ref = await new_request(gateway, alice, type="preservation")
    await decide(team["ctx"], team["anna"], ref, "approve", "")
    await gateway.settle()
    decision = next(r for r in gateway.replies(to=alice.email) if "approved" in r.subject)
    assert "The data is preserved until" in decision.text and "No data is disclosed" in decision.text
    assert not productions(gateway, alice)
    assert (await gateway.requests())[0]["status"] == "preserved"

    clock(timedelta(days=84))  # a week before the 90 days end
    await scheduler_pass(gateway)
    assert any(t.startswith(f"⏳ The preservation of {ref}") for t in await chat_texts(gateway))
    warning = [r for r in gateway.replies(to=alice.email) if "Preservation expires" in r.subject]
    assert len(warning) == 1 and "type: preservation_extension" in warning[0].text
    await scheduler_pass(gateway)  # warned once
    assert len([r for r in gateway.replies(to=alice.email) if "Preservation expires" in r.subject]) == 1

    await send_signed(gateway, alice, f"reference: {ref}\ntype: preservation_extension\n\nPlease extend.",
                      pdf=False)
    assert (await gateway.requests())[0]["status"] == "extended"
    clock(timedelta(days=91))
    await scheduler_pass(gateway)
    assert (await gateway.requests())[0]["status"] == "extended"
    clock(timedelta(days=181))
    await scheduler_pass(gateway)
    assert (await gateway.requests())[0]["status"] == "expired"
    async with gateway.core.db.transaction() as session:
        hold = await session.scalar(select(Hold))
    assert hold is not None and hold.state == "expired" and hold.extensions == 1


async def test_an_asset_freeze_and_its_release(gateway: Harness, alice: TestKey,
                                               team: dict[str, Any]) -> None:
    freeze = await new_request(gateway, alice, type="asset_freeze", subjects="wallet_address:bc1qxyexample",
                               data_categories=None)
    await decide(team["ctx"], team["anna"], freeze, "approve", "")
    release = await new_request(gateway, alice, type="freeze_release",
                                subjects="wallet_address:bc1qxyexample", data_categories=None)
    await decide(team["ctx"], team["anna"], release, "approve", "")
    await gateway.settle()
    replies = {r.subject: r.text for r in gateway.replies(to=alice.email)}
    assert "The assets are frozen until" in replies[f"[{freeze}] Request approved"]
    assert f"Released: the asset freeze {freeze}." in replies[f"[{release}] Request approved"]
    assert not productions(gateway, alice)
    async with gateway.core.db.transaction() as session:
        hold = await session.scalar(select(Hold))
    assert hold is not None and hold.state == "released"


async def test_a_withdrawn_request_never_produces_or_notifies(
        gateway: Harness, alice: TestKey, team: dict[str, Any], clock: Callable[[timedelta], None]) -> None:
    ref = await new_request(gateway, alice, type="court_order")
    await send_signed(gateway, alice, f"reference: {ref}\naction: withdraw\n\nCase closed.", pdf=False)
    ack = [r for r in gateway.replies(to=alice.email) if "received" in r.subject.lower()][-1]
    assert "The request is withdrawn" in ack.text
    assert (await gateway.requests())[0]["status"] == "withdrawn"
    with pytest.raises(ReviewError, match="is withdrawn: it cannot be decided now"):
        await decide(team["ctx"], team["anna"], ref, "approve", "")
    clock(timedelta(days=400))
    await scheduler_pass(gateway)
    assert not productions(gateway, alice) and gateway.notices() == []


async def test_withdrawing_an_approved_preservation_cancels_its_held_notices(
        gateway: Harness, alice: TestKey, team: dict[str, Any], clock: Callable[[timedelta], None]) -> None:
    ref = await new_request(gateway, alice, type="preservation", nondisclosure_until="indefinite")
    await decide(team["ctx"], team["anna"], ref, "approve", "")
    await gateway.settle()
    await send_signed(gateway, alice, f"reference: {ref}\naction: withdraw\n\n", pdf=False)
    async with gateway.core.db.transaction() as session:
        assert [n.state for n in await session.scalars(select(Notice))] == ["cancelled"]
        hold = await session.scalar(select(Hold))
    assert hold is not None and hold.state == "released"
    clock(timedelta(days=400))
    await scheduler_pass(gateway)
    assert gateway.notices() == []


async def test_a_fulfilled_request_cannot_be_withdrawn(gateway: Harness, alice: TestKey,
                                                      team: dict[str, Any]) -> None:
    ref = await new_request(gateway, alice, type="court_order")
    await approve_twice(team, ref)
    await gateway.settle()
    await send_signed(gateway, alice, f"reference: {ref}\naction: withdraw\n\n", pdf=False)
    refusal = gateway.replies(to=alice.email)[-1]
    assert f"{ref} is fulfilled and can no longer be withdrawn" in refusal.text


# -- deadlines ------------------------------------------------------------------------------------


async def test_overdue_requests_are_reported_to_reviewers_once_a_day(
        gateway: Harness, alice: TestKey, clock: Callable[[timedelta], None]) -> None:
    ref = await new_request(gateway, alice, type="preservation")  # 72 h target
    now = utcnow()
    day_after_deadline = (now + timedelta(days=4)).replace(hour=9, minute=0)
    clock(day_after_deadline - now)
    await scheduler_pass(gateway)
    await scheduler_pass(gateway)
    reports = [t for t in await chat_texts(gateway) if t.startswith("📋")]
    assert len(reports) == 1 and f"{ref} preservation" in reports[0]
    clock(day_after_deadline + timedelta(days=1) - now)
    await scheduler_pass(gateway)
    assert len([t for t in await chat_texts(gateway) if t.startswith("📋")]) == 2
