"""`lers backup` / `lers restore`: the whole gateway (database and keyring) in one encrypted file.

The database is copied with SQLite's online backup API (a consistent snapshot while the gateway
runs); the keyring holds the gateway's secret key, so the archive is encrypted with AES-256 under
a passphrase read from a file (gpg --symmetric): the backup must be restorable when the data
dir, and the key in it, are gone. Restoring refuses a non-empty data dir and checks the audit
chain of what it restored.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from tqdm import tqdm

from gateway.audit import verify_chain
from gateway.config import Settings
from gateway.db import Database
from gateway.progress import bar

KEYRING_SKIP = ("S.", "random_seed", ".#lk", "sig-")  # sockets, locks, temporary files


class BackupError(Exception):
    """The backup or restore cannot be done; the message says why."""


def _gpg_symmetric(args: list[str], data: bytes, passphrase_file: Path) -> bytes:
    if not passphrase_file.is_file():
        raise BackupError(f"cannot read the passphrase file {passphrase_file}")
    with tempfile.TemporaryDirectory() as home:  # no keyring needed for symmetric encryption
        result = subprocess.run(
            ["gpg", "--homedir", home, "--batch", "--yes", "--pinentry-mode", "loopback",
             "--passphrase-file", str(passphrase_file), *args],
            input=data, capture_output=True, timeout=600, check=False)
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip().splitlines()
        raise BackupError(f"gpg failed: {message[-1] if message else result.returncode}")
    return result.stdout


def _archive(settings: Settings, shown: tqdm[Any]) -> bytes:
    """Snapshot and keyring as a tar.gz; `shown` counts the bytes read (a no-op bar off a TTY)."""
    database = settings.data_dir / "lers.db"
    keyring = [path for path in sorted(settings.gnupg_home.rglob("*"))
               if path.is_file() and not path.name.startswith(KEYRING_SKIP)]
    database_bytes = database.stat().st_size
    shown.reset(total=database_bytes + sum(path.stat().st_size for path in keyring))
    done = [0]

    def copied(status: int, remaining: int, pages: int) -> None:
        now = database_bytes * (pages - remaining) // max(pages, 1)
        shown.update(now - done[0])
        done[0] = now

    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory() as scratch:
        snapshot = Path(scratch) / "lers.db"
        with sqlite3.connect(database) as source, sqlite3.connect(snapshot) as target:
            source.backup(target, pages=256, progress=copied)  # consistent while the gateway writes
        shown.update(database_bytes - done[0])
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            tar.add(snapshot, arcname="lers.db")
            for path in keyring:
                tar.add(path, arcname=f"gnupg/{path.relative_to(settings.gnupg_home)}")
                shown.update(path.stat().st_size)
    return buffer.getvalue()


async def backup(settings: Settings, out: Path, passphrase_file: Path) -> int:
    """Write the encrypted backup; returns its size in bytes."""
    if not settings.database_url.startswith("sqlite"):
        raise BackupError("lers backup covers the embedded SQLite database; back PostgreSQL up with "
                          "its own tools (pg_dump) and keep a copy of data/gnupg")
    if await asyncio.to_thread(out.exists):
        raise BackupError(f"{out} exists: choose a new file name")
    with bar("backing up", unit="B", unit_scale=True) as shown:
        archive = await asyncio.to_thread(_archive, settings, shown)
        shown.set_description("encrypting")
        encrypted = await asyncio.to_thread(
            _gpg_symmetric, ["--symmetric", "--cipher-algo", "AES256", "--output", "-"], archive,
            passphrase_file)
    await asyncio.to_thread(out.write_bytes, encrypted)
    return len(encrypted)


def _unpack(archive: bytes, data_dir: Path) -> None:
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        for member in tar.getmembers():
            if not member.isfile() or member.name.startswith("/") or ".." in Path(member.name).parts:
                raise BackupError(f"unexpected entry in the backup: {member.name!r}")
        tar.extractall(data_dir, filter="data")
    for path in [data_dir, *data_dir.rglob("*")]:
        path.chmod(0o700 if path.is_dir() else 0o600)


async def restore(settings: Settings, backup_file: Path, passphrase_file: Path) -> int:
    """Restore into the configured, empty data dir; returns the number of audit entries checked."""
    data_dir = settings.data_dir
    if await asyncio.to_thread(lambda: data_dir.exists() and any(data_dir.iterdir())):
        raise BackupError(f"{data_dir} is not empty: restore into a new data dir")
    if not await asyncio.to_thread(backup_file.is_file):
        raise BackupError(f"cannot read {backup_file}")
    encrypted = await asyncio.to_thread(backup_file.read_bytes)
    archive = await asyncio.to_thread(_gpg_symmetric, ["--decrypt"], encrypted, passphrase_file)
    try:
        await asyncio.to_thread(_unpack, archive, data_dir)
        database = Database(settings.database_url)
        try:
            async with database.transaction() as session:
                report = await verify_chain(session)
        finally:
            await database.dispose()
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, data_dir, True)
        raise
    if not report.ok:
        raise BackupError(f"restored, but the audit chain is broken at entry {report.first_bad_id}: "
                          f"{report.problem}")
    return report.entries
