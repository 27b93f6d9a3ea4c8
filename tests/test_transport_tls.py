"""TLS on both sides: STARTTLS offered (and required) at SMTP ingress with a configured
certificate; replies to the smarthost over verified TLS; plain text refused where it must be."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path

import aiosmtplib
import pytest
from aiosmtpd.smtp import SMTP

from gateway.config import ConfigError, load_settings
from tests.conftest import GATEWAY_ADDRESS, GatewayFactory, SinkHandler, short_tempdir
from tests.support.certificates import make_certificate
from tests.support.mail_factory import request_body, signed_request_mail
from tests.support.officer_keys import TestKey


@pytest.fixture
def certificate() -> Iterator[tuple[Path, Path]]:
    directory = short_tempdir("tls-")
    yield make_certificate(directory / "certs")


async def test_starttls_is_offered_and_can_be_required(
        make_gateway: GatewayFactory, certificate: tuple[Path, Path], alice: TestKey) -> None:
    cert, key = certificate
    harness = await make_gateway(**{"smtp.tls_cert_file": str(cert), "smtp.tls_key_file": str(key),
                                    "smtp.require_tls": "true"})
    await harness.enrol(alice)
    mail = signed_request_mail(harness.ring, alice, from_addr=alice.email,
                               body=request_body(type="preservation"))
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=harness.port, start_tls=False,
                               timeout=20) as plain:
        await plain.ehlo()
        assert plain.supports_extension("starttls")
        with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
            await plain.sendmail(alice.email, [GATEWAY_ADDRESS], mail)
    assert refused.value.code == 530
    client_context = ssl.create_default_context(cafile=str(cert))
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=harness.port, start_tls=True,
                               tls_context=client_context, timeout=20) as client:
        errors, response = await client.sendmail(alice.email, [GATEWAY_ADDRESS], mail)
    assert not errors and response.startswith("2.0.0 Stored")
    await harness.settle()
    assert len(await harness.requests()) == 1


async def test_replies_go_to_the_smarthost_over_verified_tls(
        make_gateway: GatewayFactory, certificate: tuple[Path, Path], alice: TestKey) -> None:
    cert, key = certificate
    smarthost_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    smarthost_context.load_cert_chain(cert, key)
    sink = SinkHandler()
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(sink, tls_context=smarthost_context, require_starttls=True), "127.0.0.1", 0)
    try:
        harness = await make_gateway(**{"outbound.port": str(server.sockets[0].getsockname()[1]),
                                        "outbound.tls": "starttls", "outbound.ca_file": str(cert)})
        await harness.enrol(alice)
        await harness.send(signed_request_mail(harness.ring, alice, from_addr=alice.email,
                                               body=request_body(type="preservation")))
        await harness.settle()
        assert len(sink.received) == 1
    finally:
        server.close()


def test_plain_text_to_a_remote_smarthost_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"outbound\.tls: none is allowed only for a smarthost on loopback"):
        load_settings(None, {"outbound.host": "smtp.provider.example"}, environ={})
    settings = load_settings(None, {"outbound.host": "smtp.provider.example", "outbound.tls": "starttls"},
                             environ={})
    assert settings.outbound.tls == "starttls"
    with pytest.raises(ConfigError, match=r"smtp\.require_tls: needs smtp\.tls_cert_file"):
        load_settings(None, {"smtp.require_tls": "true"}, environ={})
