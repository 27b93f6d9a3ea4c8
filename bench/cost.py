"""`python -m bench.cost`: what one verified request costs the gateway, less noisy than req/s.

Starts one gateway (all roles) the way the benchmark does, warms it up, then sends a burst of
signed requests and waits for every acknowledgement. Reported per request: database statements
(counted in the gateway process by `bench/counted.py`), CPU ms of the gateway process itself
(its Python, all threads), of its children (gpg) and of the load process (senders and smarthost,
which share the cores), from /proc. CPU seconds move much less with other load on the machine than
wall-clock rates do.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench import mails
from bench.deploy import Deployment, Template, short_dir, wait_listening
from bench.load import LoadProcess
from tests.support.officer_keys import OfficerKeyring

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> tuple[float, float, float, float]:
    """(the process's own user+system CPU, the system (kernel) part of it, that of its main thread
    (the event loop), that of its waited-for children) in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    own = int(fields[11]) + int(fields[12])
    children = int(fields[13]) + int(fields[14])
    main = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rpartition(")")[2].split()
    return own / TICKS, int(fields[12]) / TICKS, (int(main[11]) + int(main[12])) / TICKS, children / TICKS


class CountedDeployment(Deployment):
    """A deployment whose gateway counts its SQL statements into a file (bench/counted.py)."""

    def start(self, roles: str | None = None) -> None:
        self.counts = self.home / "statements"
        command = [sys.executable, "-m", "bench.counted", str(self.counts), "run.py",
                   "--config", str(self.config)]
        if roles:
            command += ["--roles", roles]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, cwd=Path(__file__).resolve().parent.parent,
                                            stdout=log, stderr=log)
        wait_listening(self.port, self.process, self.log)

    def listing(self) -> dict[str, int]:
        lines = self.counts.with_suffix(".sql").read_text().splitlines()
        return {text: int(n) for n, _, text in (line.partition("\t") for line in lines)}

    def statements(self) -> int:
        time.sleep(0.3)  # the counter file is rewritten every 0.1 s
        return int(self.counts.read_text() or 0) if self.counts.exists() else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200, help="requests in the burst (default 200)")
    parser.add_argument("--senders", type=int, default=10)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--idle", action="store_true",
                        help="with --py-spy: sample idle threads too (where wall time goes), not only "
                             "the thread holding the GIL (where CPU goes)")
    parser.add_argument("--statements", action="store_true", help="list the statements run per request")
    parser.add_argument("--py-spy", type=Path, metavar="FILE",
                        help="sample the gateway with py-spy during the burst (collapsed stacks, one line "
                             "per thread and stack); py-spy must be installed in the venv")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        work = short_dir("lbc-")
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        ring = OfficerKeyring(work / "gnupg")
        stack.callback(ring.close)
        officer = ring.create_key(mails.OFFICER_EMAIL, mails.OFFICER_NAME)
        warm = mails.save(mails.signed_set(ring, officer, "warm", 10, [mails.small_pdf()]), work / "w.pickle")
        burst = mails.save(mails.signed_set(ring, officer, "cost", args.count), work / "b.pickle")
        template = Template(officer, 26_214_400)
        stack.callback(template.cleanup)
        database_url = None
        if args.backend == "postgresql":
            from tests.support.postgres import PostgresCluster

            cluster = PostgresCluster()
            cluster.start()
            stack.callback(cluster.stop)
            database_url = cluster.new_database()
        load = LoadProcess()
        stack.callback(load.close)
        deployment = CountedDeployment(template, load.sink_port, database_url)
        stack.callback(deployment.stop)
        deployment.start()

        def deliver(path: Path, count: int, mode: str) -> dict:
            result = load.call("deliver", timeout=600, port=deployment.port, path=str(path), mode=mode,
                               senders=args.senders, rate=None, ack_timeout=300)
            if result["refusals"] or result["missing"]:
                raise SystemExit(f"not every request was acknowledged\n{deployment.log_tail()}")
            return result

        deliver(warm, 10, "together")
        time.sleep(1)
        statements, (own, kernel, loop, children) = deployment.statements(), cpu_seconds(deployment.pid)
        assert load.process.pid is not None
        load_cpu = cpu_seconds(load.process.pid)[0]
        before = deployment.listing()
        spy = None
        if args.py_spy:
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid",
                                    str(deployment.pid), "--format", "raw", "--threads", "--nonblocking",
                                    "--rate", "200", "--idle" if args.idle else "--gil",
                                    "-o", str(args.py_spy)],
                                   stdout=subprocess.DEVNULL)
            time.sleep(1)
        result = deliver(burst, args.count, "burst")
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        elapsed = max(result["acks"].values()) - result["start"]
        time.sleep(1)  # the outbox's last 'sent' transactions
        statements = deployment.statements() - statements
        own2, kernel2, loop2, children2 = cpu_seconds(deployment.pid)
        load_cpu = cpu_seconds(load.process.pid)[0] - load_cpu
        if args.statements:
            after = deployment.listing()
            for text, n in sorted(after.items(), key=lambda item: before.get(item[0], 0) - item[1]):
                if n - before.get(text, 0):
                    print(f"{(n - before.get(text, 0)) / args.count:6.2f}  {text}")
        n = args.count
        print(f"{n} requests, {args.senders} senders, {args.backend}: {n / elapsed:.1f} req/s; per request: "
              f"{statements / n:.1f} statements, gateway CPU {(own2 - own) * 1000 / n:.1f} ms "
              f"(in the kernel {(kernel2 - kernel) * 1000 / n:.1f} ms; "
              f"event loop {(loop2 - loop) * 1000 / n:.1f} ms, busy {(loop2 - loop) / elapsed:.0%}), "
              f"children (gpg) CPU {(children2 - children) * 1000 / n:.1f} ms; "
              f"load process (senders and smarthost) CPU {load_cpu * 1000 / n:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
