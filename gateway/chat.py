"""The Telegram side: python-telegram-bot callbacks over the plain functions of handlers/review.py.

Only registered reviewers are answered, and only in private chats or the groups listed in
`[telegram] allowed_chats`; anyone else gets one neutral refusal (audited). Commands are also
offered as inline buttons; a button that decides asks for confirmation first. Notifications to
reviewers are jobs (`chat_notify`), so a Telegram outage delays them and loses none. A 429 from
the Bot API is waited out and retried.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from telegram import BotCommand, InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import InvalidToken, NetworkError, RetryAfter, TelegramError, TimedOut
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)
from telegram.request import HTTPXRequest

from gateway import queue
from gateway.clock import utcnow
from gateway.config import Settings
from gateway.db import Database
from gateway.ingest import ingest
from gateway.logs import request_scope
from gateway.mime import chat_file_message, chat_text_message
from gateway.models import Job, Officer, Reviewer
from gateway.pgp import OpenPGP
from handlers import enrolment_review, review, stats
from handlers.refs import REF_PATTERN
from handlers.review import ChatReply, ReviewContext, ReviewError

log = logging.getLogger(__name__)
# PTB 22 reports durations (RetryAfter.retry_after) as timedelta with this set, without warnings.
os.environ.setdefault("PTB_TIMEDELTA", "true")

REFUSAL = "Sorry, this bot is not available to you."
MAX_TEXT = 4000  # Telegram's limit is 4096 characters per message
SEND_ATTEMPTS = 5
PENDING_FILE_SECONDS = 600  # how long a file waits in memory for its signature

Command = Callable[[ReviewContext, Reviewer, list[str]], Awaitable[ChatReply]]


def _ref_and_text(args: list[str], usage: str) -> tuple[str, str]:
    if not args:
        raise ReviewError(f"Usage: {usage}")
    return args[0], " ".join(args[1:])


async def _queue(ctx: ReviewContext, reviewer: Reviewer, args: list[str]) -> ChatReply:
    return await review.show_queue(ctx, reviewer)


async def _show(ctx: ReviewContext, reviewer: Reviewer, args: list[str]) -> ChatReply:
    return await review.show_request(ctx, reviewer, _ref_and_text(args, "/show REF")[0])


async def _docs(ctx: ReviewContext, reviewer: Reviewer, args: list[str]) -> ChatReply:
    return await review.send_documents(ctx, reviewer, _ref_and_text(args, "/docs REF")[0])


def _decision(name: str, usage: str) -> Command:
    async def run(ctx: ReviewContext, reviewer: Reviewer, args: list[str]) -> ChatReply:
        ref, text = _ref_and_text(args, usage)
        return await review.decide(ctx, reviewer, ref, name, text)
    return run


async def _ask(ctx: ReviewContext, reviewer: Reviewer, args: list[str]) -> ChatReply:
    return await review.ask(ctx, reviewer, *_ref_and_text(args, "/ask REF question"))


async def _note(ctx: ReviewContext, reviewer: Reviewer, args: list[str]) -> ChatReply:
    return await review.add_note(ctx, reviewer, *_ref_and_text(args, "/note REF text"))


async def _assign(ctx: ReviewContext, reviewer: Reviewer, args: list[str]) -> ChatReply:
    return await review.assign(ctx, reviewer, *_ref_and_text(args, "/assign REF [name]"))


async def _mine(ctx: ReviewContext, reviewer: Reviewer, args: list[str]) -> ChatReply:
    return await review.my_requests(ctx, reviewer)


async def _ndo(ctx: ReviewContext, reviewer: Reviewer, args: list[str]) -> ChatReply:
    return await review.set_nondisclosure(ctx, reviewer,
                                          *_ref_and_text(args, "/ndo REF YYYY-MM-DD | indefinite | lift"))


async def _stats(ctx: ReviewContext, reviewer: Reviewer, args: list[str]) -> ChatReply:
    return await stats.show_stats(ctx, reviewer)


async def _enrolments(ctx: ReviewContext, reviewer: Reviewer, args: list[str]) -> ChatReply:
    return await enrolment_review.list_enrolments(ctx, reviewer)


async def _enrolment(ctx: ReviewContext, reviewer: Reviewer, args: list[str]) -> ChatReply:
    return await enrolment_review.show_enrolment(ctx, reviewer, _ref_and_text(args, "/enrolment ID")[0])


async def _enrol(ctx: ReviewContext, reviewer: Reviewer, args: list[str]) -> ChatReply:
    return await enrolment_review.enrol(ctx, reviewer, *_ref_and_text(args, "/enrol ID how-you-checked"))


async def _refuse(ctx: ReviewContext, reviewer: Reviewer, args: list[str]) -> ChatReply:
    return await enrolment_review.refuse(ctx, reviewer, *_ref_and_text(args, "/refuse ID reason"))


async def _suspend(ctx: ReviewContext, reviewer: Reviewer, args: list[str]) -> ChatReply:
    return await enrolment_review.suspend(ctx, reviewer, *_ref_and_text(args, "/suspend EMAIL reason"))


async def _help(ctx: ReviewContext, reviewer: Reviewer, args: list[str]) -> ChatReply:
    return ChatReply(review.HELP)


COMMANDS: dict[str, tuple[Command, str]] = {
    "queue": (_queue, "open requests"),
    "show": (_show, "show a request"),
    "docs": (_docs, "a request's documents"),
    "approve": (_decision("approve", "/approve REF [note]"), "approve a request"),
    "partial": (_decision("partial", f"/partial REF {review.PARTIAL_USAGE}"), "approve in part"),
    "ndo": (_ndo, "set, extend or lift a non-disclosure order"),
    "reject": (_decision("reject", "/reject REF reason"), "reject a request"),
    "ask": (_ask, "ask the officer a question"),
    "note": (_note, "add an internal note"),
    "assign": (_assign, "assign a request"),
    "mine": (_mine, "requests assigned to you"),
    "stats": (_stats, "figures for the last 30 days and the queue"),
    "enrolments": (_enrolments, "officers waiting to be enrolled"),
    "enrolment": (_enrolment, "one enrolment in full"),
    "enrol": (_enrol, "enrol an officer after an out-of-band check"),
    "refuse": (_refuse, "refuse an enrolment"),
    "suspend": (_suspend, "suspend an officer at once"),
    "help": (_help, "the list of commands"),
    "start": (_help, "the list of commands"),
}
async def run_reviewer_command(ctx: ReviewContext, name: str, reviewer: Reviewer,
                               args: list[str]) -> ChatReply:
    """One reviewer command, whoever carries it (the bot, or `lers review` for operators)."""
    command = COMMANDS.get(name)
    if command is None:
        return ChatReply(f"Unknown command /{name}. /help lists the commands.")
    ref = args[0].upper() if args and REF_PATTERN.fullmatch(args[0].upper()) else None
    with request_scope(ref):
        try:
            return await command[0](ctx, reviewer, args)
        except ReviewError as exc:
            return ChatReply(str(exc))


# inline buttons: data "verb:REF"; deciding verbs ask for confirmation ("verb!:REF" confirms)
BUTTON_VERBS = {"show", "docs", "assign", "approve"}
CONFIRM_FIRST = {"approve"}


class ApiPulse:
    """When the Bot API last answered this process, and the last failure: for /healthz."""

    def __init__(self) -> None:
        self.last_ok: datetime | None = None
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None


class _PulseRequest(HTTPXRequest):
    """PTB's own HTTP client, noting each answer from the Bot API (a long poll included)."""

    def __init__(self, pulse: ApiPulse, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pulse = pulse

    async def do_request(self, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        try:
            status, body = await super().do_request(*args, **kwargs)
        except Exception as exc:
            self.pulse.last_error, self.pulse.last_error_at = type(exc).__name__, utcnow()
            raise
        if status < 500:  # the API answered (a 4xx is about our call, not its reachability)
            self.pulse.last_ok = utcnow()
        else:
            self.pulse.last_error, self.pulse.last_error_at = f"HTTP {status}", utcnow()
        return status, body


class ChatStartError(Exception):
    """The bot cannot start (bad token, Bot API unreachable); the message holds no secret."""


class ChatBot:
    """The running bot: long polling for reviewers' updates, and the notification job handler."""

    def __init__(self, settings: Settings, db: Database, on_stored: Callable[[], None],
                 pgp: OpenPGP | None = None) -> None:
        self.settings = settings
        self.on_stored = on_stored
        self.ctx = ReviewContext(settings, db, pgp)
        self.db = db
        self.pulse = ApiPulse()
        self.app: Application[Any, Any, Any, Any, Any, Any] = (
            ApplicationBuilder()
            .token(settings.telegram_token())
            .base_url(settings.telegram.base_url)
            .base_file_url(settings.telegram.base_file_url)
            .request(_PulseRequest(self.pulse, connection_pool_size=256))
            .get_updates_request(_PulseRequest(
                self.pulse, connection_pool_size=1,
                read_timeout=settings.telegram.poll_timeout_seconds + 10))
            .build()
        )
        for name in COMMANDS:
            self.app.add_handler(CommandHandler(name, self.on_command))
        self.app.add_handler(MessageHandler(filters.COMMAND, self.on_command))  # unknown commands
        self.app.add_handler(CallbackQueryHandler(self.on_button))
        self.app.add_handler(MessageHandler(
            filters.ChatType.PRIVATE & (filters.TEXT | filters.Document.ALL) & ~filters.COMMAND,
            self.on_officer_message))
        # a file waiting for its detached signature, per Telegram user: (name, bytes, since)
        self.pending_files: dict[int, tuple[str, bytes, float]] = {}
        self.app.add_error_handler(self.on_error)

    async def initialize(self) -> None:
        """Check the token and reach the Bot API (raises ChatStartError, never showing the token)."""
        try:
            await self.app.initialize()
        except InvalidToken:  # PTB's own message quotes the token: never show that
            await self.app.bot.shutdown()  # a failed initialize() leaves its HTTP clients open
            raise ChatStartError("telegram.token was rejected by the Bot API "
                                 f"at {self.settings.telegram.base_url}") from None
        except NetworkError as exc:
            await self.app.bot.shutdown()
            raise ChatStartError(f"cannot reach the Bot API at {self.settings.telegram.base_url}: "
                                 f"{type(exc).__name__}") from None
        await self._with_retry(lambda: self.app.bot.set_my_commands(
            [BotCommand(name, about) for name, (_, about) in COMMANDS.items() if name != "start"]))

    async def start_polling(self) -> None:
        """Take reviewers' updates (only one process in a deployment does: the chat duty)."""
        await self.app.start()
        assert self.app.updater is not None
        await self.app.updater.start_polling(
            poll_interval=0, timeout=int(self.settings.telegram.poll_timeout_seconds),
            allowed_updates=["message", "callback_query"])
        log.info("telegram bot started", extra={"bot": self.app.bot.username})

    async def stop_polling(self) -> None:
        assert self.app.updater is not None
        if self.app.updater.running:
            await self.app.updater.stop()
        if self.app.running:
            await self.app.stop()

    async def shutdown(self) -> None:
        await self.stop_polling()
        await self.app.shutdown()

    # --- reviewers' updates ----------------------------------------------------------------

    async def _reviewer(self, update: Update) -> Reviewer | None:
        user, chat = update.effective_user, update.effective_chat
        if user is None or chat is None:
            return None
        return await review.authorize(self.db, user.id, chat.id, chat.type,
                                      self.settings.telegram.allowed_chats)

    async def on_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or not message.text or update.effective_chat is None:
            return
        reviewer = await self._reviewer(update)
        if reviewer is None:
            await self.send(update.effective_chat.id, ChatReply(REFUSAL))
            return
        name = message.text.split()[0].lstrip("/").split("@")[0].lower()
        reply = await self.run_command(name, reviewer, list(context.args or []))
        await self.send(update.effective_chat.id, reply)

    async def run_command(self, name: str, reviewer: Reviewer, args: list[str]) -> ChatReply:
        return await run_reviewer_command(self.ctx, name, reviewer, args)

    async def on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None or update.effective_chat is None:
            return
        reviewer = await self._reviewer(update)
        await self._with_retry(query.answer)
        if reviewer is None:
            await self.send(update.effective_chat.id, ChatReply(REFUSAL))
            return
        verb, _, ref = (query.data or "").partition(":")
        confirmed = verb.endswith("!")
        verb = verb.rstrip("!")
        if verb not in BUTTON_VERBS or not ref:
            return
        if verb in CONFIRM_FIRST and not confirmed:
            reply = ChatReply(f"{verb.capitalize()} {ref}? The decision is sent to the officer.",
                              buttons=(((f"Yes, {verb}", f"{verb}!:{ref}"), ("Cancel", f"show:{ref}")),))
        else:
            reply = await self.run_command(verb, reviewer, [ref])
        await self.send(update.effective_chat.id, reply)

    # --- officers' submissions ------------------------------------------------------------

    async def on_officer_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A clearsigned text, or a file then its detached signature, from a registered officer.

        The chat account only tells us which officer claims to write; the signature decides, as
        for email: the message goes through the same `ingest` and the same acceptance rules.
        """
        message, user = update.effective_message, update.effective_user
        if message is None or user is None:
            return
        async with self.db.transaction() as session:
            officer = await session.scalar(select(Officer).where(Officer.telegram_id == user.id,
                                                                 Officer.status == "active"))
        if officer is None:
            is_reviewer = await session_has_reviewer(self.db, user.id)
            await self.send(user.id, ChatReply("Commands start with /; /help lists them."
                                               if is_reviewer else REFUSAL))
            return
        origin = f"telegram user {user.id}"
        if message.document is not None:
            raw = await self._officer_file(user.id, message, officer.email, origin)
            if raw is None:
                return
        elif message.text and "-----BEGIN PGP SIGNED MESSAGE-----" in message.text:
            raw = chat_text_message(officer.email, self.settings.gateway.address, message.text, origin)
        else:
            await self.send(user.id, ChatReply(
                "Send a request as a cleartext-signed text (gpg --clearsign), or as a file "
                "(request.toml, request.json, a PDF) followed by its detached signature (.asc)."))
            return
        result = await ingest(self.db, raw, transport="chat", peer=f"telegram:{user.id}",
                              envelope_from=officer.email)
        self.on_stored()
        await self.send(user.id, ChatReply("Already received; it is not processed twice."
                                           if result.duplicate else "Received; checking the signature…"))

    async def _officer_file(self, user_id: int, message: Any, email: str, origin: str) -> bytes | None:
        document = message.document
        name = document.file_name or "file"
        if (document.file_size or 0) > self.settings.smtp.max_message_bytes:
            await self.send(user_id, ChatReply(f"{name} is larger than the limit of "
                                               f"{self.settings.smtp.max_message_bytes} bytes."))
            return None
        data = bytes(await self._with_retry(
            lambda: _download(document)))
        waiting = self.pending_files.pop(user_id, None)
        if waiting is not None and time.monotonic() - waiting[2] > PENDING_FILE_SECONDS:
            waiting = None
        if name.lower().endswith((".asc", ".sig")):
            if waiting is None:
                await self.send(user_id, ChatReply("Send the file first, then its detached signature."))
                return None
            return chat_file_message(email, self.settings.gateway.address, waiting[0], waiting[1], data,
                                     origin)
        self.pending_files[user_id] = (name, data, time.monotonic())
        await self.send(user_id, ChatReply(f"Got {name}. Now send its detached signature "
                                           f"(gpg --detach-sign --armor {name})."))
        return None

    async def reply_job(self, job: Job) -> None:
        """The `chat_reply` job: answer someone who wrote to the bot."""
        await self.send(int(job.payload["telegram_id"]), ChatReply(job.payload["text"]))
        await queue.finish(self.db, job)

    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("telegram handler failed", exc_info=context.error)

    # --- sending ---------------------------------------------------------------------------

    async def send(self, chat_id: int, reply: ChatReply) -> None:
        markup = None
        if reply.buttons:
            markup = InlineKeyboardMarkup([[InlineKeyboardButton(label, callback_data=data)
                                            for label, data in row] for row in reply.buttons])
        chunks = [reply.text[i : i + MAX_TEXT] for i in range(0, len(reply.text), MAX_TEXT)] or [""]
        for index, chunk in enumerate(chunks):
            last = index == len(chunks) - 1
            await self._with_retry(lambda c=chunk, m=(markup if last else None): self.app.bot.send_message(
                chat_id, c, reply_markup=m))
        for filename, data, caption in reply.documents:
            await self._with_retry(lambda f=filename, d=data, c=caption: self.app.bot.send_document(
                chat_id, d, filename=f, caption=c[:1000]))

    async def _with_retry(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """Wait out 429s (RetryAfter) and brief network errors; give up after a few tries."""
        for attempt in range(1, SEND_ATTEMPTS + 1):
            try:
                return await call()
            except RetryAfter as exc:
                delay = exc.retry_after
                wait = delay.total_seconds() if hasattr(delay, "total_seconds") else float(delay)
                log.warning("telegram asked us to slow down", extra={"retry_after": wait})
                await asyncio.sleep(wait)
            except (TimedOut, NetworkError) as exc:
                if attempt == SEND_ATTEMPTS:
                    raise
                log.warning("telegram network error, retrying", extra={"error": str(exc)})
                await asyncio.sleep(min(2 ** attempt, 30))
        raise TelegramError("gave up after repeated 429 answers")

    async def notify(self, job: Job) -> None:
        """The `chat_notify` job: tell every active reviewer; the job is done when all were told."""
        payload = job.payload
        async with self.db.transaction() as session:
            chat_ids = list(await session.scalars(
                select(Reviewer.telegram_id).where(Reviewer.active.is_(True))))
        ref = payload.get("ref")
        reply = ChatReply(payload["text"], buttons=review.request_buttons(ref) if ref else ())
        for chat_id in chat_ids:
            await self.send(chat_id, reply)
        await queue.finish(self.db, job)


async def _download(document: Any) -> bytearray:
    telegram_file = await document.get_file()
    return await telegram_file.download_as_bytearray()


async def session_has_reviewer(db: Database, telegram_id: int) -> bool:
    async with db.transaction() as session:
        return await session.scalar(select(Reviewer.id).where(Reviewer.telegram_id == telegram_id,
                                                              Reviewer.active.is_(True))) is not None
