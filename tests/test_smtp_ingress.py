"""SMTP ingress: who we accept mail for, how much, and that 250 means stored."""

from __future__ import annotations

import asyncio
import sqlite3
import tracemalloc

import pytest
from sqlalchemy import func, select

from gateway.models import Job, Message
from tests.conftest import GATEWAY_ADDRESS, GatewayFactory, Harness
from tests.support.mail_factory import request_body, signed_request_mail, unsigned_mail
from tests.support.officer_keys import OfficerKeyring, TestKey


async def test_unknown_recipient_is_refused_at_rcpt(gateway: Harness) -> None:
    code, text = await gateway.send(b"Subject: hi\r\n\r\nhello\r\n", rcpt="someone@gateway.test")
    assert code == 550
    assert "no such mailbox" in text


async def test_extra_accepted_address(make_gateway: GatewayFactory) -> None:
    harness = await make_gateway(**{"gateway.accept_addresses": "legal@gateway.test"})
    code, _ = await harness.send(b"Subject: hi\r\n\r\nhello\r\n", rcpt="LEGAL@gateway.test")
    assert code == 250


async def test_oversized_message_is_refused_and_not_stored(make_gateway: GatewayFactory) -> None:
    harness = await make_gateway(**{"smtp.max_message_bytes": "4096"})
    code, _ = await harness.send(b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 100)
    assert code == 552
    async with harness.core.db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Message)) == 0


@pytest.mark.sqlite_only  # breaks the SQLite file underneath the gateway
async def test_storage_failure_answers_451_and_a_retry_succeeds(
        gateway: Harness, alice: TestKey) -> None:
    mail = signed_request_mail(gateway.ring, alice, from_addr=alice.email, body=request_body())
    database = gateway.settings.data_dir / "lers.db"

    def execute(statement: str) -> None:  # in a thread: the gateway shares this event loop
        with sqlite3.connect(database, timeout=30) as conn:
            conn.execute(statement)

    await asyncio.to_thread(execute, "ALTER TABLE messages RENAME TO messages_away")
    code, text = await gateway.send(mail)
    assert code == 451
    assert "try again later" in text
    await asyncio.to_thread(execute, "ALTER TABLE messages_away RENAME TO messages")
    code, _ = await gateway.send(mail)  # the sending server retries, as SMTP servers do
    assert code == 250
    await gateway.settle()
    assert len(await gateway.requests()) == 1


async def test_same_bytes_twice_are_stored_and_processed_once(gateway: Harness, alice: TestKey) -> None:
    mail = signed_request_mail(gateway.ring, alice, from_addr=alice.email, body=request_body())
    assert (await gateway.send(mail))[0] == 250
    assert (await gateway.send(mail))[0] == 250  # e.g. our 250 was lost and the sender retried
    await gateway.settle()
    assert len(await gateway.requests()) == 1
    assert len(gateway.replies(to=alice.email)) == 1
    async with gateway.core.db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Job).where(Job.kind == "inbound")) == 1


async def test_message_is_committed_before_250(gateway: Harness) -> None:
    """The row exists, raw bytes intact, as soon as the client has its 250."""
    raw = unsigned_mail(from_addr="x@example.org", body="hello").rstrip(b"\r\n") + b"\r\n"
    await gateway.stop_workers()  # nothing but ingest may touch the message
    code, text = await gateway.send(raw)
    assert code == 250
    message_id = int(text.rsplit(" ", 1)[1])
    stored = await gateway.message(message_id)
    assert stored.raw == raw
    assert stored.state == "received"


async def test_rate_limits_ask_senders_to_retry_later(make_gateway: GatewayFactory) -> None:
    harness = await make_gateway(**{"smtp.max_messages_per_minute_per_sender": "3",
                                    "smtp.max_messages_per_minute_per_client": "5"})
    mail = b"Subject: hi\r\n\r\nhello\r\n"
    codes = [(await harness.send(mail + str(n).encode(), mail_from="a@example.org"))[0] for n in range(4)]
    assert codes == [250, 250, 250, 451]
    other = [(await harness.send(mail + b"x" + str(n).encode(), mail_from="b@example.org"))[0]
             for n in range(3)]
    # the client's own limit (5 a minute) counts every attempt, the refused one too
    assert other == [250, 451, 451]
    async with harness.core.db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Message)) == 4


async def test_a_flood_in_an_officers_name_leaves_their_own_mail_through(
        make_gateway: GatewayFactory, officer_ring: OfficerKeyring, alice: TestKey) -> None:
    """The envelope sender is anyone's to claim: mail that does not look signed by a key we hold
    is limited by its sender, the officer's own signed mail is not, even while forged mail in
    their name is over the limit (its client's limit still applies to everyone)."""
    harness = await make_gateway(**{"smtp.max_messages_per_minute_per_sender": "3",
                                    "smtp.max_messages_per_minute_per_client": "100"})
    await harness.enrol(alice)
    forged = [(await harness.send(unsigned_mail(from_addr=alice.email, body=f"forged {n}"),
                                  mail_from=alice.email))[0] for n in range(5)]
    assert forged == [250, 250, 250, 451, 451]
    for n in range(4):
        real = signed_request_mail(officer_ring, alice, from_addr=alice.email,
                                   body=request_body(type="preservation", case_number=f"REAL-{n}"))
        code, _ = await harness.send(real, mail_from=alice.email)
        assert code == 250, n
    async with harness.core.db.transaction() as session:
        stored = select(func.count()).select_from(Message).where(Message.direction == "inbound")
        assert await session.scalar(stored) == 3 + 4


async def test_a_line_that_never_ends_is_drained_not_held(gateway: Harness) -> None:
    """16 MB without a line break: the sender hears 500 after its final dot, and the server
    held none of it (aiosmtpd's own DATA phase keeps the pieces of an over-long line)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)

    async def say(line: bytes) -> bytes:
        writer.write(line)
        await writer.drain()
        while True:
            reply = await asyncio.wait_for(reader.readline(), 20)
            if reply[3:4] != b"-":
                return reply

    tracemalloc.start()
    try:
        await asyncio.wait_for(reader.readline(), 20)  # greeting
        for command in (b"EHLO police.test\r\n", b"MAIL FROM:<x@police.test>\r\n",
                        f"RCPT TO:<{GATEWAY_ADDRESS}>\r\n".encode()):
            assert (await say(command))[:1] == b"2"
        assert (await say(b"DATA\r\n"))[:3] == b"354"
        tracemalloc.reset_peak()
        start, _ = tracemalloc.get_traced_memory()
        piece = b"x" * 65536
        for _ in range(256):
            writer.write(piece)
            await writer.drain()
        answer = await say(b"\r\n.\r\n")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        writer.close()
    assert answer.startswith(b"500 Line too long"), answer
    assert peak - start < 4 * 1024 * 1024, f"{(peak - start) / 1e6:.1f} MB held for a 16 MB line"
    async with gateway.core.db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Message)) == 0
