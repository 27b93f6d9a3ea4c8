"""An inbound message is handled once, even when its job runs twice at the same time.

A job whose lease runs out while its first run is still going (slow gpg, PDF text) is claimed
again; both runs read the message as "received" when they were claimed, and the replay rule
cannot tell them apart (the replay key is the message's own). Whichever commits second must
find the message taken and change nothing: no second request, reference, acknowledgement or
refusal. Here the second run is simply given the same stale snapshot after the first one
committed, on both the Core fast path and the general ORM path.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from gateway.models import AuditEntry, Job, Outbox, Request
from handlers.inbound import process_inbound
from tests.conftest import GatewayFactory, Harness
from tests.support.mail_factory import Attachment, pdf_bytes, request_body, signed_request_mail
from tests.support.officer_keys import TestKey
from tests.test_new_request_paths import claim_inbound, idle_gateway


async def run_twice(harness: Harness, mail: bytes, at_once: bool) -> None:
    """Deliver `mail`, claim its job, and run the handler twice on what the claim preloaded:
    one run after the other, or both at once (their write transactions then meet)."""
    assert (await harness.send(mail))[0] == 250
    job = await claim_inbound(harness)
    stored = harness.gateway.preloaded.take(job.message_id)
    assert stored is not None and stored.state == "received"
    if at_once:
        await asyncio.gather(*(process_inbound(harness.gateway.ctx, job, stored) for _ in range(2)))
    else:
        await process_inbound(harness.gateway.ctx, job, stored)
        await process_inbound(harness.gateway.ctx, job, stored)


async def counts(harness: Harness) -> dict[str, object]:
    async with harness.core.db.transaction() as session:
        return {
            "requests": await session.scalar(select(func.count()).select_from(Request)),
            "replies": sorted((await session.scalars(select(Outbox.kind))).all()),
            "audit": sorted((await session.scalars(select(AuditEntry.action).where(
                AuditEntry.action.in_(["request.created", "inbound.refused"])))).all()),
            "inbound_jobs": (await session.scalars(select(Job.state).where(Job.kind == "inbound"))).all(),
        }


@pytest.mark.parametrize("at_once", [False, True], ids=["one_after_the_other", "at_once"])
async def test_a_new_request_run_twice_is_recorded_once(make_gateway: GatewayFactory, alice: TestKey,
                                                        at_once: bool) -> None:
    """The fast path (`record_new_request`)."""
    harness = await idle_gateway(make_gateway, alice)
    mail = signed_request_mail(harness.ring, alice, from_addr=alice.email, body=request_body(),
                               attachments=[Attachment("order.pdf", "application/pdf", pdf_bytes("O"))])
    await run_twice(harness, mail, at_once)
    assert await counts(harness) == {"requests": 1, "replies": ["acknowledgement"],
                                     "audit": ["request.created"], "inbound_jobs": ["done"]}


@pytest.mark.parametrize("at_once", [False, True], ids=["one_after_the_other", "at_once"])
async def test_a_refused_form_run_twice_is_refused_once(make_gateway: GatewayFactory, alice: TestKey,
                                                        at_once: bool) -> None:
    """The general path (`route` in an ORM transaction)."""
    harness = await idle_gateway(make_gateway, alice)
    mail = signed_request_mail(harness.ring, alice, from_addr=alice.email,
                               body=request_body(type="not_a_type"))
    await run_twice(harness, mail, at_once)
    assert await counts(harness) == {"requests": 0, "replies": ["form_refused"],
                                     "audit": ["inbound.refused"], "inbound_jobs": ["done"]}
