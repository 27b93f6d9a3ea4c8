"""A suspension that lands after rule 3 passed the officer, while gpg and PDF text still run,
stops the message in its write transaction (handlers/chain.py `still_active`): on the Core fast
path (`record_new_request`) and on the general path (`route`) alike, for the officer and for the
agency. Nothing of the run is recorded; the job runs again, and rule 3 then refuses it."""

from __future__ import annotations

from functools import partial

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import defer

from gateway.models import Message, Officer, Outbox, Request
from handlers.chain import SuspendedMeanwhile, evaluate
from handlers.inbound import plain_new_request, route
from handlers.intake import record_new_request
from handlers.officers import suspend_agency, suspend_officer
from tests.conftest import GatewayFactory, Harness
from tests.support.mail_factory import request_body, signed_request_mail
from tests.support.officer_keys import TestKey
from tests.test_new_request_paths import claim_inbound, idle_gateway


async def passed_rule_3_then_suspended(harness: Harness, alice: TestKey, whom: str) -> tuple:
    """Deliver and evaluate a request (rule 3 passes), then suspend the officer or the agency."""
    mail = signed_request_mail(harness.ring, alice, from_addr=alice.email, body=request_body())
    assert (await harness.send(mail))[0] == 250
    job = await claim_inbound(harness)
    stored = harness.gateway.preloaded.take(job.message_id)
    assert stored is not None and job.message_id is not None
    ctx = harness.gateway.ctx
    evaluation = await evaluate(ctx, stored.raw, stored.received_at, job.message_id, stored.transport)
    assert evaluation.accepted and evaluation.officer is not None
    if whom == "officer":
        await suspend_officer(harness.core.db, alice.email, "compromised mailbox", "operator")
    else:
        await suspend_agency(harness.core.db, evaluation.officer.agency.name, "under review", "operator")
    return job, stored, evaluation


async def nothing_recorded(harness: Harness) -> None:
    async with harness.core.db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Request)) == 0
        assert (await session.scalars(select(Outbox.kind))).all() == []
        assert (await session.scalars(select(Message.state).where(Message.direction == "inbound"))).all() \
            == ["received"]


@pytest.mark.parametrize("whom", ["officer", "agency"])
async def test_fast_path(make_gateway: GatewayFactory, alice: TestKey, whom: str) -> None:
    harness = await idle_gateway(make_gateway, alice)
    job, stored, evaluation = await passed_rule_3_then_suspended(harness, alice, whom)
    form = plain_new_request(harness.settings, evaluation, [], stored.transport)
    assert form is not None
    message = Message(id=job.message_id, received_at=stored.received_at, transport=stored.transport,
                      header_message_id=stored.header_message_id)
    with pytest.raises(SuspendedMeanwhile):
        await harness.core.db.write_sync(partial(
            record_new_request, settings=harness.settings, message=message, officer=evaluation.officer,
            evaluation=evaluation, form=form, documents=[], job_id=job.id))
    await nothing_recorded(harness)


@pytest.mark.parametrize("whom", ["officer", "agency"])
async def test_general_path(make_gateway: GatewayFactory, alice: TestKey, whom: str) -> None:
    harness = await idle_gateway(make_gateway, alice)
    job, _, evaluation = await passed_rule_3_then_suspended(harness, alice, whom)
    with pytest.raises(SuspendedMeanwhile):
        async with harness.core.db.transaction() as session:
            message = await session.get(Message, job.message_id, options=[defer(Message.raw)])
            officer = await session.get(Officer, evaluation.officer_id)
            assert message is not None and officer is not None
            message.state = "accepted"  # rolled back with the rest
            await route(session, harness.settings, message, officer, evaluation, [])
    await nothing_recorded(harness)
