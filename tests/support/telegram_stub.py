"""A stand-in Telegram Bot API server, so the real PTB ``Application`` can be tested offline.

Tests cannot reach api.telegram.org, and mocking PTB's ``Bot`` would skip exactly the parts that
break in production (URL building, form encoding, multipart uploads, JSON parsing, error mapping,
long polling).  ``FakeBotApi`` is a small aiohttp server on 127.0.0.1 that speaks enough of the Bot
API for the gateway: PTB talks to it over real HTTP via ``base_url``/``base_file_url``.

What PTB 22 sends (see telegram/request/_requestdata.py and _httpxrequest.py):

* ``POST {base_url}{token}/{method}`` -- the token is appended to ``base_url`` verbatim, then
  ``/method``; so ``base_url`` must end in ``/bot``.
* Parameters are ``application/x-www-form-urlencoded`` (multipart when uploading); every value that
  is not already a string is JSON-dumped (``chat_id=42``, ``reply_markup={"inline_keyboard":...}``).
  A JSON body (as other clients send) is accepted too.
* File downloads are ``GET {base_file_url}{token}/{file_path}``.

Behaviour mirrors Telegram where it matters for tests: 401 ``Unauthorized`` for a wrong token,
404 ``Not Found`` for an unknown method (PTB raises ``InvalidToken`` for both, except
``Bot.do_api_request`` on an initialized bot, which raises ``EndPointNotFound``), 429 with
``parameters.retry_after`` (PTB raises ``RetryAfter`` and does *not* retry), 409 when a second
``getUpdates`` long poll starts, 400s for empty/too long texts, malformed HTML, unknown file ids,
editing a missing or unchanged message, and answering an unknown callback query.

All calls must come from the event loop that runs the server (the test's loop); nothing here is
thread-safe, and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import html
import json
import mimetypes
import re
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from types import TracebackType
from typing import Any

from aiohttp import web

JSONDict = dict[str, Any]
ChatId = int | str

#: Long polls never wait longer than this, whatever ``timeout`` PTB asks for, so tests stay fast.
DEFAULT_MAX_POLL_TIMEOUT = 1.0
MAX_TEXT_LENGTH = 4096
MAX_CAPTION_LENGTH = 1024
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024

# Parameters that are strings in the Bot API even when they look like JSON ("123", "true").
_STRING_PARAMS = frozenset(
    {
        "text", "caption", "parse_mode", "callback_query_id", "inline_message_id", "file_id",
        "url", "language_code", "data", "description", "short_description", "name", "title",
        "emoji", "business_connection_id", "message_effect_id", "secret_token", "ip_address",
        "document", "photo", "audio", "video", "voice", "animation", "sticker", "video_note",
        "thumbnail", "query_id", "switch_pm_text", "switch_pm_parameter", "next_offset",
    }
)
_HTML_TAGS = frozenset(
    {
        "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span", "tg-spoiler", "a",
        "code", "pre", "blockquote", "tg-emoji",
    }
)
_HTML_TAG_RE = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)(\s[^<>]*)?>")
_COMMAND_RE = re.compile(r"(?<!\S)/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?")
_BOT_COMMAND_RE = re.compile(r"^[a-z0-9_]{1,32}$")
_UPDATE_TYPES = frozenset(
    {
        "message", "edited_message", "channel_post", "edited_channel_post", "callback_query",
        "inline_query", "chosen_inline_result", "my_chat_member", "chat_member",
        "chat_join_request", "message_reaction", "poll", "poll_answer",
    }
)
_ERROR_DESCRIPTIONS = {
    400: "Bad Request: chat not found",
    401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user",
    404: "Not Found",
    409: "Conflict: terminated by other getUpdates request; make sure that only one bot instance "
    "is running",
    500: "Internal Server Error",
    502: "Bad Gateway",
}


@dataclass(frozen=True)
class UploadedFile:
    """One multipart file part, kept so tests can assert on exactly what the bot uploaded."""

    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class SentCall:
    """A Bot API call that succeeded: what the bot asked for and what it got back."""

    method: str
    params: JSONDict
    files: dict[str, UploadedFile]
    result: Any

    @property
    def chat_id(self) -> ChatId | None:
        """The target chat, normalised to int when numeric (forms send ``"42"``, JSON sends 42)."""
        value = self.params.get("chat_id")
        return None if value is None else _norm_chat_id(value)


@dataclass(frozen=True)
class ApiRequest:
    """Every HTTP request the stub saw, including failures, for asserting on retries."""

    method: str
    params: JSONDict
    status: int


@dataclass(frozen=True)
class SentDocument:
    """A document the bot sent, flattened for easy assertions."""

    chat_id: ChatId
    message_id: int
    filename: str
    data: bytes
    caption: str | None
    content_type: str


@dataclass
class _StoredFile:
    file_id: str
    file_unique_id: str
    file_path: str
    file_name: str
    mime_type: str
    data: bytes

    def as_file(self) -> JSONDict:
        return {
            "file_id": self.file_id,
            "file_unique_id": self.file_unique_id,
            "file_size": len(self.data),
            "file_path": self.file_path,
        }

    def as_document(self) -> JSONDict:
        return {
            "file_id": self.file_id,
            "file_unique_id": self.file_unique_id,
            "file_name": self.file_name,
            "mime_type": self.mime_type,
            "file_size": len(self.data),
        }


@dataclass
class _Failure:
    status: int
    retry_after: int
    description: str | None
    remaining: int


@dataclass
class _StoredMessage:
    message: JSONDict
    content: tuple[str, str | None, str | None] = ("", None, None)  # raw text, parse_mode, markup
    from_bot: bool = True


class BotApiError(Exception):
    """Raised inside method handlers to produce a Bot API error response."""

    def __init__(self, status: int, description: str, parameters: JSONDict | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters


class _Pulse:
    """A re-armable broadcast signal that plain (non-async) code can fire.

    ``asyncio.Condition.notify_all`` needs the lock, which sync helpers like ``inject_message``
    cannot take; instead each fire sets the current Event and swaps in a fresh one, so a waiter
    that grabbed the Event before re-checking its condition can never miss a wake-up.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    def waiter(self) -> asyncio.Event:
        return self._event


def _norm_chat_id(value: Any) -> ChatId:
    """Chat ids arrive as ints (JSON) or strings (forms); compare them as ints when numeric."""
    if isinstance(value, bool):
        raise BotApiError(400, "Bad Request: chat not found")
    if isinstance(value, int):
        return value
    text = str(value).strip()
    try:
        return int(text)
    except ValueError:
        return text


def _coerce_form_value(name: str, value: str) -> Any:
    """Undo PTB's encoding: non-string values are JSON-dumped into form fields."""
    if name in _STRING_PARAMS:
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _utf16_len(text: str) -> int:
    """Telegram entity offsets/lengths count UTF-16 code units, not code points."""
    return len(text.encode("utf-16-le")) // 2


def _command_entities(text: str) -> list[JSONDict]:
    """``bot_command`` entities as Telegram adds them; PTB's CommandHandler relies on them."""
    return [
        {
            "type": "bot_command",
            "offset": _utf16_len(text[: match.start()]),
            "length": _utf16_len(match.group()),
        }
        for match in _COMMAND_RE.finditer(text)
    ]


def _check_html(text: str) -> str:
    """Validate Telegram-HTML the way the server does and return the visible text.

    Catches the classic bug of sending unescaped ``<`` from user content with parse_mode=HTML.
    """
    stack: list[str] = []
    pos = 0
    while (start := text.find("<", pos)) != -1:
        offset = len(text[:start].encode())
        match = _HTML_TAG_RE.match(text, start)
        if match is None:
            snippet = text[start + 1 : start + 11]
            raise BotApiError(
                400,
                f'Bad Request: can\'t parse entities: Unsupported start tag "{snippet}" '
                f"at byte offset {offset}",
            )
        closing, tag = match.group(1) == "/", match.group(2).lower()
        if tag not in _HTML_TAGS:
            raise BotApiError(
                400,
                f'Bad Request: can\'t parse entities: Unsupported start tag "{tag}" '
                f"at byte offset {offset}",
            )
        if not closing:
            stack.append(tag)
        elif not stack or stack[-1] != tag:
            expected = f'expected "</{stack[-1]}>", ' if stack else ""
            raise BotApiError(
                400,
                f"Bad Request: can't parse entities: Unmatched end tag at byte offset {offset}, "
                f'{expected}found "</{tag}>"',
            )
        else:
            stack.pop()
        pos = match.end()
    if stack:
        raise BotApiError(
            400,
            "Bad Request: can't parse entities: Can't find end tag corresponding to start tag "
            f'"{stack[-1]}"',
        )
    return html.unescape(_HTML_TAG_RE.sub("", text))


def _as_json(value: Any, name: str) -> Any:
    """JSON bodies may still carry JSON-in-a-string (as the Bot API allows); decode it."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError as exc:
            raise BotApiError(400, f"Bad Request: can't parse {name} JSON object") from exc
    return value


def _as_int(value: Any, name: str, default: int) -> int:
    if value is None:
        return default
    try:
        return int(float(value))
    except (TypeError, ValueError) as exc:
        raise BotApiError(400, f"Bad Request: wrong parameter {name}") from exc


class FakeBotApi:
    """In-process Bot API stand-in; one instance serves exactly one bot token.

    Use ``async with FakeBotApi(token) as api:`` (or ``start()``/``stop()``), build the PTB
    application with ``base_url(api.base_url)`` and ``base_file_url(api.base_file_url)``, then
    drive it with ``inject_*`` and assert on ``sent`` / ``messages_to`` / ``wait_for_sent``.
    """

    def __init__(
        self,
        token: str,
        *,
        bot_username: str = "lers_test_bot",
        bot_first_name: str = "LERS Test Bot",
        max_poll_timeout: float = DEFAULT_MAX_POLL_TIMEOUT,
    ) -> None:
        self.token = token
        head = token.split(":", 1)[0]
        self.bot_user: JSONDict = {
            "id": int(head) if head.isdigit() else 1,
            "is_bot": True,
            "first_name": bot_first_name,
            "username": bot_username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }
        self.max_poll_timeout = max_poll_timeout
        #: Successful calls, in order, excluding getUpdates polls (which would drown everything).
        self.sent: list[SentCall] = []
        #: Every request including failures and getUpdates, for asserting on retries/polling.
        self.requests: list[ApiRequest] = []
        #: file_path of every successful download.
        self.downloads: list[str] = []
        self._updates: deque[JSONDict] = deque()
        self._next_update_id = 1
        self._next_message_id = 1
        self._next_file = 1
        self._next_callback = 1
        self._allowed_updates: frozenset[str] | None = None
        self._poll_generation = 0
        self._closing = False
        self._updates_pulse = _Pulse()
        self._sent_pulse = _Pulse()
        self._failures: dict[str, deque[_Failure]] = {}
        self._files: dict[str, _StoredFile] = {}
        self._files_by_path: dict[str, _StoredFile] = {}
        self._chats: dict[ChatId, JSONDict] = {}
        self._messages: dict[tuple[ChatId, int], _StoredMessage] = {}
        self._open_callbacks: set[str] = set()
        self._commands: dict[tuple[str, str], list[JSONDict]] = {}
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._methods: dict[str, tuple[str, Callable[[JSONDict, dict[str, UploadedFile]], Awaitable[Any]]]]
        self._methods = {
            name.lower(): (name, handler)
            for name, handler in {
                "getMe": self._get_me,
                "getUpdates": self._get_updates,
                "sendMessage": self._send_message,
                "sendDocument": self._send_document,
                "getFile": self._get_file,
                "answerCallbackQuery": self._answer_callback_query,
                "editMessageText": self._edit_message_text,
                "deleteWebhook": self._delete_webhook,
                "getWebhookInfo": self._get_webhook_info,
                "setMyCommands": self._set_my_commands,
                "getMyCommands": self._get_my_commands,
                "deleteMyCommands": self._delete_my_commands,
                "close": self._true,
                "logOut": self._true,
            }.items()
        }

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Bind 127.0.0.1 on a free port chosen by the kernel (no races between parallel tests)."""
        if self._runner is not None:
            raise RuntimeError("FakeBotApi already started")
        app = web.Application(client_max_size=MAX_UPLOAD_BYTES + 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a long poll PTB abandoned (updater.stop() cancels it client-side)
        # must vanish, not linger and later answer a 409 to nobody.
        runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=2.0, handler_cancellation=True
        )
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", 0))
            site = web.SockSite(runner, sock)
            await site.start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self._port = sock.getsockname()[1]
        self._runner = runner
        self._closing = False

    async def stop(self) -> None:
        """Release pending long polls first so shutdown doesn't wait for their timeouts."""
        self._closing = True
        self._updates_pulse.fire()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        self._port = None

    async def __aenter__(self) -> FakeBotApi:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeBotApi is not running")
        return self._port

    @property
    def base_url(self) -> str:
        """For ``ApplicationBuilder().base_url()``; PTB appends the token itself."""
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def base_file_url(self) -> str:
        """For ``ApplicationBuilder().base_file_url()``; PTB appends token and file_path."""
        return f"http://127.0.0.1:{self.port}/file/bot"

    # ----------------------------------------------------------------- test controls

    def inject_update(self, update: JSONDict) -> JSONDict:
        """Queue a raw update (an ``update_id`` is assigned when missing) and wake long polls."""
        if "update_id" not in update:
            update = {"update_id": self._next_update_id, **update}
        self._next_update_id = max(self._next_update_id, int(update["update_id"])) + 1
        self._updates.append(update)
        self._updates_pulse.fire()
        return update

    def inject_message(
        self,
        chat_id: int,
        user_id: int,
        text: str,
        *,
        chat_type: str = "private",
        username: str | None = None,
        first_name: str = "Test",
    ) -> JSONDict:
        """Queue a text message from a user, with ``bot_command`` entities like Telegram adds."""
        message = self._user_message(chat_id, user_id, chat_type, username, first_name)
        message["text"] = text
        if entities := _command_entities(text):
            message["entities"] = entities
        self._messages[(chat_id, message["message_id"])] = _StoredMessage(message, from_bot=False)
        return self.inject_update({"message": message})

    def inject_document(
        self,
        chat_id: int,
        user_id: int,
        filename: str,
        data: bytes,
        *,
        caption: str | None = None,
        chat_type: str = "private",
        username: str | None = None,
        first_name: str = "Test",
        mime_type: str | None = None,
    ) -> JSONDict:
        """Queue a document message and store its bytes so getFile + download work."""
        stored = self._store_file(filename, data, mime_type)
        message = self._user_message(chat_id, user_id, chat_type, username, first_name)
        message["document"] = stored.as_document()
        if caption is not None:
            message["caption"] = caption
            if entities := _command_entities(caption):
                message["caption_entities"] = entities
        self._messages[(chat_id, message["message_id"])] = _StoredMessage(message, from_bot=False)
        return self.inject_update({"message": message})

    def inject_callback(
        self,
        chat_id: int,
        user_id: int,
        data: str,
        message_id: int,
        *,
        username: str | None = None,
        first_name: str = "Test",
    ) -> JSONDict:
        """Queue an inline-button press on ``message_id`` (normally a message the bot sent).

        An unknown message_id gets a placeholder bot message so the handler can still edit it.
        """
        stored = self._messages.get((chat_id, message_id))
        if stored is None:
            self._next_message_id = max(self._next_message_id, message_id + 1)
            placeholder = self._bot_message(chat_id, "(placeholder)", message_id=message_id)
            stored = self._messages[(chat_id, message_id)] = _StoredMessage(
                placeholder, ("(placeholder)", None, None)
            )
        query_id = str(4_000_000_000 + self._next_callback)
        self._next_callback += 1
        self._open_callbacks.add(query_id)
        query: JSONDict = {
            "id": query_id,
            "from": self._user(user_id, username, first_name),
            "message": stored.message,
            "chat_instance": str(abs(chat_id) + 7_000_000),
            "data": data,
        }
        return self.inject_update({"callback_query": query})

    def fail_next(
        self,
        method: str,
        status: int = 429,
        retry_after: int = 1,
        times: int = 1,
        *,
        description: str | None = None,
    ) -> None:
        """Make the next ``times`` calls of ``method`` fail with ``status`` (429 adds retry_after)."""
        key = method.lower()
        if key not in self._methods:
            raise ValueError(f"FakeBotApi does not implement {method!r}")
        if times < 1 or status < 400:
            raise ValueError("times must be >= 1 and status an HTTP error code")
        self._failures.setdefault(key, deque()).append(_Failure(status, retry_after, description, times))

    @property
    def pending_updates(self) -> int:
        """Updates queued but not yet confirmed by a later getUpdates offset."""
        return len(self._updates)

    def calls(self, method: str) -> list[SentCall]:
        """Successful calls of one method, in order."""
        return [call for call in self.sent if call.method.lower() == method.lower()]

    def messages_to(self, chat_id: ChatId) -> list[str]:
        """Texts the bot sent or edited into a chat, as sent (raw, before HTML parsing)."""
        target = _norm_chat_id(chat_id)
        return [
            str(call.params.get("text", ""))
            for call in self.sent
            if call.method in ("sendMessage", "editMessageText") and call.chat_id == target
        ]

    def documents_to(self, chat_id: ChatId) -> list[SentDocument]:
        """Documents the bot sent to a chat, with their uploaded (or re-sent) bytes."""
        target = _norm_chat_id(chat_id)
        documents: list[SentDocument] = []
        for call in self.sent:
            if call.method != "sendDocument" or call.chat_id != target:
                continue
            stored = self._files[call.result["document"]["file_id"]]
            documents.append(
                SentDocument(
                    chat_id=target,
                    message_id=call.result["message_id"],
                    filename=stored.file_name,
                    data=stored.data,
                    caption=call.params.get("caption"),
                    content_type=stored.mime_type,
                )
            )
        return documents

    async def wait_for_sent(
        self,
        predicate: Callable[[SentCall], bool],
        timeout: float = 5.0,  # noqa: ASYNC109 - the brief's API; enforced with asyncio.timeout
        *,
        after: int = 0,
    ) -> SentCall:
        """Wait (bounded) for a recorded call at index >= ``after`` matching ``predicate``.

        Pass ``after=len(api.sent)`` to ignore calls made before the step under test.
        """
        checked = after
        try:
            async with asyncio.timeout(timeout):
                while True:
                    wake = self._sent_pulse.waiter()
                    for call in self.sent[checked:]:
                        if predicate(call):
                            return call
                    checked = max(checked, len(self.sent))
                    await wake.wait()
        except TimeoutError:
            seen = [(call.method, call.params) for call in self.sent[after:]]
            raise TimeoutError(f"no matching Bot API call within {timeout}s; saw {seen!r}") from None

    # ----------------------------------------------------------------- HTTP plumbing

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.startswith("/file/bot"):
            return self._download(request, path[len("/file/bot") :])
        if not path.startswith("/bot"):
            return self._error_response(404, "Not Found")
        token, slash, method = path[len("/bot") :].partition("/")
        try:
            params, files = await self._read_params(request)
        except BotApiError as exc:
            return self._error_response(exc.status, exc.description)
        if not slash or not method or "/" in method:
            return self._record_failure(method, params, 404, "Not Found")
        if token != self.token:
            return self._record_failure(method, params, 401, "Unauthorized")
        entry = self._methods.get(method.lower())
        if entry is None:
            return self._record_failure(method, params, 404, "Not Found")
        name, handler = entry
        failure = self._take_failure(name)
        if failure is not None:
            return self._record_failure(name, params, *failure)
        try:
            result = await handler(params, files)
        except BotApiError as exc:
            return self._record_failure(name, params, exc.status, exc.description, exc.parameters)
        self.requests.append(ApiRequest(name, params, 200))
        if name != "getUpdates":
            self.sent.append(SentCall(name, params, files, result))
            self._sent_pulse.fire()
        return web.json_response({"ok": True, "result": result})

    async def _read_params(self, request: web.Request) -> tuple[JSONDict, dict[str, UploadedFile]]:
        params: JSONDict = {key: _coerce_form_value(key, value) for key, value in request.query.items()}
        files: dict[str, UploadedFile] = {}
        if not request.can_read_body:
            return params, files
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError as exc:
                raise BotApiError(400, "Bad Request: can't parse JSON object") from exc
            if not isinstance(body, dict):
                raise BotApiError(400, "Bad Request: JSON object expected")
            params.update(body)
            return params, files
        if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, web.FileField):
                    files[key] = UploadedFile(
                        field=key,
                        filename=value.filename,
                        content_type=value.content_type,
                        data=value.file.read(),
                    )
                else:
                    params[key] = _coerce_form_value(key, str(value))
        return params, files

    def _take_failure(self, name: str) -> tuple[int, str, JSONDict | None] | None:
        queue = self._failures.get(name.lower())
        if not queue:
            return None
        failure = queue[0]
        failure.remaining -= 1
        if failure.remaining <= 0:
            queue.popleft()
        if failure.status == 429:
            description = failure.description or f"Too Many Requests: retry after {failure.retry_after}"
            return 429, description, {"retry_after": failure.retry_after}
        description = failure.description or _ERROR_DESCRIPTIONS.get(failure.status, "Error")
        return failure.status, description, None

    def _record_failure(
        self,
        method: str,
        params: JSONDict,
        status: int,
        description: str,
        parameters: JSONDict | None = None,
    ) -> web.Response:
        self.requests.append(ApiRequest(method, params, status))
        return self._error_response(status, description, parameters)

    @staticmethod
    def _error_response(status: int, description: str, parameters: JSONDict | None = None) -> web.Response:
        body: JSONDict = {"ok": False, "error_code": status, "description": description}
        if parameters:
            body["parameters"] = parameters
        return web.json_response(body, status=status)

    def _download(self, request: web.Request, rest: str) -> web.StreamResponse:
        token, _, file_path = rest.partition("/")
        if token != self.token:
            return self._error_response(401, "Unauthorized")
        stored = self._files_by_path.get(file_path)
        if stored is None or request.method not in ("GET", "HEAD"):
            return self._error_response(404, "Not Found")
        self.downloads.append(file_path)
        return web.Response(body=stored.data, content_type="application/octet-stream")

    # ----------------------------------------------------------------- model helpers

    def _user(self, user_id: int, username: str | None, first_name: str) -> JSONDict:
        user: JSONDict = {"id": user_id, "is_bot": False, "first_name": first_name, "language_code": "en"}
        if username:
            user["username"] = username
        return user

    def _chat(self, chat_id: ChatId) -> JSONDict:
        """A chat the tests introduced, or a plausible one derived from the id's sign."""
        known = self._chats.get(chat_id)
        if known is not None:
            return known
        if isinstance(chat_id, str):
            return {"id": -1001000000000, "type": "channel", "title": chat_id, "username": chat_id[1:]}
        if chat_id > 0:
            return {"id": chat_id, "type": "private", "first_name": "Test"}
        kind = "supergroup" if str(chat_id).startswith("-100") else "group"
        return {"id": chat_id, "type": kind, "title": f"Chat {chat_id}"}

    def _user_message(
        self, chat_id: int, user_id: int, chat_type: str, username: str | None, first_name: str
    ) -> JSONDict:
        if chat_type == "private":
            chat: JSONDict = {"id": chat_id, "type": "private", "first_name": first_name}
            if username:
                chat["username"] = username
        else:
            chat = {"id": chat_id, "type": chat_type, "title": f"Chat {chat_id}"}
        self._chats[chat_id] = chat
        message_id = self._take_message_id()
        return {
            "message_id": message_id,
            "from": self._user(user_id, username, first_name),
            "chat": chat,
            "date": int(time.time()),
        }

    def _take_message_id(self) -> int:
        message_id = self._next_message_id
        self._next_message_id += 1
        return message_id

    def _bot_message(self, chat_id: ChatId, text: str | None, *, message_id: int | None = None) -> JSONDict:
        message: JSONDict = {
            "message_id": message_id if message_id is not None else self._take_message_id(),
            "from": self.bot_user,
            "chat": self._chat(chat_id),
            "date": int(time.time()),
        }
        if text is not None:
            message["text"] = text
        return message

    def _store_file(self, filename: str, data: bytes, mime_type: str | None) -> _StoredFile:
        number = self._next_file
        self._next_file += 1
        suffix = re.sub(r"[^A-Za-z0-9.]", "", PurePosixPath(filename).suffix)[:10]
        stored = _StoredFile(
            file_id=f"BQACAgIAAx-fake-{number}",
            file_unique_id=f"AgADfake{number}",
            file_path=f"documents/file_{number}{suffix}",
            file_name=filename,
            mime_type=mime_type or mimetypes.guess_type(filename)[0] or "application/octet-stream",
            data=data,
        )
        self._files[stored.file_id] = stored
        self._files_by_path[stored.file_path] = stored
        return stored

    def _require_chat(self, params: JSONDict) -> ChatId:
        if params.get("chat_id") in (None, ""):
            raise BotApiError(400, "Bad Request: chat_id is empty")
        return _norm_chat_id(params["chat_id"])

    @staticmethod
    def _render(text: str, parse_mode: Any) -> str:
        if isinstance(parse_mode, str) and parse_mode.lower() == "html":
            return _check_html(text)
        return text

    @staticmethod
    def _inline_markup(params: JSONDict) -> JSONDict | None:
        """Telegram echoes only inline keyboards back in the Message; reply keyboards vanish."""
        markup = params.get("reply_markup")
        if markup is None:
            return None
        markup = _as_json(markup, "reply_markup")
        if not isinstance(markup, dict):
            raise BotApiError(400, "Bad Request: object expected as reply markup")
        return markup if "inline_keyboard" in markup else None

    # ----------------------------------------------------------------- Bot API methods

    async def _true(self, params: JSONDict, files: dict[str, UploadedFile]) -> bool:
        return True

    async def _get_me(self, params: JSONDict, files: dict[str, UploadedFile]) -> JSONDict:
        return self.bot_user

    async def _get_updates(self, params: JSONDict, files: dict[str, UploadedFile]) -> list[JSONDict]:
        """Long polling: answer at once if updates are queued, else wait at most the capped timeout.

        A newer getUpdates ends an older one with 409, like Telegram does for two pollers.
        """
        offset = _as_int(params.get("offset"), "offset", 0)
        limit = min(max(_as_int(params.get("limit"), "limit", 100), 1), 100)
        timeout = min(max(_as_int(params.get("timeout"), "timeout", 0), 0), self.max_poll_timeout)
        allowed = params.get("allowed_updates")
        if allowed is not None:
            allowed = _as_json(allowed, "allowed_updates")
            self._allowed_updates = frozenset(allowed) & _UPDATE_TYPES if allowed else None
        self._poll_generation += 1
        generation = self._poll_generation
        self._updates_pulse.fire()  # lets an older poll notice it was superseded
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            wake = self._updates_pulse.waiter()
            if self._closing:
                return []
            if generation != self._poll_generation:
                raise BotApiError(409, _ERROR_DESCRIPTIONS[409])
            if batch := self._select(offset, limit):
                return batch
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            try:
                async with asyncio.timeout(remaining):
                    await wake.wait()
            except TimeoutError:
                return self._select(offset, limit)

    def _confirm(self, offset: int) -> None:
        if offset < 0:
            while len(self._updates) > -offset:
                self._updates.popleft()
            return
        while self._updates and self._updates[0]["update_id"] < offset:
            self._updates.popleft()

    def _select(self, offset: int, limit: int) -> list[JSONDict]:
        """Confirm below ``offset`` on every look, so updates injected mid-poll obey it too."""
        self._confirm(offset)
        if self._allowed_updates is not None:
            # Telegram never creates updates of types the bot opted out of.
            allowed = self._allowed_updates
            self._updates = deque(u for u in self._updates if (u.keys() - {"update_id"}) & allowed)
        return list(self._updates)[:limit]

    async def _send_message(self, params: JSONDict, files: dict[str, UploadedFile]) -> JSONDict:
        chat_id = self._require_chat(params)
        raw = params.get("text")
        if raw is None or str(raw) == "":
            raise BotApiError(400, "Bad Request: message text is empty")
        raw = str(raw)
        text = self._render(raw, params.get("parse_mode"))
        if not text.strip():
            raise BotApiError(400, "Bad Request: message text is empty")
        if _utf16_len(text) > MAX_TEXT_LENGTH:
            raise BotApiError(400, "Bad Request: message is too long")
        markup = self._inline_markup(params)
        message = self._bot_message(chat_id, text)
        if markup is not None:
            message["reply_markup"] = markup
        content = (raw, params.get("parse_mode"), json.dumps(markup, sort_keys=True) if markup else None)
        self._messages[(chat_id, message["message_id"])] = _StoredMessage(message, content)
        return message

    async def _send_document(self, params: JSONDict, files: dict[str, UploadedFile]) -> JSONDict:
        chat_id = self._require_chat(params)
        stored = self._resolve_document(params, files)
        caption = params.get("caption")
        markup = self._inline_markup(params)
        message = self._bot_message(chat_id, None)
        message["document"] = stored.as_document()
        if caption:
            visible = self._render(str(caption), params.get("parse_mode"))
            if _utf16_len(visible) > MAX_CAPTION_LENGTH:
                raise BotApiError(400, "Bad Request: message caption is too long")
            message["caption"] = visible
        if markup is not None:
            message["reply_markup"] = markup
        content = (str(caption or ""), None, None)
        self._messages[(chat_id, message["message_id"])] = _StoredMessage(message, content)
        return message

    def _resolve_document(self, params: JSONDict, files: dict[str, UploadedFile]) -> _StoredFile:
        """An upload arrives as a file part named ``document`` (or via attach://); else a file_id."""
        reference = params.get("document")
        upload = files.get("document")
        if isinstance(reference, str) and reference.startswith("attach://"):
            upload = files.get(reference[len("attach://") :])
        if upload is not None:
            if not upload.data:
                raise BotApiError(400, "Bad Request: file must be non-empty")
            filename = params.get("filename") or upload.filename or "document"
            return self._store_file(str(filename), upload.data, upload.content_type or None)
        if isinstance(reference, str) and reference in self._files:
            return self._files[reference]
        if reference:
            raise BotApiError(400, "Bad Request: wrong file identifier/HTTP URL specified")
        raise BotApiError(400, "Bad Request: there is no document in the request")

    async def _get_file(self, params: JSONDict, files: dict[str, UploadedFile]) -> JSONDict:
        stored = self._files.get(str(params.get("file_id") or ""))
        if stored is None:
            raise BotApiError(400, "Bad Request: invalid file_id")
        if len(stored.data) > MAX_DOWNLOAD_BYTES:
            raise BotApiError(400, "Bad Request: file is too big")
        return stored.as_file()

    async def _answer_callback_query(self, params: JSONDict, files: dict[str, UploadedFile]) -> bool:
        query_id = str(params.get("callback_query_id") or "")
        if query_id not in self._open_callbacks:
            raise BotApiError(
                400, "Bad Request: query is too old and response timeout expired or query ID is invalid"
            )
        self._open_callbacks.discard(query_id)
        return True

    async def _edit_message_text(self, params: JSONDict, files: dict[str, UploadedFile]) -> JSONDict | bool:
        raw = params.get("text")
        if raw is None or str(raw) == "":
            raise BotApiError(400, "Bad Request: message text is empty")
        raw = str(raw)
        text = self._render(raw, params.get("parse_mode"))
        if _utf16_len(text) > MAX_TEXT_LENGTH:
            raise BotApiError(400, "Bad Request: message is too long")
        markup = self._inline_markup(params)
        if params.get("inline_message_id"):
            return True
        chat_id = self._require_chat(params)
        message_id = _as_int(params.get("message_id"), "message_id", 0)
        stored = self._messages.get((chat_id, message_id))
        if stored is None:
            raise BotApiError(400, "Bad Request: message to edit not found")
        if not stored.from_bot:
            raise BotApiError(400, "Bad Request: message can't be edited")
        content = (raw, params.get("parse_mode"), json.dumps(markup, sort_keys=True) if markup else None)
        if content == stored.content:
            raise BotApiError(
                400,
                "Bad Request: message is not modified: specified new message content and reply "
                "markup are exactly the same as a current content and reply markup of the message",
            )
        message = dict(stored.message, text=text, edit_date=int(time.time()))
        message.pop("reply_markup", None)
        if markup is not None:
            message["reply_markup"] = markup
        self._messages[(chat_id, message_id)] = _StoredMessage(message, content)
        return message

    async def _delete_webhook(self, params: JSONDict, files: dict[str, UploadedFile]) -> bool:
        if params.get("drop_pending_updates") in (True, "true", "True"):
            self._updates.clear()
        return True

    async def _get_webhook_info(self, params: JSONDict, files: dict[str, UploadedFile]) -> JSONDict:
        return {"url": "", "has_custom_certificate": False, "pending_update_count": len(self._updates)}

    @staticmethod
    def _commands_key(params: JSONDict) -> tuple[str, str]:
        scope = _as_json(params.get("scope") or {"type": "default"}, "scope")
        return json.dumps(scope, sort_keys=True), str(params.get("language_code") or "")

    async def _set_my_commands(self, params: JSONDict, files: dict[str, UploadedFile]) -> bool:
        commands = _as_json(params.get("commands"), "commands")
        if not isinstance(commands, list) or len(commands) > 100:
            raise BotApiError(400, "Bad Request: commands must be an array of at most 100 BotCommand")
        for command in commands:
            if not isinstance(command, dict) or not _BOT_COMMAND_RE.match(str(command.get("command", ""))):
                raise BotApiError(400, "Bad Request: BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", ""))) <= 256:
                raise BotApiError(400, "Bad Request: command description is empty or too long")
        self._commands[self._commands_key(params)] = [
            {"command": c["command"], "description": c["description"]} for c in commands
        ]
        return True

    async def _get_my_commands(self, params: JSONDict, files: dict[str, UploadedFile]) -> list[JSONDict]:
        return self._commands.get(self._commands_key(params), [])

    async def _delete_my_commands(self, params: JSONDict, files: dict[str, UploadedFile]) -> bool:
        self._commands.pop(self._commands_key(params), None)
        return True
