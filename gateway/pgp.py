"""Every OpenPGP operation the gateway does, each a method named for its purpose.

python-gnupg drives the real `gpg` in a keyring of our own (no key retrieval from the network,
never `--verbose`). Calls run in a small thread pool so the event loop never waits on gpg.
Verification keeps every status line and decides strictly: exactly one good signature, made by
a key that is neither expired nor revoked, with a digest stronger than SHA-1. Anything else is a
`SignatureCheck` with a reason code and a sentence a human can act on.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import gnupg

from gateway.gpgpool import NORMAL, URGENT, PriorityPool
from gateway.gpgstream import DEFAULT_TIMEOUT, GpgTimeout, LeanGPG, verify_detached

log = logging.getLogger(__name__)
logging.getLogger("gnupg").setLevel(logging.ERROR)  # its debug lines would echo message bytes

T = TypeVar("T")

# OpenPGP hash algorithm ids (RFC 4880 9.4) that we refuse: MD5, SHA-1, RIPEMD-160.
WEAK_DIGESTS = {"1": "MD5", "2": "SHA-1", "3": "RIPEMD-160"}
SIGNATURE_RESULTS = {"GOODSIG", "BADSIG", "ERRSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG"}
# Status keywords that mean gpg met something wrong in the data, whatever else it says.
TROUBLE = {"ERROR", "FAILURE", "BADMDC", "DECRYPTION_FAILED", "BADARMOR"}
MIN_GPG_VERSION = (2, 2, 8)
# Options for every gpg call: our keyring only, nothing fetched, nothing trusted implicitly.
# --no-random-seed-file: every gpg that encrypts or signs reads and rewrites `random_seed` in the
# keyring under an fcntl lock, and one that finds it taken sleeps 250 ms, then 1 s more (libgcrypt's
# lock_seed_file): with two gpg threads one reply in twenty waited that long (issue #8). The file
# only carries pool state over between runs; libgcrypt seeds each process from the kernel
# (getrandom) anyway, so keys and session keys are no weaker without it.
GPG_OPTIONS = [
    "--no-random-seed-file",
    "--no-auto-key-retrieve",
    "--auto-key-locate", "local",
    "--keyserver-options", "no-auto-key-retrieve",
    "--weak-digest", "SHA1",
    "--no-emit-version",
    "--no-comments",
    "--no-greeting",
]


class OpenPGPError(Exception):
    """gpg failed at something that should have worked (our key, our keyring): not the sender's fault."""


class KeyImportError(OpenPGPError):
    """An offered key file is not a usable public key."""


@dataclass(frozen=True)
class SignatureCheck:
    """The verdict on one signature, with everything a later rule or a reviewer needs."""

    ok: bool
    reason: str | None = None
    detail: str = ""
    signer_fingerprint: str | None = None  # the primary key
    signing_key_fingerprint: str | None = None  # the (sub)key that made the signature
    signature_id: str | None = None
    signed_at: datetime | None = None
    digest: str | None = None
    status_lines: tuple[str, ...] = field(default=(), repr=False)

    def summary(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "reason": self.reason, "detail": self.detail,
            "signer_fingerprint": self.signer_fingerprint,
            "signing_key_fingerprint": self.signing_key_fingerprint,
            "signature_id": self.signature_id,
            "signed_at": self.signed_at.isoformat() if self.signed_at else None,
            "digest": self.digest,
        }


@dataclass(frozen=True)
class KeyStatus:
    fingerprint: str
    emails: tuple[str, ...]
    user_ids: tuple[str, ...]
    expires_at: datetime | None
    revoked: bool
    expired: bool
    can_encrypt: bool


KEY_STATUS_SECONDS = 60.0  # a cached key status is re-read at least this often anyway


@dataclass(frozen=True)
class _CachedStatus:
    status: KeyStatus | None
    stamp: tuple[tuple[int, ...] | None, ...]  # the keyring files when gpg listed the key
    until: float  # time.monotonic()
    expiry: float | None  # the earliest expiry (epoch seconds) of the key or a subkey

    def fresh(self, stamp: tuple[tuple[int, ...] | None, ...]) -> bool:
        return (stamp == self.stamp and time.monotonic() < self.until
                and (self.expiry is None or time.time() < self.expiry))


def _key_status_of(fingerprint: str, key: dict[str, Any]) -> KeyStatus:
    expires = _timestamp(key.get("expires"))
    capabilities = key.get("cap", "")
    return KeyStatus(
        fingerprint=fingerprint,
        user_ids=tuple(key["uids"]),
        emails=tuple(_uid_email(uid) for uid in key["uids"] if _uid_email(uid)),
        expires_at=expires,
        revoked=key.get("trust") == "r",
        expired=key.get("trust") == "e",
        can_encrypt="E" in capabilities,
    )


def _first_expiry(key: dict[str, Any] | None) -> float | None:
    """When the listing goes stale by itself: the key or one of its subkeys expires."""
    if key is None:
        return None
    values = [key.get("expires"), *(sub.get("expires") for sub in key.get("subkey_info", {}).values())]
    stamps = [stamp.timestamp() for v in values if (stamp := _timestamp(v)) is not None]
    return min(stamps, default=None)


class _StatusRecorder(gnupg.Verify):
    """python-gnupg's verify result, plus the full list of status lines for strict checks."""

    def __init__(self, gpg: gnupg.GPG) -> None:
        super().__init__(gpg)
        self.lines: list[tuple[str, str]] = []

    def handle_status(self, key: str, value: str) -> None:
        self.lines.append((key, value))
        try:
            super().handle_status(key, value)
        except Exception:
            self.lines.append(("UNPARSEABLE", key))


class _ImportRecorder(gnupg.ImportResult):
    """python-gnupg's import result, plus the status lines (a bare revocation has no IMPORT_OK)."""

    def __init__(self, gpg: gnupg.GPG) -> None:
        super().__init__(gpg)
        self.lines: list[tuple[str, str]] = []

    def handle_status(self, key: str, value: str) -> None:
        self.lines.append((key, value))
        super().handle_status(key, value)


@dataclass(frozen=True)
class Certification:
    """A third-party certification of one user ID, as gpg itself checked it (--check-sigs)."""

    uid_email: str | None
    issuer_fingerprint: str
    created_at: datetime | None
    expires_at: datetime | None
    trust_depth: int  # 0: a plain certification; >0: a trust signature (tsign)
    trust_regexp: str | None  # a trust signature's scope, as gpg wrote it
    revoked: bool  # the issuer revoked it later (revsig)
    verified: bool = True  # gpg checked it ('!'); False when the issuer's key is not in our keyring

    def valid_at(self, now: datetime) -> bool:
        return self.verified and not self.revoked and (self.expires_at is None or self.expires_at > now)


@dataclass(frozen=True)
class OfferedKeyCheck:
    """A signature checked against keys the sender attached, in a keyring of their own."""

    check: SignatureCheck
    offered: tuple[str, ...]  # primary fingerprints of the attached keys
    signer_key: bytes | None  # the signer's public key, exported from that keyring, if attached


class _CryptRecorder(gnupg.Crypt):
    def __init__(self, gpg: gnupg.GPG) -> None:
        super().__init__(gpg)
        self.lines: list[tuple[str, str]] = []

    def handle_status(self, key: str, value: str) -> None:
        self.lines.append((key, value))
        try:
            super().handle_status(key, value)
        except Exception:
            self.lines.append(("UNPARSEABLE", key))


class OpenPGP:
    """The gateway's keyring and key: verify officers' mail, sign and encrypt our replies."""

    def __init__(self, home: Path, threads: int = 2, max_plaintext_bytes: int = 100 * 1024 * 1024,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.home = home
        self.max_plaintext_bytes = max_plaintext_bytes
        self._gpg = LeanGPG(gnupghome=str(home), options=list(GPG_OPTIONS))  # gateway/gpgstream.py
        self._gpg.timeout = timeout  # verify, sign, encrypt, decrypt: a hung gpg is killed
        if self._gpg.version is None or self._gpg.version < MIN_GPG_VERSION:
            # python-gnupg reads status lines from stderr: only gpg >= 2.2.8 escapes file names
            # there (CVE-2018-12020)
            raise OpenPGPError(f"gpg {'.'.join(map(str, self._gpg.version or ()))} is too old; "
                               f"{'.'.join(map(str, MIN_GPG_VERSION))} or newer is required")
        self._gpg.encoding = "utf-8"
        self._gpg.result_map = {**self._gpg.result_map, "verify": _StatusRecorder,
                                "crypt": _CryptRecorder, "import": _ImportRecorder}
        self._pool = PriorityPool(threads, "gpg")  # replies before verifications (gateway/gpgpool.py)
        self.gateway_fingerprint: str | None = None
        self._status_cache: dict[str, _CachedStatus] = {}  # see key_status

    async def _run(self, fn: Callable[..., T], *args: Any, priority: int = NORMAL) -> T:
        """`fn` in the gpg pool. A gpg call that timed out is an OpenPGPError like any failure of
        ours: the job or the reply is tried again later, and after its last attempt a human
        looks at it; a message is never judged by a gpg that did not finish."""
        try:
            return await self._pool.run(priority, fn, *args)
        except GpgTimeout as exc:
            raise OpenPGPError(str(exc)) from exc

    def close(self) -> None:
        """Stop the thread pool and this keyring's gpg-agent (it would outlive us otherwise)."""
        self._pool.shutdown(wait=True)
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "gpg-agent"],
                       check=False, capture_output=True, timeout=10)

    # --- the gateway's own key -------------------------------------------------------------

    async def ensure_gateway_key(self, address: str, name: str) -> tuple[str, bool]:
        """Load the gateway key, generating it on first start. Returns (fingerprint, created)."""
        return await self._run(self._ensure_gateway_key, address, name)

    def _ensure_gateway_key(self, address: str, name: str) -> tuple[str, bool]:
        for key in self._gpg.list_keys(secret=True):
            if any(f"<{address.lower()}>" in uid.lower() for uid in key["uids"]):
                self.gateway_fingerprint = key["fingerprint"]
                return key["fingerprint"], False
        batch = "\n".join([
            "Key-Type: EDDSA", "Key-Curve: ed25519", "Key-Usage: sign,cert",
            "Subkey-Type: ECDH", "Subkey-Curve: cv25519", "Subkey-Usage: encrypt",
            f"Name-Real: {name}", f"Name-Email: {address}", "Expire-Date: 0",
            "%no-protection", "%commit", "",
        ])
        result = self._gpg.gen_key(batch)
        if not result.fingerprint:
            raise OpenPGPError(f"could not generate the gateway key: {result.stderr.strip()[-300:]}")
        self.gateway_fingerprint = str(result.fingerprint)
        return self.gateway_fingerprint, True

    async def holds_secret_key(self, fingerprint: str) -> bool:
        """gpg runs and the keyring still holds this secret key (the health check's question)."""
        keys = await self._run(lambda: self._gpg.list_keys(secret=True, keys=[fingerprint]))
        return any(k["fingerprint"] == fingerprint for k in keys)

    async def export_gateway_public_key(self) -> str:
        if not self.gateway_fingerprint:
            raise OpenPGPError("the gateway key is not loaded")
        return await self._run(self._gpg.export_keys, self.gateway_fingerprint)

    # --- other people's keys ---------------------------------------------------------------

    async def import_public_key(self, armored: bytes) -> list[str]:
        """Import an officer's or agency's public key; refuse anything with secret material."""
        return await self._run(self._import_public_key, armored)

    def _import_public_key(self, armored: bytes) -> list[str]:
        if b"PRIVATE KEY BLOCK" in armored:
            raise KeyImportError("the file holds a secret key; send only the public key")
        result = self._gpg.import_keys(armored)
        if getattr(result, "sec_imported", 0):
            raise KeyImportError("the file holds a secret key; send only the public key")
        fingerprints = [fp for fp in result.fingerprints if fp]
        if not fingerprints:
            raise KeyImportError("no OpenPGP public key found in the file")
        return sorted(set(fingerprints))

    async def keys_in(self, armored: bytes) -> list[str]:
        """The primary fingerprints a key file holds, without importing it."""
        return await self._run(self._keys_in, armored)

    def _keys_in(self, armored: bytes) -> list[str]:
        if b"PRIVATE KEY BLOCK" in armored:
            raise KeyImportError("the file holds a secret key; send only the public key")
        return sorted({k["fingerprint"] for k in self._gpg.scan_keys_mem(armored) if k.get("fingerprint")})

    async def forget_candidate_key(self, fingerprint: str) -> bool:
        """Remove a public key that a refused message brought in (rule 1 imports an unknown signer's
        attached key before rule 3 decides): a stream of signed mail with fresh keys must not
        grow the keyring. Never removes a key whose secret part we hold."""
        return await self._run(self._forget_candidate_key, fingerprint)

    def _forget_candidate_key(self, fingerprint: str) -> bool:
        if not re.fullmatch(r"[0-9A-F]{40}|[0-9A-F]{64}", fingerprint):
            raise OpenPGPError(f"not a fingerprint: {fingerprint!r}")
        if self._gpg.list_keys(secret=True, keys=[fingerprint]):
            return False
        deleting = LeanGPG(gnupghome=str(self.home), options=[*GPG_OPTIONS, "--yes"])
        deleting.timeout = self._gpg.timeout
        return str(deleting.delete_keys(fingerprint)) == "ok"

    async def import_revocation(self, data: bytes) -> list[str]:
        """Import a revocation certificate (or a key carrying one); the keys now revoked."""
        return await self._run(self._import_revocation, data)

    def _import_revocation(self, data: bytes) -> list[str]:
        if b"PRIVATE KEY BLOCK" in data:
            raise KeyImportError("the file holds a secret key; send only the revocation")
        result = self._gpg.import_keys(data)
        considered = sorted({v.split()[0] for k, v in result.lines if k == "KEY_CONSIDERED" and v})
        revoked = [fpr for fpr in considered if (status := self._key_status(fpr)) and status.revoked]
        if not revoked:
            raise KeyImportError("the file revokes no key in our keyring")
        return revoked

    async def certifications_of(self, fingerprint: str) -> list[Certification]:
        """Every good third-party certification on the key's user IDs, as gpg checked them."""
        return await self._run(self._certifications_of, fingerprint)

    def _certifications_of(self, fingerprint: str) -> list[Certification]:
        if not re.fullmatch(r"[0-9A-Fa-f]{40}|[0-9A-Fa-f]{64}", fingerprint):
            return []
        listing = subprocess.run(
            [self._gpg.gpgbinary, "--homedir", str(self.home), *GPG_OPTIONS, "--batch", "--no-tty",
             "--with-colons", "--fixed-list-mode", "--check-sigs", fingerprint],
            capture_output=True, timeout=60, check=False, env={**os.environ, "LC_ALL": "C"})
        if listing.returncode != 0:
            return []
        return parse_certifications(listing.stdout.decode("utf-8", "replace"), fingerprint)

    async def verify_with_offered_keys(self, signed_bytes: bytes, signature: bytes,
                                       offered: bytes) -> OfferedKeyCheck:
        """Check a signature with only the keys the message carries, in a throw-away keyring,
        so that an unknown sender's key never enters ours before it has proven anything."""
        return await self._run(self._verify_with_offered, signed_bytes, signature, offered)

    def _verify_with_offered(self, signed_bytes: bytes, signature: bytes,
                             offered: bytes) -> OfferedKeyCheck:
        if b"PRIVATE KEY BLOCK" in offered:
            raise KeyImportError("the attached key file holds a secret key; send only the public key")
        scratch = Path(tempfile.mkdtemp(prefix="offered-", dir=self.home))
        try:
            gpg = LeanGPG(gnupghome=str(scratch), options=list(GPG_OPTIONS))
            gpg.timeout = self._gpg.timeout
            gpg.encoding = "utf-8"
            gpg.result_map = {**gpg.result_map, "verify": _StatusRecorder}
            imported = gpg.import_keys(offered)
            fingerprints = tuple(sorted({fp for fp in imported.fingerprints if fp}))
            sig_path = scratch / "signature.asc"
            sig_path.write_bytes(signature)
            try:
                verified = gpg.verify_data(str(sig_path), signed_bytes)
                check = judge_status_lines(verified.lines)
            except OSError:
                check = SignatureCheck(False, "bad_signature", "gpg could not read the signature")
            signer_key = None
            if check.ok and check.signer_fingerprint in fingerprints:
                exported = gpg.export_keys(check.signer_fingerprint)
                signer_key = exported.encode() if isinstance(exported, str) else exported
            return OfferedKeyCheck(check, fingerprints, signer_key or None)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    async def known_key_ids(self) -> frozenset[str]:
        """Fingerprints and key ids (upper-case hex) of every key and subkey in the keyring: what
        ingress triage compares a signature's issuer with (gateway/triage.py)."""
        return await self._run(self._known_key_ids)

    def _known_key_ids(self) -> frozenset[str]:
        ids: set[str] = set()
        for key in self._gpg.list_keys():
            values = [key.get("fingerprint"), key.get("keyid"),
                      *(v for sub in key.get("subkeys", []) for v in sub)]
            ids.update(v.upper() for v in values if isinstance(v, str) and len(v) in (16, 40, 64))
        ids.update(i[-16:] for i in list(ids) if len(i) == 40)
        return frozenset(ids)

    async def key_status(self, fingerprint: str) -> KeyStatus | None:
        """The key's user IDs, expiry, revocation and capabilities, as gpg lists them now.

        Asked twice per request (the identity rule, then the outbox before it encrypts), so the
        answer is cached for as long as the keyring files are unchanged (`_keyring_stamp`), at most
        KEY_STATUS_SECONDS, and never past an expiry date in the listing: any import, revocation
        or deletion, by this process, the CLI or gpg itself, rewrites the keyring, and the next
        call lists the key again. That keeps "a key revoked while a reply waits holds the reply".
        """
        hit = self._status_cache.get(fingerprint)
        if hit is not None and hit.fresh(self._keyring_stamp()):
            return hit.status
        return await self._run(self._key_status, fingerprint)

    def _key_status(self, fingerprint: str) -> KeyStatus | None:
        stamp = self._keyring_stamp()
        hit = self._status_cache.get(fingerprint)
        if hit is not None and hit.fresh(stamp):
            return hit.status
        keys = self._gpg.list_keys(keys=[fingerprint])
        key = next((k for k in keys if k["fingerprint"] == fingerprint), None)
        status = None if key is None else _key_status_of(fingerprint, key)
        if self._keyring_stamp() == stamp:  # nothing changed while gpg listed: safe to keep
            if len(self._status_cache) > 10_000:
                self._status_cache.clear()
            self._status_cache[fingerprint] = _CachedStatus(
                status, stamp, time.monotonic() + KEY_STATUS_SECONDS, _first_expiry(key))
        return status

    def _keyring_stamp(self) -> tuple[tuple[int, ...] | None, ...]:
        """Identity, size and times of the public keyring files: gpg rewrites them on any change."""
        stamps: list[tuple[int, ...] | None] = []
        for name in ("pubring.kbx", "pubring.gpg"):
            try:
                st = os.stat(self.home / name)
            except FileNotFoundError:
                stamps.append(None)
                continue
            stamps.append((st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        return tuple(stamps)

    # --- verification ----------------------------------------------------------------------

    async def verify_detached_signature(self, signed_bytes: bytes, signature: bytes) -> SignatureCheck:
        """Check an RFC 3156 detached signature over the exact bytes of the signed part."""
        return await self._run(self._verify_detached, signed_bytes, signature)

    def _verify_detached(self, signed_bytes: bytes, signature: bytes) -> SignatureCheck:
        fd, sig_path = tempfile.mkstemp(prefix="sig-", dir=self.home)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(signature)
            result = verify_detached(self._gpg, sig_path, signed_bytes)  # a view is not copied
        except OSError:
            # gpg gave up on the signature packet and closed its input before reading all the
            # signed bytes (python-gnupg then raises BrokenPipeError): nothing was verified
            return SignatureCheck(False, "bad_signature", "gpg could not read the signature")
        finally:
            os.unlink(sig_path)
        return judge_status_lines(result.lines)

    async def verify_clearsigned_text(self, text: bytes) -> tuple[SignatureCheck, bytes]:
        """Check an inline (cleartext-signed) block; return the verdict and the signed text."""
        return await self._run(self._verify_clearsigned, text)

    def _verify_clearsigned(self, text: bytes) -> tuple[SignatureCheck, bytes]:
        try:
            result = self._gpg.decrypt(text)
        except OSError:
            return SignatureCheck(False, "bad_signature", "gpg could not read the signature"), b""
        check = judge_status_lines(result.lines)
        data = result.data if isinstance(result.data, bytes) else str(result.data).encode()
        return check, data

    async def decrypt_from_officer(self, ciphertext: bytes) -> tuple[SignatureCheck | None, bytes | None]:
        """Decrypt mail sent to the gateway key; judge the signature inside it, if any."""
        return await self._run(self._decrypt, ciphertext)

    def _decrypt(self, ciphertext: bytes) -> tuple[SignatureCheck | None, bytes | None]:
        # gpg stops writing at --max-output and fails: a compression bomb never fills memory
        try:
            result = self._gpg.decrypt(ciphertext,
                                       extra_args=["--max-output", str(self.max_plaintext_bytes)])
        except OSError:  # gpg stopped reading bogus packets early: nothing was decrypted
            return None, None
        if not result.ok or result.returncode != 0:
            return None, None
        data = result.data if isinstance(result.data, bytes) else str(result.data).encode()
        signed = any(k in SIGNATURE_RESULTS or k == "NEWSIG" for k, _ in result.lines)
        return (judge_status_lines(result.lines) if signed else None), data

    # --- the vault's data keys ----------------------------------------------------------------

    async def wrap_data_key(self, key: bytes, storage_fingerprint: str) -> str:
        """Encrypt a vault data key to the storage key (armored), for the database."""
        return await self._run(self._wrap_data_key, key, storage_fingerprint)

    def _wrap_data_key(self, key: bytes, storage_fingerprint: str) -> str:
        with _refused_early(f"could not encrypt the data key to the storage key {storage_fingerprint}"):
            result = self._gpg.encrypt(key, [storage_fingerprint], armor=True, always_trust=True)
        if not result.ok:
            raise OpenPGPError(f"could not encrypt the data key to the storage key {storage_fingerprint}: "
                               f"{result.status}")
        return str(result)

    async def unwrap_data_key(self, wrapped: str) -> bytes:
        """Decrypt a vault data key; needs the storage key's secret part in this keyring."""
        return await self._run(self._unwrap_data_key, wrapped)

    def _unwrap_data_key(self, wrapped: str) -> bytes:
        with _refused_early("could not decrypt a data key of the database"):
            result = self._gpg.decrypt(wrapped)
        if not result.ok or len(result.data) != 32:
            raise OpenPGPError("could not decrypt a data key of the database: the storage key's secret "
                               "part is not in this keyring (see [storage] encryption_key)")
        return bytes(result.data)

    # --- evidence --------------------------------------------------------------------------

    async def sign_evidence(self, data: bytes) -> bytes:
        """A detached, armored signature by the gateway key (chain-of-custody bundles)."""
        return await self._run(self._sign_detached, data)

    def _sign_detached(self, data: bytes) -> bytes:
        if not self.gateway_fingerprint:
            raise OpenPGPError("the gateway key is not loaded")
        with _refused_early("could not sign"):
            result = self._gpg.sign(data, keyid=self.gateway_fingerprint, detach=True, binary=False,
                                    extra_args=["--digest-algo", "SHA512"])
        if not result.data:
            raise OpenPGPError(f"could not sign: {result.status}")
        return result.data if isinstance(result.data, bytes) else str(result.data).encode()

    # --- replies ---------------------------------------------------------------------------

    async def sign_and_encrypt_for_officer(self, content: bytes, officer_fingerprint: str) -> bytes:
        """Sign with the gateway key and encrypt to the officer's key: one armored OpenPGP message."""
        # a reply finishes work already accepted: it goes before verifications waiting for gpg
        return await self._run(self._sign_and_encrypt, content, officer_fingerprint, priority=URGENT)

    def _sign_and_encrypt(self, content: bytes, officer_fingerprint: str) -> bytes:
        if not self.gateway_fingerprint:
            raise OpenPGPError("the gateway key is not loaded")
        with _refused_early(f"could not sign and encrypt to {officer_fingerprint}"):
            result = self._gpg.encrypt(
                content, [officer_fingerprint], sign=self.gateway_fingerprint, armor=True,
                always_trust=True, extra_args=["--digest-algo", "SHA512"],
            )
        if not result.ok:
            raise OpenPGPError(f"could not sign and encrypt to {officer_fingerprint}: {result.status}")
        return result.data if isinstance(result.data, bytes) else str(result.data).encode()


@contextmanager
def _refused_early(what: str) -> Iterator[None]:
    """gpg that refuses at once (an unusable key) may exit before it has read all its input, and
    writing the rest then fails (BrokenPipeError, as python-gnupg raises it too): the same
    OpenPGPError as any other refusal, not an error of another kind, whichever comes first."""
    try:
        yield
    except OSError as exc:
        raise OpenPGPError(f"{what}: gpg stopped reading its input ({exc})") from exc


def judge_status_lines(lines: list[tuple[str, str]]) -> SignatureCheck:
    """Turn gpg's status lines into one strict verdict (acceptance rule 2 of DESIGN.md)."""
    status = tuple(f"{k} {v}".strip() for k, v in lines)
    keys = [k for k, _ in lines]
    if "UNPARSEABLE" in keys:
        return SignatureCheck(False, "bad_signature", "gpg gave a status we could not read",
                              status_lines=status)
    results = [(k, v) for k, v in lines if k in SIGNATURE_RESULTS]
    if not results:
        if "NODATA" in keys:
            return SignatureCheck(False, "not_a_detached_signature",
                                  "the signature part holds no OpenPGP signature", status_lines=status)
        return SignatureCheck(False, "bad_signature", "gpg found no signature", status_lines=status)
    if len(results) > 1 or keys.count("NEWSIG") > 1:
        return SignatureCheck(False, "multiple_signatures",
                              "the message carries more than one signature; send exactly one",
                              status_lines=status)
    kind, value = results[0]
    if kind == "ERRSIG":
        parts = value.split()
        if "NO_PUBKEY" in keys:
            fpr = parts[6] if len(parts) >= 7 else parts[0]
            return SignatureCheck(False, "unknown_key", f"signed by a key we do not know ({fpr})",
                                  status_lines=status)
        if len(parts) >= 3 and parts[2] in WEAK_DIGESTS:
            return SignatureCheck(False, "weak_digest",
                                  f"signed with {WEAK_DIGESTS[parts[2]]}, which is too weak; "
                                  "use SHA-256 or stronger", status_lines=status)
        return SignatureCheck(False, "bad_signature", "the signature could not be checked",
                              status_lines=status)
    if kind == "BADSIG":
        return SignatureCheck(False, "bad_signature",
                              "the signature does not match the message (altered in transit?)",
                              status_lines=status)
    if kind == "EXPKEYSIG":
        return SignatureCheck(False, "expired_key", "the signing key has expired",
                              status_lines=status)
    if kind == "REVKEYSIG":
        return SignatureCheck(False, "revoked_key", "the signing key has been revoked",
                              status_lines=status)
    if kind == "EXPSIG":
        return SignatureCheck(False, "expired_signature", "the signature has expired",
                              status_lines=status)
    # GOODSIG: now insist on a clean run and exactly one VALIDSIG that agrees with it.
    trouble = TROUBLE & set(keys)
    if trouble:
        return SignatureCheck(False, "bad_signature",
                              f"gpg reported a problem with the message ({', '.join(sorted(trouble))})",
                              status_lines=status)
    valid = [v for k, v in lines if k == "VALIDSIG"]
    if len(valid) != 1:
        return SignatureCheck(False, "bad_signature", "gpg did not confirm the signature",
                              status_lines=status)
    if "KEYREVOKED" in keys:
        return SignatureCheck(False, "revoked_key", "the signing key has been revoked",
                              status_lines=status)
    if "KEYEXPIRED" in keys or "SIGEXPIRED" in keys:
        return SignatureCheck(False, "expired_key", "the signing key has expired",
                              status_lines=status)
    fields = valid[0].split()
    if len(fields) < 10:
        return SignatureCheck(False, "bad_signature", "gpg's VALIDSIG line is incomplete",
                              status_lines=status)
    signing_fpr, _date, sig_ts, _expire, _version, _reserved, _algo, digest, _cls, primary = fields[:10]
    goodsig_keyid = value.split()[0] if value else ""
    if not (signing_fpr.endswith(goodsig_keyid) or primary.endswith(goodsig_keyid)):
        return SignatureCheck(False, "bad_signature", "gpg's status lines disagree",
                              status_lines=status)
    if digest in WEAK_DIGESTS:
        return SignatureCheck(False, "weak_digest",
                              f"signed with {WEAK_DIGESTS[digest]}, which is too weak; "
                              "use SHA-256 or stronger", status_lines=status)
    signature_ids = [v.split()[0] for k, v in lines if k == "SIG_ID" and v.split()]
    signed_at = _timestamp(sig_ts)
    return SignatureCheck(
        True, None, "good signature", signer_fingerprint=primary,
        signing_key_fingerprint=signing_fpr,
        signature_id=signature_ids[0] if len(signature_ids) == 1 else None,
        signed_at=signed_at, digest=digest, status_lines=status,
    )


_COLON_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")


def _unescape(field_: str) -> str:
    """gpg's colon listings write ':' and '\\' and control characters as \\xHH."""
    return _COLON_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), field_)


def parse_certifications(colons: str, fingerprint: str) -> list[Certification]:
    """Third-party certifications per user ID from `--check-sigs --with-colons` output.

    Signatures gpg verified ('!') count; those by keys we lack ('?') are kept, unverified, so the
    refusal can name their issuer; bad ones are dropped; self-signatures are skipped; a later revocation
    (class 0x30) by the same issuer on the same user ID marks the certification revoked.
    """
    found: list[Certification] = []
    uid_email: str | None = None
    in_uid = False
    revocations: dict[tuple[str | None, str], datetime] = {}
    for line in colons.splitlines():
        fields = line.split(":")
        kind = fields[0]
        if kind in ("pub", "sub", "uat"):
            in_uid = False
            continue
        if kind == "uid":
            in_uid = True
            uid_email = _uid_email(_unescape(fields[9])) if len(fields) > 9 else None
            continue
        if not in_uid or kind not in ("sig", "rev") or len(fields) < 13:
            continue
        issuer = fields[12].upper()
        if fields[1] not in ("!", "?") or not issuer or issuer == fingerprint.upper():
            continue
        if kind == "rev" and fields[1] != "!":
            continue
        created = _timestamp(fields[5])
        sig_class = fields[10][:2]
        if kind == "rev" and sig_class == "30" and created is not None:
            key = (uid_email, issuer)
            revocations[key] = max(created, revocations.get(key, created))
            continue
        if kind != "sig" or sig_class not in ("10", "11", "12", "13") or not fields[10].endswith("x"):
            continue  # not a certification, or a local (non-exportable) one
        depth, _, _amount = fields[7].partition(" ")
        found.append(Certification(
            uid_email=uid_email, issuer_fingerprint=issuer, created_at=created,
            expires_at=_timestamp(fields[6]), trust_depth=int(depth) if depth.isdigit() else 0,
            trust_regexp=_unescape(fields[8]) or None if depth.isdigit() else None, revoked=False,
            verified=fields[1] == "!"))
    return [Certification(**{**c.__dict__, "revoked": c.created_at is None or (
        (c.uid_email, c.issuer_fingerprint) in revocations
        and revocations[(c.uid_email, c.issuer_fingerprint)] >= c.created_at)}) for c in found]


# the scope `gpg --edit-key tsign` writes for a domain: <[^>]+[@.]DOMAIN>$ (dots escaped)
TSIGN_DOMAIN = re.compile(r"<\[\^>\]\+\[@\.\]((?:[A-Za-z0-9-]+\\\.)*[A-Za-z0-9-]+)>\$")


def trust_signature_domain(regexp: str) -> str | None:
    """The mail domain a trust signature is limited to, if it is in the form gpg writes;
    any other regular expression is not understood, and the caller must refuse it."""
    match = TSIGN_DOMAIN.fullmatch(regexp)
    return match.group(1).replace("\\.", ".").lower() if match else None


def _timestamp(value: str | None) -> datetime | None:
    """gpg gives seconds since the epoch, or an ISO 8601 basic string with --fixed-list-mode off."""
    if not value or value == "0":
        return None
    if value.isdigit():
        return datetime.fromtimestamp(int(value), UTC)
    try:
        return datetime.strptime(value, "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def _uid_email(uid: str) -> str | None:
    if "<" in uid and uid.endswith(">"):
        return uid[uid.rindex("<") + 1 : -1].strip().lower() or None
    return uid.strip().lower() if "@" in uid and " " not in uid.strip() else None
