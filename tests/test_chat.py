"""Reviewers in Telegram, end to end: the real python-telegram-bot Application of the gateway
talks to a stand-in Bot API on loopback; officers' mail and the gateway's replies go over real
SMTP. Tests inject what reviewers type and assert on what the bot sent them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from handlers.enrolment import add_reviewer
from tests.conftest import GatewayFactory, Harness, production_logs
from tests.support.mail_factory import Attachment, pdf_bytes, request_body, signed_request_mail
from tests.support.officer_keys import TestKey
from tests.support.secrets import secret
from tests.support.telegram_stub import FakeBotApi, SentCall

TOKEN = secret("424242:lers-test-token")
RITA, ANNA, BERT, STRANGER = 1001, 1002, 1003, 6666
GROUP = -100500


@pytest.fixture
async def api() -> AsyncIterator[FakeBotApi]:
    async with FakeBotApi(TOKEN) as server:
        yield server


@pytest.fixture
async def chat_gateway(api: FakeBotApi, make_gateway: GatewayFactory, alice: TestKey) -> Harness:
    """(The stub is set up first, so it is torn down after the gateway's bot has stopped.)"""
    harness: Harness = await make_gateway(**{
        "telegram.enabled": "true", "telegram.token": TOKEN, "telegram.base_url": api.base_url,
        "telegram.base_file_url": api.base_file_url, "telegram.poll_timeout_seconds": "1",
        "telegram.allowed_chats": str(GROUP),
    })
    await harness.enrol(alice)
    await add_reviewer(harness.core, RITA, "Rita", "reviewer")
    await add_reviewer(harness.core, ANNA, "Anna", "approver")
    await add_reviewer(harness.core, BERT, "Bert", "approver")
    return harness


async def say(api: FakeBotApi, user: int, text: str, chat: int | None = None,
              chat_type: str = "private") -> SentCall:
    """Type `text` as `user` and wait for the bot's next message to that chat."""
    chat_id = user if chat is None else chat
    already = len(api.sent)
    api.inject_message(chat_id, user, text, chat_type=chat_type)
    return await api.wait_for_sent(lambda c: c.method == "sendMessage" and c.chat_id == chat_id,
                                   timeout=10, after=already)


async def submit(gateway: Harness, officer: TestKey, **fields: str) -> str:
    mail = signed_request_mail(gateway.ring, officer, from_addr=officer.email, body=request_body(**fields),
                               attachments=[Attachment("order.pdf", "application/pdf", pdf_bytes("Order"))])
    await gateway.send(mail)
    await gateway.settle()
    return str((await gateway.requests())[-1]["ref"])


async def test_strangers_and_unlisted_groups_get_one_neutral_refusal(
        chat_gateway: Harness, api: FakeBotApi) -> None:
    refusal = await say(api, STRANGER, "/queue")
    assert refusal.params["text"] == "Sorry, this bot is not available to you."
    in_group = await say(api, RITA, "/queue", chat=-999, chat_type="group")
    assert in_group.params["text"] == "Sorry, this bot is not available to you."
    allowed = await say(api, RITA, "/queue", chat=GROUP, chat_type="supergroup")
    assert allowed.params["text"] == "The queue is empty."
    from sqlalchemy import select

    from gateway.models import AuditEntry
    async with chat_gateway.core.db.transaction() as session:
        refused = list(await session.scalars(select(AuditEntry).where(AuditEntry.action == "chat.refused")))
    assert [e.actor for e in refused] == [f"telegram:{STRANGER}", f"telegram:{RITA}"]


async def test_a_request_from_arrival_to_final_response_in_chat(
        chat_gateway: Harness, api: FakeBotApi, alice: TestKey) -> None:
    ref = await submit(chat_gateway, alice, type="court_order")
    # every reviewer is told, with buttons
    for reviewer in (RITA, ANNA, BERT):
        notice = await api.wait_for_sent(
            lambda c, r=reviewer: c.method == "sendMessage" and c.chat_id == r and ref in c.params["text"],
            timeout=10)
        assert notice.params["text"].startswith(f"New request {ref}: court_order from {alice.email}")
        assert "Show" in str(notice.params.get("reply_markup"))

    queue = await say(api, RITA, "/queue")
    assert ref in queue.params["text"] and "received" in queue.params["text"]

    shown = await say(api, RITA, f"/show {ref}")
    text = shown.params["text"]
    assert f"Officer: Alice Officer <{alice.email}>, Test Police" in text
    assert "Type: court_order" in text and "Case: 2026-CR-0042" in text
    assert f"signed by {alice.fingerprint}" in text

    already = len(api.sent)
    api.inject_message(RITA, RITA, f"/docs {ref}")
    document = await api.wait_for_sent(lambda c: c.method == "sendDocument", timeout=10, after=already)
    [sent] = api.documents_to(RITA)
    assert sent.data.startswith(b"%PDF") and "sha256 " in (sent.caption or "")
    assert document.chat_id == RITA

    asked = await say(api, RITA, f"/ask {ref} Please confirm the account number.")
    assert "Question sent to alice@police.test" in asked.params["text"]
    await chat_gateway.settle()
    assert chat_gateway.replies(to=alice.email)[-1].subject == f"[{ref}] Question about your request"

    await chat_gateway.send(signed_request_mail(chat_gateway.ring, alice, from_addr=alice.email,
                                                body=f"reference: {ref}\n\nAccount 42, confirmed.\n"))
    await chat_gateway.settle()
    answered = await api.wait_for_sent(
        lambda c: c.method == "sendMessage" and c.chat_id == ANNA
        and c.params["text"].startswith(f"The officer answered on {ref}"), timeout=10)
    assert "Account 42, confirmed." in answered.params["text"]

    first = await say(api, ANNA, f"/approve {ref} lawful order")
    assert "First approval" in first.params["text"]
    same = await say(api, ANNA, f"/approve {ref}")
    assert "already approved" in same.params["text"]
    final = await say(api, BERT, f"/approve {ref} second check done")
    assert f"{ref} approved" in final.params["text"]
    await chat_gateway.settle()
    *_, decision, production = chat_gateway.replies(to=alice.email)
    assert decision.subject == f"[{ref}] Request approved"
    assert "second check done" in decision.text
    assert production.subject == f"[{ref}] Data production"  # the final response


async def test_errors_are_answered_plainly(chat_gateway: Harness, api: FakeBotApi, alice: TestKey) -> None:
    assert "No request LERS-2026-999999" in (await say(api, RITA, "/show LERS-2026-999999")).params["text"]
    assert (await say(api, RITA, "/show")).params["text"] == "Usage: /show REF"
    assert "Unknown command" not in (await say(api, RITA, "/help")).params["text"]
    ref = await submit(chat_gateway, alice, type="preservation")
    denied = await say(api, RITA, f"/approve {ref}")
    assert denied.params["text"] == "Only an approver or admin may approve requests; your role is reviewer."
    await say(api, ANNA, f"/reject {ref} outside our jurisdiction")
    late = await say(api, BERT, f"/approve {ref}")
    assert late.params["text"] == f"{ref} is rejected: it cannot be decided now."


async def test_the_approve_button_asks_for_confirmation(
        chat_gateway: Harness, api: FakeBotApi, alice: TestKey) -> None:
    ref = await submit(chat_gateway, alice, type="preservation")
    shown = await say(api, ANNA, f"/show {ref}")
    already = len(api.sent)
    api.inject_callback(ANNA, ANNA, f"approve:{ref}", shown.result["message_id"])
    confirm = await api.wait_for_sent(lambda c: c.method == "sendMessage" and c.chat_id == ANNA,
                                      timeout=10, after=already)
    assert confirm.params["text"] == f"Approve {ref}? The decision is sent to the officer."
    assert (await chat_gateway.requests())[-1]["status"] == "received"
    already = len(api.sent)
    api.inject_callback(ANNA, ANNA, f"approve!:{ref}", confirm.result["message_id"])
    done = await api.wait_for_sent(lambda c: c.method == "sendMessage" and c.chat_id == ANNA,
                                   timeout=10, after=already)
    assert f"{ref} approved" in done.params["text"]


async def test_a_429_from_the_bot_api_is_waited_out(chat_gateway: Harness, api: FakeBotApi) -> None:
    api.fail_next("sendMessage", status=429, retry_after=1)
    reply = await say(api, RITA, "/queue")
    assert reply.params["text"] == "The queue is empty."
    assert [r.status for r in api.requests if r.method == "sendMessage"][-2:] == [429, 200]


OFFICER_CHAT = 5005


@pytest.fixture
async def officer_in_chat(chat_gateway: Harness, bob: TestKey) -> TestKey:
    """Bob, enrolled with his Telegram account (alice is enrolled by email only)."""
    from handlers.enrolment import add_officer
    await add_officer(chat_gateway.core, bob.email, "Test Police", bob.public_armored, bob.name,
                      telegram_id=OFFICER_CHAT)
    return bob


async def answer_to_officer(api: FakeBotApi, after: int, starting: str) -> str:
    call = await api.wait_for_sent(
        lambda c: c.method == "sendMessage" and c.chat_id == OFFICER_CHAT
        and c.params["text"].startswith(starting), timeout=15, after=after)
    return str(call.params["text"])


async def test_an_officer_submits_a_clearsigned_request_in_chat(
        chat_gateway: Harness, api: FakeBotApi, officer_in_chat: TestKey) -> None:
    text = chat_gateway.ring.clearsign(officer_in_chat, request_body(type="preservation").encode()).decode()
    already = len(api.sent)
    api.inject_message(OFFICER_CHAT, OFFICER_CHAT, text)
    assert await answer_to_officer(api, already, "Received; checking the signature")
    await chat_gateway.settle()
    answer = await answer_to_officer(api, already, "Received and verified: LERS-")
    [request] = await chat_gateway.requests()
    assert request["ref"] in answer and request["officer"] == officer_in_chat.email
    [ack] = chat_gateway.replies(to=officer_in_chat.email)  # and by email, signed and encrypted
    assert ack.subject == f"[{request['ref']}] Request received"


async def test_an_officer_sends_a_signed_file_in_chat(
        chat_gateway: Harness, api: FakeBotApi, officer_in_chat: TestKey) -> None:
    form = (b'type = "preservation"\ncase_number = "CHAT-1"\nlegal_basis = "2703(f)"\n'
            b'data_categories = ["subscriber_information"]\n'
            b'[[subjects]]\ntype = "email"\nvalue = "x@example.com"\n')
    signature = chat_gateway.ring.sign_detached(officer_in_chat, form)
    already = len(api.sent)
    api.inject_document(OFFICER_CHAT, OFFICER_CHAT, "request.toml", form)
    assert "Now send its detached signature" in await answer_to_officer(api, already, "Got request.toml")
    api.inject_document(OFFICER_CHAT, OFFICER_CHAT, "request.toml.asc", signature)
    await chat_gateway.settle()
    await answer_to_officer(api, already, "Received and verified: LERS-")
    [request] = await chat_gateway.requests()
    assert request["case_number"] == "CHAT-1"


async def test_the_chat_account_alone_is_not_enough(
        chat_gateway: Harness, api: FakeBotApi, officer_in_chat: TestKey, alice: TestKey) -> None:
    """Bob's Telegram account sending text signed by alice's key is refused like forged mail."""
    text = chat_gateway.ring.clearsign(alice, request_body(type="preservation").encode()).decode()
    already = len(api.sent)
    api.inject_message(OFFICER_CHAT, OFFICER_CHAT, text)
    await chat_gateway.settle()
    refusal = await answer_to_officer(api, already, "Not accepted:")
    assert "belongs to a different officer" in refusal
    assert await chat_gateway.requests() == []
    assert [q["reason"] for q in await chat_gateway.quarantine()] == ["from_mismatch"]
    unsigned = await say(api, OFFICER_CHAT, "please send me the data of account 42")
    assert unsigned.params["text"].startswith("Send a request as a cleartext-signed text")
    stranger = await say(api, STRANGER, "-----BEGIN PGP SIGNED MESSAGE-----")
    assert stranger.params["text"] == "Sorry, this bot is not available to you."


async def test_note_assign_mine_and_partial(chat_gateway: Harness, api: FakeBotApi, alice: TestKey) -> None:
    ref = await submit(chat_gateway, alice, type="court_order")
    assert (await say(api, RITA, f"/note {ref} called the issuing court, order confirmed")).params["text"] \
        == f"Note added to {ref} (internal, never sent to the officer)."
    assert (await say(api, RITA, "/note")).params["text"] == "Usage: /note REF text"
    assert (await say(api, RITA, "/mine")).params["text"] == "Nothing is assigned to you."
    assert (await say(api, RITA, f"/assign {ref}")).params["text"] == f"{ref} is assigned to Rita."
    assert (await say(api, RITA, f"/assign {ref} nobody")).params["text"] == (
        "No active reviewer 'nobody'; give their name or Telegram id.")
    mine = await say(api, RITA, "/mine")
    assert mine.params["text"].startswith(f"{ref} court_order · under review")
    usage = "Usage: /partial REF -category -type:value [from=YYYY-MM-DD] [to=YYYY-MM-DD] note"
    assert (await say(api, ANNA, f"/partial {ref}")).params["text"] == usage
    assert "Say what is excluded" in (await say(api, ANNA, f"/partial {ref} no KYC")).params["text"]
    first = (await say(api, ANNA, f"/partial {ref} -login_ip_addresses subscriber data only")).params["text"]
    assert first.startswith(f"First approval of {ref} recorded (data categories: subscriber_information;")
    done = await say(api, BERT, f"/approve {ref} agreed")
    assert done.params["text"].startswith(f"{ref} partially approved; the officer is told by signed, "
                                          "encrypted email.\nScope: data categories: subscriber_information;")
    shown = (await say(api, RITA, f"/show {ref}")).params["text"]
    assert "Rita: note: called the issuing court" in shown and "Assigned to: Rita" in shown
    await chat_gateway.settle()
    decision = next(r for r in chat_gateway.replies(to=alice.email) if "approved" in r.subject)
    assert decision.subject == f"[{ref}] Request partially approved"
    assert "called the issuing court" not in decision.text  # notes never leave
    assert "The approval covers data categories: subscriber_information;" in decision.text
    unknown = await say(api, RITA, "/frobnicate")
    assert unknown.params["text"] == "Unknown command /frobnicate. /help lists the commands."


async def test_the_bot_token_never_reaches_the_logs(api: FakeBotApi, make_gateway: GatewayFactory,
                                                    alice: TestKey) -> None:
    with production_logs() as logs:
        harness = await make_gateway(**{
            "telegram.enabled": "true", "telegram.token": TOKEN, "telegram.base_url": api.base_url,
            "telegram.base_file_url": api.base_file_url, "telegram.poll_timeout_seconds": "1"})
        await harness.enrol(alice)
        await add_reviewer(harness.core, RITA, "Rita", "approver")
        ref = await submit(harness, alice, type="preservation")
        await say(api, RITA, f"/approve {ref}")
        await harness.settle()
        api.fail_next("sendMessage", status=429, retry_after=1)
        await say(api, RITA, "/queue")
        await harness.gateway.stop()
    written = logs.getvalue()
    assert "telegram bot started" in written and "slow down" in written  # the logs were captured
    assert TOKEN not in written and TOKEN.split(":")[1] not in written


async def test_a_rejected_token_is_reported_without_the_token(api: FakeBotApi,
                                                              make_gateway: GatewayFactory) -> None:
    from gateway.chat import ChatStartError
    wrong = "999:not-the-token"
    with pytest.raises(ChatStartError) as refused:
        await make_gateway(**{"telegram.enabled": "true", "telegram.token": wrong,
                              "telegram.base_url": api.base_url, "telegram.base_file_url": api.base_file_url})
    assert "telegram.token was rejected" in str(refused.value) and wrong not in str(refused.value)


async def test_stats_give_the_last_30_days_and_the_queue(
        chat_gateway: Harness, api: FakeBotApi, alice: TestKey) -> None:
    from datetime import timedelta
    from statistics import median

    from sqlalchemy import select

    from gateway.clock import utcnow
    from gateway.models import Hold, Officer, Production, Request, Review, Reviewer

    now = utcnow()
    # type, status, emergency, arrived hours ago, decided after hours, deadline in hours, the final
    # decision and the production's outcome as the gateway records them, and the outcome /stats
    # must give (the transparency report's words)
    seeds = [
        ("subpoena", "fulfilled", False, 72, 10.0, None, "approve", "data", "data produced in full"),
        ("subpoena", "rejected", False, 120, 30.0, None, "reject", None, "rejected"),
        ("preservation", "preserved", False, 240, 4.0, None, "partial", None, "data preserved"),
        ("emergency_disclosure", "fulfilled", True, 48, 1.0, None, "partial", "no_data",
         "approved, no data found"),
        ("emergency_disclosure", "received", True, 5, None, -1, None, None, "open (not decided yet)"),
        ("court_order", "under_review", False, 480, None, 100, None, None, "open (not decided yet)"),
        ("court_order", "awaiting_info", False, 600, None, -24, None, None, "open (not decided yet)"),
        ("search_warrant", "withdrawn", False, 36, 2.0, None, "approve", None, "withdrawn by the requester"),
        ("mlat", "received", False, 24 * 45, None, -300, None, None, ""),  # before the window, still open
        ("subpoena", "fulfilled", False, 24 * 40, 5.0, None, "approve", "data", ""),  # before, decided
    ]
    async with chat_gateway.core.db.transaction() as session:
        officer = await session.scalar(select(Officer).where(Officer.email == alice.email))
        rita = await session.scalar(select(Reviewer).where(Reviewer.telegram_id == RITA))
        assert officer is not None and rita is not None
        for number, (kind, status, emergency, age, decided, deadline, decision, produced, _) in enumerate(
                seeds, 1):
            created = now - timedelta(hours=age)
            request = Request(
                ref=f"LERS-2026-{number:06d}", type=kind, status=status, emergency=emergency,
                officer_id=officer.id, agency_id=officer.agency_id, thread_message_id="",
                created_at=created, decided_at=created + timedelta(hours=decided) if decided else None,
                deadline=now + timedelta(hours=deadline) if deadline is not None else None)
            session.add(request)
            await session.flush()
            if decision:
                session.add(Review(request_id=request.id, reviewer_id=rita.id, action=decision))
            if produced:
                session.add(Production(request_id=request.id, outcome=produced, manifest_signature="",
                                       zip_sha256="0" * 64, zip_bytes=0, parts=1, rows=0))
            if status == "preserved":
                session.add(Hold(request_id=request.id, kind="preservation", state="active", subjects=[],
                                 starts_at=created, expires_at=created + timedelta(days=90)))

    recent = [s for s in seeds if s[3] <= 24 * 30]
    open_states = {"received", "under_review", "awaiting_info"}
    order = ["data produced in full", "approved, no data found", "data preserved", "rejected",
             "open (not decided yet)", "withdrawn by the requester"]

    def outcomes(rows: list[tuple]) -> str:  # type: ignore[type-arg]
        return ", ".join(f"{name} {n}" for name in order if (n := sum(1 for r in rows if r[8] == name)))

    types = sorted({s[0] for s in recent})
    emergencies = [s for s in recent if s[2]]
    decided = [s[4] for s in recent if s[4] is not None]
    open_now = [s for s in seeds if s[1] in open_states]
    text = (await say(api, RITA, "/stats")).params["text"]
    lines = text.splitlines()
    assert f"Requests received: {len(recent)}" in lines
    assert "By type: " + ", ".join(f"{t} {sum(1 for s in recent if s[0] == t)}" for t in types) in lines
    assert f"Outcomes: {outcomes(recent)}" in lines, text
    assert f"Emergencies: {len(emergencies)} ({outcomes(emergencies)})" in lines
    assert f"Median time to decision: {median(decided):.1f} h ({len(decided)} decided)" in lines
    assert f"Open: {len(open_now)}" in lines
    oldest = lines[lines.index(f"Open: {len(open_now)}") + 1]
    assert oldest.startswith("Oldest open: LERS-2026-000009, 45d old")
    assert f"Overdue: {sum(1 for s in open_now if s[5] is not None and s[5] < 0)}" in lines
    # the same figures, written out, so that a slip in both computations would still show
    assert ("Outcomes: data produced in full 1, approved, no data found 1, data preserved 1, rejected 1, "
            "open (not decided yet) 3, withdrawn by the requester 1") in lines
    assert "Emergencies: 2 (approved, no data found 1, open (not decided yet) 1)" in lines
    assert "Median time to decision: 4.0 h (5 decided)" in lines and "Overdue: 3" in lines


async def test_healthz_reports_the_bot_api_answering_then_gone(
        chat_gateway: Harness, api: FakeBotApi) -> None:
    import json
    from datetime import timedelta

    from gateway import clock

    assert (await say(api, RITA, "/queue")).params["text"] == "The queue is empty."  # polling works
    status, body = await chat_gateway.http_get("/healthz")
    assert status == 200, body
    assert json.loads(body)["checks"]["telegram"]["detail"].startswith("the Bot API answered")
    await api.stop()  # Telegram unreachable from now on
    pulse = chat_gateway.gateway.chat.pulse  # type: ignore[union-attr]
    for _ in range(200):  # until the poller's next call has failed (a poll answered at the stop
        if pulse.last_error is not None:  # may still be landing)
            break
        await asyncio.sleep(0.05)
    assert pulse.last_error == "NetworkError"
    clock.set_offset(timedelta(seconds=chat_gateway.settings.telegram.poll_timeout_seconds + 61))
    try:
        status, body = await chat_gateway.http_get("/healthz")
    finally:
        clock.set_offset(timedelta(0))
    report = json.loads(body)
    assert status == 503 and report["failing"] == ["telegram"], body
    assert report["checks"]["telegram"]["detail"].startswith("the Bot API last answered")
