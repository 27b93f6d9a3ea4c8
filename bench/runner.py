"""`python -m bench`: prepare keys and mail, then for each run measure ingress, verified-and-acknowledged
throughput with its floor, acknowledgement latency, and memory; print the table and write JSON.

Every measurement gets a fresh gateway process (a copy of one template data dir), so runs are
independent and the pre-signed mail is new to each of them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import floor, mails
from bench.deploy import GPG_THREADS, REPO, BareServer, BenchError, Deployment, Template, short_dir
from bench.load import LoadProcess, LoadTimeout
from bench.report import Report, Target, percentile
from tests.support.officer_keys import OfficerKeyring

MB = 1_000_000
DEFAULT_JSON = REPO / "bench" / "results" / "latest.json"


@dataclass(frozen=True)
class Plan:
    """How much of everything; `QUICK` is the smoke test's few-second version."""

    runs: int
    ingress_levels: tuple[int, ...]
    ingress_warmup: float
    ingress_duration: float
    ingress_pool: int
    verified_count: int
    verified_senders: int
    fixed_rate: float
    latency_count: int
    saturation_count: int
    attachment_bytes: int
    together: int
    flood_rate: float
    flood_duration: float
    flood_senders: int
    real_rate: float
    reviewer_count: int
    warmups: int = 3


FULL = Plan(runs=3, ingress_levels=(1, 10, 50), ingress_warmup=0.5, ingress_duration=3.0, ingress_pool=20_000,
            verified_count=400, verified_senders=10, fixed_rate=20.0, latency_count=300, saturation_count=300,
            attachment_bytes=25 * MB, together=20, flood_rate=500.0, flood_duration=30.0, flood_senders=25,
            real_rate=1.0, reviewer_count=10)
QUICK = Plan(runs=1, ingress_levels=(1, 10, 50), ingress_warmup=0.1, ingress_duration=0.4, ingress_pool=4_000,
             verified_count=10, verified_senders=10, fixed_rate=20.0, latency_count=6, saturation_count=6,
             attachment_bytes=200_000, together=5, flood_rate=100.0, flood_duration=2.0, flood_senders=5,
             real_rate=2.0, reviewer_count=2, warmups=1)


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    """A field of /proc/PID/status, in kB (the kernel's KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise BenchError(f"no {field} for process {pid}")


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where the kernel does not allow it."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return rss_kb(pid, "VmHWM") <= rss_kb(pid) + 1024


def to_mb(kb: float) -> float:
    return kb * 1024 / MB


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids, from /proc (no /proc/PID/task/TID/children on every kernel)."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def children_rss_kb(pid: int) -> int:
    """RSS of all descendants of a process (gpg, the PDF text extractor), in kB."""
    children = _children()
    pending, total = list(children.get(pid, [])), 0
    page_kb = os.sysconf("SC_PAGE_SIZE") // 1024
    while pending:
        current = pending.pop()
        pending += children.get(current, [])
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int(Path(f"/proc/{current}/statm").read_text().split()[1]) * page_kb
    return total


class RssSampler:
    """Polls the gateway's VmRSS every 2 ms, and its child processes' every 20 ms, in a thread:
    when the peak happened, not only how high, and memory moved into child processes too."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, int]] = []
        self.children_samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        tick = 0
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic(), rss_kb(self.pid)))
                if tick % 10 == 0:
                    self.children_samples.append((time.monotonic(), children_rss_kb(self.pid)))
            except (OSError, BenchError):
                return
            tick += 1
            self._stop.wait(0.002)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def peak(self, until: float | None = None) -> int:
        values = [kb for t, kb in self.samples if until is None or t <= until]
        return max(values, default=0)

    def children_peak(self) -> int:
        return max((kb for _t, kb in self.children_samples), default=0)


def _write_rss_log(key: str, run: int, idle: int, sampler: RssSampler, result: dict[str, Any]) -> None:
    """With LERS_BENCH_RSS_LOG=DIR, item 5's RSS samples (ms since the first send, MB over idle)
    and the 250 and acknowledgement times go to DIR: where in a mail's way the peak is."""
    directory = os.environ.get("LERS_BENCH_RSS_LOG")
    if not directory:
        return
    start = result["start"]
    lines = [f"{(t - start) * 1000:.0f}\trss\t{(kb - idle) / 1024:.1f}" for t, kb in sampler.samples]
    lines += [f"{(done - start) * 1000:.0f}\t250\t{mid}" for mid, _s, done, _ok in result["deliveries"]]
    lines += [f"{(t - start) * 1000:.0f}\tack\t{mid}" for mid, t in result["acks"].items()]
    path = Path(directory) / f"memory-{key}-run{run + 1}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(sorted(lines, key=lambda line: float(line.split("\t")[0]))) + "\n")


class Bench:
    """One benchmark: the prepared material, the processes it owns, and the report it fills."""

    def __init__(self, plan: Plan, runs: int, backend: str, stack: contextlib.ExitStack,
                 items: tuple[str, ...] = ()) -> None:
        self.plan, self.runs, self.backend, self.stack = plan, runs, backend, stack
        self.items = items or tuple(ITEMS)
        self.report = Report(meta={
            "started": datetime.now(UTC).isoformat(timespec="seconds"), "runs": runs, "backend": backend,
            "quick": plan is QUICK, "cpus": os.cpu_count(), "python": platform.python_version(),
            "gpg": subprocess.run(["gpg", "--version"], capture_output=True, text=True,
                                  check=False).stdout.split("\n")[0],
            "command": " ".join(["python -m bench", *sys.argv[1:]]),
            "plan": {k: v for k, v in plan.__dict__.items()},
        })
        self._define_metrics()
        self.work = short_dir("lbm-")
        stack.callback(shutil.rmtree, self.work, ignore_errors=True)
        self.new_database: Callable[[], str | None] = lambda: None

    def _define_metrics(self) -> None:
        r, plan = self.report, self.plan
        for level in plan.ingress_levels:
            senders = f"{level} sender{'s' if level > 1 else ''}"
            r.define(f"ingress.bare.{level}", 1, f"ingress, {senders}: bare aiosmtpd", "msg/s")
            r.define(f"ingress.gateway.{level}", 1, f"ingress, {senders}: gateway (smtp role)", "msg/s")
            r.define(f"ingress.ratio.{level}", 1, f"ingress, {senders}: gateway / bare", "x",
                     Target(">=", 0.7) if level == 10 else None)
            r.define(f"ingress.p99.{level}", 1, f"ingress, {senders}: gateway, MAIL to 250, p99", "s")
        r.define("verified.gateway", 2, f"verified+acknowledged, {plan.verified_senders} senders: gateway",
                 "req/s")
        r.define("verified.floor", 2, f"verified+acknowledged: python-gnupg floor ({GPG_THREADS} processes)",
                 "req/s")
        r.define("verified.ratio", 2, "verified+acknowledged: gateway / floor", "x", Target(">=", 0.8))
        rate = f"{plan.fixed_rate:g} req/s"
        r.define("latency.fixed.p50", 3, f"ack latency p50 at {rate}", "s")
        r.define("latency.fixed.p99", 3, f"ack latency p99 at {rate}", "s", Target("<", 1.0))
        r.define("latency.saturation.rate", 3, "saturation: offered load (= measured capacity)", "req/s")
        r.define("latency.saturation.p50", 3, "ack latency p50 at saturation", "s")
        r.define("latency.saturation.p99", 3, "ack latency p99 at saturation", "s")
        size = f"{self.plan.attachment_bytes / MB:g} MB"
        basis = f" (3 × {size})"
        r.define("memory.idle", 5, "gateway RSS, idle after warm-up", "MB")
        r.define("memory.one.peak", 5, f"peak RSS, one mail with a {size} attachment", "MB")
        r.define("memory.one.growth", 5, f"peak − idle, one {size} attachment", "MB",
                 Target("<", 3 * self.plan.attachment_bytes / MB, basis))
        r.define("memory.one.receive", 5, f"peak − idle until the 250, one {size} attachment", "MB")
        r.define("memory.one.children", 5, "peak RSS of its child processes (gpg, PDF text; 20 ms polls)",
                 "MB")
        r.define("memory.many.peak", 5, f"peak RSS, {plan.together} such mails at once", "MB")
        r.define("memory.many.growth", 5, f"peak − idle, {plan.together} at once", "MB",
                 Target("<", 3 * self.plan.attachment_bytes / MB, basis))
        r.define("memory.many.receive", 5, f"peak − idle until all 250s, {plan.together} at once",
                 "MB")
        r.define("memory.many.children", 5, f"peak RSS of its child processes, {plan.together} at once", "MB")
        flood = f"{plan.flood_rate:g} forged mails/s for {plan.flood_duration:g} s"
        real = f"real requests at {plan.real_rate:g}/s"
        r.define("flood.calm.p50", 4, f"{real}, no flood: ack latency p50", "s")
        r.define("flood.calm.p99", 4, f"{real}, no flood: ack latency p99", "s")
        r.define("flood.during.p50", 4, f"real requests during the flood ({flood}): ack latency p50", "s")
        r.define("flood.during.p99", 4, f"real requests during the flood ({flood}): ack latency p99", "s",
                 Target("<", 2.0))
        r.define("flood.accepted", 4, "flood: forged mails answered 250 per second (offered "
                 f"{plan.flood_rate:g}/s)", "msg/s")
        r.define("flood.p99", 4, "flood: forged mail, MAIL to 250, p99", "s")
        r.define("reviewer.mail.p50", 6, "reviewer path: /approve to the decision mail at the smarthost, p50",
                 "s")
        r.define("reviewer.mail.max", 6, f"reviewer path: the same, slowest of {plan.reviewer_count}", "s")
        r.define("reviewer.chat.p50", 6, "reviewer path: /approve to the bot's answer in the chat, p50", "s")

    # -- preparation -------------------------------------------------------------------------------

    def prepare(self) -> None:
        plan = self.plan
        ring_home = short_dir("lbk-")
        ring = OfficerKeyring(ring_home / "gnupg")
        self.stack.callback(shutil.rmtree, ring_home, ignore_errors=True)
        self.stack.callback(ring.close)
        officer = ring.create_key(mails.OFFICER_EMAIL, mails.OFFICER_NAME)
        started = time.monotonic()
        small = plan.warmups + plan.verified_count + plan.latency_count + plan.saturation_count
        say(f"signing {small} requests and {plan.together} with a {plan.attachment_bytes / MB:g} MB "
            "attachment...")
        self.ingress_template = mails.ingress_template(ring, officer)
        warm = mails.signed_set(ring, officer, "warm", plan.warmups, [mails.small_pdf()])
        self.warm_set = self._save("warm", warm)
        verified = mails.signed_set(ring, officer, "tput", plan.verified_count)
        self.verified_set = self._save("tput", verified)
        self.floor_inputs = mails.floor_inputs(verified)
        self.fixed_set = self._save("lat", mails.signed_set(ring, officer, "lat", plan.latency_count))
        self.saturation_set = self._save("sat", mails.signed_set(ring, officer, "sat", plan.saturation_count))
        big = mails.signed_set(ring, officer, "big", plan.together, [mails.big_pdf(plan.attachment_bytes)],
                               threads=2)
        self.big_one_set = self._save("big1", big[:1])
        self.big_all_set = self._save("bigN", big)
        self.big_mail_bytes = len(big[0][1])
        attacker = ring.create_key(mails.ATTACKER_EMAIL, "Mallory")
        self.flood_templates = mails.flood_templates(ring, officer, attacker)
        self.real_count = real = max(2, round(plan.flood_duration * plan.real_rate))
        self.calm_set = self._save("calm", mails.signed_set(ring, officer, "calm", real))
        self.flooded_set = self._save("flooded", mails.signed_set(ring, officer, "flooded", real))
        self.reviewed_set = self._save("rev", mails.signed_set(ring, officer, "rev", plan.reviewer_count))
        self.report.meta["big_mail_bytes"] = self.big_mail_bytes
        del big, verified
        say(f"prepared in {time.monotonic() - started:.1f} s; making the template data dir...")
        # room for the attachment mail (base64 makes 25 MB about 34 MB on the wire)
        self.max_message_bytes = max(26_214_400, 2 * self.big_mail_bytes)
        self.template = Template(officer, self.max_message_bytes)
        self.stack.callback(self.template.cleanup)
        if self.backend == "postgresql":
            from tests.support.postgres import PostgresCluster

            cluster = PostgresCluster()
            cluster.start()
            self.stack.callback(cluster.stop)
            self.new_database = cluster.new_database
        self.load = LoadProcess()
        self.stack.callback(self.load.close)

    def _save(self, name: str, mail_set: mails.MailSet) -> str:
        return str(mails.save(mail_set, self.work / f"{name}.pickle"))

    @contextlib.contextmanager
    def gateway(self, roles: str | None = None,
                telegram: dict[str, Any] | None = None) -> Iterator[Deployment]:
        deployment = Deployment(self.template, self.load.sink_port, self.new_database(), telegram)
        try:
            deployment.start(roles)
            yield deployment
            deployment.check_alive()
        finally:
            deployment.stop()

    def deliver(self, deployment: Deployment, path: str, mode: str, count: int, *, rate: float | None = None,
                ack_timeout: float | None = None) -> dict[str, Any]:
        """Send a set, wait for every acknowledgement; fail loudly if any is missing or is not an ack."""
        ack_timeout = ack_timeout or 60 + count * 0.5
        send_bound = count / rate if rate else 0
        result = self.load.call("deliver", timeout=ack_timeout + send_bound + 120, port=deployment.port,
                                path=path, mode=mode, senders=self.plan.verified_senders, rate=rate,
                                ack_timeout=ack_timeout)
        if result["refusals"]:
            raise BenchError(f"{len(result['refusals'])} of {count} mails were not accepted with 250, "
                             f"the first with: {result['refusals'][0]}")
        if result["missing"]:
            deployment.check_alive()
            raise BenchError(f"{len(result['missing'])} of {count} acknowledgements missing after "
                             f"{ack_timeout:.0f} s\n{deployment.log_tail(1500)}")
        other = {s for s in result["subjects"].values() if "Request received" not in s}
        if other:
            raise BenchError(f"the gateway answered something else than an acknowledgement: {sorted(other)}")
        return result

    def warm_up(self, deployment: Deployment) -> None:
        """A few requests with a PDF through the whole path: imports, gpg-agent, caches."""
        self.deliver(deployment, self.warm_set, "together", self.plan.warmups, ack_timeout=60)

    # -- the measurements --------------------------------------------------------------------------

    def ingress(self, run: int) -> None:
        """Item 1: back-to-back senders on persistent connections; bare aiosmtpd, then the gateway."""
        plan = self.plan
        for level in plan.ingress_levels:
            kwargs = {"template": self.ingress_template, "count": plan.ingress_pool, "senders": level,
                      "warmup": plan.ingress_warmup, "duration": plan.ingress_duration}
            timeout = plan.ingress_warmup + plan.ingress_duration + 120
            bare = BareServer(self.max_message_bytes)
            try:
                base = self.load.call("ingress", timeout=timeout, port=bare.port, tag=f"b{run}-{level}",
                                      **kwargs)
            finally:
                bare.stop()
            # only the smtp role: the same work as the bare server plus storing, no verification
            with self.gateway(roles="smtp") as deployment:
                gw = self.load.call("ingress", timeout=timeout, port=deployment.port, tag=f"g{run}-{level}",
                                    **kwargs)
            for name, result in (("bare", base), ("gateway", gw)):
                key = f"ingress.{name}.{level}"
                if result["exhausted"]:
                    self.report.note(key, f"run {run + 1}: the {plan.ingress_pool} prepared mails ran out")
                if result["refused"]:  # a refused mail is not a cheap 250: the rate would mean nothing
                    raise BenchError(f"{name}, {level} senders: {result['refused']} mails refused, the first "
                                     f"with: {result['first_refusal']}")
            if base["rate"] <= 0 or gw["rate"] <= 0:
                raise BenchError(f"no message accepted in the window ({level} senders)")
            self.report.add(f"ingress.bare.{level}", base["rate"])
            self.report.add(f"ingress.gateway.{level}", gw["rate"])
            self.report.add(f"ingress.ratio.{level}", gw["rate"] / base["rate"])
            self.report.add(f"ingress.p99.{level}", gw["p99"])

    def verified(self, run: int) -> None:
        """Items 2 and 3: throughput with the floor timed in the same run, then latency at two loads."""
        plan, report = self.plan, self.report
        floor_result = floor.measure(self.template.gnupg, self.floor_inputs, GPG_THREADS)
        with self.gateway() as deployment:
            self.warm_up(deployment)
            burst = self.deliver(deployment, self.verified_set, "burst", plan.verified_count)
            elapsed = max(burst["acks"].values()) - burst["start"]
            capacity = len(burst["acks"]) / elapsed
            report.add("verified.gateway", capacity)
            report.add("verified.floor", floor_result["rate"])
            report.add("verified.ratio", capacity / floor_result["rate"])
            loads = (("fixed", self.fixed_set, plan.latency_count, plan.fixed_rate),
                     ("saturation", self.saturation_set, plan.saturation_count, capacity))
            for key, path, count, rate in loads:
                result = self.deliver(deployment, path, "paced", count, rate=rate)
                latencies = [result["acks"][mid] - start for mid, start, _done, _ok in result["deliveries"]]
                report.add(f"latency.{key}.p50", percentile(latencies, 0.50))
                report.add(f"latency.{key}.p99", percentile(latencies, 0.99))
                if key == "saturation":
                    report.add("latency.saturation.rate", rate)
                lag = max(start - result["start"] - i / rate
                          for i, (_mid, start, _d, _ok) in enumerate(result["deliveries"]))
                if lag > 0.05:
                    report.note(f"latency.{key}.p99", f"run {run + 1}: the sender fell {lag * 1000:.0f} ms "
                                "behind its schedule")

    def memory(self, run: int) -> None:
        """Item 5: a fresh gateway per case. The target is on the gateway process's own RSS (VmHWM);
        its child processes (gpg, the PDF text extractor) are reported beside it, polled."""
        for key, path, count in (("one", self.big_one_set, 1), ("many", self.big_all_set,
                                                             self.plan.together)):
            with self.gateway() as deployment:
                self.warm_up(deployment)
                time.sleep(0.5)
                idle = rss_kb(deployment.pid)
                exact = reset_peak(deployment.pid)
                with RssSampler(deployment.pid) as sampler:
                    result = self.deliver(deployment, path, "together", count, ack_timeout=120 + 30 * count)
                # the kernel updates VmHWM lazily (per-thread RSS counters): take the higher of the two
                peak = max(rss_kb(deployment.pid, "VmHWM"), sampler.peak()) if exact else sampler.peak()
                if not exact:
                    self.report.note(f"memory.{key}.peak", "VmHWM could not be reset: peak from 2 ms polling")
                self.report.add("memory.idle", to_mb(idle))
                self.report.add(f"memory.{key}.peak", to_mb(peak))
                self.report.add(f"memory.{key}.growth", to_mb(peak - idle))
                self.report.add(f"memory.{key}.receive",
                                to_mb(max(0, sampler.peak(until=result["all_accepted"]) - idle)))
                self.report.add(f"memory.{key}.children", to_mb(sampler.children_peak()))
                _write_rss_log(key, run, idle, sampler, result)

    def flood(self, run: int) -> None:
        """Item 4: real requests at `real_rate`/s on a calm gateway, then on the same gateway during a
        flood of forged mail (unsigned, malformed, signed by an unknown key; all From the officer)."""
        plan, report = self.plan, self.report
        with self.gateway() as deployment:
            self.warm_up(deployment)
            calm = self.deliver(deployment, self.calm_set, "paced", self.real_count, rate=plan.real_rate,
                                ack_timeout=60)
            latencies = [calm["acks"][mid] - start for mid, start, _done, _ok in calm["deliveries"]]
            report.add("flood.calm.p50", percentile(latencies, 0.50))
            report.add("flood.calm.p99", percentile(latencies, 0.99))
            ack_timeout = 120.0
            result = self.load.call("flood", timeout=plan.flood_duration + ack_timeout + 300,
                                    port=deployment.port,
                                    templates=self.flood_templates, tag=f"r{run}", rate=plan.flood_rate,
                                    duration=plan.flood_duration, senders=plan.flood_senders,
                                    real_path=self.flooded_set, real_rate=plan.real_rate,
                                    ack_timeout=ack_timeout)
            if result["real_refusals"]:
                raise BenchError(f"real requests refused during the flood: {result['real_refusals'][:3]}")
            if result["missing"]:
                report.note("flood.during.p99", f"run {run + 1}: {len(result['missing'])} real requests not "
                            f"acknowledged within {ack_timeout:.0f} s after the flood (counted as that)")
            other = {s for s in result["subjects"].values() if s and "Request received" not in s}
            if other:
                raise BenchError(f"a real request was answered with something else: {sorted(other)}")
            if result["flood_refused"]:
                report.note("flood.accepted", f"run {run + 1}: some forged mail was not answered 250: "
                            f"{result['flood_refused']}")
            report.add("flood.during.p50", percentile(result["latencies"], 0.50))
            report.add("flood.during.p99", percentile(result["latencies"], 0.99))
            report.add("flood.accepted", result["flood_rate"])
            report.add("flood.p99", result["flood_p99"])

    def reviewer(self, run: int) -> None:
        """Item 6: a gateway with the chat role talking to the stand-in Bot API in the load process."""
        telegram = self.load.call("telegram", timeout=30)
        with self.gateway(telegram=telegram) as deployment:
            self.warm_up(deployment)
            result = self.load.call("reviewer_path", timeout=120 + 60 * self.plan.reviewer_count,
                                    port=deployment.port, path=self.reviewed_set, ack_timeout=60)
        self.report.add("reviewer.mail.p50", percentile(result["to_mail"], 0.50))
        self.report.add("reviewer.mail.max", max(result["to_mail"]))
        self.report.add("reviewer.chat.p50", percentile(result["to_chat"], 0.50))

    def run_all(self) -> None:
        sections = (("ingress", self.ingress), ("verified and latency", self.verified),
                    ("flood", self.flood), ("reviewer path", self.reviewer), ("memory", self.memory))
        wanted = {ITEMS[item] for item in self.items}
        for run in range(self.runs):
            for name, section in sections:
                if name not in wanted:
                    continue
                say(f"run {run + 1}/{self.runs}: {name}...")
                started = time.monotonic()
                try:
                    section(run)
                except LoadTimeout as exc:
                    self.report.errors.append(f"run {run + 1}, {name}: {exc}")
                    return
                except Exception as exc:
                    self.report.errors.append(f"run {run + 1}, {name}: {type(exc).__name__}: {exc}")
                say(f"  {time.monotonic() - started:.1f} s")


# --items names -> the sections of `run_all`
ITEMS = {"ingress": "ingress", "verified": "verified and latency", "flood": "flood",
         "reviewer": "reviewer path", "memory": "memory"}


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts and one run (the smoke test)")
    parser.add_argument("--runs", type=int, help="runs per measurement (default 3; 1 with --quick)")
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite",
                        help="the gateway's database (postgresql: a throw-away local cluster)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON,
                        help=f"where to write the results (default {DEFAULT_JSON.relative_to(REPO)})")
    parser.add_argument("--items", nargs="+", choices=sorted(ITEMS), default=[],
                        help="measure only these items (default: all; items 2 and 3 are one section)")
    args = parser.parse_args(argv)
    if args.runs is not None and args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = QUICK if args.quick else FULL
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        bench = Bench(plan, args.runs or plan.runs, args.backend, stack, tuple(args.items))
        try:
            bench.prepare()
            bench.run_all()
        except KeyboardInterrupt:
            bench.report.errors.append("interrupted")
        except Exception as exc:
            bench.report.errors.append(f"preparation: {type(exc).__name__}: {exc}")
    report = bench.report
    report.meta["seconds"] = round(time.monotonic() - started, 1)
    report.write(args.json)
    print(f"\nlers-gateway benchmark: {args.backend}, {bench.runs} run(s), {os.cpu_count()} cores, "
          f"{report.meta['seconds']:.0f} s; median (min – max) over runs")
    print(report.table())
    print(f"\nJSON: {args.json}")
    return 1 if report.errors else 0
