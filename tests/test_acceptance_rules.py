"""Every acceptance rule of DESIGN.md, one forged or malformed mail each, through real SMTP and
real gpg. The mails come from tests/support/attack_catalog.py; each case names the verdict and
the reason the gateway must give."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
import pytest_asyncio
from sqlalchemy import func, select

from gateway.models import Agency, Officer, Request
from tests.conftest import GatewayRunner, Harness
from tests.support.attack_catalog import CASES, Case, Scenario, make_scenario
from tests.support.officer_keys import OfficerKeyring, TestKey

pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass(frozen=True)
class Outcome:
    code: int
    verdict: str
    reason: str | None
    duplicate_of_prior: bool


async def enrol_as_before(harness: Harness, key: TestKey) -> None:
    """An officer enrolled earlier, whose key has since expired or been revoked: enrolment
    checks would (rightly) refuse the key today, so the records are written as they stood."""
    [fingerprint] = await harness.core.pgp.import_public_key(key.public_armored)
    async with harness.core.db.transaction() as session:
        agency = await session.scalar(select(Agency))
        assert agency is not None
        session.add(Officer(email=key.email, name=key.name, agency_id=agency.id,
                            key_fingerprint=fingerprint))


async def run_catalogue(ring: OfficerKeyring, database_url: Callable[[], str | None], *,
                        inline_allowed: bool) -> dict[str, Outcome]:
    runner = GatewayRunner(ring, database_url)
    try:
        harness = await runner.start(**{
            "policy.allow_inline_pgp": "true" if inline_allowed else "false",
            "policy.impersonation_warning_hours": "0",
        })
        gateway_public = (await harness.core.pgp.export_gateway_public_key()).encode()
        scenario: Scenario = make_scenario(ring, gateway_public, harness.settings.gateway.address)
        for key in (scenario.officer_a, scenario.officer_b, scenario.subkey_officer):
            await harness.enrol(key)
        await enrol_as_before(harness, scenario.expired)
        await enrol_as_before(harness, scenario.revoked)
        await harness.import_key(scenario.revoked_update)
        for key in scenario.gateway_keyring_only:
            await harness.import_key(key.public_armored)

        outcomes: dict[str, Outcome] = {}
        for case in CASES:
            prior_id = None
            if case.prior is not None:
                code, text = await harness.send(case.prior(scenario))
                assert code == 250, text
                prior_id = int(text.rsplit(" ", 1)[1])
                await harness.settle()
            code, text = await harness.send(case.build(scenario))
            message_id = int(text.rsplit(" ", 1)[1]) if code == 250 else None
            await harness.settle()
            if message_id is None:
                outcomes[case.name] = Outcome(code, "refuse", f"smtp {code}", False)
                continue
            message = await harness.message(message_id)
            accepted = message.officer_id is not None and message.reason is None
            outcomes[case.name] = Outcome(code, "accept" if accepted else "refuse", message.reason,
                                          message_id == prior_id)
        async with harness.core.db.transaction() as session:
            requests = await session.scalar(select(func.count()).select_from(Request))
        expected_requests = sum(
            1 for c in CASES if c.expected(inline_allowed=inline_allowed)[0] == "accept"
        ) + sum(1 for c in CASES if c.prior is not None)
        outcomes["_requests"] = Outcome(0, "", str(requests), False)
        outcomes["_expected_requests"] = Outcome(0, "", str(expected_requests), False)
        return outcomes
    finally:
        await runner.stop_all()


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=[False, True],
                        ids=["pgp-mime-only", "inline-allowed"])
async def outcomes(request: pytest.FixtureRequest, officer_ring: OfficerKeyring,
                   database_urls: Callable[[], str | None]) -> AsyncIterator[tuple[bool, dict[str, Outcome]]]:
    inline_allowed = request.param
    yield inline_allowed, await run_catalogue(officer_ring, database_urls, inline_allowed=inline_allowed)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_case_verdict(outcomes: tuple[bool, dict[str, Outcome]], case: Case) -> None:
    inline_allowed, results = outcomes
    verdict, reason = case.expected(inline_allowed=inline_allowed)
    outcome = results[case.name]
    if case.name == "replay_identical":
        # the very same bytes again is a retransmission: stored once, processed once, answered once
        assert outcome.duplicate_of_prior and outcome.verdict == "accept"
        return
    assert (outcome.verdict, outcome.reason) == (verdict, reason), case.note


async def test_only_accepted_mail_became_requests(outcomes: tuple[bool, dict[str, Outcome]]) -> None:
    _, results = outcomes
    # each accepted case and each replay's original made one request; no replay made another
    assert int(results["_requests"].reason or 0) == int(results["_expected_requests"].reason or 0)
