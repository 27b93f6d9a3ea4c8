"""Throw-away OpenPGP keys for tests, driven through the real ``gpg`` binary.

Everything lives in a temporary GNUPGHOME chosen by the caller, so no secret key material
ever lands in the repository. Only the standard library and ``/usr/bin/gpg`` are used on
purpose: the support code must not share any code path with the gateway it is testing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

GPG = shutil.which("gpg") or "/usr/bin/gpg"
GPGCONF = shutil.which("gpgconf") or "/usr/bin/gpgconf"
TIMEOUT_SECONDS = 60

_GPG_CONF = """\
# Written by tests/support/officer_keys.py: fast, unattended, offline.
batch
no-tty
yes
pinentry-mode loopback
no-greeting
no-auto-key-retrieve
auto-key-locate local
keyserver-options no-auto-key-retrieve
personal-digest-preferences SHA256
cert-digest-algo SHA256
"""

_AGENT_CONF = """\
# Written by tests/support/officer_keys.py.
allow-loopback-pinentry
disable-scdaemon
"""

_ALGOS = {
    # name: (primary algo, signing-subkey algo, encryption-subkey algo)
    "ed25519": ("ed25519", "ed25519", "cv25519"),
    "rsa2048": ("rsa2048", "rsa2048", "rsa2048"),
}


class GpgError(RuntimeError):
    """A gpg call failed; carries stderr so a failing test explains itself."""


@dataclass(frozen=True)
class TestKey:
    """A generated key as the tests see it: who it claims to be and how to import it."""

    __test__ = False  # not a pytest test class, despite the name

    fingerprint: str
    email: str
    name: str
    public_armored: bytes
    signing_fingerprint: str

    @property
    def keyid(self) -> str:
        """Long key id of the primary key (as printed in GOODSIG and friends)."""
        return self.fingerprint[-16:]

    @property
    def signing_keyid(self) -> str:
        """Long key id of the key that actually makes signatures."""
        return self.signing_fingerprint[-16:]

    @property
    def uid(self) -> str:
        """The user id string, ``Name <email>``."""
        return f"{self.name} <{self.email}>"


@dataclass(frozen=True)
class GpgResult:
    """Raw outcome of one gpg run, with the machine-readable status lines split out."""

    returncode: int
    stdout: bytes
    stderr: bytes
    status: list[str]

    def has(self, keyword: str) -> bool:
        """True if some status line starts with ``keyword`` (e.g. ``GOODSIG``)."""
        return any(line.split(" ", 1)[0] == keyword for line in self.status)

    def lines(self, keyword: str) -> list[list[str]]:
        """All status lines with that keyword, split into fields (keyword dropped)."""
        out = []
        for line in self.status:
            fields = line.split(" ")
            if fields[0] == keyword:
                out.append(fields[1:])
        return out


def _epoch(when: datetime) -> int:
    """gpg wants epoch seconds; naive datetimes are taken to be UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp())


def _prepare_home(home: Path) -> None:
    """Create a GNUPGHOME that gpg accepts without permission warnings."""
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o700)
    (home / "gpg.conf").write_text(_GPG_CONF)
    (home / "gpg-agent.conf").write_text(_AGENT_CONF)


class OfficerKeyring:
    """Owns one temporary GNUPGHOME holding every test key with its secret part.

    Keys are unprotected (no passphrase), so signing never prompts. Call :meth:`close`
    (or use as a context manager) to stop the gpg-agent(s) this ring started.
    """

    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        _prepare_home(self.home)
        self._scratch = self.home / "scratch"
        self._scratch.mkdir(mode=0o700, exist_ok=True)
        # gpg refuses to sign with a revoked key, even with a faked clock. To still produce
        # "signed by a revoked key" mail we sign from a copy of the ring taken just before
        # the revocation was imported.
        self._pre_revocation = self.home / "pre-revocation"
        self._signing_home: dict[str, Path] = {}

    # -- plumbing ---------------------------------------------------------------------

    def __enter__(self) -> OfficerKeyring:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the agents; without this every test run leaks a gpg-agent process."""
        for home in (self.home, self._pre_revocation):
            if home.exists():
                subprocess.run(
                    [GPGCONF, "--homedir", str(home), "--kill", "gpg-agent"],
                    capture_output=True,
                    timeout=TIMEOUT_SECONDS,
                    check=False,
                )

    def run(
        self,
        *args: str,
        input: bytes = b"",
        at: datetime | None = None,
        home: Path | None = None,
        check: bool = True,
    ) -> GpgResult:
        """Run gpg on this ring, non-interactively and with a timeout.

        ``at`` freezes gpg's clock (``--faked-system-time``), which is how keys and
        signatures are back- or forward-dated. Not when ``at`` is gpg's current second: gpg
        then keeps the real clock, and a signature can carry the next second.
        """
        home = home or self.home
        fd, status_name = tempfile.mkstemp(prefix="status-", dir=self._scratch)
        os.close(fd)
        status_path = Path(status_name)
        cmd = [
            GPG,
            "--homedir",
            str(home),
            "--batch",
            "--no-tty",
            "--yes",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--status-file",
            str(status_path),
        ]
        if at is not None:
            cmd += ["--faked-system-time", f"{_epoch(at)}!"]
        cmd += list(args)
        env = {**os.environ, "GNUPGHOME": str(home), "LC_ALL": "C"}
        env.pop("GPG_AGENT_INFO", None)
        try:
            proc = subprocess.run(
                cmd,
                input=input,
                capture_output=True,
                timeout=TIMEOUT_SECONDS,
                env=env,
                check=False,
            )
            status = [
                line[len("[GNUPG:] ") :]
                for line in status_path.read_text(errors="replace").splitlines()
                if line.startswith("[GNUPG:] ")
            ]
        finally:
            status_path.unlink(missing_ok=True)
        result = GpgResult(proc.returncode, proc.stdout, proc.stderr, status)
        if check and proc.returncode != 0:
            raise GpgError(
                f"gpg {' '.join(args)} failed ({proc.returncode}):\n"
                f"{proc.stderr.decode(errors='replace')}"
            )
        return result

    def _files(self, **blobs: bytes) -> tuple[Path, dict[str, Path]]:
        """Write blobs to a fresh scratch directory (gpg --verify needs real files)."""
        folder = Path(tempfile.mkdtemp(dir=self._scratch))
        paths = {}
        for name, data in blobs.items():
            path = folder / name
            path.write_bytes(data)
            paths[name] = path
        return folder, paths

    def _colons(self, fingerprint: str, *, secret: bool = False) -> list[list[str]]:
        """``--with-colons`` listing of one key, rows split into fields."""
        what = "--list-secret-keys" if secret else "--list-keys"
        out = self.run("--with-colons", "--fixed-list-mode", what, fingerprint)
        return [row.split(":") for row in out.stdout.decode().splitlines()]

    # -- keys -------------------------------------------------------------------------

    def create_key(
        self,
        email: str,
        name: str,
        *,
        expires_days: int | None = None,
        expires_seconds: int | None = None,
        created_at: datetime | None = None,
        signing_subkey: bool = False,
        algo: str = "ed25519",
    ) -> TestKey:
        """Generate an unprotected key: primary + encryption subkey (+ signing subkey).

        ``created_at`` back-dates the key; with ``expires_*`` this makes keys that are
        already expired. The expiry is relative to ``created_at``.
        """
        if algo not in _ALGOS:
            raise ValueError(f"unsupported algo {algo!r}; use one of {sorted(_ALGOS)}")
        if expires_days is not None and expires_seconds is not None:
            raise ValueError("give expires_days or expires_seconds, not both")
        primary_algo, sign_algo, encr_algo = _ALGOS[algo]
        if expires_days is not None:
            expires_seconds = expires_days * 86400
        expire = "never" if expires_seconds is None else f"seconds={expires_seconds}"
        when = created_at or datetime.now(UTC)
        uid = f"{name} <{email}>"
        usage = "cert" if signing_subkey else "cert,sign"
        created = self.run("--quick-gen-key", uid, primary_algo, usage, expire, at=when)
        fingerprint = next(
            fields[1] for fields in created.lines("KEY_CREATED") if fields[0] in ("P", "B")
        )
        if signing_subkey:
            self.run("--quick-add-key", fingerprint, sign_algo, "sign", expire, at=when)
        self.run("--quick-add-key", fingerprint, encr_algo, "encr", expire, at=when)
        signing_fingerprint = fingerprint
        if signing_subkey:
            signing_fingerprint = self._subkey_with(fingerprint, "s")
        return TestKey(
            fingerprint=fingerprint,
            email=email,
            name=name,
            public_armored=self.public_key_by_fingerprint(fingerprint),
            signing_fingerprint=signing_fingerprint,
        )

    def _subkey_with(self, fingerprint: str, capability: str) -> str:
        """Fingerprint of the first subkey having ``capability`` (s, e, a)."""
        rows = self._colons(fingerprint)
        for index, row in enumerate(rows):
            if row[0] == "sub" and capability in row[11]:
                follow = rows[index + 1]
                if follow[0] == "fpr":
                    return follow[9]
        raise GpgError(f"key {fingerprint} has no subkey with capability {capability!r}")

    def public_key_by_fingerprint(self, fingerprint: str) -> bytes:
        """ASCII-armored public key, exported by exact fingerprint (uids may collide)."""
        return self.run("--armor", "--export", fingerprint).stdout

    def public_key(self, key: TestKey) -> bytes:
        """Current public key, including any revocation imported since creation."""
        return self.public_key_by_fingerprint(key.fingerprint)

    def import_key(self, armored: bytes) -> list[str]:
        """Import key material; returns the fingerprints gpg reports as imported."""
        result = self.run("--import", input=armored)
        return [fields[1] for fields in result.lines("IMPORT_OK") if len(fields) > 1]

    def revoke(self, key: TestKey, *, at: datetime | None = None) -> bytes:
        """Revoke the key (hard, "key compromised"); return the public key now carrying it.

        A copy of the secret key is kept aside first, so the tests can still produce
        signatures by this key (gpg itself refuses to sign with a revoked key).
        """
        secret = self.run("--armor", "--export-secret-keys", key.fingerprint).stdout
        if not self._pre_revocation.exists():
            _prepare_home(self._pre_revocation)
        self.run("--import", input=secret, home=self._pre_revocation)
        self._signing_home[key.fingerprint] = self._pre_revocation
        # --gen-revoke refuses to run in batch mode, but --edit-key's "revkey" takes its
        # answers from --command-fd: revoke whole key? / reason (1 = key has been
        # compromised, a hard revocation) / description (empty line ends it) / ok? / save.
        answers = b"revkey\ny\n1\n\ny\nsave\n"
        self.run("--command-fd", "0", "--edit-key", key.fingerprint, input=answers, at=at)
        listing = self._colons(key.fingerprint)
        if not any(row[0] == "pub" and row[1] == "r" for row in listing):
            raise GpgError(f"revocation of {key.fingerprint} did not take")
        return self.public_key(key)

    # -- signing ----------------------------------------------------------------------

    def _sign(
        self,
        keys: Sequence[TestKey],
        data: bytes,
        mode: Sequence[str],
        at: datetime | None,
    ) -> bytes:
        """Sign with the exact signing (sub)key(s): ``FPR!`` stops gpg choosing another."""
        homes = {self._signing_home.get(key.fingerprint, self.home) for key in keys}
        if len(homes) != 1:
            raise ValueError("cannot sign with a revoked key and a live key in one go")
        args: list[str] = []
        for key in keys:
            args += ["--local-user", f"{key.signing_fingerprint}!"]
        result = self.run(*args, *mode, input=data, home=homes.pop(), at=at)
        if not result.has("SIG_CREATED"):
            raise GpgError("gpg did not report SIG_CREATED")
        return result.stdout

    def sign_detached(
        self,
        key: TestKey,
        data: bytes,
        *,
        digest: str = "SHA256",
        at: datetime | None = None,
        expires_seconds: int | None = None,
        extra_signers: Sequence[TestKey] = (),
    ) -> bytes:
        """ASCII-armored detached signature over exactly ``data`` (binary mode, 0x00).

        ``extra_signers`` adds more signature packets to the same armored block.
        """
        mode = ["--digest-algo", digest, "--armor", "--detach-sign", "--output", "-"]
        if expires_seconds is not None:
            mode = ["--default-sig-expire", f"seconds={expires_seconds}", *mode]
        return self._sign([key, *extra_signers], data, mode, at)

    def clearsign(
        self, key: TestKey, text: bytes, *, digest: str = "SHA256", at: datetime | None = None
    ) -> bytes:
        """Cleartext-signed block (``-----BEGIN PGP SIGNED MESSAGE-----``), LF line ends."""
        mode = ["--digest-algo", digest, "--clearsign", "--output", "-"]
        return self._sign([key], text, mode, at)

    def sign_opaque(
        self,
        key: TestKey,
        data: bytes,
        *,
        filename: str | None = None,
        armor: bool = True,
        at: datetime | None = None,
    ) -> bytes:
        """A normal signed message (one-pass sig + literal data + sig), not detached.

        ``filename`` goes into the literal data packet verbatim, newlines included, which
        is what the CVE-2018-12020 status-line injection abused.
        """
        mode = ["--sign", "--output", "-"]
        if armor:
            mode.insert(0, "--armor")
        if filename is not None:
            mode = ["--set-filename", filename, *mode]
        return self._sign([key], data, mode, at)

    # -- encryption -------------------------------------------------------------------

    def encrypt_to(self, recipient_public_armored: bytes, data: bytes, *,
                   signer: TestKey | None = None) -> bytes:
        """Encrypt to a key given as armored public key; ASCII output. With ``signer``, sign and
        encrypt in one OpenPGP message (RFC 3156 section 6.2)."""
        fingerprints = self.import_key(recipient_public_armored)  # IMPORT_OK even if known
        if not fingerprints:
            raise GpgError("recipient key did not import")
        signing = ["--sign", "--local-user", signer.signing_fingerprint + "!"] if signer else []
        result = self.run(
            "--trust-model", "always", "--armor", *signing, "--encrypt",
            "--recipient", fingerprints[0], "--output", "-",
            input=data,
        )  # fmt: skip
        return result.stdout

    def decrypt_with_status(self, data: bytes) -> tuple[bytes, GpgResult]:
        """Decrypt with whatever secret key fits; also return the status lines.

        Raises only if decryption itself failed: a bad or unknown signature inside an
        encrypted reply is for the caller to judge from the status lines.
        """
        result = self.run("--decrypt", "--output", "-", input=data, check=False)
        if not result.has("DECRYPTION_OKAY"):
            raise GpgError(f"decryption failed:\n{result.stderr.decode(errors='replace')}")
        return result.stdout, result

    def decrypt(self, data: bytes) -> bytes:
        """Decrypt (e.g. a gateway reply encrypted to an officer); raises if impossible."""
        return self.decrypt_with_status(data)[0]

    # -- verification -----------------------------------------------------------------

    def verify_detached_status(self, sig: bytes, data: bytes) -> GpgResult:
        """Plain ``gpg --verify SIG DATA`` against this ring; never raises on bad sigs."""
        folder, paths = self._files(sig=sig, data=data)
        try:
            return self.run("--verify", str(paths["sig"]), str(paths["data"]), check=False)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def verify_detached(self, sig: bytes, data: bytes) -> bool:
        """True only for exactly one good signature by a valid (unexpired, unrevoked) key."""
        result = self.verify_detached_status(sig, data)
        return result.returncode == 0 and len(result.lines("GOODSIG")) == 1

    def verify_inline_status(self, signed: bytes) -> GpgResult:
        """``gpg --verify`` of a clearsigned or opaque signed message."""
        return self.run("--verify", input=signed, check=False)
