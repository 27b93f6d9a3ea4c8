"""The floor for verified-and-acknowledged throughput: the gpg work alone, with nothing around it.

Per request, one python-gnupg `verify_data` of the request's detached signature and one
`encrypt(..., sign=...)` of a reply-sized text to the officer's key, in a process pool as large as
the gateway's gpg pool. Each pool process has its own copy of the gateway's keyring (so its own
gpg-agent: one agent serialises signing). This is what the gateway could reach if Python, the
database and SMTP cost nothing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import gnupg

from bench.deploy import copy_keyring, kill_agent

REPLY = ("Your request has been received and registered.\n\n"
         "Reference:        LERS-2026-000123\nType:             preservation\n"
         "Case number:      BENCH-0000\nReceived:         2026-03-12 10:00 UTC\n"
         "Documents:        none\n\nKeep the reference in any later message about this request.\n"
         ) * 3  # about the size of the gateway's acknowledgement

_gpg: gnupg.GPG | None = None
_scratch: Path | None = None


def _init_worker(keyring: str, root: str) -> None:
    """Runs once in each pool process: a private keyring copy, started before the clock."""
    global _gpg, _scratch
    home = Path(root) / f"w{os.getpid()}"
    copy_keyring(Path(keyring), home)
    _gpg = gnupg.GPG(gnupghome=str(home))
    _gpg.encoding = "utf-8"
    _scratch = home


def _one(signed: bytes, signature: bytes, officer: str, gateway: str) -> bool:
    """Verify one request and sign+encrypt one reply, as the gateway does per request."""
    assert _gpg is not None and _scratch is not None
    fd, sig_path = tempfile.mkstemp(prefix="sig-", dir=_scratch)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(signature)
        verified = _gpg.verify_data(sig_path, signed)
    finally:
        os.unlink(sig_path)
    reply = _gpg.encrypt(REPLY.encode(), [officer], sign=gateway, armor=True, always_trust=True,
                         extra_args=["--digest-algo", "SHA512"])
    return bool(verified.valid) and bool(reply.ok)


def fingerprints(keyring: Path) -> tuple[str, str]:
    """(gateway key, officer key) in the gateway's keyring: the one secret key and the other."""
    gpg = gnupg.GPG(gnupghome=str(keyring))
    secret = {key["fingerprint"] for key in gpg.list_keys(secret=True)}
    public = [key["fingerprint"] for key in gpg.list_keys() if key["fingerprint"] not in secret]
    if len(secret) != 1 or len(public) != 1:
        raise RuntimeError(f"expected one gateway key and one officer key in {keyring}")
    return secret.pop(), public[0]


def measure(keyring: Path, inputs: list[tuple[bytes, bytes]], workers: int) -> dict[str, float]:
    """Requests/s for `inputs` through the pool; pool start and a warm-up are outside the timing."""
    root = Path(tempfile.mkdtemp(prefix="lbf-", dir="/tmp"))
    keys = root / "k"
    try:
        copy_keyring(keyring, keys)
        gateway, officer = fingerprints(keys)
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                                 initializer=_init_worker, initargs=(str(keys), str(root))) as pool:
            warm = [pool.submit(_one, *inputs[i % len(inputs)], officer, gateway) for i in range(2 * workers)]
            if not all(f.result(timeout=120) for f in warm):
                raise RuntimeError("the floor's warm-up did not verify or encrypt")
            start = time.monotonic()
            futures = [pool.submit(_one, signed, signature, officer, gateway) for signed, signature in inputs]
            good = sum(f.result(timeout=300) for f in futures)
            elapsed = time.monotonic() - start
        if good != len(inputs):
            raise RuntimeError(f"the floor verified and encrypted only {good} of {len(inputs)}")
        return {"rate": len(inputs) / elapsed, "elapsed": elapsed, "count": len(inputs)}
    finally:
        for home in root.iterdir():
            kill_agent(home)
        shutil.rmtree(root, ignore_errors=True)
