"""The README's "Try it" works: `make demo` against a running gateway prints the decrypted,
gateway-signed acknowledgement."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import short_tempdir
from tests.test_crash_recovery import REPO, GatewayProcess, free_port


async def test_the_demo_prints_the_acknowledgement() -> None:
    home = short_tempdir("demo-")
    config = home / "config.toml"
    smtp_port, smarthost_port = free_port(), free_port()
    config.write_text(f'[gateway]\naddress = "lers@localhost"\ndata_dir = "data"\n'
                      f"[smtp]\nport = {smtp_port}\n[outbound]\nport = {smarthost_port}\n"
                      "first_retry_seconds = 0.5\n[worker]\npoll_seconds = 0.05\n")
    gateway = GatewayProcess(config, smtp_port)
    try:
        await gateway.start()
        demo = await asyncio.to_thread(
            subprocess.run, [sys.executable, "examples/send_request.py", "--config", str(config)],
            cwd=REPO, capture_output=True, text=True, timeout=90, check=False)
        assert demo.returncode == 0, demo.stderr
        assert "Subject: [LERS-" in demo.stdout and "] Request received" in demo.stdout
        assert "Signed by the gateway key: True" in demo.stdout
        assert "Case number:      DEMO-2026-001" in demo.stdout
        ref = demo.stdout.split("Subject: [", 1)[1].split("]", 1)[0]

        # the README's walk-through goes on without Telegram: a reviewer acts from the terminal
        lers = [sys.executable, "-m", "gateway", "--config", str(config)]
        added = await asyncio.to_thread(subprocess.run, [*lers, "reviewer", "add", "1001", "--name", "Anna",
                                                         "--role", "approver"],
                                        cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
        assert added.returncode == 0, added.stderr
        listener = await asyncio.to_thread(
            subprocess.Popen, [sys.executable, "examples/send_request.py", "--config", str(config),
                               "--listen", "60", "--count", "1"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert listener.stdout is not None
        assert "listening on" in await asyncio.to_thread(listener.stdout.readline)
        approved = await asyncio.to_thread(subprocess.run, [*lers, "review", "--as", "1001", "/approve", ref],
                                           cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
        assert approved.returncode == 0 and f"{ref} approved" in approved.stdout, approved.stderr
        out, err = await asyncio.to_thread(listener.communicate, timeout=90)
        assert listener.returncode == 0, err
        assert f"Subject: [{ref}] Request approved" in out and "The data is preserved until" in out
    finally:
        await asyncio.to_thread(gateway.stop)
        await asyncio.to_thread(cleanup, home)


def cleanup(home: Path) -> None:
    for keyring in ("gnupg", "demo-officer"):
        subprocess.run(["gpgconf", "--homedir", str(home / "data" / keyring), "--kill", "gpg-agent"],
                       capture_output=True, check=False)
    shutil.rmtree(home, ignore_errors=True)
