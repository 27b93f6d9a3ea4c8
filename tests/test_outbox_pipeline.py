"""The outbox as a pipeline: more replies than it holds at once all reach the smarthost, each
once, over few connections, and each is kept as the outbound message it was."""

from __future__ import annotations

import asyncio
import time
from email.parser import BytesHeaderParser

import pytest
from sqlalchemy import func, select, update

from gateway.models import Message, Officer, Outbox
from gateway.outbox import MAX_IN_FLIGHT, SUSPENDED_HOLD, queue_reply
from tests.conftest import Harness
from tests.support.officer_keys import TestKey


def message_id_of(raw: bytes) -> str:
    return str(BytesHeaderParser().parsebytes(raw, headersonly=True)["Message-ID"])


async def test_more_replies_than_the_pipeline_holds_are_each_sent_once(
        gateway: Harness, alice: TestKey) -> None:
    count = 2 * MAX_IN_FLIGHT + 5  # the sender has to claim again as room frees up
    async with gateway.core.db.transaction() as session:
        for n in range(count):
            queue_reply(session, gateway.settings, kind="test", recipient=alice.email,
                        recipient_fingerprint=alice.fingerprint, subject=f"Reply {n}", body=f"Text {n}\n")
    gateway.gateway.outbox.wakeup.set()
    await gateway.settle()

    replies = gateway.replies(to=alice.email)
    assert sorted(reply.subject for reply in replies) == sorted(f"Reply {n}" for n in range(count))
    assert all(reply.signed_by == gateway.core.gateway_fingerprint for reply in replies)
    # one connection while replies keep coming (a few if the sender waits for room between
    # claims), not one for each reply or for each reply ready on its own
    assert len(set(gateway.sink.peers)) <= 5
    async with gateway.core.db.reading() as session:
        rows = list(await session.scalars(select(Outbox)))
        kept = {m.header_message_id: m for m in await session.scalars(
            select(Message).where(Message.direction == "outbound"))}
    assert {(row.state, row.attempts) for row in rows} == {("sent", 1)}
    # what the smarthost got is what the gateway keeps as evidence, byte for byte
    by_id = {message_id_of(envelope.content): envelope for envelope in gateway.sink.received}
    assert set(kept) == set(by_id) == {row.header_message_id for row in rows}
    for message_id, message in kept.items():
        assert message.raw == by_id[message_id].content
        assert message.state == "sent" and message.envelope_to == [alice.email]


async def test_an_officer_suspended_while_their_reply_is_signed_gets_nothing(
        gateway: Harness, alice: TestKey, bob: TestKey, monkeypatch: pytest.MonkeyPatch) -> None:
    """The last look before the smarthost: the suspension lands after the claim's check, while
    gpg signs the reply (the real signing, then the suspension, as a reviewer's would land)."""
    pgp = gateway.core.pgp
    sign = pgp.sign_and_encrypt_for_officer

    async def sign_then_suspend(content: bytes, fingerprint: str) -> bytes:
        armored = await sign(content, fingerprint)
        async with gateway.core.db.transaction() as session:
            await session.execute(update(Officer).where(Officer.email == alice.email)
                                  .values(status="suspended"))
        return armored

    monkeypatch.setattr(pgp, "sign_and_encrypt_for_officer", sign_then_suspend)
    async with gateway.core.db.transaction() as session:
        for key in (alice, bob):
            queue_reply(session, gateway.settings, kind="test", recipient=key.email,
                        recipient_fingerprint=key.fingerprint, subject=f"For {key.name}", body="Text\n")
    gateway.gateway.outbox.wakeup.set()
    await gateway.settle()

    assert gateway.replies(to=alice.email) == []
    [reply] = gateway.replies(to=bob.email)
    assert reply.subject == f"For {bob.name}"
    async with gateway.core.db.reading() as session:
        states = {row.recipient: (row.state, row.last_error) for row in await session.scalars(select(Outbox))}
    assert states == {alice.email: ("held", SUSPENDED_HOLD), bob.email: ("sent", None)}


async def test_replies_given_back_for_later_leave_room_for_new_ones(gateway: Harness, alice: TestKey) -> None:
    """More replies than the pipeline holds are refused by the smarthost (each given back for a
    later attempt); the replies queued next are still taken and sent at once."""
    count = MAX_IN_FLIGHT + 5

    async def queue(prefix: str) -> None:
        async with gateway.core.db.transaction() as session:
            for n in range(count):
                queue_reply(session, gateway.settings, kind="test", recipient=alice.email,
                            recipient_fingerprint=alice.fingerprint, subject=f"{prefix} {n}", body="Text\n")
        gateway.gateway.outbox.wakeup.set()

    gateway.sink.refuse = True
    await queue("Refused")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        async with gateway.core.db.reading() as session:
            tried = await session.scalar(select(func.count()).select_from(Outbox).where(Outbox.attempts >= 1))
        if tried == count:
            break
        await asyncio.sleep(0.05)
    assert tried == count
    gateway.sink.refuse = False
    await queue("Later")
    later = {f"Later {n}" for n in range(count)}

    def sent() -> set[str]:  # the refused ones may be tried again meanwhile, and go too
        return {reply.subject for reply in gateway.replies(to=alice.email)}

    deadline = time.monotonic() + 20
    while not later <= sent() and time.monotonic() < deadline:  # noqa: ASYNC110 (bounded wait)
        await asyncio.sleep(0.05)
    assert later <= sent()
