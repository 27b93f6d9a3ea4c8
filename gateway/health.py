"""The operators' HTTP endpoint: /healthz and /metrics, served by the gateway process (aiohttp).

/healthz runs every check of the parts this process is configured to run, concurrently and each
within `[health] check_timeout_seconds`, and answers 200 when all pass, 503 naming the ones that
fail. It reads nothing secret and says nothing secret: no passwords, tokens or addresses beyond
the smarthost's host:port. /metrics is gateway/metrics.py's exposition.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import aiosmtplib
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import select, text

from gateway.clock import utcnow
from gateway.config import ImapAccount, Settings
from gateway.db import Database
from gateway.metrics import ProcessMetrics, exposition
from gateway.models import ImapState
from gateway.pgp import OpenPGP

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Check:
    """One part's state: `detail` says what was seen, in words an operator can act on."""

    name: str
    ok: bool
    detail: str


Probe = Callable[[], Awaitable[Check]]


async def check_database(db: Database) -> Check:
    async with db.transaction() as session:
        await session.execute(text("SELECT 1"))
    return Check("database", True, "reachable")


async def check_gpg(pgp: OpenPGP, fingerprint: str) -> Check:
    """gpg runs and the keyring still holds the gateway's secret key (it signs every reply)."""
    if not await pgp.holds_secret_key(fingerprint):
        return Check("gpg", False, f"the gateway's secret key {fingerprint} is not in the keyring")
    return Check("gpg", True, f"gateway key {fingerprint} loaded")


async def check_smarthost(settings: Settings, tls_context: ssl.SSLContext | None) -> Check:
    """TCP connect and EHLO (over TLS for implicit TLS); nothing is sent, no login."""
    out = settings.outbound
    where = f"{out.host}:{out.port}"
    client = aiosmtplib.SMTP(hostname=out.host, port=out.port, use_tls=out.tls == "implicit",
                             start_tls=False, tls_context=tls_context,
                             timeout=settings.health.check_timeout_seconds)
    try:
        await client.connect()
        response = await client.ehlo()
    except (aiosmtplib.SMTPException, OSError) as exc:
        return Check("smarthost", False, f"{where}: {type(exc).__name__}: {exc}"[:300])
    finally:
        if client.is_connected:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                client.close()
    if response.code != 250:
        return Check("smarthost", False, f"{where}: EHLO answered {response.code}")
    return Check("smarthost", True, f"{where} answers EHLO")


async def check_imap(db: Database, account: ImapAccount) -> Check:
    """From `imap_state`, written by whichever process reads the mailbox: connected, and a pass
    over the mailbox recent enough, with no error since."""
    name = f"imap:{account.name}"
    async with db.transaction() as session:
        state = await session.scalar(select(ImapState).where(ImapState.account == account.name))
    if state is None or state.last_poll_at is None:
        return Check(name, False, "the mailbox has not been read yet")
    now = utcnow()
    stale_after = timedelta(seconds=2 * account.poll_seconds + 60)
    if state.last_error_at is not None and state.last_error_at >= state.last_poll_at:
        return Check(name, False, f"error at {_when(state.last_error_at)}: {state.last_error}"[:300])
    if not state.connected:
        return Check(name, False, f"disconnected; last read {_when(state.last_poll_at)}")
    if now - state.last_poll_at > stale_after:
        return Check(name, False, f"last read {_when(state.last_poll_at)}, more than "
                     f"{stale_after.total_seconds():.0f}s ago")
    return Check(name, True, f"last read {_when(state.last_poll_at)}, backlog {state.backlog or 0}")


def check_telegram(polling: bool, last_ok: datetime | None, last_error: str | None,
                   poll_timeout_seconds: float) -> Check:
    """The Bot API answered recently. Only the process holding the chat duty polls; the others
    are on standby and say so (their health does not depend on the poller's)."""
    if not polling:
        return Check("telegram", True, "standby: another process polls the Bot API")
    limit = timedelta(seconds=poll_timeout_seconds + 60)  # a long poll returns within its timeout
    if last_ok is None:
        return Check("telegram", False, f"the Bot API has not answered yet{_error(last_error)}")
    if utcnow() - last_ok > limit:
        return Check("telegram", False, f"the Bot API last answered {_when(last_ok)}{_error(last_error)}")
    return Check("telegram", True, f"the Bot API answered {_when(last_ok)}")


def _when(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _error(error: str | None) -> str:
    return f" (last error: {error})" if error else ""


async def run_checks(probes: dict[str, Probe], seconds: float) -> list[Check]:
    async def one(name: str, probe: Probe) -> Check:
        try:
            return await asyncio.wait_for(probe(), seconds)
        except TimeoutError:
            return Check(name, False, f"no answer within {seconds:g}s")
        except Exception as exc:  # a check must report, never crash the endpoint
            return Check(name, False, f"{type(exc).__name__}: {exc}"[:300])

    return list(await asyncio.gather(*(one(name, probe) for name, probe in probes.items())))


class HealthServer:
    """aiohttp on `[health] listen`; `probes` are the checks of the parts this process runs."""

    def __init__(self, settings: Settings, db: Database, metrics: ProcessMetrics,
                 probes: dict[str, Probe]) -> None:
        self.settings, self.db, self.metrics, self.probes = settings, db, metrics, probes
        self.port: int | None = None
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics_page)
        self._runner = web.AppRunner(app, access_log=None)

    async def start(self) -> None:
        host, port = self.settings.health.host_port
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        await self._runner.setup()
        try:
            sock.bind((host, port))  # our own socket: port 0 picks a free port we can read back
            await web.SockSite(self._runner, sock).start()
        except BaseException:
            sock.close()
            await self._runner.cleanup()
            raise
        self.port = sock.getsockname()[1]
        log.info("health endpoint listening", extra={"listen": f"{host}:{self.port}"})

    async def stop(self) -> None:
        if self.port is not None:
            await self._runner.cleanup()
            self.port = None

    async def healthz(self, request: web.Request) -> web.Response:
        checks = await run_checks(self.probes, self.settings.health.check_timeout_seconds)
        failing = [c.name for c in checks if not c.ok]
        body = {"status": "ok" if not failing else "failing", "failing": failing,
                "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in checks}}
        if failing:
            log.warning("health check failing", extra={"failing": ",".join(failing)})
        return web.json_response(body, status=503 if failing else 200)

    async def metrics_page(self, request: web.Request) -> web.Response:
        body = await exposition(self.db, self.metrics)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
