"""SIGKILL the gateway while mail flows: every 250 is processed exactly once after restart, and
every reply that was waiting in the outbox is still sent."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiosmtplib
import pytest
from aiosmtpd.smtp import SMTP

from tests.conftest import GATEWAY_ADDRESS, SinkHandler, short_tempdir
from tests.support.mail_factory import request_body, signed_request_mail
from tests.support.officer_keys import OfficerKeyring, TestKey

REPO = Path(__file__).resolve().parent.parent
MESSAGES = 40


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GatewayProcess:
    """`python run.py --config FILE`, as an operator runs it."""

    def __init__(self, config: Path, port: int) -> None:
        self.config = config
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    def lers(self, *args: str) -> str:
        result = subprocess.run([sys.executable, "-m", "gateway", "--config", str(self.config), *args],
                                capture_output=True, cwd=REPO, timeout=60, check=False)
        assert result.returncode == 0, result.stderr.decode()
        return result.stdout.decode()

    def spawn(self) -> subprocess.Popen[bytes]:
        with open(self.config.parent / "serve.log", "ab") as log:
            return subprocess.Popen([sys.executable, "run.py", "--config", str(self.config)],
                                    cwd=REPO, stdout=log, stderr=log)

    async def start(self) -> None:
        self.process = await asyncio.to_thread(self.spawn)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            except OSError:
                assert self.process.poll() is None, (self.config.parent / "serve.log").read_text()
                await asyncio.sleep(0.05)
        raise AssertionError("gateway did not start listening")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)


@pytest.fixture
async def deployed(officer_ring: OfficerKeyring,
                   alice: TestKey) -> AsyncIterator[tuple[GatewayProcess, SinkHandler]]:
    home = short_tempdir("crash-")
    sink = SinkHandler()
    sink_server = await asyncio.get_running_loop().create_server(lambda: SMTP(sink), "127.0.0.1", 0)
    port = free_port()
    config = home / "config.toml"
    config.write_text(f"""
[gateway]
address = "{GATEWAY_ADDRESS}"
data_dir = "data"
[smtp]
port = {port}
[outbound]
port = {sink_server.sockets[0].getsockname()[1]}
first_retry_seconds = 0.2
max_retry_seconds = 0.5
[worker]
poll_seconds = 0.05
lease_seconds = 5
""")
    (home / "alice.asc").write_bytes(alice.public_armored)
    gateway = GatewayProcess(config, port)
    gateway.lers("agency", "add", "Test Police", "--domain", "police.test")
    gateway.lers("officer", "add", alice.email, "--agency", "Test Police", "--key", str(home / "alice.asc"))
    officer_ring.import_key(gateway.lers("key", "export").encode())
    yield gateway, sink
    await asyncio.to_thread(gateway.stop)
    sink_server.close()
    await asyncio.to_thread(cleanup, home)


def cleanup(home: Path) -> None:
    subprocess.run(["gpgconf", "--homedir", str(home / "data" / "gnupg"), "--kill", "gpg-agent"],
                   check=False, capture_output=True)
    shutil.rmtree(home, ignore_errors=True)


async def deliver(port: int, mail: bytes) -> bool:
    """True only if the gateway answered 250 to DATA."""
    try:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10) as client:
            response = await client.sendmail("alice@police.test", [GATEWAY_ADDRESS], mail)
            return not response[0]
    except (aiosmtplib.SMTPException, OSError):
        return False


async def test_sigkill_mid_flow_loses_and_doubles_nothing(
        deployed: tuple[GatewayProcess, SinkHandler], officer_ring: OfficerKeyring,
        alice: TestKey) -> None:
    gateway, sink = deployed
    mails = {
        f"CASE-{i:03d}": signed_request_mail(
            officer_ring, alice, from_addr=alice.email,
            body=request_body(type="preservation", case_number=f"CASE-{i:03d}"))
        for i in range(MESSAGES)
    }
    sink.refuse = True  # replies pile up in the outbox, so the kill finds some waiting
    await gateway.start()
    accepted: set[str] = set()
    queue = list(mails.items())
    half_way = asyncio.Event()

    async def sender() -> None:
        while queue:
            case, mail = queue.pop(0)
            if await deliver(gateway.port, mail):
                accepted.add(case)
                if len(accepted) >= MESSAGES // 2:
                    half_way.set()

    senders = [asyncio.create_task(sender()) for _ in range(4)]
    await asyncio.wait_for(half_way.wait(), timeout=60)
    await asyncio.to_thread(gateway.kill)
    await asyncio.gather(*senders)
    assert MESSAGES // 2 <= len(accepted) < MESSAGES, "the kill should land mid-flow"

    sink.refuse = False
    await gateway.start()
    for case, mail in mails.items():  # the senders whose mail was not taken try again
        if case not in accepted and await deliver(gateway.port, mail):
            accepted.add(case)
    assert accepted == set(mails)

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        requests = json.loads(await asyncio.to_thread(gateway.lers, "requests", "list", "--json"))
        acknowledged = {m.group(0) for e in sink.received
                        for m in [re.search(rb"LERS-\d{4}-\d{6}", e.original_content or b"")] if m}
        if len(requests) >= MESSAGES and {r["ref"].encode() for r in requests} <= acknowledged:
            break
        await asyncio.sleep(0.2)
    cases = [r["case_number"] for r in requests]
    assert sorted(cases) == sorted(mails), "each accepted message became exactly one request"
    assert {r["ref"].encode() for r in requests} <= acknowledged, "every queued reply was sent"
    assert "audit chain OK" in await asyncio.to_thread(gateway.lers, "audit", "verify")
