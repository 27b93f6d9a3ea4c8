"""How python-gnupg's calls reach gpg: its arguments and its result classes, a leaner exchange.

python-gnupg stays the library: it builds every gpg command line (`GPG.make_args` and the
method's own arguments) and its result classes (`Verify`, `Crypt`, ...) read gpg's status lines
and decide. Only the exchange with the process changes. python-gnupg's `_handle_io` (the method
all its data calls use in 0.5.x, requirements.lock) starts three threads per call: one writes
stdin, two read stdout and stderr, the latter a line at a time through a `codecs` reader. Each
took the GIL from the event loop for every wake-up. `LeanGPG._handle_io` does the same exchange
in the calling thread (already one of the gpg pool's): stdin written from there, stdout and
stderr collected in memory files and read when gpg has ended, then the status lines handed to
the result as python-gnupg hands them.

Data in memory is written from a view: a signed part cut from a stored message is a memoryview
of it (`ViewReader`), and bytes are not copied either.
"""

from __future__ import annotations

import io
import os
import select
import subprocess
import threading
import time
from typing import Any

import gnupg

WRITE_CHUNK = 1 << 20
DEFAULT_TIMEOUT = 120.0  # seconds a gpg call may take, input written and output read


class GpgTimeout(Exception):
    """gpg did not finish in time (and was killed): not a verdict on the data, a failure of ours
    (an overloaded machine, a gpg or agent that hangs); deliberately not an OSError, which the
    callers read as "gpg stopped reading the input"."""
STATUS_PREFIX = "[GNUPG:] "
MEMFD = hasattr(os, "memfd_create")  # Linux; elsewhere python-gnupg's own exchange


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


def _in_memory(fileobj: Any) -> memoryview | None:
    """The unread data of a stream held in memory, without a copy; None for anything else."""
    if isinstance(fileobj, ViewReader):
        view = fileobj.view[fileobj.at:]
        fileobj.at = len(fileobj.view)
        return view
    if type(fileobj) is io.BytesIO:
        # read() of a whole BytesIO made from bytes returns those bytes themselves
        return memoryview(fileobj.read())
    return None


class LeanGPG(gnupg.GPG):
    """python-gnupg's GPG; calls with data in memory and no passphrase exchange with gpg in the
    calling thread (`exchange`) instead of three threads of their own; every call, in either
    exchange, gives up on a gpg that has not finished within `timeout` seconds (GpgTimeout)."""

    timeout: float = DEFAULT_TIMEOUT

    def _handle_io(self, args: list[str], fileobj_or_path: Any, result: Any,
                   passphrase: str | None = None, binary: bool = False) -> Any:
        if passphrase is not None or not binary or self.on_data is not None or not MEMFD:
            return super()._handle_io(args, fileobj_or_path, result, passphrase, binary)
        data = _in_memory(fileobj_or_path)
        if data is None:
            return super()._handle_io(args, fileobj_or_path, result, passphrase, binary)
        with data:
            exchange(self, args, data, result, self.timeout)
        return result

    def _collect_output(self, process: subprocess.Popen[bytes], result: Any, writer: Any = None,
                        stdin: Any = None) -> int:
        """python-gnupg's own exchange (key listings and exports, key generation, deletion, data
        from files) waits for gpg without end: a gpg or gpg-agent that hangs would hold a gpg
        thread for good. Here gpg is killed at `timeout`, which ends its output and the reader
        threads with it, and GpgTimeout is raised as in `exchange`."""
        killed = threading.Event()

        def stop() -> None:
            if process.poll() is None:
                killed.set()
                process.kill()

        watchdog = threading.Timer(self.timeout, stop)
        watchdog.daemon = True
        watchdog.start()
        try:
            returncode: int = super()._collect_output(process, result, writer, stdin)
        finally:
            watchdog.cancel()
        if killed.is_set():
            raise GpgTimeout(f"gpg did not finish within {self.timeout:g} s and was stopped")
        return returncode


def exchange(gpg: gnupg.GPG, args: list[str], data: memoryview, result: Any,
             timeout: float = DEFAULT_TIMEOUT) -> None:
    """Run gpg with python-gnupg's command line for `args`, write `data` to its stdin, put its
    stdout in `result.data` and feed the status lines on stderr to `result.handle_status`, as
    `GPG._handle_io` does. Like it, raises BrokenPipeError (after gpg has ended and its status
    was read) if gpg closed its input before taking all of it.

    gpg's stdout and stderr are memory files (memfd: RAM, like the process's own memory, never
    disk; plaintext of a decryption goes there), read once gpg has ended: nothing has to drain
    them while stdin is written, so the calling thread wakes once per write and once at the end
    instead of for every status line gpg writes. A gpg still running `timeout` seconds after it
    was started (reading its input or not) is killed, and GpgTimeout raised."""
    out = os.memfd_create("gpg-stdout", os.MFD_CLOEXEC)
    try:
        err = os.memfd_create("gpg-stderr", os.MFD_CLOEXEC)
        try:
            deadline = time.monotonic() + timeout
            process = subprocess.Popen(gpg.make_args(args, False), stdin=subprocess.PIPE, stdout=out,
                                       stderr=err, env=gpg.env)
            assert process.stdin is not None
            broken: BrokenPipeError | None = None
            try:
                with process.stdin:
                    _write_all(process.stdin.fileno(), data, deadline)
            except BrokenPipeError as exc:  # gpg stopped reading
                broken = exc
            finally:
                result.returncode = _wait(process, deadline, timeout)
            result.data = _contents(out)
            _feed_status(gpg, _contents(err), result)
        finally:
            os.close(err)
    finally:
        os.close(out)
    if broken is not None:
        raise broken


def _write_all(fd: int, data: memoryview, deadline: float) -> None:
    """Write `data` to gpg's stdin; a gpg that stops reading makes the pipe full, and waiting for
    room ends at the deadline (the caller then kills it)."""
    os.set_blocking(fd, False)
    room = select.poll()  # not select(): a server's descriptors may be numbered past 1024
    room.register(fd, select.POLLOUT)
    sent = 0
    while sent < len(data):
        try:
            sent += os.write(fd, data[sent:sent + WRITE_CHUNK])
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0 or not room.poll(left * 1000):
                return  # out of time: `_wait` kills gpg and says so


def _wait(process: subprocess.Popen[bytes], deadline: float, timeout: float) -> int:
    """gpg's exit status; a gpg still running at the deadline is killed (and reaped) instead."""
    if _ended_by(process, deadline):
        return process.wait()
    process.kill()
    process.wait()
    raise GpgTimeout(f"gpg did not finish within {timeout:g} s and was stopped")


def _ended_by(process: subprocess.Popen[bytes], deadline: float) -> bool:
    """Whether the process ends before the deadline, learnt the moment it does: its pidfd becomes
    readable. `Popen.wait(timeout)` instead looks every 1, 2, 4, 8... (up to 50) ms: a gpg that
    took 3 ms was seen to end at 7; under load each sign-and-encrypt took about 1.5 ms longer
    and the benchmark's throughput was 7% lower (issue #8)."""
    try:
        pidfd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):  # no pidfd (not Linux, or before 5.3): Popen's own wait
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return False
        return True
    try:
        ended = select.poll()
        ended.register(pidfd, select.POLLIN)
        return bool(ended.poll(max(0.0, deadline - time.monotonic()) * 1000))
    finally:
        os.close(pidfd)


def _contents(fd: int) -> bytes:
    """All a memory file holds."""
    size = os.fstat(fd).st_size
    pieces: list[bytes] = []
    at = 0
    while at < size:
        piece = os.pread(fd, size - at, at)
        if not piece:
            break
        pieces.append(piece)
        at += len(piece)
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def _feed_status(gpg: gnupg.GPG, stderr: bytes, result: Any) -> None:
    """python-gnupg's `_read_response`: every `[GNUPG:] KEYWORD value` line to the result, the
    whole text as `result.stderr`. Lines end at LF, gpg's line end (python-gnupg's codecs reader
    also split at other Unicode line breaks). A line that does not decode stops the reading
    there, as it stopped python-gnupg's reader thread, and is marked UNPARSEABLE for a strict
    judge (`judge_status_lines` refuses a signature on it)."""
    for raw in stderr.split(b"\n"):
        try:
            line = raw.decode(gpg.encoding).rstrip()
        except UnicodeDecodeError:
            if hasattr(result, "lines"):
                result.lines.append(("UNPARSEABLE", "undecodable status line"))
            break
        if line[0:9] == STATUS_PREFIX:
            parts = line[9:].split(None, 1)
            if parts:
                result.handle_status(parts[0], parts[1] if len(parts) > 1 else "")
    result.stderr = stderr.decode(gpg.encoding, "replace")


def verify_detached(gpg: gnupg.GPG, sig_path: str, data: bytes | bytearray | memoryview) -> Any:
    """`gpg.verify_data(sig_path, data)`, with the data streamed from a view."""
    if isinstance(data, bytes):
        return gpg.verify_data(sig_path, data)  # BytesIO shares bytes: no copy to avoid
    result = gpg.result_map["verify"](gpg)
    gpg._handle_io(["--verify", sig_path, "-"], ViewReader(data), result, binary=True)
    return result
