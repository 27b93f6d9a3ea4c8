"""The `lers` command as an operator runs it: real processes, real files, one-line errors."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from gateway.db import Database, alembic_config
from tests.conftest import short_tempdir
from tests.support.officer_keys import OfficerKeyring, TestKey

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = short_tempdir("cli-")
    (path / "config.toml").write_text('[gateway]\naddress = "lers@gateway.test"\n')
    yield path
    subprocess.run(["gpgconf", "--homedir", str(path / "data" / "gnupg"), "--kill", "gpg-agent"],
                   capture_output=True, check=False)
    shutil.rmtree(path, ignore_errors=True)


def lers(workdir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m gateway` in `workdir`, where ./config.toml is found by default."""
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=workdir, capture_output=True,
                          text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def assert_one_line_error(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lers: error: "), result.stderr
    for text in expected:
        assert text in lines[0]


def test_init_creates_a_private_data_dir_and_one_key(workdir: Path) -> None:
    first = lers(workdir, "init")
    assert first.returncode == 0, first.stderr
    assert "gateway key (generated):" in first.stdout
    fingerprint = first.stdout.split()[-1]
    second = lers(workdir, "init")
    assert f"gateway key (already present): {fingerprint}" in second.stdout
    mode = stat.S_IMODE((workdir / "data").stat().st_mode)
    assert mode == 0o700
    exported = lers(workdir, "key", "export")
    assert exported.stdout.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert "PRIVATE" not in exported.stdout


def test_config_errors_name_the_key(workdir: Path) -> None:
    (workdir / "config.toml").write_text("[smtp]\nprot = 25\n")
    assert_one_line_error(lers(workdir, "init"), "smtp.prot: unknown key")
    (workdir / "config.toml").write_text("[smtp]\nport = 'twenty-five'\n")
    assert_one_line_error(lers(workdir, "init"), "smtp.port: must be a whole number")
    (workdir / "config.toml").write_text("[policy]\nallow_inline_pgp = true\n")
    assert_one_line_error(lers(workdir, "init", env={"LERS_SMTP__PORT": "99999"}),
                          "smtp.port: must be between 0 and 65535")
    assert_one_line_error(lers(workdir, "--config", str(workdir / "nope.toml"), "init"),
                          "config file not found")
    assert_one_line_error(lers(workdir, "--set", "gateway.address=not-an-address", "init"),
                          "gateway.address: must be an email address")


def test_enrolment_commands(workdir: Path, officer_ring: OfficerKeyring, alice: TestKey) -> None:
    key_file = workdir / "alice.asc"
    key_file.write_bytes(alice.public_armored)
    assert_one_line_error(lers(workdir, "officer", "add", alice.email, "--agency", "Nowhere PD",
                               "--key", str(key_file)), "no agency named 'Nowhere PD'")
    added = lers(workdir, "agency", "add", "Test Police", "--domain", "police.test", "--country", "XX")
    assert added.returncode == 0 and "agency added: Test Police" in added.stdout
    assert_one_line_error(lers(workdir, "agency", "add", "Test Police", "--domain", "police.test"),
                          "already exists")
    assert_one_line_error(lers(workdir, "officer", "add", "carol@police.test", "--agency", "Test Police",
                               "--key", str(key_file)), "has no user ID for carol@police.test")
    assert_one_line_error(lers(workdir, "officer", "add", alice.email, "--agency", "Test Police",
                               "--key", str(workdir / "missing.asc")), "cannot read")
    enrolled = lers(workdir, "officer", "add", alice.email, "--agency", "Test Police",
                    "--key", str(key_file), "--name", "Alice Officer")
    assert enrolled.returncode == 0, enrolled.stderr
    assert alice.fingerprint in enrolled.stdout
    secret = workdir / "secret.asc"
    secret.write_bytes(officer_ring.run("--armor", "--export-secret-keys", alice.fingerprint).stdout)
    assert_one_line_error(lers(workdir, "officer", "add", "x@police.test", "--agency", "Test Police",
                               "--key", str(secret)), "secret key")


def test_listings_and_audit_verify(workdir: Path, alice: TestKey) -> None:
    assert json.loads(lers(workdir, "requests", "list", "--json").stdout) == []
    assert lers(workdir, "requests", "list").stdout.strip() == "no requests"
    assert json.loads(lers(workdir, "quarantine", "list", "--json").stdout) == []
    assert_one_line_error(lers(workdir, "requests", "show", "LERS-2026-999999"),
                          "no request LERS-2026-999999")
    lers(workdir, "agency", "add", "Test Police", "--domain", "police.test")
    lers(workdir, "agency", "add", "Other Police", "--domain", "other.test")
    verified = lers(workdir, "audit", "verify")
    assert verified.returncode == 0 and "audit chain OK: 2 entries" in verified.stdout

    with sqlite3.connect(workdir / "data" / "lers.db") as conn:
        conn.execute("UPDATE audit SET details = '{\"domain\": \"evil.test\"}' WHERE id = 1")
    assert_one_line_error(lers(workdir, "audit", "verify"), "audit chain broken at entry 1",
                          "content does not match its hash")

    with sqlite3.connect(workdir / "data" / "lers.db") as conn:
        conn.execute("DELETE FROM audit WHERE id = 1")
    assert_one_line_error(lers(workdir, "audit", "verify"), "audit chain broken at entry 2",
                          "does not link")


def test_schema_is_migrated_and_checked(workdir: Path) -> None:
    status = lers(workdir, "db", "status")
    assert status.returncode == 0 and "database: (none)" in status.stdout and "empty" in status.stdout
    assert lers(workdir, "init").returncode == 0  # a first start creates the schema
    status = lers(workdir, "db", "status")
    assert f"database: {HEAD}; this version: {HEAD}; up to date" in status.stdout
    assert lers(workdir, "db", "upgrade").stdout.strip() == f"already at {HEAD}"

    old = short_tempdir("cli-")  # a database made by the first release
    try:
        (old / "config.toml").write_text('[gateway]\naddress = "lers@gateway.test"\n')
        (old / "data").mkdir(mode=0o700)
        asyncio.run(upgrade_to(f"sqlite+aiosqlite:///{old / 'data' / 'lers.db'}", "0001"))
        (old / "data" / "lers.db").chmod(0o600)  # as the gateway keeps it
        assert_one_line_error(lers(old, "requests", "list"), "schema is at revision 0001",
                              f"needs {HEAD}", "lers db upgrade")
        assert lers(old, "db", "upgrade").stdout.strip() == f"upgraded from 0001 to {HEAD}"
        assert lers(old, "requests", "list").stdout.strip() == "no requests"
    finally:
        shutil.rmtree(old, ignore_errors=True)

    stale = short_tempdir("cli-")
    try:
        (stale / "config.toml").write_text('[gateway]\naddress = "lers@gateway.test"\n')
        (stale / "data").mkdir(mode=0o700)
        with sqlite3.connect(stale / "data" / "lers.db") as conn:
            conn.execute("CREATE TABLE agencies (id INTEGER PRIMARY KEY)")
        (stale / "data" / "lers.db").chmod(0o600)
        assert_one_line_error(lers(stale, "requests", "list"), "no schema revision")
    finally:
        shutil.rmtree(stale, ignore_errors=True)


async def upgrade_to(url: str, revision: str) -> None:
    database = Database(url)
    await database.upgrade(revision)
    await database.dispose()


HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_a_data_dir_readable_by_others_stops_the_gateway(workdir: Path) -> None:
    assert lers(workdir, "init").returncode == 0
    for name in ("data", "data/gnupg", "data/lers.db", "data/lers.db-wal"):
        path = workdir / name
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, f"{name} is not private"
    (workdir / "data").chmod(0o755)
    assert_one_line_error(lers(workdir, "requests", "list"), "data is readable by other users (mode 0755)",
                          "chmod -R go-rwx")
    (workdir / "data").chmod(0o700)
    (workdir / "data" / "gnupg").chmod(0o750)
    assert_one_line_error(lers(workdir, "init"), "gnupg is readable by other users")


def test_backup_and_restore_round_trip(workdir: Path, alice: TestKey) -> None:
    (workdir / "alice.asc").write_bytes(alice.public_armored)
    lers(workdir, "agency", "add", "Test Police", "--domain", "police.test")
    lers(workdir, "officer", "add", alice.email, "--agency", "Test Police", "--key",
         str(workdir / "alice.asc"))
    fingerprint = lers(workdir, "init").stdout.split()[-1]
    secret = workdir / "passphrase"
    secret.write_text("correct horse battery staple\n")
    made = lers(workdir, "backup", str(workdir / "lers.backup"), "--passphrase-file", str(secret))
    assert made.returncode == 0, made.stderr
    assert b"PRIVATE KEY" not in (workdir / "lers.backup").read_bytes()
    assert_one_line_error(lers(workdir, "backup", str(workdir / "lers.backup"), "--passphrase-file",
                               str(secret)), "exists")

    elsewhere = short_tempdir("restore-")
    try:
        (elsewhere / "config.toml").write_text('[gateway]\naddress = "lers@gateway.test"\n')
        wrong = elsewhere / "wrong"
        wrong.write_text("not the passphrase\n")
        assert_one_line_error(lers(elsewhere, "restore", str(workdir / "lers.backup"), "--passphrase-file",
                                   str(wrong)), "gpg failed")
        restored = lers(elsewhere, "restore", str(workdir / "lers.backup"), "--passphrase-file", str(secret))
        assert restored.returncode == 0, restored.stderr
        for output in (made, restored):  # the passphrase never shows, whatever goes wrong
            assert "battery staple" not in output.stdout + output.stderr
        assert "audit chain OK: 2 entries" in restored.stdout  # the agency and the officer
        assert lers(elsewhere, "init").stdout.split()[-1] == fingerprint  # the same gateway key
        assert "audit chain OK" in lers(elsewhere, "audit", "verify").stdout
        assert_one_line_error(lers(elsewhere, "restore", str(workdir / "lers.backup"), "--passphrase-file",
                                   str(secret)), "is not empty")
    finally:
        subprocess.run(["gpgconf", "--homedir", str(elsewhere / "data" / "gnupg"), "--kill", "gpg-agent"],
                       capture_output=True, check=False)
        shutil.rmtree(elsewhere, ignore_errors=True)


def test_data_source_check_runs_every_query_and_names_each_problem(workdir: Path) -> None:
    ok = lers(workdir, "data-source", "check")
    assert ok.returncode == 0, ok.stderr
    assert "created the demo exchange database" in ok.stdout and "every query ran" in ok.stdout
    assert "categories mapped: subscriber_information, kyc_documents" in ok.stdout
    mapping = workdir / "mapping.toml"
    mapping.write_text('[subjects]\nemail = "SELECT id AS user_id FROM users WHERE email = :value"\n'
                       'phone = "SELECT id FROM users WHERE phone = :value"\n'
                       '[categories.kyc_documents]\n'
                       'query = "SELECT * FROM no_such_table WHERE user_id = :user_id"\n')
    broken = lers(workdir, "--set", f"data_source.mapping_file={mapping}", "data-source", "check")
    assert broken.returncode == 1
    assert "problem: subjects.phone: returns no user_id column (it returns id)" in broken.stdout
    assert "problem: categories.kyc_documents.query: the query failed: no such table: no_such_table" \
        in broken.stdout
    assert "not held (productions say so): subscriber_information" in broken.stdout
    assert broken.stderr.strip() == "lers: error: 2 problem(s) in the data source mapping"
    mapping.write_text('[categories.trades]\nquery = "SELECT 1"\n')
    wrong = lers(workdir, "--set", f"data_source.mapping_file={mapping}", "data-source", "check")
    assert_one_line_error(wrong, "categories.trades: is not a data category")


def test_notices_list_says_when_there_are_none(workdir: Path) -> None:
    listed = lers(workdir, "notices", "list")
    assert listed.returncode == 0 and listed.stdout.strip() == "no notices"
    due = lers(workdir, "notices", "list", "--due", "--json")
    assert due.returncode == 0 and due.stdout.strip() == "[]"
