"""Give freed large buffers back to the system at once (glibc only; elsewhere nothing changes).

glibc raises its mmap threshold each time a large block is freed (up to 32 MiB), so after the
first large message its 1 MiB chunks and attachment buffers come from the heap arenas of
whichever threads touched them and stay there once freed: the gateway's resident memory then
grows with the number of large messages it has seen, not with the one it handles. A fixed
threshold keeps big buffers in their own mappings, returned when freed (issue 8, item 5). It is
set at the spool's record size, so the records and stream buffers of twenty mails arriving at
once do not leave the main heap fragmented either; and the thread arenas (one per thread that
allocates: SQLite connections, gpg's pipes, the thread pool) are capped at two, since each keeps
what its thread freed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

from gateway.spool import RECORD

M_MMAP_THRESHOLD = -3  # mallopt parameters (malloc.h)
M_ARENA_MAX = -8
THRESHOLD = RECORD
ARENAS = 2
log = logging.getLogger(__name__)


def return_large_blocks_promptly() -> None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return  # not glibc: its own policy stands
    if not mallopt(M_MMAP_THRESHOLD, THRESHOLD):
        log.warning("could not set malloc's mmap threshold")
    if not mallopt(M_ARENA_MAX, ARENAS):
        log.warning("could not cap malloc's arenas")
