"""Self-test of the Bot API stand-in: the *real* PTB Application must work against it.

If these pass, gateway tests can trust that what the stub records is what PTB really sent, and
that updates injected into it reach handlers exactly as Telegram's would.
"""

from __future__ import annotations

import asyncio
import datetime as dtm
import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message, Update
from telegram.constants import ParseMode
from telegram.error import BadRequest, Conflict, EndPointNotFound, Forbidden, InvalidToken, RetryAfter
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from tests.support.telegram_stub import FakeBotApi, SentCall

TOKEN = "123456:TEST-fake-token"
CHAT = 4242
USER = 777
TIMEOUT = 2.0  # seconds; every PTB HTTP timeout, so a stub bug fails fast instead of hanging


@pytest.fixture
async def api() -> AsyncIterator[FakeBotApi]:
    async with FakeBotApi(TOKEN) as server:
        yield server


def build_application(api: FakeBotApi, token: str = TOKEN) -> Application:
    """The builder incantation the gateway's tests should use against the stub."""
    return (
        ApplicationBuilder()
        .token(token)
        .base_url(api.base_url)
        .base_file_url(api.base_file_url)
        .connect_timeout(TIMEOUT)
        .read_timeout(TIMEOUT)
        .write_timeout(TIMEOUT)
        .pool_timeout(TIMEOUT)
        .media_write_timeout(TIMEOUT)
        .get_updates_connect_timeout(TIMEOUT)
        .get_updates_read_timeout(TIMEOUT)
        .get_updates_write_timeout(TIMEOUT)
        .get_updates_pool_timeout(TIMEOUT)
        .build()
    )


@asynccontextmanager
async def polling(app: Application) -> AsyncIterator[list[object]]:
    """Run the app in *this* event loop (not run_polling, which owns the loop); yield handler errors."""
    errors: list[object] = []

    async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        errors.append(context.error)

    app.add_error_handler(on_error)
    await app.initialize()
    try:
        await app.start()
        try:
            assert app.updater is not None
            await app.updater.start_polling(poll_interval=0, timeout=dtm.timedelta(seconds=1))
            try:
                yield errors
            finally:
                await app.updater.stop()
        finally:
            await app.stop()
    finally:
        await app.shutdown()


def to_chat(method: str, chat_id: int = CHAT) -> Callable[[SentCall], bool]:
    """Predicate for ``wait_for_sent``: a successful ``method`` call aimed at ``chat_id``."""
    return lambda call: call.method == method and call.chat_id == chat_id


async def test_start_command_reaches_command_handler(api: FakeBotApi) -> None:
    replies: asyncio.Queue[Message] = asyncio.Queue()

    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Open queue", callback_data="queue")]])
        sent = await update.effective_message.reply_text(
            "<b>Welcome</b>, reviewer", parse_mode=ParseMode.HTML, reply_markup=keyboard
        )
        await replies.put(sent)

    app = build_application(api)
    app.add_handler(CommandHandler("start", start))
    async with polling(app) as errors:
        injected = api.inject_message(CHAT, USER, "/start", username="alice")
        call = await api.wait_for_sent(to_chat("sendMessage"))
        sent = await asyncio.wait_for(replies.get(), TIMEOUT)

    assert errors == []
    assert api.messages_to(CHAT) == ["<b>Welcome</b>, reviewer"]
    assert call.params["parse_mode"] == "HTML"
    assert call.params["reply_markup"] == {
        "inline_keyboard": [[{"text": "Open queue", "callback_data": "queue"}]]
    }
    # PTB parsed the stub's Message: ids increase, sender is the bot, HTML rendered to plain text.
    assert sent.message_id > injected["message"]["message_id"]
    assert sent.from_user is not None and sent.from_user.id == 123456 and sent.from_user.is_bot
    assert sent.text == "Welcome, reviewer"
    assert sent.reply_markup is not None
    # What PTB calls on its own: getMe at initialize(), deleteWebhook when polling starts.
    assert [c.method for c in api.sent[:2]] == ["getMe", "deleteWebhook"]
    assert api.pending_updates == 0  # updater.stop() confirmed the offset


async def test_document_upload_is_downloadable_and_echoed(api: FakeBotApi) -> None:
    payload = b"%PDF-1.4\n" + bytes(range(256)) * 64

    async def on_document(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None and update.message.document is not None
        document = update.message.document
        data = bytes(await (await document.get_file()).download_as_bytearray())
        await update.message.reply_document(
            document=data,
            filename=f"echo-{document.file_name}",
            caption=f"{update.message.caption}: {hashlib.sha256(data).hexdigest()}",
        )

    app = build_application(api)
    app.add_handler(MessageHandler(filters.Document.ALL, on_document))
    async with polling(app) as errors:
        api.inject_document(CHAT, USER, "request.pdf", payload, caption="warrant")
        await api.wait_for_sent(to_chat("sendDocument"))

    assert errors == []
    assert api.downloads == ["documents/file_1.pdf"]
    (echo,) = api.documents_to(CHAT)
    assert echo.filename == "echo-request.pdf"
    assert echo.data == payload
    assert echo.caption == f"warrant: {hashlib.sha256(payload).hexdigest()}"
    assert [c.method for c in api.sent if c.method != "deleteWebhook"][1:] == ["getFile", "sendDocument"]
    assert "document" in api.calls("sendDocument")[0].files  # really a multipart upload


async def test_inline_button_press_answers_and_edits(api: FakeBotApi) -> None:
    async def on_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        assert query is not None and isinstance(query.message, Message)
        await query.answer("Claimed")
        await query.edit_message_text(f"{query.message.text}: {query.data} by {query.from_user.id}")

    app = build_application(api)
    app.add_handler(CallbackQueryHandler(on_button, pattern=r"^claim:"))
    async with polling(app) as errors:
        keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Claim", callback_data="claim:17")]])
        prompt = await app.bot.send_message(CHAT, "Case 17", reply_markup=keyboard)
        injected = api.inject_callback(CHAT, USER, "claim:17", prompt.message_id)
        edit = await api.wait_for_sent(to_chat("editMessageText"))

    assert errors == []
    (answer,) = api.calls("answerCallbackQuery")
    assert answer.params == {"callback_query_id": injected["callback_query"]["id"], "text": "Claimed"}
    assert edit.params["message_id"] == prompt.message_id
    assert api.messages_to(CHAT) == ["Case 17", "Case 17: claim:17 by 777"]
    assert "reply_markup" not in edit.result  # editing without a markup drops the keyboard


async def test_wrong_token_fails_initialize(api: FakeBotApi) -> None:
    app = build_application(api, token="999999:WRONG-token")
    with pytest.raises(InvalidToken):
        await app.initialize()
    # Application.shutdown() is a no-op after a failed initialize(); close the HTTP clients here.
    await app.bot.shutdown()
    assert [(r.method, r.status) for r in api.requests] == [("getMe", 401)]
    assert api.sent == []


async def test_429_surfaces_as_retry_after(api: FakeBotApi, monkeypatch: pytest.MonkeyPatch) -> None:
    # PTB 22 warns on every RetryAfter.retry_after access unless it may return a timedelta.
    monkeypatch.setenv("PTB_TIMEDELTA", "true")
    app = build_application(api)
    async with app.bot:
        api.fail_next("sendMessage", retry_after=3)
        with pytest.raises(RetryAfter) as flood:
            await app.bot.send_message(CHAT, "decision ready")
        assert flood.value.retry_after == dtm.timedelta(seconds=3)
        assert api.messages_to(CHAT) == []
        await app.bot.send_message(CHAT, "decision ready")  # the gateway's retry (after waiting)

    assert api.messages_to(CHAT) == ["decision ready"]
    assert [r.status for r in api.requests if r.method == "sendMessage"] == [429, 200]


async def test_stub_rejects_what_telegram_rejects(api: FakeBotApi) -> None:
    app = build_application(api)
    async with app.bot:
        with pytest.raises(BadRequest, match="Can't parse entities"):
            await app.bot.send_message(CHAT, "a < b", parse_mode=ParseMode.HTML)
        api.fail_next("sendMessage", status=403)
        with pytest.raises(Forbidden, match="blocked by the user"):
            await app.bot.send_message(CHAT, "hello")
        with pytest.raises(EndPointNotFound):  # Telegram's 404 for an unknown method
            await app.bot.do_api_request("noSuchMethod")
        with pytest.raises(BadRequest, match="Query is too old"):
            await app.bot.answer_callback_query("12345")
        with pytest.raises(BadRequest, match="Invalid file_id"):
            await app.bot.get_file("nope")
        sent = await app.bot.send_message(CHAT, "same")
        with pytest.raises(BadRequest, match="not modified"):
            await app.bot.edit_message_text("same", chat_id=CHAT, message_id=sent.message_id)
        await app.bot.set_my_commands([("queue", "Show the review queue")])
        assert [(c.command, c.description) for c in await app.bot.get_my_commands()] == [
            ("queue", "Show the review queue")
        ]
        # A second poller on the same token ends the first long poll with 409, as Telegram does.
        # (A second poll from the *same* Bot would just queue: its getUpdates pool has 1 slot.)
        first = asyncio.create_task(app.bot.get_updates(timeout=1))
        await asyncio.sleep(0.1)
        async with build_application(api).bot as other_instance:
            assert await other_instance.get_updates(timeout=0) == ()
        with pytest.raises(Conflict):
            await first

    assert api.messages_to(CHAT) == ["same"]
