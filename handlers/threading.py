"""Message-ID, In-Reply-To and References for our replies, so officers' mail clients thread them."""

from __future__ import annotations

import re

from gateway.mime import SignedContent
from gateway.models import Message

MSG_ID = re.compile(r"<[^<>\s@]{1,400}@[^<>\s@]{1,400}>")


def reply_threading(message: Message, content: SignedContent) -> tuple[str | None, list[str]]:
    """(In-Reply-To, References) for a reply to `message`; protected headers win over outer ones."""
    protected = content.protected_headers.get("Message-ID")
    message_id = (protected[0] if protected else message.header_message_id) or None
    if message_id and not MSG_ID.fullmatch(message_id):
        message_id = None  # a malformed id would only confuse the officer's client
    references = content.protected_headers.get("References", [])
    chain = [r for value in references for r in value.split() if MSG_ID.fullmatch(r)]
    if message_id:
        chain.append(message_id)
    return message_id, chain[-20:]
