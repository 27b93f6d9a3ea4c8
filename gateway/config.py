"""Load and validate config.toml into one frozen settings object.

Precedence: built-in defaults < the TOML file < `LERS_SECTION__KEY` environment variables
< `--set section.key=value` overrides from the CLI. Every error names the key and the problem,
so an operator can fix a typo without reading code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from gateway.mime import MAX_NESTING, MimeLimits


class ConfigError(Exception):
    """A configuration value is missing, unknown or invalid; the message names the key."""


@dataclass(frozen=True)
class GatewaySettings:
    address: str = "lers@localhost"
    accept_addresses: tuple[str, ...] = ()
    name: str = "LERS Gateway"
    data_dir: str = "data"


@dataclass(frozen=True)
class SmtpSettings:
    host: str = "127.0.0.1"
    port: int = 8025
    max_message_bytes: int = 25 * 1024 * 1024
    # STARTTLS for senders: offered when a certificate is configured; require_tls refuses plain text
    tls_cert_file: str = ""
    tls_key_file: str = ""
    require_tls: bool = False
    # Abuse control: MAIL FROM commands per minute per client address, and messages per minute
    # per envelope sender that do not look signed by a key we hold (gateway/smtp.py); beyond
    # them the sender is told to retry later (451), nothing is lost. 0 turns a limit off.
    max_messages_per_minute_per_client: int = 600
    max_messages_per_minute_per_sender: int = 120


@dataclass(frozen=True)
class OutboundSettings:
    host: str = "127.0.0.1"
    port: int = 25
    tls: str = "none"  # starttls | implicit | none (none: only for a smarthost on loopback)
    ca_file: str = ""  # a CA bundle to trust instead of the system's
    username: str = ""
    password: str = ""
    password_file: str = ""
    timeout_seconds: float = 30.0
    first_retry_seconds: float = 30.0
    max_retry_seconds: float = 3600.0
    give_up_after_hours: float = 72.0


@dataclass(frozen=True)
class StorageSettings:
    url: str = ""
    # the OpenPGP key whose secret part unlocks what the database holds sealed; empty: the
    # gateway's own key (see the README's security section)
    encryption_key: str = ""


@dataclass(frozen=True)
class PolicySettings:
    max_signature_age_hours: float = 72.0
    max_clock_skew_minutes: float = 10.0
    allow_inline_pgp: bool = False
    impersonation_warning_hours: float = 24.0
    quarantine_retention_days: float = 90.0
    # PDF text is extracted for reviewers in a separate process, stopped at these limits
    pdf_text_seconds: float = 30.0
    pdf_text_max_pages: int = 200
    # a signed message carrying more attachments, or a larger one, is refused with a signed reply
    max_attachments: int = 20
    max_attachment_bytes: int = 20 * 1024 * 1024
    # officers are told once, by signed mail, this many days before their key expires
    key_expiry_warning_days: float = 30.0


@dataclass(frozen=True)
class WorkerSettings:
    gpg_threads: int = 2
    # a gpg call (verify, sign, encrypt, decrypt) still running after this is killed, and the job
    # or reply tried again later (gateway/gpgstream.py)
    gpg_timeout_seconds: float = 120.0
    poll_seconds: float = 0.5
    max_attempts: int = 5
    lease_seconds: float = 300.0
    duty_lease_seconds: float = 30.0


@dataclass(frozen=True)
class TelegramSettings:
    enabled: bool = False
    token: str = ""
    token_file: str = ""
    base_url: str = "https://api.telegram.org/bot"
    base_file_url: str = "https://api.telegram.org/file/bot"
    allowed_chats: tuple[int, ...] = ()
    poll_timeout_seconds: float = 30.0


@dataclass(frozen=True)
class ReviewSettings:
    # request types whose approval needs two distinct approvers
    four_eyes_types: tuple[str, ...] = (
        "emergency_disclosure", "subpoena", "court_order", "search_warrant", "mlat",
    )
    # distinct reviewers (approver or admin) who must /enrol an officer before it takes effect
    enrolment_approvals: int = 1


@dataclass(frozen=True)
class DeadlineSettings:
    """Response targets, in hours from arrival, per request type; emergencies use their own."""

    emergency_hours: float = 4.0
    preservation_hours: float = 72.0
    preservation_extension_hours: float = 72.0
    emergency_disclosure_hours: float = 4.0
    subpoena_hours: float = 240.0
    court_order_hours: float = 240.0
    search_warrant_hours: float = 240.0
    mlat_hours: float = 720.0
    asset_freeze_hours: float = 24.0
    freeze_release_hours: float = 72.0
    # reviewers are told once when a request's deadline is this close
    warn_before_hours: float = 24.0
    scheduler_interval_seconds: float = 60.0
    # the daily list of overdue requests goes to reviewers at the first run after this hour (UTC)
    overdue_report_hour: int = 8

    def target_hours(self, request_type: str, emergency: bool) -> float:
        return self.emergency_hours if emergency else float(getattr(self, f"{request_type}_hours"))


@dataclass(frozen=True)
class DataSourceSettings:
    """Where the platform's own user data lives, and the queries that read it."""

    url: str = ""  # any SQLAlchemy URL; empty: the demo exchange database in the data dir
    mapping_file: str = ""  # empty: the mapping of the demo database (gateway/demo_mapping.toml)


@dataclass(frozen=True)
class ProductionSettings:
    # a production ZIP larger than this is sent as numbered parts of this size, one mail each
    max_part_bytes: int = 5 * 1024 * 1024


@dataclass(frozen=True)
class HoldSettings:
    """Preservations and asset freezes: how long they last and when reviewers are warned."""

    preservation_days: int = 90
    freeze_days: int = 90
    expiry_warning_days: int = 7


@dataclass(frozen=True)
class NoticeSettings:
    """The notices that tell the platform's users that a request concerned their account."""

    language: str = "en"
    platform_name: str = "the platform"
    contact_address: str = ""  # where users may write; empty: the gateway address
    # after an emergency request's decision, its notices wait this long (an NDO may hold longer)
    emergency_delay_hours: float = 72.0


@dataclass(frozen=True)
class ReportSettings:
    """The transparency report (`lers report`)."""

    # countries with fewer requests than this are shown together, as "Other countries"
    min_country_requests: int = 5
    platform_name: str = ""  # empty: [notices] platform_name


@dataclass(frozen=True)
class ImapAccount:
    """One mailbox the gateway polls (`[[imap]]` tables in config.toml; several are allowed)."""

    name: str = "default"
    enabled: bool = True
    host: str = ""
    port: int = 993
    tls: str = "implicit"  # implicit | starttls | none (none: loopback only)
    ca_file: str = ""  # a CA bundle to trust instead of the system's (e.g. a private CA)
    username: str = ""
    password: str = ""
    password_file: str = ""
    mailbox: str = "INBOX"
    processed_mailbox: str = ""  # move processed mail here; empty: tag it $LersProcessed, leave it
    poll_seconds: float = 60.0
    batch_size: int = 50


@dataclass(frozen=True)
class HealthSettings:
    """The operators' HTTP endpoint: /healthz and /metrics (Prometheus), loopback by default."""

    enabled: bool = False
    listen: str = "127.0.0.1:9425"  # host:port, or [v6-address]:port
    allow_non_loopback: bool = False  # the endpoint has no authentication: expose it deliberately
    check_timeout_seconds: float = 5.0  # per check: database, smarthost EHLO

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


@dataclass(frozen=True)
class Settings:
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    outbound: OutboundSettings = field(default_factory=OutboundSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    mime: MimeLimits = field(default_factory=MimeLimits)  # [mime]: structure limits, gateway/mime.py
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    telegram: TelegramSettings = field(default_factory=TelegramSettings)
    review: ReviewSettings = field(default_factory=ReviewSettings)
    deadlines: DeadlineSettings = field(default_factory=DeadlineSettings)
    data_source: DataSourceSettings = field(default_factory=DataSourceSettings)
    production: ProductionSettings = field(default_factory=ProductionSettings)
    holds: HoldSettings = field(default_factory=HoldSettings)
    notices: NoticeSettings = field(default_factory=NoticeSettings)
    report: ReportSettings = field(default_factory=ReportSettings)
    health: HealthSettings = field(default_factory=HealthSettings)
    imap: tuple[ImapAccount, ...] = ()
    base_dir: Path = field(default_factory=Path.cwd)

    @property
    def data_dir(self) -> Path:
        return (self.base_dir / self.gateway.data_dir).resolve()

    @property
    def gnupg_home(self) -> Path:
        return self.data_dir / "gnupg"

    @property
    def database_url(self) -> str:
        return self.storage.url or f"sqlite+aiosqlite:///{self.data_dir / 'lers.db'}"

    @property
    def data_source_url(self) -> str:
        return self.data_source.url or f"sqlite+aiosqlite:///{self.data_dir / 'demo-exchange.sqlite'}"

    @property
    def report_platform(self) -> str:
        return self.report.platform_name or self.notices.platform_name

    @property
    def notice_contact(self) -> str:
        return self.notices.contact_address or self.gateway.address

    @property
    def recipients(self) -> frozenset[str]:
        """The addresses the SMTP server accepts mail for (lower-cased)."""
        return frozenset(a.lower() for a in (self.gateway.address, *self.gateway.accept_addresses))

    def outbound_password(self) -> str:
        """The smarthost password: from password_file when set, so it need not sit in the TOML."""
        return self._secret("outbound.password_file", self.outbound.password_file,
                            self.outbound.password)

    def imap_password(self, account: ImapAccount) -> str:
        return self._secret(f"imap[{account.name}].password_file", account.password_file,
                            account.password)

    def telegram_token(self) -> str:
        return self._secret("telegram.token_file", self.telegram.token_file, self.telegram.token)

    def secrets(self) -> list[str]:
        """Every password and token this configuration holds, for the logs to leave out."""
        found = [self.outbound_password(), *(self.imap_password(a) for a in self.imap)]
        if self.telegram.enabled:
            found.append(self.telegram_token())
        for url in (self.storage.url, self.data_source.url):
            with contextlib.suppress(ArgumentError, ValueError):
                password = make_url(url).password if url else None
                if password:
                    found.append(str(password))
        return [s for s in found if s]

    def _secret(self, key: str, file: str, inline: str) -> str:
        if file:
            path = self.base_dir / file
            try:
                return path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from exc
        return inline


SECTIONS: dict[str, type] = {
    name: cls for name, cls in get_type_hints(Settings).items() if name not in ("base_dir", "imap")
}
LIST_SECTIONS: dict[str, type] = {"imap": ImapAccount}  # [[name]] arrays of tables

ENV_PREFIX = "LERS_"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def config_path(cli_path: str | None) -> Path | None:
    """`--config PATH`, else `$LERS_CONFIG`, else ./config.toml if present, else built-in defaults."""
    if cli_path:
        return Path(cli_path)
    if os.environ.get("LERS_CONFIG"):
        return Path(os.environ["LERS_CONFIG"])
    default = Path("config.toml")
    return default if default.exists() else None


def load_settings(
    path: Path | None,
    overrides: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read the file (if any), apply environment and CLI overrides, and validate every value."""
    raw: dict[str, dict[str, Any]] = {}
    base_dir = Path.cwd()
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        base_dir = path.resolve().parent
    lists = {name: raw.pop(name) for name in LIST_SECTIONS if name in raw}
    for name, value in raw.items():
        if name not in SECTIONS:
            known = ", ".join([*SECTIONS, *LIST_SECTIONS])
            raise ConfigError(f"[{name}]: unknown section (known: {known})")
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: must be a [section] table")
    env = os.environ if environ is None else environ
    for key, value in env.items():
        if key.startswith(ENV_PREFIX) and "__" in key:
            section, _, name = key[len(ENV_PREFIX) :].lower().partition("__")
            _apply_override(raw, f"{section}.{name}", value, source=key)
    for dotted, value in (overrides or {}).items():
        _apply_override(raw, dotted, value, source="--set")
    sections = {name: _build_section(name, cls, raw.get(name, {})) for name, cls in SECTIONS.items()}
    accounts = lists.get("imap", [])
    if not isinstance(accounts, list) or not all(isinstance(a, dict) for a in accounts):
        raise ConfigError("imap: write each account as an [[imap]] table")
    imap = tuple(_build_section(f"imap[{i}]", ImapAccount, a) for i, a in enumerate(accounts))
    settings = Settings(**sections, imap=imap, base_dir=base_dir)
    _check_semantics(settings)
    return settings


def _apply_override(raw: dict[str, dict[str, Any]], dotted: str, value: str, source: str) -> None:
    section, _, name = dotted.partition(".")
    if section not in SECTIONS or not name:
        raise ConfigError(f"{source}: {dotted!r} is not a known section.key")
    raw.setdefault(section, {})[name] = _StringValue(value)


class _StringValue(str):
    """A value from the environment or CLI: converted to the field's type on validation."""


def _build_section(name: str, cls: type, values: dict[str, Any]) -> Any:
    hints = get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in known:
            raise ConfigError(f"{name}.{key}: unknown key (known: {', '.join(sorted(known))})")
    kwargs = {key: _coerce(f"{name}.{key}", hints[key], value) for key, value in values.items()}
    return cls(**kwargs)


def _coerce(key: str, expected: Any, value: Any) -> Any:
    from_text = isinstance(value, _StringValue)
    if expected is bool:
        if from_text and value.lower() in {"true", "1", "yes", "false", "0", "no"}:
            return value.lower() in {"true", "1", "yes"}
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: must be true or false, got {value!r}")
    if expected is int:
        if from_text:
            try:
                return int(value)
            except ValueError:
                pass
        elif isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: must be a whole number, got {value!r}")
    if expected is float:
        if from_text:
            try:
                return float(value)
            except ValueError:
                pass
        elif isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: must be a number, got {value!r}")
    if expected is str:
        if isinstance(value, str):
            return str(value)
        raise ConfigError(f"{key}: must be a string, got {value!r}")
    if expected == tuple[int, ...]:
        items = value.split(",") if from_text else value
        try:
            if isinstance(items, list | tuple | str):
                return tuple(int(str(v).strip()) for v in items if str(v).strip())
        except ValueError:
            pass
        raise ConfigError(f"{key}: must be a list of whole numbers, got {value!r}")
    if expected == tuple[str, ...]:
        if from_text:
            return tuple(v.strip() for v in value.split(",") if v.strip())
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(f"{key}: must be a list of strings, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {expected!r}")  # pragma: no cover


def _check_health_listen(health: HealthSettings) -> None:
    host, sep, port = health.listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"health.listen: must be HOST:PORT (e.g. 127.0.0.1:9425), got {health.listen!r}")
    host = host.strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        raise ConfigError(f"health.listen: {host!r} is not an IP address or localhost") from None
    if not loopback and not health.allow_non_loopback:
        raise ConfigError(f"health.listen: {host} is not a loopback address; the endpoint has no "
                          "authentication: set health.allow_non_loopback = true to expose it")


def _check_semantics(s: Settings) -> None:
    for key, port in (("smtp.port", s.smtp.port), ("outbound.port", s.outbound.port)):
        if not 0 <= port <= 65535:
            raise ConfigError(f"{key}: must be between 0 and 65535, got {port}")
    addresses = [("gateway.address", s.gateway.address)]
    addresses += [("gateway.accept_addresses", a) for a in s.gateway.accept_addresses]
    for address_key, address in addresses:
        local, at, domain = address.partition("@")
        if not (local and at and domain) or any(c.isspace() for c in address):
            raise ConfigError(f"{address_key}: must be an email address, got {address!r}")
    positive = {
        "smtp.max_message_bytes": s.smtp.max_message_bytes,
        "worker.gpg_threads": s.worker.gpg_threads,
        "worker.gpg_timeout_seconds": s.worker.gpg_timeout_seconds,
        "worker.max_attempts": s.worker.max_attempts,
        "worker.poll_seconds": s.worker.poll_seconds,
        "policy.pdf_text_seconds": s.policy.pdf_text_seconds,
        "policy.pdf_text_max_pages": s.policy.pdf_text_max_pages,
        "policy.max_attachments": s.policy.max_attachments,
        "policy.max_attachment_bytes": s.policy.max_attachment_bytes,
        **{f"mime.{f.name}": getattr(s.mime, f.name) for f in dataclasses.fields(MimeLimits)},
        "worker.lease_seconds": s.worker.lease_seconds,
        "worker.duty_lease_seconds": s.worker.duty_lease_seconds,
        "outbound.timeout_seconds": s.outbound.timeout_seconds,
        "health.check_timeout_seconds": s.health.check_timeout_seconds,
        "outbound.first_retry_seconds": s.outbound.first_retry_seconds,
        "outbound.max_retry_seconds": s.outbound.max_retry_seconds,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key}: must be greater than 0, got {value}")
    for deadline in dataclasses.fields(DeadlineSettings):
        if deadline.name != "overdue_report_hour" and getattr(s.deadlines, deadline.name) <= 0:
            raise ConfigError(f"deadlines.{deadline.name}: must be greater than 0")
    if not 0 <= s.deadlines.overdue_report_hour <= 23:
        raise ConfigError("deadlines.overdue_report_hour: must be an hour from 0 to 23")
    more_positive = {
        "production.max_part_bytes": s.production.max_part_bytes,
        "holds.preservation_days": s.holds.preservation_days,
        "holds.freeze_days": s.holds.freeze_days,
        "report.min_country_requests": s.report.min_country_requests,
    }
    for key, value in more_positive.items():
        if value <= 0:
            raise ConfigError(f"{key}: must be greater than 0, got {value}")
    if s.holds.expiry_warning_days < 0 or s.notices.emergency_delay_hours < 0:
        raise ConfigError("holds.expiry_warning_days and notices.emergency_delay_hours: must be 0 or more")
    if s.mime.max_nesting > MAX_NESTING:
        raise ConfigError(f"mime.max_nesting: at most {MAX_NESTING}, got {s.mime.max_nesting}")
    from gateway.texts import notice_languages

    if s.notices.language not in notice_languages():
        raise ConfigError(f"notices.language: {s.notices.language!r} has no notice template "
                          f"(available: {', '.join(notice_languages())})")
    non_negative = {
        "policy.max_signature_age_hours": s.policy.max_signature_age_hours,
        "policy.max_clock_skew_minutes": s.policy.max_clock_skew_minutes,
        "policy.impersonation_warning_hours": s.policy.impersonation_warning_hours,
        "policy.quarantine_retention_days": s.policy.quarantine_retention_days,
        "policy.key_expiry_warning_days": s.policy.key_expiry_warning_days,
    }
    for key, value in non_negative.items():
        if value < 0:
            raise ConfigError(f"{key}: must be 0 or more, got {value}")
    from handlers.form import REQUEST_TYPES  # the vocabulary lives with the form

    for kind in s.review.four_eyes_types:
        if kind not in REQUEST_TYPES:
            raise ConfigError(f"review.four_eyes_types: {kind!r} is not a request type "
                              f"({', '.join(REQUEST_TYPES)})")
    if s.review.enrolment_approvals not in (1, 2):
        raise ConfigError(f"review.enrolment_approvals: must be 1 or 2, got {s.review.enrolment_approvals}")
    if s.telegram.enabled and not (s.telegram.token or s.telegram.token_file):
        raise ConfigError("telegram.token: required when telegram.enabled is true "
                          "(or set telegram.token_file)")
    if s.outbound.tls not in ("starttls", "implicit", "none"):
        raise ConfigError(f"outbound.tls: must be starttls, implicit or none, got {s.outbound.tls!r}")
    if s.outbound.tls == "none" and s.outbound.host not in LOOPBACK:
        raise ConfigError(f"outbound.tls: none is allowed only for a smarthost on loopback, not "
                          f"{s.outbound.host}: use starttls or implicit")
    if bool(s.smtp.tls_cert_file) != bool(s.smtp.tls_key_file):
        raise ConfigError("smtp.tls_cert_file and smtp.tls_key_file: give both, or neither")
    if s.smtp.require_tls and not s.smtp.tls_cert_file:
        raise ConfigError("smtp.require_tls: needs smtp.tls_cert_file and smtp.tls_key_file")
    _check_health_listen(s.health)
    names = [a.name for a in s.imap]
    for index, account in enumerate(s.imap):
        key = f"imap[{index}]"
        if names.count(account.name) > 1:
            raise ConfigError(f"{key}.name: {account.name!r} is used by two accounts")
        if account.enabled and not account.host:
            raise ConfigError(f"{key}.host: required")
        if account.tls not in ("implicit", "starttls", "none"):
            raise ConfigError(f"{key}.tls: must be implicit, starttls or none, got {account.tls!r}")
        if account.tls == "none" and account.host not in LOOPBACK:
            raise ConfigError(f"{key}.tls: none is allowed only for a server on loopback")
        if not 0 < account.port <= 65535 or account.poll_seconds <= 0 or account.batch_size <= 0:
            raise ConfigError(f"{key}: port, poll_seconds and batch_size must be positive")
    url = s.storage.url
    if url and not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        raise ConfigError(
            "storage.url: must start with sqlite+aiosqlite:// or postgresql+asyncpg://, "
            f"got {url.split('://')[0]}://..."
        )
