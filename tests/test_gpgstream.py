"""gateway/gpgstream.py's LeanGPG: python-gnupg's calls, its results, with a leaner exchange.

Each call is made twice on the same keyring, through python-gnupg's own `GPG` and through
`LeanGPG`, and the results python-gnupg's classes build from gpg's status lines must agree (the
status lines themselves, ok/valid/status, the data, the return code). LeanGPG must start no
thread, and must fail the way python-gnupg fails when gpg stops reading its input.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gnupg
import pytest

from gateway.gpgstream import GpgTimeout, LeanGPG, verify_detached
from gateway.pgp import GPG_OPTIONS, OpenPGP, _CryptRecorder, _StatusRecorder, judge_status_lines
from tests.support import mail_strategies as ms
from tests.support.officer_keys import OfficerKeyring, TestKey

BODY = b"Content-Type: text/plain\r\n\r\nPlease preserve account 42.\r\n"


@pytest.fixture(scope="module")
def home(officer_ring: OfficerKeyring, alice: TestKey) -> Iterator[Path]:
    """A gateway-like keyring: a key of its own, Alice's public key."""
    folder = Path(tempfile.mkdtemp(prefix="lean-", dir="/tmp"))
    try:
        pgp = OpenPGP(folder / "gnupg")
        pgp._ensure_gateway_key("lers@gateway.test", "LERS")
        pgp._import_public_key(officer_ring.public_key(alice))
        pgp._pool.shutdown()
        warm = gnupg.GPG(gnupghome=str(folder / "gnupg"), options=list(GPG_OPTIONS))
        (folder / "sig.asc").write_bytes(officer_ring.sign_detached(alice, BODY))
        warm.verify_data(str(folder / "sig.asc"), BODY)  # the trust database is brought up to date once
        yield folder / "gnupg"
    finally:  # the agent of this keyring would outlive the tests otherwise
        subprocess.run(["gpgconf", "--homedir", str(folder / "gnupg"), "--kill", "gpg-agent"],
                       check=False, capture_output=True, timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


def both(home: Path) -> list[gnupg.GPG]:
    """python-gnupg's GPG and LeanGPG on one keyring, set up as gateway/pgp.py sets up its own."""
    made = []
    for cls in (gnupg.GPG, LeanGPG):
        gpg = cls(gnupghome=str(home), options=list(GPG_OPTIONS))
        gpg.encoding = "utf-8"
        gpg.result_map = {**gpg.result_map, "verify": _StatusRecorder, "crypt": _CryptRecorder}
        made.append(gpg)
    return made


def threads_started(call: Callable[[], Any]) -> tuple[Any, int]:
    """What `call` returns, and how many threads it started (seen by threading's profile hook,
    which every thread started through `threading` installs)."""
    started: set[threading.Thread] = set()
    threading.setprofile(lambda *_: started.add(threading.current_thread()))
    try:
        value = call()
    finally:
        threading.setprofile(None)  # type: ignore[arg-type]
    return value, len(started)


def comparable(lines: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Status lines without what differs between two runs (times, session keys, key ids of
    a fresh encryption)."""
    return [(k, "" if k in ("SIG_CREATED", "KEY_CONSIDERED", "BEGIN_ENCRYPTION", "NEWSIG") else v)
            for k, v in lines]


@pytest.mark.parametrize("case", ["good", "altered", "unknown_key", "view", "empty_data", "garbage"])
def test_verification_gives_python_gnupgs_result(home: Path, officer_ring: OfficerKeyring, alice: TestKey,
                                                 case: str, tmp_path: Path) -> None:
    signature = officer_ring.sign_detached(alice, BODY)
    data: bytes | memoryview = BODY
    if case == "altered":
        data = BODY.replace(b"42", b"43")
    elif case == "unknown_key":
        stranger = officer_ring.create_key("eve@elsewhere.test", "Eve")
        signature = officer_ring.sign_detached(stranger, BODY)
    elif case == "view":
        data = memoryview(b"xx" + BODY)[2:]
    elif case == "empty_data":
        data = b""
    elif case == "garbage":
        signature = b"-----BEGIN PGP SIGNATURE-----\n\nnot a signature\n-----END PGP SIGNATURE-----\n"
    sig_path = tmp_path / "sig.asc"
    sig_path.write_bytes(signature)
    results = []
    for gpg in both(home):
        for _attempt in range(20):
            try:
                result, threads = threads_started(lambda g=gpg: verify_detached(g, str(sig_path), data))
                break
            except BrokenPipeError:
                # gpg gave up on the garbage before the data was written: both exchanges race
                # there (the gateway's answer is then "gpg could not read the signature")
                assert case == "garbage"
        results.append((result, threads))
    (old, old_threads), (new, new_threads) = results
    assert new.lines == old.lines and new.lines
    assert (new.valid, new.status, new.fingerprint, new.returncode) == \
        (old.valid, old.status, old.fingerprint, old.returncode)
    assert judge_status_lines(new.lines) == judge_status_lines(old.lines)
    assert judge_status_lines(new.lines).ok is (case in ("good", "view"))
    assert old_threads >= 2 and new_threads == 0


def test_sign_and_encrypt_gives_python_gnupgs_result(home: Path, officer_ring: OfficerKeyring,
                                                     alice: TestKey) -> None:
    gateway = next(k["fingerprint"] for k in gnupg.GPG(gnupghome=str(home)).list_keys(secret=True))
    results = []
    for gpg in both(home):
        result, threads = threads_started(lambda g=gpg: g.encrypt(
            BODY, [alice.fingerprint], sign=gateway, armor=True, always_trust=True,
            extra_args=["--digest-algo", "SHA512"]))
        results.append((result, threads))
        assert result.ok and result.returncode == 0, result.stderr
        plain, status = officer_ring.decrypt_with_status(result.data)  # signed by a key it lacks
        assert plain == BODY and gateway.endswith(status.lines("ERRSIG")[0][0])
    (old, old_threads), (new, new_threads) = results
    assert comparable(new.lines) == comparable(old.lines)
    assert (new.ok, new.status) == (old.ok, old.status)
    assert old_threads >= 2 and new_threads == 0


def test_decryption_gives_python_gnupgs_result(home: Path, officer_ring: OfficerKeyring,
                                               alice: TestKey) -> None:
    gpg = gnupg.GPG(gnupghome=str(home))
    public = gpg.export_keys(gpg.list_keys(secret=True)[0]["fingerprint"])
    ciphertext = officer_ring.encrypt_to(public.encode(), BODY * 3000, signer=alice)  # > a pipe buffer
    old, new = (gpg.decrypt(ciphertext) for gpg in both(home))
    assert new.data == old.data == BODY * 3000
    assert comparable(new.lines) == comparable(old.lines)
    assert (new.ok, new.status, new.returncode) == (old.ok, old.status, old.returncode)
    assert judge_status_lines(new.lines).ok


def test_gpg_that_stops_reading_raises_as_python_gnupg_did(home: Path, tmp_path: Path) -> None:
    """A signature packet gpg rejects at once, over data larger than a pipe buffer: gpg exits
    before reading it, and the write fails (python-gnupg raised BrokenPipeError; the gateway
    answers "gpg could not read the signature")."""
    bogus = ms.armor(ms.packet(2, bytes([0x9E]) + bytes(40)))  # an unknown signature version
    sig_path = tmp_path / "sig.asc"
    sig_path.write_bytes(bogus)
    data = memoryview(b"Please preserve the account.\r\n" * 40_000)
    for gpg in both(home):
        with pytest.raises(BrokenPipeError):
            verify_detached(gpg, str(sig_path), data)


def test_a_large_view_is_verified_whole(home: Path, officer_ring: OfficerKeyring, alice: TestKey,
                                        tmp_path: Path) -> None:
    """Several megabytes from a view: every byte reaches gpg (a short write would fail the check)."""
    body = b"Content-Type: text/plain\r\n\r\n" + b"0123456789abcdef\r\n" * 300_000
    stored = b"prefix" + body
    sig_path = tmp_path / "sig.asc"
    sig_path.write_bytes(officer_ring.sign_detached(alice, body))
    lean = both(home)[1]
    assert judge_status_lines(verify_detached(lean, str(sig_path), memoryview(stored)[6:]).lines).ok
    assert not judge_status_lines(verify_detached(lean, str(sig_path), memoryview(stored)[6:-1]).lines).ok


async def test_the_gateway_keyring_uses_the_lean_exchange(home: Path) -> None:
    pgp = OpenPGP(home)
    try:
        assert isinstance(pgp._gpg, LeanGPG)
    finally:
        pgp._pool.shutdown()


async def test_gpg_refusing_a_recipient_before_reading_is_an_openpgp_error(home: Path) -> None:
    """An encryption gpg refuses at once (no such key) over more than a pipe buffer: gpg exits
    before reading it, and the failed write is reported as the refusal it is (OpenPGPError, which
    the vault's start-up check and the outbox handle), not as a BrokenPipeError."""
    from gateway.pgp import OpenPGPError

    nobody = "0123456789ABCDEF0123456789ABCDEF01234567"
    pgp = OpenPGP(home)
    try:
        pgp._ensure_gateway_key("lers@gateway.test", "LERS")
        with pytest.raises(OpenPGPError, match="could not sign and encrypt to 0123"):
            await pgp.sign_and_encrypt_for_officer(b"x" * 2_000_000, nobody)
        with pytest.raises(OpenPGPError, match="could not encrypt the data key"):
            await pgp.wrap_data_key(b"k" * 2_000_000, nobody)
    finally:
        pgp._pool.shutdown()


def _gpg_children() -> list[str]:
    """This process's child processes named gpg (or sleep, the hanging stand-in), with their state."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        state, ppid = text[text.rindex(")") + 2:].split()[:2]
        if int(ppid) == os.getpid() and name in ("gpg", "sleep"):
            found.append(f"{name} {state}")
    return found


def no_pidfd(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a kernel before Linux 5.3: pidfd_open fails, and gpg's end is waited for by polling."""
    def unavailable(_pid: int, _flags: int = 0) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", unavailable)


@pytest.mark.parametrize("wait", ["pidfd", "no-pidfd"])
def test_verification_without_pidfd_gives_the_same_result(home: Path, officer_ring: OfficerKeyring,
                                                         alice: TestKey, tmp_path: Path, wait: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """gpg's end is learnt from its pidfd where the kernel has one, else by Popen's own wait: a good
    signature and an altered text get the same verdicts either way, and no gpg is left behind."""
    if wait == "no-pidfd":
        no_pidfd(monkeypatch)
    sig_path = tmp_path / "sig.asc"
    sig_path.write_bytes(officer_ring.sign_detached(alice, BODY))
    lean = both(home)[1]
    good = verify_detached(lean, str(sig_path), memoryview(BODY))
    altered = verify_detached(lean, str(sig_path), memoryview(BODY.replace(b"42", b"43")))
    assert judge_status_lines(good.lines).ok and good.returncode == 0
    assert not judge_status_lines(altered.lines).ok and altered.returncode != 0
    assert _gpg_children() == []


@pytest.mark.parametrize("wait", ["pidfd", "no-pidfd"])
@pytest.mark.parametrize("size", [100, 3_000_000], ids=["small", "more-than-a-pipe"])
def test_a_gpg_that_hangs_is_killed_at_the_timeout(home: Path, tmp_path: Path, size: int, wait: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """gpg blocked opening its signature file (a FIFO nobody writes): with little data it hangs in
    the wait, with more than a pipe holds in the write. Either way it is killed and reaped at the
    timeout, and the caller gets GpgTimeout (not an OSError, which would read as a bad signature),
    whether gpg's end is waited for on its pidfd or by polling."""
    if wait == "no-pidfd":
        no_pidfd(monkeypatch)
    fifo = tmp_path / "sig.fifo"
    os.mkfifo(fifo)
    lean = both(home)[1]
    lean.timeout = 0.5
    started = time.monotonic()
    with pytest.raises(GpgTimeout, match=r"did not finish within 0\.5 s"):
        verify_detached(lean, str(fifo), memoryview(b"x" * size))
    assert time.monotonic() - started < 10
    assert _gpg_children() == []


async def test_a_gpg_timeout_is_an_openpgp_error_not_a_verdict(home: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the gateway's keyring: a verification whose gpg hangs (here a gpg that sleeps before
    verifying) raises OpenPGPError, so the job is tried again and finally shunted for a human; it
    never becomes a bad_signature refusal sent to the officer."""
    from gateway.pgp import OpenPGPError

    real = shutil.which("gpg")
    assert real is not None
    wrapper = tmp_path / "bin" / "gpg"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\ncase "$*" in *--verify*) exec sleep 30;; esac\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrapper.parent}:{os.environ['PATH']}")
    pgp = OpenPGP(home, timeout=0.5)
    try:
        with pytest.raises(OpenPGPError, match=r"did not finish within 0\.5 s"):
            await pgp.verify_detached_signature(BODY, b"-----BEGIN PGP SIGNATURE-----\n")
    finally:
        pgp._pool.shutdown()
    assert _gpg_children() == []


async def test_a_key_listing_that_hangs_is_stopped_at_the_timeout(home: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Key listings (and python-gnupg's other calls with its own exchange) have the same limit: a
    gpg that hangs listing the keyring (here one that sleeps instead) is killed and the caller
    gets OpenPGPError, instead of a gpg thread waiting for ever (two such and no mail is verified
    or answered). The next call, with gpg well again, works."""
    from gateway.pgp import OpenPGPError

    real = shutil.which("gpg")
    assert real is not None
    hang = tmp_path / "hang"
    wrapper = tmp_path / "bin" / "gpg"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\ncase "$*" in\n  *--list-secret-keys*) [ -e {hang} ] && exec sleep 30;;\n'
                       f'esac\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrapper.parent}:{os.environ['PATH']}")
    pgp = OpenPGP(home, timeout=0.5)
    try:
        hang.touch()
        started = time.monotonic()
        with pytest.raises(OpenPGPError, match=r"did not finish within 0\.5 s"):
            await pgp.ensure_gateway_key("gateway@platform.test", "Gateway")
        assert time.monotonic() - started < 10
        assert _gpg_children() == []
        hang.unlink()
        fingerprint, created = await pgp.ensure_gateway_key("gateway@platform.test", "Gateway")
        assert created and len(fingerprint) == 40
    finally:
        pgp._pool.shutdown()
