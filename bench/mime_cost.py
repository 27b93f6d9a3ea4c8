"""`python -m bench.mime_cost`: CPU time per message of the gateway's MIME work on a signed request.

Builds the benchmark's own signed requests (bench/mails.py: plain ones, and ones carrying a small
PDF), signed by an Ed25519 key made at run time in a temporary GNUPGHOME, then runs on each message
the MIME steps that handlers/chain.py's `evaluate` runs on an accepted PGP/MIME request, in its
order: `outer_from_address` (rule 3's From), `split_signed` (rule 1: limits, structure, the signed
bytes and the signature), then, after gpg (not run here), `read_signed_content` (what handlers
read) and `canonical_text_sha256` (the replay key). Reported: CPU time (time.process_time) per
message, for each step and in all, the median of several runs, each run going many times over all
the messages. gpg, the database and the event loop are left out: this is only the Python that
turns bytes into structure, which is what issue 8's profile found costly.

Every message is read with boundaries of its own, as real mail has: each pass reads copies of the
messages whose MIME boundaries were replaced by fresh random ones (before the clock starts). Read
as they are, the same few messages would find their boundaries' compiled expressions in the `re`
module's cache, and anything kept per header block in a cache, which no real message does. What does
recur from one real message to the next (the From, a client's part headers) recurs here too.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench import mails
from gateway.mime import (
    DEFAULT_LIMITS,
    PgpMimeSigned,
    canonical_text_sha256,
    read_signed_content,
    split_signed,
)
from handlers.chain import outer_from_address
from tests.support.officer_keys import OfficerKeyring

Step = Callable[[bytes], object]


def _split(raw: bytes) -> PgpMimeSigned:
    structure = split_signed(raw, allow_inline=False, limits=DEFAULT_LIMITS)
    if not isinstance(structure, PgpMimeSigned):
        raise SystemExit(f"the benchmark's request is not accepted as PGP/MIME: {structure!r}")
    return structure


def _read(raw: bytes) -> object:
    return read_signed_content(_split(raw).signed_bytes)


def _replay_text(raw: bytes) -> object:
    return canonical_text_sha256(_split(raw).signed_bytes)


def _whole(raw: bytes) -> object:
    """Every step, as `evaluate` runs them on one message."""
    outer_from_address(raw, DEFAULT_LIMITS)
    signed = _split(raw).signed_bytes
    read_signed_content(signed)
    return canonical_text_sha256(signed)


STEPS: dict[str, Step] = {
    "outer_from_address": lambda raw: outer_from_address(raw, DEFAULT_LIMITS),
    "split_signed": _split,
    "split+read_signed_content": _read,
    "split+canonical_text_sha256": _replay_text,
    "all (as evaluate runs them)": _whole,
}


BOUNDARY = re.compile(rb"=_lers_[0-9a-f]{24}")  # tests/support/mail_factory.py's boundary_for


def fresh(raw: bytes) -> bytes:
    """The message with each of its MIME boundaries replaced by a new random one of the same length."""
    renamed = {old: b"=_lers_" + os.urandom(12).hex().encode() for old in set(BOUNDARY.findall(raw))}
    return BOUNDARY.sub(lambda found: renamed[found.group(0)], raw)


def cpu_per_message(step: Step, messages: Sequence[bytes], rounds: int) -> float:
    """CPU seconds per message of `step`, over `rounds` passes over fresh copies of the messages."""
    copies = [fresh(raw) for _ in range(rounds) for raw in messages]
    started = time.process_time()
    for raw in copies:
        step(raw)
    return (time.process_time() - started) / len(copies)


def build_sets(count: int) -> dict[str, list[bytes]]:
    """`count` plain signed requests and `count` with a small PDF, with a fresh key."""
    work = Path(tempfile.mkdtemp(prefix="lmc-"))
    ring = OfficerKeyring(work / "gnupg")
    try:
        officer = ring.create_key(mails.OFFICER_EMAIL, mails.OFFICER_NAME)
        plain = mails.signed_set(ring, officer, "mime-plain", count)
        pdf = mails.signed_set(ring, officer, "mime-pdf", count, [mails.small_pdf()])
    finally:
        ring.close()
        shutil.rmtree(work, ignore_errors=True)
    return {"plain": [raw for _, raw in plain], "with PDF": [raw for _, raw in pdf]}


def measure(sets: dict[str, list[bytes]], runs: int, rounds: int) -> None:
    """Print, for each set and step, the median (and the spread) of `runs` runs in µs per message."""
    for name, messages in sets.items():
        print(f"{name}: {len(messages)} messages, {len(messages[0])} bytes each (first)")
        for step_name, step in STEPS.items():
            step(messages[0])  # warm-up: imports, first-use caches of the standard library
            figures = [cpu_per_message(step, messages, rounds) * 1e6 for _ in range(runs)]
            print(f"  {step_name:30} median {statistics.median(figures):8.1f} µs/message "
                  f"(min {min(figures):.1f}, max {max(figures):.1f}, {runs} runs)")


def profile(sets: dict[str, list[bytes]], rounds: int, limit: int) -> None:
    """cProfile of every step on every message: where the time goes."""
    profiler = cProfile.Profile()
    copies = [fresh(raw) for messages in sets.values() for _ in range(rounds) for raw in messages]
    profiler.enable()
    for raw in copies:
        _whole(raw)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(limit)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mime_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20, help="distinct messages of each kind (default 20)")
    parser.add_argument("--runs", type=int, default=5, help="runs whose median is reported (default 5)")
    parser.add_argument("--rounds", type=int, default=20, help="passes in a run (default 20)")
    parser.add_argument("--profile", type=int, metavar="N", default=0,
                        help="instead of timing, print cProfile's N most costly functions")
    args = parser.parse_args(argv)
    sets = build_sets(args.count)
    if args.profile:
        profile(sets, args.rounds, args.profile)
    else:
        measure(sets, args.runs, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
