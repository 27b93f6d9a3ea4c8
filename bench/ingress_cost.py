"""`python -m bench.ingress_cost`: CPU per message of item 1 (ingress), less noisy than msg/s.

Starts a bare aiosmtpd (bench/bare.py) and a gateway with only the `smtp` role the way the
benchmark does, sends each a warm-up and then a fixed number of copies of the ingress template
over persistent connections, and reports the CPU ms per accepted message of each server process
(all its threads, from /proc). Item 1's rate ratio is about bare CPU / gateway CPU per message,
since the gateway's event loop is what saturates; CPU seconds move much less with other load on
the machine than wall-clock rates do.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import mails
from bench.cost import cpu_seconds
from bench.deploy import BareServer, Deployment, Template, short_dir
from bench.load import LoadProcess
from tests.support.officer_keys import OfficerKeyring


def measure(load: LoadProcess, template: bytes, port: int, pid: int, tag: str, count: int, senders: int,
            spy: Path | None = None) -> tuple[float, float, dict[str, Any]]:
    """(CPU ms per accepted message of the whole process, of its main thread, the load's result;
    the load process's own CPU ms per message is in result["load_cpu"])."""
    kwargs = {"template": template, "senders": senders, "warmup": 0.0, "duration": 600.0}
    load.call("ingress", timeout=600, port=port, tag=f"{tag}w", count=max(200, count // 10), **kwargs)
    time.sleep(0.3)
    own, _, main, _ = cpu_seconds(pid)
    assert load.process.pid is not None
    sender, _, _, _ = cpu_seconds(load.process.pid)
    sampler = None
    if spy is not None:
        sampler = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid),
                                    "--format", "raw", "--threads", "--nonblocking", "--rate", "250",
                                    "--gil", "-o", str(spy)], stdout=subprocess.DEVNULL)
        time.sleep(1)
    started = time.monotonic()
    result = load.call("ingress", timeout=600, port=port, tag=tag, count=count, **kwargs)
    result["rate"] = result["accepted"] / (time.monotonic() - started)
    if sampler is not None:
        sampler.send_signal(signal.SIGINT)
        sampler.wait(30)
    time.sleep(0.3)  # a batch still committing
    own2, _, main2, _ = cpu_seconds(pid)
    sender2, _, _, _ = cpu_seconds(load.process.pid)
    if result["refused"] or not result["accepted"]:
        raise SystemExit(f"{tag}: {result['refused']} refused, the first with: {result['first_refusal']}")
    n = result["accepted"]
    result["load_cpu"] = (sender2 - sender) * 1000 / n
    return (own2 - own) * 1000 / n, (main2 - main) * 1000 / n, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ingress_cost",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=5000, help="messages per measurement (default 5000)")
    parser.add_argument("--senders", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=1, help="measure each server this many times")
    parser.add_argument("--no-bare", action="store_true", help="measure only the gateway")
    parser.add_argument("--py-spy", type=Path, metavar="FILE",
                        help="sample the gateway's GIL holder with py-spy during the (last) measurement")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        work = short_dir("lbi-")
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        ring = OfficerKeyring(work / "gnupg")
        stack.callback(ring.close)
        officer = ring.create_key(mails.OFFICER_EMAIL, mails.OFFICER_NAME)
        ingress_template = mails.ingress_template(ring, officer)
        template = Template(officer, 26_214_400)
        stack.callback(template.cleanup)
        load = LoadProcess()
        stack.callback(load.close)
        lines = []
        for attempt in range(args.repeat):
            if not args.no_bare:
                bare = BareServer(26_214_400)
                try:
                    assert bare.process is not None
                    own, main_, result = measure(load, ingress_template, bare.port, bare.process.pid,
                                                 f"b{attempt}", args.count, args.senders)
                finally:
                    bare.stop()
                lines.append(f"bare    {own:.3f} ms/msg (main thread {main_:.3f}), {result['accepted']} "
                             f"messages, {result['rate']:.0f} msg/s over the whole send, load process "
                             f"{result['load_cpu']:.3f} ms/msg")
            deployment = Deployment(template, load.sink_port, None)
            try:
                deployment.start("smtp")
                spy = args.py_spy if attempt == args.repeat - 1 else None
                own, main_, result = measure(load, ingress_template, deployment.port, deployment.pid,
                                             f"g{attempt}", args.count, args.senders, spy)
                deployment.check_alive()
            finally:
                deployment.stop()
            lines.append(f"gateway {own:.3f} ms/msg (main thread {main_:.3f}), {result['accepted']} "
                         f"messages, {result['rate']:.0f} msg/s over the whole send, load process "
                         f"{result['load_cpu']:.3f} ms/msg")
            print(lines[-1], flush=True)
        print(f"{args.senders} senders, {args.count} messages per measurement, CPU per accepted message:")
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
