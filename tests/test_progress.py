"""Long operator commands show progress in a terminal and print nothing extra into a pipe.

Each command runs as a real process: once with pipes (what cron, scripts and `| tee` give it),
once on a pseudo-terminal (what an operator at a shell gives it)."""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import struct
import subprocess
import sys
import termios
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import short_tempdir
from tests.support.dovecot import Dovecot
from tests.test_cli import REPO, lers
from tests.test_imap import dovecot, mail  # noqa: F401 (the Dovecot fixture)

BAR_BYTES = ("\r", "\x1b[", "%|")  # what a drawn tqdm bar is made of


def in_terminal(cwd: Path, *args: str) -> tuple[int, str]:
    """Run `lers ARGS` with stdin, stdout and stderr on a pseudo-terminal; (status, all output)."""
    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24x100 characters
    process = subprocess.Popen([sys.executable, "-m", "gateway", *args], cwd=cwd, stdin=follower,
                               stdout=follower, stderr=follower,
                               env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "100"})
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    return process.wait(timeout=60), output.decode("utf-8", errors="replace")


def assert_quiet(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert not any(token in result.stdout for token in BAR_BYTES), result.stdout


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = short_tempdir("progress-")
    (path / "config.toml").write_text('[gateway]\naddress = "lers@gateway.test"\n')
    assert lers(path, "init").returncode == 0
    yield path
    subprocess.run(["gpgconf", "--homedir", str(path / "data" / "gnupg"), "--kill", "gpg-agent"],
                   capture_output=True, check=False)
    import shutil
    shutil.rmtree(path, ignore_errors=True)


def many_rows(database: Path, count: int) -> None:
    """Rows enough for several batches of `lers db copy` (reference counters: no foreign keys)."""
    with sqlite3.connect(database) as db:
        db.executemany("INSERT INTO ref_counters (year, last) VALUES (?, 0)",
                       [(3000 + n,) for n in range(count)])


def test_db_copy_draws_progress_only_in_a_terminal(workdir: Path) -> None:
    source = workdir / "data" / "lers.db"
    many_rows(source, 1200)
    piped = lers(workdir, "db", "copy", "--from", f"sqlite+aiosqlite:///{source}",
                 "--to", f"sqlite+aiosqlite:///{workdir / 'piped.db'}")
    assert_quiet(piped)
    assert "ref_counters           1200 rows" in piped.stdout

    status, shown = in_terminal(workdir, "db", "copy", "--from", f"sqlite+aiosqlite:///{source}",
                                "--to", f"sqlite+aiosqlite:///{workdir / 'shown.db'}")
    assert status == 0, shown
    assert "copying" in shown and "100%" in shown and "\r" in shown
    total = sum(int(line.split()[1]) for line in piped.stdout.splitlines() if line.endswith(" rows"))
    assert f"{total}/{total}" in shown
    assert "ref_counters           1200 rows" in shown  # the result lines are the same


def test_backup_draws_progress_only_in_a_terminal(workdir: Path) -> None:
    many_rows(workdir / "data" / "lers.db", 3000)
    secret = workdir / "passphrase"
    secret.write_text("correct horse battery staple\n")
    piped = lers(workdir, "backup", str(workdir / "piped.backup"), "--passphrase-file", str(secret))
    assert_quiet(piped)
    assert piped.stdout.startswith("backup written:")

    status, shown = in_terminal(workdir, "backup", str(workdir / "shown.backup"),
                                "--passphrase-file", str(secret))
    assert status == 0, shown
    assert "backing up" in shown and "100%" in shown and "encrypting" in shown
    assert "backup written:" in shown


def imap_config(server: Dovecot) -> str:
    return ('[gateway]\naddress = "lers@gateway.test"\n\n[[imap]]\nname = "provider"\n'
            f'host = "127.0.0.1"\nport = {server.port}\ntls = "none"\nusername = {json.dumps(server.user)}\n'
            f'password = {json.dumps(server.password)}\nbatch_size = 25\n')


async def test_first_imap_import_draws_progress_only_in_a_terminal(
        workdir: Path, dovecot: Dovecot) -> None:  # noqa: F811
    import asyncio
    (workdir / "config.toml").write_text(imap_config(dovecot))
    await dovecot.append(mail(n) for n in range(120))
    piped = await asyncio.to_thread(lers, workdir, "imap", "import")
    assert_quiet(piped)
    assert piped.stdout.strip().startswith("provider: 120 new message(s) stored")

    await dovecot.append(mail(n) for n in range(120, 180))
    status, shown = await asyncio.to_thread(in_terminal, workdir, "imap", "import", "provider")
    assert status == 0, shown
    assert "provider" in shown and "60/60" in shown and "100%" in shown
    assert "provider: 60 new message(s) stored" in shown
