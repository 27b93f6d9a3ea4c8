"""Encryption at rest: what the database holds about people is sealed, so a copy of the database
(a backup, a PostgreSQL replica, a stolen disk of the database server) reveals nothing.

Envelope encryption: a random 256-bit data key encrypts each value with AES-256-GCM (a fresh
nonce each time, and the value's purpose, e.g. "messages.raw", as associated data so a sealed
value cannot be moved to another column). The data key itself is stored in the database only
encrypted with OpenPGP to the storage key (`[storage] encryption_key`, by default the gateway's
own key), and is unwrapped by gpg once at start. Several data keys may exist (each sealed value
names its key), so keys can be added without re-encrypting.

Sealed bytes start with MAGIC; sealed text is `lers1:` plus base64, so it fits the same columns.
The columns that hold personal data are declared with the Sealed* types below: every write seals
and every read opens, with the vault of the database the transaction belongs to
(`Database.transaction` makes it the active vault). Without an active vault (`lers db copy`,
which moves sealed values between databases) values pass through only if already sealed.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from contextvars import ContextVar
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import JSON, LargeBinary, Text, select
from sqlalchemy.types import TypeDecorator

if TYPE_CHECKING:  # the database and gpg modules import this one
    from gateway.db import Database
    from gateway.pgp import OpenPGP

MAGIC = b"LERS\x01"
TEXT_PREFIX = "lers1:"
KEY_ID_BYTES = 8
NONCE_BYTES = 12
TAG_BYTES = 16  # AES-GCM's authentication tag, after the ciphertext


class VaultError(Exception):
    """A sealed value cannot be opened: unknown key, or altered bytes."""


class Vault:
    """The data keys of this deployment, unwrapped; seals and opens values."""

    def __init__(self, keys: dict[bytes, bytes], current: bytes) -> None:
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self.current = current

    def seal(self, data: bytes, purpose: str) -> bytes:
        """MAGIC, key id, nonce, then AES-GCM ciphertext and tag, written into one buffer: a raw
        message of 30 MB costs one more copy here, not two (ciphertext, then the concatenation)."""
        nonce = os.urandom(NONCE_BYTES)
        head = MAGIC + self.current + nonce
        sealed = bytearray(len(head) + len(data) + TAG_BYTES)
        sealed[:len(head)] = head
        self._ciphers[self.current].encrypt_into(nonce, data, purpose.encode(),
                                                 memoryview(sealed)[len(head):])
        return sealed  # type: ignore[return-value]  # bytes-like: every driver binds it as a blob

    def open(self, blob: bytes, purpose: str) -> bytes:
        if not blob.startswith(MAGIC):
            raise VaultError(f"{purpose}: the stored value is not sealed")
        key_id = bytes(blob[len(MAGIC):len(MAGIC) + KEY_ID_BYTES])
        nonce_at = len(MAGIC) + KEY_ID_BYTES
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise VaultError(f"{purpose}: sealed with data key {key_id.hex()}, which this gateway "
                             "does not have")
        try:
            # a view, not a slice: opening a 30 MB value does not copy the ciphertext first
            return cipher.decrypt(blob[nonce_at:nonce_at + NONCE_BYTES],
                                  memoryview(blob)[nonce_at + NONCE_BYTES:], purpose.encode())
        except InvalidTag as exc:
            raise VaultError(f"{purpose}: the sealed value was altered or belongs elsewhere") from exc

    def seal_text(self, text: str | None, purpose: str) -> str | None:
        if text is None:
            return None
        return TEXT_PREFIX + base64.b64encode(self.seal(text.encode("utf-8"), purpose)).decode("ascii")

    def open_text(self, stored: str | None, purpose: str) -> str | None:
        if stored is None:
            return None
        if not stored.startswith(TEXT_PREFIX):
            raise VaultError(f"{purpose}: the stored text is not sealed")
        return self.open(base64.b64decode(stored[len(TEXT_PREFIX):]), purpose).decode("utf-8")


ACTIVE_VAULT: ContextVar[Vault | None] = ContextVar("lers_active_vault", default=None)


class SealedBytes(TypeDecorator[bytes]):
    impl = LargeBinary
    cache_ok = True

    def __init__(self, purpose: str) -> None:
        super().__init__()
        self.purpose = purpose

    def process_bind_param(self, value: bytes | None, dialect: Any) -> bytes | None:
        if value is None:
            return None
        vault = ACTIVE_VAULT.get()
        if vault is None:
            return _already_sealed(value, self.purpose)
        return vault.seal(value, self.purpose)

    def process_result_value(self, value: bytes | None, dialect: Any) -> bytes | None:
        vault = ACTIVE_VAULT.get()
        return value if value is None or vault is None else vault.open(bytes(value), self.purpose)

    def sqlite_bind(self, value: bytes | None) -> bytes | None:
        """What SQLite stores, in one step (gateway/driverinsert.py): the sealed buffer is bound
        as a blob as it is."""
        return self.process_bind_param(value, None)


class PreSealedBytes(TypeDecorator[bytes]):
    """Bytes sealed by the code that writes them (its associated data names more than a column,
    see gateway/chunks.py): stored only if sealed, read back still sealed."""

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: bytes | None, dialect: Any) -> bytes | None:
        return None if value is None else _already_sealed(value, "pre-sealed bytes")


class SealedText(TypeDecorator[str]):
    impl = Text
    cache_ok = True

    def __init__(self, purpose: str) -> None:
        super().__init__()
        self.purpose = purpose

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        vault = ACTIVE_VAULT.get()
        if value is None or vault is None:
            return value if value is None else _already_sealed_text(value, self.purpose)
        return vault.seal_text(value, self.purpose)

    def process_result_value(self, value: str | None, dialect: Any) -> str | None:
        vault = ACTIVE_VAULT.get()
        return value if value is None or vault is None else vault.open_text(value, self.purpose)

    def sqlite_bind(self, value: str | None) -> str | None:
        return self.process_bind_param(value, None)  # Text has no conversion of its own


class SealedJSON(TypeDecorator[Any]):
    """Any JSON value, stored as one sealed JSON string (so the column stays JSON)."""

    impl = JSON
    cache_ok = True

    def __init__(self, purpose: str) -> None:
        super().__init__()
        self.purpose = purpose

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        vault = ACTIVE_VAULT.get()
        if value is None:
            return None
        if vault is None:
            return _already_sealed_text(value, self.purpose)
        return vault.seal_text(json.dumps(value, ensure_ascii=False), self.purpose)

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        vault = ACTIVE_VAULT.get()
        if value is None or vault is None:
            return value
        return json.loads(vault.open_text(value, self.purpose) or "null")

    def sqlite_bind(self, value: Any) -> str:
        """`process_bind_param`, then the JSON text the column holds, in one step
        (gateway/driverinsert.py): the JSON of a string, as `json.dumps` writes it; JSON's null
        for None, as the JSON type stores it."""
        sealed = self.process_bind_param(value, None)
        return "null" if sealed is None else encode_basestring_ascii(sealed)


def _already_sealed(value: bytes, purpose: str) -> bytes:
    if not bytes(value).startswith(MAGIC):
        raise VaultError(f"{purpose}: refusing to store a value unsealed (no vault is active)")
    return value


def _already_sealed_text(value: Any, purpose: str) -> Any:
    if not (isinstance(value, str) and value.startswith(TEXT_PREFIX)):
        raise VaultError(f"{purpose}: refusing to store a value unsealed (no vault is active)")
    return value


def new_data_key() -> tuple[bytes, bytes]:
    """(key id, 256-bit key)."""
    return secrets.token_bytes(KEY_ID_BYTES), AESGCM.generate_key(bit_length=256)


async def load_vault(db: Database, pgp: OpenPGP, storage_fingerprint: str) -> Vault:
    """Unwrap the deployment's data keys; the first start (or a new storage key) adds one.

    Creation runs under a lock row, so two processes starting together make one key between them.
    """
    from gateway.leases import locked_mark  # import here: leases imports the models
    from gateway.models import VaultKey
    from gateway.pgp import OpenPGPError

    keys: dict[bytes, bytes] = {}
    current: bytes | None = None
    async with db.transaction() as session:
        await locked_mark(session, "vault")
        rows = list(await session.scalars(select(VaultKey).order_by(VaultKey.created_at, VaultKey.id)))
        for row in rows:
            try:
                keys[bytes.fromhex(row.id)] = await pgp.unwrap_data_key(row.wrapped)
            except OpenPGPError:
                if row.storage_fingerprint == storage_fingerprint:
                    raise  # the configured storage key must open its own data keys
                # wrapped to a storage key no longer held: the values it sealed stay shut
        if rows and rows[-1].storage_fingerprint == storage_fingerprint:
            current = bytes.fromhex(rows[-1].id)
        else:
            key_id, key = new_data_key()
            session.add(VaultKey(id=key_id.hex(), storage_fingerprint=storage_fingerprint,
                                 wrapped=await pgp.wrap_data_key(key, storage_fingerprint)))
            keys[key_id], current = key, key_id
    return Vault(keys, current)
