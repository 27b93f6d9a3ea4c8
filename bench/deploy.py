"""Gateways and the bare baseline server, each started as its own process the way an operator does.

A template data dir (schema, gateway key, enrolled officer) is made once with the `lers` CLI; every
measurement then gets a fresh copy of it, so each starts from an empty queue and a fresh process
(idle memory, high-water mark) without paying for key generation and enrolment again. PostgreSQL
deployments get a new database filled from the template with `lers db copy`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import typing
from pathlib import Path

from bench.mails import AGENCY, AGENCY_DOMAIN, GATEWAY_ADDRESS, OFFICER_NAME
from gateway.config import Settings
from tests.support.officer_keys import GPGCONF, TestKey

REPO = Path(__file__).resolve().parent.parent
GPG_THREADS = 2  # the gateway's default [worker] gpg_threads; the floor's pool has the same size
START_TIMEOUT = 60.0
CLI_TIMEOUT = 120.0


class BenchError(RuntimeError):
    """Something the benchmark depends on did not work; the message says what."""


def short_dir(prefix: str) -> Path:
    """gpg-agent's socket path must stay short: directly under /tmp, not a deep temp path."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kill_agent(home: Path) -> None:
    """Each keyring used starts its own gpg-agent, which would outlive the benchmark."""
    if home.exists():
        subprocess.run([GPGCONF, "--homedir", str(home), "--kill", "gpg-agent"],
                       capture_output=True, timeout=30, check=False)


def copy_keyring(source: Path, target: Path) -> None:
    """A keyring copy without the agent's sockets and lock files of the original."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("S.*", "*.lock", ".#*"))
    target.chmod(0o700)


def wait_listening(port: int, process: subprocess.Popen[bytes], log: Path | None,
                   timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise BenchError(f"process exited with {process.returncode} before listening\n{tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f} s")


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float = 30.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def known_keys(section: str) -> set[str]:
    """The keys this checkout's gateway has in a config section (an unknown key stops the gateway)."""
    return {f.name for f in dataclasses.fields(typing.get_type_hints(Settings)[section])}


def config_text(*, smtp_port: int, sink_port: int, database_url: str, max_message_bytes: int,
                telegram: dict[str, object] | None = None) -> str:
    """The measured gateway's config: the defaults, except what a benchmark on loopback must change
    (and, for the reviewer path, the stand-in Bot API's address)."""
    sections: dict[str, dict[str, object]] = {
        "gateway": {"address": GATEWAY_ADDRESS, "data_dir": "data"},
        "smtp": {"host": "127.0.0.1", "port": smtp_port, "max_message_bytes": max_message_bytes},
        "outbound": {"host": "127.0.0.1", "port": sink_port, "timeout_seconds": 30,
                     "first_retry_seconds": 0.5, "max_retry_seconds": 2},
        "storage": {"url": database_url},
        # the mails are signed once, before all runs
        "policy": {"max_signature_age_hours": 0},
        "worker": {"gpg_threads": GPG_THREADS, "poll_seconds": 0.05},
    }
    if telegram:
        sections["telegram"] = {"enabled": True, "token": telegram["token"], "base_url": telegram["base_url"],
                                "base_file_url": telegram["base_file_url"], "poll_timeout_seconds": 1}
    optional: dict[str, dict[str, object]] = {
        # all load comes from 127.0.0.1 with one envelope sender: the abuse limits would measure themselves
        "smtp": {"max_messages_per_minute_per_client": 0, "max_messages_per_minute_per_sender": 0},
        # the memory item sends a 25 MB attachment, whatever the default limit on documents
        "policy": {"max_attachment_bytes": max_message_bytes},
    }
    for section, values in optional.items():
        known = known_keys(section)
        sections[section].update({key: value for key, value in values.items() if key in known})
    lines = ["# Written by bench/deploy.py for one measurement."]
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def lers(config: Path, *args: str) -> str:
    """The operator's CLI, as the README documents it."""
    result = subprocess.run([sys.executable, "-m", "gateway", "--config", str(config), *args],
                            capture_output=True, cwd=REPO, timeout=CLI_TIMEOUT, check=False)
    if result.returncode != 0:
        raise BenchError(f"lers {' '.join(args)}: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout.decode()


class Template:
    """Schema, gateway key and one enrolled officer, made once with `lers agency/officer add`."""

    def __init__(self, officer: TestKey, max_message_bytes: int) -> None:
        self.home = short_dir("lbt-")
        self.max_message_bytes = max_message_bytes
        config = self.home / "config.toml"
        config.write_text(config_text(smtp_port=free_port(), sink_port=9, database_url="",
                                      max_message_bytes=max_message_bytes))
        key_file = self.home / "officer.asc"
        key_file.write_bytes(officer.public_armored)
        try:
            lers(config, "agency", "add", AGENCY, "--domain", AGENCY_DOMAIN)
            lers(config, "officer", "add", officer.email, "--agency", AGENCY, "--key", str(key_file),
                 "--name", OFFICER_NAME)
        except BaseException:
            self.cleanup()
            raise
        kill_agent(self.gnupg)

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def gnupg(self) -> Path:
        return self.data / "gnupg"

    def cleanup(self) -> None:
        kill_agent(self.gnupg)
        shutil.rmtree(self.home, ignore_errors=True)


class Deployment:
    """One gateway process with its own config, data dir (a copy of the template) and database."""

    def __init__(self, template: Template, sink_port: int, database_url: str | None,
                 telegram: dict[str, object] | None = None) -> None:
        self.home = short_dir("lb-")
        self.port = free_port()
        self.config = self.home / "config.toml"
        self.log = self.home / "serve.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.config.write_text(config_text(smtp_port=self.port, sink_port=sink_port,
                                           database_url=database_url or "",
                                           max_message_bytes=template.max_message_bytes, telegram=telegram))
        data = self.home / "data"
        try:
            data.mkdir(mode=0o700)
            copy_keyring(template.gnupg, data / "gnupg")
            if database_url is None:
                for db_file in template.data.glob("lers.db*"):
                    shutil.copy2(db_file, data / db_file.name)
            else:
                lers(self.config, "db", "copy", "--from",
                     f"sqlite+aiosqlite:///{template.data / 'lers.db'}", "--to", database_url)
            if telegram:
                lers(self.config, "reviewer", "add", str(telegram["user"]), "--name", "Bench Reviewer",
                     "--role", "approver")
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        if self.process is None:
            raise BenchError("the gateway is not running")
        return self.process.pid

    def start(self, roles: str | None = None) -> None:
        """`python run.py --config FILE [--roles ...]`; returns once it accepts connections."""
        command = [sys.executable, "run.py", "--config", str(self.config)]
        profile_dir = os.environ.get("LERS_BENCH_PROFILE")
        if profile_dir:  # a cProfile of the gateway's main thread (the event loop), written at exit
            out = Path(profile_dir) / f"gateway-{roles or 'all'}-{self.port}.prof"
            command[1:1] = ["-m", "cProfile", "-o", str(out)]
        if roles:
            command += ["--roles", roles]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=log)
        wait_listening(self.port, self.process, self.log)

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise BenchError(f"the gateway exited with {self.process.returncode}\n{tail}")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self) -> None:
        try:
            stop_process(self.process)
        finally:
            kill_agent(self.home / "data" / "gnupg")
            shutil.rmtree(self.home, ignore_errors=True)


class BareServer:
    """aiosmtpd answering 250 to everything and storing nothing (bench/bare.py), in its own process."""

    def __init__(self, max_message_bytes: int) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.bare", "--port", str(self.port),
             "--max-message-bytes", str(max_message_bytes)],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_listening(self.port, self.process, None)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        stop_process(self.process)
