"""A message on its way in, held without holding it whole: small messages stay in memory, a large
one goes to an encrypted spool file in records of 64 KiB, hashed as it arrives.

The spool file is unlinked as soon as it is opened and sealed with a key that lives only in this
object, so what reaches the disk is ciphertext nobody can open, and a crash leaves nothing behind
(no 250 was given for it: the sending server still holds the message). The message reaches the
database later, chunk by chunk (gateway/chunks.py), inside the transaction that stores it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import weakref
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

CHUNK = 1024 * 1024  # bytes per sealed chunk in the database (gateway/chunks.py)
RECORD = 64 * 1024  # a message larger than this goes to the spool file, this much at a time
HEAD = 64 * 1024  # what triage and the header Message-ID look at
NONCE = 12
TAG = 16

# where a decoded attachment too large to hold goes while its message is judged (gateway/mime.py);
# None: it stays in memory (tests, tools that read one message)
SPOOL_DIR: ContextVar[Path | None] = ContextVar("lers_spool_dir", default=None)


class Spool:
    """Append bytes with `write` (and `flush` when it says so); then `digest`, `size`, `head`,
    and either `inline` (the whole message, when it stayed under one record) or `chunks()` (each
    chunk in turn, for a thread)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._hash = hashlib.sha256()
        self._buffer = bytearray()
        self.size = 0
        self._head = b""
        self._last = b""  # the end of the last record in the file
        self._file: int | None = None
        self._lengths: list[int] = []  # plaintext length of each record in the file
        self._cipher: AESGCM | None = None
        self._closer: weakref.finalize | None = None
        self.handed_over = False

    def write(self, data: bytes | bytearray | memoryview) -> bool:
        """Append; True when a full record waits for `flush`."""
        self._hash.update(data)
        self.size += len(data)
        self._buffer += data
        return len(self._buffer) >= RECORD

    async def flush(self) -> None:
        """Move every full record to the file (sealed, in a thread): a connection holds at most
        about one record, however large its message."""
        while len(self._buffer) >= RECORD:
            record = bytes(self._buffer[:RECORD])
            del self._buffer[:RECORD]
            await asyncio.to_thread(self._append, record)

    def flush_here(self) -> None:
        """`flush` for code already off the event loop."""
        while len(self._buffer) >= RECORD:
            record = bytes(self._buffer[:RECORD])
            del self._buffer[:RECORD]
            self._append(record)

    @property
    def spooled(self) -> bool:
        return self._file is not None

    @property
    def head(self) -> bytes:
        return self._head if self.spooled else bytes(self._buffer[:HEAD])

    @property
    def tail(self) -> bytes:
        """The last HEAD bytes (where a PGP/MIME signature is)."""
        return (self._last + bytes(self._buffer[-HEAD:]))[-HEAD:]

    @property
    def digest(self) -> str:
        return self._hash.hexdigest()

    @property
    def inline(self) -> bytes | None:
        """The whole message if it never left memory."""
        return None if self.spooled else bytes(self._buffer)

    def whole(self) -> bytes:
        """Everything, in one buffer: for the readers of small values only (reads the file)."""
        return b"".join(self.chunks())

    def chunks(self) -> Iterator[bytes]:
        """The message in CHUNK-sized pieces (the last one shorter); reads the file: call from a
        thread."""
        pending = bytearray()
        for record in self._records():
            pending += record
            while len(pending) >= CHUNK:
                yield bytes(pending[:CHUNK])
                del pending[:CHUNK]
        pending += self._buffer
        while pending:
            yield bytes(pending[:CHUNK])
            del pending[:CHUNK]

    def _records(self) -> Iterator[bytes]:
        assert self._file is not None and self._cipher is not None
        offset = 0
        for index, length in enumerate(self._lengths):
            sealed = os.pread(self._file, NONCE + length + TAG, offset)
            offset += len(sealed)
            yield self._cipher.decrypt(sealed[:NONCE], sealed[NONCE:], index.to_bytes(8, "big"))

    def hand_over(self) -> None:
        """Whoever stores the message closes the spool (a sender that hangs up while its message
        is being stored must not close the file under the writer)."""
        self.handed_over = True

    def close(self, *, unless_handed_over: bool = False) -> None:
        if unless_handed_over and self.handed_over:
            return
        if self._closer is not None:
            self._closer()  # closes the file once, however often it is called
            self._file = None
        self._buffer = bytearray()

    def _append(self, record: bytes) -> None:
        if self._file is None:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, name = tempfile.mkstemp(dir=self.directory, prefix="in-")
            os.unlink(name)  # nothing to clean up after a crash
            self._closer = weakref.finalize(self, os.close, fd)  # a spool dropped unclosed frees it
            self._head = record[:HEAD]
            self._file, self._cipher = fd, AESGCM(AESGCM.generate_key(bit_length=256))
        assert self._cipher is not None
        nonce = os.urandom(NONCE)
        sealed = nonce + self._cipher.encrypt(nonce, record, len(self._lengths).to_bytes(8, "big"))
        view = memoryview(sealed)
        while view:
            view = view[os.write(self._file, view):]
        self._lengths.append(len(record))
        self._last = record[-HEAD:]
