"""The reviewer workflow through the plain functions the chat layer calls: states, roles,
four-eyes approvals, questions to the officer and the answer threading back, the audit."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from gateway.models import AuditEntry, Job
from handlers.enrolment import add_reviewer
from handlers.review import ReviewContext, ReviewError, ask, assign, decide, show_queue, show_request
from tests.conftest import Harness
from tests.support.mail_factory import Attachment, pdf_bytes, request_body, signed_request_mail
from tests.support.officer_keys import TestKey


async def new_request(gateway: Harness, officer: TestKey, **fields: str | None) -> str:
    mail = signed_request_mail(gateway.ring, officer, from_addr=officer.email, body=request_body(**fields),
                               attachments=[Attachment("order.pdf", "application/pdf", pdf_bytes("Order"))])
    await gateway.send(mail)
    await gateway.settle()
    return str((await gateway.requests())[-1]["ref"])


@pytest.fixture
async def team(gateway: Harness) -> dict[str, object]:
    core = gateway.core
    return {
        "ctx": ReviewContext(gateway.settings, core.db),
        "rita": await add_reviewer(core, 1001, "Rita", "reviewer"),
        "anna": await add_reviewer(core, 1002, "Anna", "approver"),
        "bert": await add_reviewer(core, 1003, "Bert", "approver"),
    }


async def test_four_eyes_needs_two_distinct_approvers(gateway: Harness, alice: TestKey, team: dict) -> None:
    ref = await new_request(gateway, alice, type="court_order")
    ctx, anna, bert = team["ctx"], team["anna"], team["bert"]
    first = await decide(ctx, anna, ref, "approve", "lawful order")
    assert "First approval" in first.text and "second approver" in first.text
    again = await decide(ctx, anna, ref, "approve", "")
    assert "already approved" in again.text
    assert (await gateway.requests())[0]["status"] == "under_review"
    final = await decide(ctx, bert, ref, "approve", "checked the order")
    assert "approved" in final.text
    await gateway.settle()
    assert (await gateway.requests())[0]["status"] == "fulfilled"  # the production went out
    decision = next(r for r in gateway.replies(to=alice.email) if "Request approved" in r.subject)
    assert decision.subject == f"[{ref}] Request approved"
    assert "The data production follows in a separate signed and encrypted message." in decision.text
    assert "checked the order" in decision.text
    assert decision.outer["In-Reply-To"] is not None


async def test_one_approver_suffices_where_four_eyes_is_not_required(
        gateway: Harness, alice: TestKey, team: dict) -> None:
    ref = await new_request(gateway, alice, type="preservation")
    result = await decide(team["ctx"], team["anna"], ref, "approve", "")
    assert "approved" in result.text and "First" not in result.text


async def test_roles_and_wrong_states_get_clear_errors(gateway: Harness, alice: TestKey, team: dict) -> None:
    ctx = team["ctx"]
    ref = await new_request(gateway, alice, type="preservation")
    with pytest.raises(ReviewError, match="Only an approver or admin may approve"):
        await decide(ctx, team["rita"], ref, "approve", "")
    with pytest.raises(ReviewError, match="No request LERS-2026-999999"):
        await show_request(ctx, team["rita"], "LERS-2026-999999")
    with pytest.raises(ReviewError, match="Usage: /reject REF reason"):
        await decide(ctx, team["anna"], ref, "reject", "  ")
    await decide(ctx, team["anna"], ref, "reject", "no legal basis in our jurisdiction")
    with pytest.raises(ReviewError, match="is rejected: it cannot be decided now"):
        await decide(ctx, team["bert"], ref, "approve", "")
    await gateway.settle()
    rejection = gateway.replies(to=alice.email)[-1]
    assert rejection.subject == f"[{ref}] Request rejected"
    assert "no legal basis in our jurisdiction" in rejection.text


async def test_ask_then_the_officers_signed_answer_threads_back(
        gateway: Harness, alice: TestKey, team: dict) -> None:
    ctx, rita = team["ctx"], team["rita"]
    ref = await new_request(gateway, alice, type="preservation")
    await ask(ctx, rita, ref, "Which exchange accounts exactly?")
    await gateway.settle()
    assert (await gateway.requests())[0]["status"] == "awaiting_info"
    question = gateway.replies(to=alice.email)[-1]
    assert question.subject == f"[{ref}] Question about your request"
    assert "Which exchange accounts exactly?" in question.text

    answer = f"reference: {ref}\n\nOnly account 42 and its sub-accounts.\n"
    await gateway.send(signed_request_mail(gateway.ring, alice, from_addr=alice.email, body=answer))
    await gateway.settle()
    assert (await gateway.requests())[0]["status"] == "under_review"
    assert gateway.replies(to=alice.email)[-1].subject == f"[{ref}] Your message was received"
    async with gateway.core.db.transaction() as session:
        notices = [j.payload["text"] for j in await session.scalars(
            select(Job).where(Job.kind == "chat_notify").order_by(Job.id))]
    assert notices[-1].startswith(f"The officer answered on {ref}:")
    assert "Only account 42" in notices[-1]
    details = await show_request(ctx, rita, ref)
    assert "ask: Which exchange accounts exactly?" in details.text


async def test_an_ask_between_approvals_restarts_four_eyes(
        gateway: Harness, alice: TestKey, team: dict) -> None:
    ctx = team["ctx"]
    ref = await new_request(gateway, alice, type="court_order")
    await decide(ctx, team["anna"], ref, "approve", "")
    await ask(ctx, team["rita"], ref, "Is the order still in force?")
    await gateway.send(signed_request_mail(gateway.ring, alice, from_addr=alice.email,
                                           body=f"reference: {ref}\n\nYes.\n"))
    await gateway.settle()
    result = await decide(ctx, team["bert"], ref, "approve", "")
    assert "First approval" in result.text


async def test_queue_puts_emergencies_first_and_every_command_is_audited(
        gateway: Harness, alice: TestKey, bob: TestKey, team: dict) -> None:
    ctx, rita = team["ctx"], team["rita"]
    routine = await new_request(gateway, alice, type="preservation")
    urgent = await new_request(gateway, bob, type="emergency_disclosure",
                               emergency_justification="kidnapping, victim's life at risk",
                               supervisor="Sgt. Ruiz +1 555 0100")
    queue = await show_queue(ctx, rita)
    lines = queue.text.splitlines()
    assert lines[1].startswith(f"🚨 {urgent}") and lines[2].startswith(routine)
    await assign(ctx, rita, routine, "Anna")
    async with gateway.core.db.transaction() as session:
        actions = [(e.actor, e.action) for e in await session.scalars(
            select(AuditEntry).where(AuditEntry.actor == "reviewer:1001").order_by(AuditEntry.id))]
    assert actions == [("reviewer:1001", "review.queue"), ("reviewer:1001", "review.assign")]


@pytest.fixture
def clock() -> Iterator[Callable[[float], None]]:
    """Move the gateway's clock forward by some hours (tests never sleep for time to pass)."""
    from gateway import clock as gateway_clock

    def advance(hours: float) -> None:
        gateway_clock.set_offset(timedelta(hours=hours))

    yield advance
    gateway_clock.set_offset(timedelta(0))


async def test_reviewers_are_told_once_when_a_deadline_nears(
        gateway: Harness, alice: TestKey, clock: Callable[[float], None]) -> None:
    ref = await new_request(gateway, alice, type="preservation")  # 72 h target
    scheduler = gateway.gateway.scheduler
    assert await scheduler.run_once() == 0
    clock(49)
    assert await scheduler.run_once() == 1
    assert await scheduler.run_once() == 0  # once only
    await gateway.settle()
    async with gateway.core.db.transaction() as session:
        texts = [j.payload["text"] for j in await session.scalars(
            select(Job).where(Job.kind == "chat_notify").order_by(Job.id))]
    assert texts[-1].startswith(f"⏰ {ref} (preservation, received) is due ")
    assert texts[-1].endswith("in 23 h.")
