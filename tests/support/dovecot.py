"""A real Dovecot IMAP server on loopback, for the IMAP poller's tests.

Each server lives in its own temporary directory (mode 0755: Dovecot's auth and mail processes
run as other users and cannot enter pytest's 0700 temp dirs) with its own config file, run
directory, log file, passwd-file and a certificate made at test time by ``openssl``. It listens
on two free loopback ports: plain IMAP (with STARTTLS) and implicit TLS. The mail belongs to
``nobody``, never root: Dovecot refuses to run mail processes as root.

Only the standard library is used on purpose (``imaplib`` for the test's own view of the
mailbox): the support code must not share a code path with the gateway's aioimaplib poller.
Blocking work is offered as coroutines that run in a thread, so a poller running in the test's
event loop is never stalled by the test talking to the server.
"""

from __future__ import annotations

import asyncio
import imaplib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from tests.support.certificates import make_certificate
from tests.support.secrets import secret

DOVECOT_PACKAGE = "dovecot-imapd"
USER = "lers-mailbox"
PASSWORD = secret("s3cret pass\"word")  # a space and a quote: the client must quote it
MAIL_USER = "nobody"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0
STOP_GRACE = 2.0

_CONFIG = """\
# Written by tests/support/dovecot.py for one test run. Dovecot 2.3 syntax.
base_dir = {root}/run
state_dir = {root}/state
instance_name = lers-test-{port}
protocols = imap
listen = 127.0.0.1
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
debug_log_path = {root}/dovecot.log
default_internal_user = dovecot
default_login_user = dovenull
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
mail_location = maildir:~/Maildir
mail_fsync = never
mailbox_idle_check_interval = 1 secs
ssl = yes
ssl_cert = <{root}/tls/cert.pem
ssl_key = <{root}/tls/key.pem
ssl_min_protocol = TLSv1.2
shutdown_clients = yes

passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
namespace inbox {{
  inbox = yes
  separator = /
}}
protocol imap {{
  mail_max_userip_connections = 100
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
"""


def dovecot_binary() -> str:
    """Dovecot's path, or fail (in CI) / skip (elsewhere) with what to install."""
    found = shutil.which("dovecot") or next(
        (p for p in ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot") if os.access(p, os.X_OK)), None)
    problem = None
    if found is None:
        problem = f"Dovecot is not installed (apt-get install -y {DOVECOT_PACKAGE})"
    elif os.geteuid() != 0:
        problem = "the Dovecot tests run the server as root (it switches the mail processes to nobody)"
    elif shutil.which("openssl") is None:
        problem = "openssl is not installed (apt-get install -y openssl)"
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    assert found is not None
    version = subprocess.run([found, "--version"], capture_output=True, text=True, check=False).stdout
    if not version.startswith("2.3."):
        pytest.fail("tests/support/dovecot.py writes a Dovecot 2.3 config; "
                    f"this is Dovecot {version.strip()}")
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Dovecot:
    """One Dovecot instance: start, stop, restart, and a test's view of the mailbox."""

    def __init__(self, root: Path) -> None:
        self.binary = dovecot_binary()
        self.root = root
        self.port = free_port()
        self.tls_port = free_port()
        self.user, self.password = USER, PASSWORD
        mail = pwd.getpwnam(MAIL_USER)
        self.uid, self.gid = mail.pw_uid, mail.pw_gid
        self.process: subprocess.Popen[bytes] | None = None
        for name in ("run", "state", "home", "tls"):
            (root / name).mkdir(mode=0o755, exist_ok=True)
        self.cert_file, _ = make_certificate(root / "tls")
        self.home = root / "home" / USER
        self.home.mkdir(mode=0o700)
        os.chown(self.home, self.uid, self.gid)
        passwd = root / "passwd"
        passwd.write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n", encoding="utf-8")
        passwd.chmod(0o644)
        self.config = root / "dovecot.conf"
        self.config.write_text(_CONFIG.format(root=root, port=self.port, tls_port=self.tls_port,
                                              uid=self.uid, gid=self.gid), encoding="utf-8")
        self.log = root / "dovecot.log"

    # -- the server -------------------------------------------------------------------

    def start_sync(self) -> None:
        """Start in the foreground and return once the server greets with `* OK`."""
        assert self.process is None, "already running"
        # its own process group, so stop() can end the master and every child it forked
        self.process = subprocess.Popen([self.binary, "-F", "-c", str(self.config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                stderr = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                self.process = None
                raise RuntimeError(f"dovecot exited at start: {stderr.strip()}\n{self.log_text()}")
            if self._greets():
                return
            time.sleep(0.05)
        self.stop_sync()
        raise RuntimeError(f"dovecot did not greet within {START_TIMEOUT}s\n{self.log_text()}")

    def _greets(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as conn:
                return conn.makefile("rb").readline().startswith(b"* OK")
        except OSError:
            return False

    def stop_sync(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM the master and every child, as `systemctl stop` does (the whole cgroup); SIGKILL
        whatever is left after `grace` seconds (0: SIGKILL at once, for teardown).

        SIGTERM to the master alone leaves the logged-in imap processes running, their clients
        still connected: not what a server restart looks like to a client. Each imap process
        answers SIGTERM with `* BYE Server shutting down.` and closes its connection. The master
        itself may wait up to 6 s for its children (Dovecot's SERVICE_DIE_TIMEOUT), hence the
        grace period.
        """
        process, self.process = self.process, None
        if process is None:
            return
        group = process.pid  # start_new_session: the group id is the master's pid
        _signal_group(group, signal.SIGTERM if grace > 0 else signal.SIGKILL)
        try:
            process.wait(timeout=grace if grace > 0 else STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            _signal_group(group, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT)
        deadline = time.monotonic() + grace
        while _group_alive(group):
            if time.monotonic() > deadline:
                _signal_group(group, signal.SIGKILL)
            if time.monotonic() > deadline + STOP_TIMEOUT:
                raise RuntimeError(f"dovecot's processes (group {group}) survived SIGKILL")
            time.sleep(0.02)
        if process.stderr:
            process.stderr.close()
        # every process is gone; make sure nothing listens on our port any more
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline and self._listening():
            time.sleep(0.05)

    def kill_sync(self) -> None:
        self.stop_sync(grace=0)

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    async def start(self) -> None:
        await asyncio.to_thread(self.start_sync)

    async def stop(self) -> None:
        await asyncio.to_thread(self.stop_sync)

    async def kill(self) -> None:
        await asyncio.to_thread(self.kill_sync)

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no dovecot log)"

    # -- the test's own IMAP client -----------------------------------------------------

    @contextmanager
    def session(self) -> Iterator[imaplib.IMAP4]:
        client = imaplib.IMAP4("127.0.0.1", self.port, timeout=30)
        try:
            client.login(self.user, self.password)
            yield client
        finally:
            with suppress(imaplib.IMAP4.error, OSError):
                client.logout()

    def append_sync(self, messages: Iterable[bytes], mailbox: str = "INBOX") -> None:
        """APPEND every message in one session (the way a mail provider delivers)."""
        with self.session() as client:
            for raw in messages:
                status, data = client.append(_quote(mailbox), "", None, raw)
                assert status == "OK", data

    def uids_sync(self, mailbox: str = "INBOX", criteria: str = "ALL",
                  missing_ok: bool = False) -> list[int]:
        with self.session() as client:
            if missing_ok and client.list('""', _quote(mailbox))[1] == [None]:
                return []
            status, data = client.select(_quote(mailbox), readonly=True)
            assert status == "OK", data
            status, data = client.uid("SEARCH", criteria)
            assert status == "OK", data
            return [int(n) for n in (data[0] or b"").split()]

    def uidvalidity_sync(self, mailbox: str = "INBOX") -> int:
        with self.session() as client:
            status, data = client.status(_quote(mailbox), "(UIDVALIDITY)")
            assert status == "OK", data
            match = re.search(rb"UIDVALIDITY (\d+)", data[0] or b"")
            assert match, data
            return int(match.group(1))

    def bodies_sync(self, mailbox: str = "INBOX") -> list[bytes]:
        """Every message's bytes, in UID order (read-only: flags are not touched)."""
        with self.session() as client:
            status, data = client.select(_quote(mailbox), readonly=True)
            assert status == "OK", data
            status, data = client.uid("FETCH", "1:*", "(BODY.PEEK[])")
            assert status == "OK", data
            return [item[1] for item in data if isinstance(item, tuple)]

    def recreate_sync(self, mailbox: str, messages: Iterable[bytes]) -> None:
        """DELETE and CREATE the mailbox (a new UIDVALIDITY), then APPEND the messages unflagged."""
        with self.session() as client:
            status, data = client.delete(_quote(mailbox))
            assert status == "OK", data
            status, data = client.create(_quote(mailbox))
            assert status == "OK", data
            for raw in messages:
                status, data = client.append(_quote(mailbox), "", None, raw)
                assert status == "OK", data

    def create_sync(self, mailbox: str) -> None:
        with self.session() as client:
            status, data = client.create(_quote(mailbox))
            assert status == "OK", data

    async def append(self, messages: Iterable[bytes], mailbox: str = "INBOX") -> None:
        await asyncio.to_thread(self.append_sync, list(messages), mailbox)

    async def uids(self, mailbox: str = "INBOX", criteria: str = "ALL",
                   missing_ok: bool = False) -> list[int]:
        return await asyncio.to_thread(self.uids_sync, mailbox, criteria, missing_ok)

    async def count(self, mailbox: str = "INBOX", criteria: str = "ALL", missing_ok: bool = False) -> int:
        return len(await self.uids(mailbox, criteria, missing_ok))

    async def uidvalidity(self, mailbox: str = "INBOX") -> int:
        return await asyncio.to_thread(self.uidvalidity_sync, mailbox)

    async def bodies(self, mailbox: str = "INBOX") -> list[bytes]:
        return await asyncio.to_thread(self.bodies_sync, mailbox)

    async def recreate(self, mailbox: str, messages: Iterable[bytes]) -> None:
        await asyncio.to_thread(self.recreate_sync, mailbox, list(messages))

    async def create(self, mailbox: str) -> None:
        await asyncio.to_thread(self.create_sync, mailbox)

    # -- bulk delivery ------------------------------------------------------------------

    def deliver_to_maildir(self, messages: Iterable[bytes]) -> int:
        """Drop messages straight into INBOX's maildir (tmp/ then rename into new/), as a local
        delivery agent does: thousands in a fraction of a second, no IMAP round trips."""
        maildir = self.home / "Maildir"
        for sub in ("", "tmp", "new", "cur"):
            path = maildir / sub
            path.mkdir(mode=0o700, exist_ok=True)
            os.chown(path, self.uid, self.gid)
        count = 0
        stamp = int(time.time())
        for index, raw in enumerate(messages):
            name = f"{stamp}.M{index}P{os.getpid()}.lers-test,S={len(raw)}"
            tmp = maildir / "tmp" / name
            tmp.write_bytes(raw)
            os.chown(tmp, self.uid, self.gid)
            tmp.rename(maildir / "new" / name)
            count += 1
        return count


def _signal_group(group: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.killpg(group, sig)


def _group_alive(group: int) -> bool:
    """Whether a process of the group still runs. Zombies do not count: the children outlive the
    master briefly and are reaped by pid 1, which in some containers takes seconds."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 2 and fields[2] == str(group) and fields[0] != "Z":
            return True
    return False


def _quote(mailbox: str) -> str:
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'

