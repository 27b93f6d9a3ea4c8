"""Telling reviewers: a durable job per notification, sent to every active reviewer by the chat
component (so a Telegram outage delays notifications instead of losing them)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from gateway import queue


def notify_reviewers(session: AsyncSession, text: str, *, ref: str | None = None,
                     emergency: bool = False) -> None:
    """Queue a notification inside the caller's transaction; `ref` adds Show/Docs buttons."""
    queue.enqueue(session, "chat_notify", payload=_notice(text, ref, emergency))


def notify_reviewers_in(conn: Connection, text: str, *, ref: str | None = None,
                        emergency: bool = False) -> None:
    """`notify_reviewers` on a synchronous connection (a Core INSERT, no unit of work)."""
    queue.enqueue_in(conn, "chat_notify", payload=_notice(text, ref, emergency))


def _notice(text: str, ref: str | None, emergency: bool) -> dict[str, Any]:
    return {"text": text, "ref": ref, "emergency": emergency}


def tell_chat_sender(session: AsyncSession, telegram_id: int, text: str) -> None:
    """Answer whoever sent a message through the chat bot (their Telegram id, known to us)."""
    queue.enqueue(session, "chat_reply", payload={"telegram_id": telegram_id, "text": text})
