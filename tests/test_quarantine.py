"""The quarantine as an operator uses it: inspect, release for a new judgement, purge by age."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from gateway import clock
from gateway.models import AuditEntry, Message
from handlers.quarantine import QuarantineError, purge, release, show
from tests.conftest import Harness
from tests.support.mail_factory import request_body, signed_request_mail, unsigned_mail
from tests.support.officer_keys import TestKey


@pytest.fixture
def later() -> Iterator[None]:
    clock.set_offset(timedelta(days=91))
    yield
    clock.set_offset(timedelta(0))


async def test_show_gives_the_reason_and_the_raw_bytes(gateway: Harness) -> None:
    raw = unsigned_mail(from_addr="x@example.org", body="hello", subject="Urgent data request")
    _, text = await gateway.send(raw)
    await gateway.settle()
    data, stored = await show(gateway.core.db, int(text.rsplit(" ", 1)[1]))
    assert data["reason"] == "not_signed"
    assert data["unverified_headers"]["Subject"] == "Urgent data request"
    assert stored.rstrip(b"\r\n") == raw.rstrip(b"\r\n")
    with pytest.raises(QuarantineError, match="no quarantined message 999"):
        await show(gateway.core.db, 999)


async def test_release_after_enrolment_accepts_the_request(gateway: Harness) -> None:
    carol = gateway.ring.create_key("carol@police.test", "Carol Officer")
    _, text = await gateway.send(signed_request_mail(gateway.ring, carol, from_addr=carol.email,
                                                        body=request_body(type="preservation")))
    message_id = int(text.rsplit(" ", 1)[1])
    await gateway.settle()
    assert [q["reason"] for q in await gateway.quarantine()] == ["unknown_key"]
    await gateway.enrol(carol)
    await release(gateway.core.db, message_id)
    await gateway.settle()
    assert await gateway.quarantine() == []
    [request] = await gateway.requests()
    assert request["officer"] == carol.email
    assert (await gateway.message(message_id)).state == "accepted"
    with pytest.raises(QuarantineError):
        await release(gateway.core.db, message_id)  # accepted now: nothing to release


async def test_old_refusals_are_purged_by_the_scheduler(
        gateway: Harness, alice: TestKey, later: None) -> None:
    clock.set_offset(timedelta(0))
    await gateway.send(unsigned_mail(from_addr="x@example.org", body="old"))
    await gateway.settle()
    clock.set_offset(timedelta(days=91))
    assert await purge(gateway.core.db, 365) == 0
    assert await gateway.gateway.scheduler.run_once() >= 1  # default retention: 90 days
    async with gateway.core.db.transaction() as session:
        assert (await session.scalars(select(Message).where(Message.state == "quarantined"))).all() == []
        [entry] = (await session.scalars(select(AuditEntry).where(
            AuditEntry.action == "quarantine.purged"))).all()
    assert entry.details["count"] == 1
