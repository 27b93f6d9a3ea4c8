"""Feed gpg the signed bytes of a large message from a view, without a copy of them.

python-gnupg's `verify_data` wraps the data in a BytesIO, which copies anything but `bytes`
(a signed part cut from a stored message is a memoryview of it). This module makes the same
call through python-gnupg's own IO (`GPG._handle_io`, the method `verify_data` uses in 0.5.x,
requirements.lock), with a small reader that hands gpg's input thread one slice at a time.
"""

from __future__ import annotations

from typing import Any

import gnupg


class ViewReader:
    """A read-only binary stream over a bytes-like object; each read copies only what it returns."""

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self.view = memoryview(data)
        self.at = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self.view) if size is None or size < 0 else min(len(self.view), self.at + size)
        piece = bytes(self.view[self.at:end])
        self.at = end
        return piece

    def close(self) -> None:
        self.view = memoryview(b"")


def verify_detached(gpg: gnupg.GPG, sig_path: str, data: bytes | bytearray | memoryview) -> Any:
    """`gpg.verify_data(sig_path, data)`, with the data streamed from a view."""
    if isinstance(data, bytes):
        return gpg.verify_data(sig_path, data)  # BytesIO shares bytes: no copy to avoid
    result = gpg.result_map["verify"](gpg)
    gpg._handle_io(["--verify", sig_path, "-"], ViewReader(data), result, binary=True)
    return result
