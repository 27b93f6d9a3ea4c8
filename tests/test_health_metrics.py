"""The operators' endpoint over real HTTP: /metrics parsed as Prometheus parses it, /healthz
naming what fails. The gateway, its SMTP ingress and the smarthost are real, on loopback."""

from __future__ import annotations

import json
from datetime import timedelta

from prometheus_client.parser import text_string_to_metric_families

from gateway import clock
from tests.conftest import GatewayFactory, Harness
from tests.support.mail_factory import request_body, signed_request_mail
from tests.support.officer_keys import TestKey


async def scrape(gateway: Harness) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} from /metrics, through prometheus_client's parser."""
    status, body = await gateway.http_get("/metrics")
    assert status == 200
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(body) for sample in family.samples}


def request_mail(gateway: Harness, officer: TestKey, case: str) -> bytes:
    return signed_request_mail(gateway.ring, officer, from_addr=officer.email,
                               body=request_body(type="preservation", case_number=case))


async def test_metrics_count_what_the_gateway_did(gateway: Harness, alice: TestKey, bob: TestKey) -> None:
    before = await scrape(gateway)
    assert before[("lers_messages_accepted_total", ())] == 0
    assert before[("lers_outbox_depth", ())] == 0
    assert before[("lers_notices_due", ())] == 0

    await gateway.send(request_mail(gateway, alice, "2026-PR-0001"))
    await gateway.send(request_mail(gateway, bob, "2026-PR-0002"))
    await gateway.settle()
    # the counters are topped up from what was appended since the last scrape: each scrape counts
    # every message once, whichever scrapes came before
    between = await scrape(gateway)
    assert between[("lers_messages_received_total", (("transport", "smtp"),))] == 2
    assert between[("lers_messages_accepted_total", ())] == 2
    forged = request_mail(gateway, alice, "2026-PR-0003").replace(b"2026-PR-0003", b"2026-PR-0004")
    await gateway.send(forged)
    await gateway.settle()

    after = await scrape(gateway)
    assert after[("lers_messages_received_total", (("transport", "smtp"),))] == 3
    assert after[("lers_messages_accepted_total", ())] == 2
    assert after[("lers_messages_refused_total", (("reason", "bad_signature"),))] == 1
    assert [k for k in after if k[0] == "lers_messages_refused_total"] == [
        ("lers_messages_refused_total", (("reason", "bad_signature"),))]
    assert after[("lers_requests_open", ())] == 2
    assert after[("lers_jobs", (("kind", "inbound"), ("state", "done")))] == 3
    # two acknowledgements (alice's forged mail earns her a warning too): all sent, none waiting
    assert after[("lers_outbox_messages", (("state", "sent"),))] == len(gateway.sink.received)
    assert after[("lers_outbox_depth", ())] == 0
    assert after[("lers_outbox_oldest_pending_age_seconds", ())] == 0
    # gpg verified each of the three messages in this process
    assert after[("lers_verification_seconds_count", ())] == 3
    assert after[("lers_verification_seconds_bucket", (("le", "+Inf"),))] == 3


async def test_waiting_replies_show_as_outbox_depth_and_age(gateway: Harness, alice: TestKey) -> None:
    gateway.sink.refuse = True  # the smarthost answers 451: the acknowledgement waits
    await gateway.send(request_mail(gateway, alice, "2026-PR-0005"))
    await gateway.settle()
    clock.set_offset(timedelta(minutes=10))
    try:
        metrics = await scrape(gateway)
    finally:
        clock.set_offset(timedelta(0))
    assert metrics[("lers_outbox_depth", ())] == 1
    assert 600 <= metrics[("lers_outbox_oldest_pending_age_seconds", ())] < 660


async def test_healthz_is_200_when_every_part_works(gateway: Harness) -> None:
    status, body = await gateway.http_get("/healthz")
    report = json.loads(body)
    assert status == 200, body
    assert report["status"] == "ok" and report["failing"] == []
    assert set(report["checks"]) == {"database", "gpg", "smarthost"}
    assert gateway.core.gateway_fingerprint in report["checks"]["gpg"]["detail"]


async def test_healthz_is_503_naming_the_smarthost_when_it_is_down(make_gateway: GatewayFactory) -> None:
    harness: Harness = await make_gateway()
    assert (await harness.http_get("/healthz"))[0] == 200
    assert harness.sink_server is not None
    harness.sink_server.close()  # nothing listens on the smarthost's port any more
    await harness.sink_server.wait_closed()
    status, body = await harness.http_get("/healthz")
    report = json.loads(body)
    assert status == 503
    assert report["failing"] == ["smarthost"]
    assert f"127.0.0.1:{harness.settings.outbound.port}" in report["checks"]["smarthost"]["detail"]
    assert report["checks"]["database"]["ok"] and report["checks"]["gpg"]["ok"]

