"""The `lers` command. Errors are one clear line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable
from datetime import date
from pathlib import Path
from typing import Any

from gateway.app import ROLES, Core, UnsafePermissions, open_core, serve
from gateway.audit import verify_chain
from gateway.chat import ChatStartError
from gateway.config import ConfigError, Settings, config_path, load_settings
from gateway.db import SchemaError
from gateway.logs import setup_logging
from gateway.malloc import return_large_blocks_promptly
from gateway.pgp import OpenPGPError
from gateway.records import list_quarantine, list_requests, show_request


class CliError(Exception):
    """A user mistake or a failed check: printed as one line, exit status 1."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lers", description="Law-enforcement request gateway")
    parser.add_argument("--config", help="config file (default: $LERS_CONFIG, else ./config.toml)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one setting (repeatable)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("init", help="create the data dir, database and gateway key")
    serve_cmd = commands.add_parser("serve", help="run the gateway (SMTP ingress, workers, outbox)")
    serve_cmd.add_argument("--roles", default=",".join(ROLES),
                           help=f"comma-separated roles to run here (default: all of {','.join(ROLES)})")

    agency = commands.add_parser("agency", help="manage agencies").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    add = agency.add_parser("add", help="register an agency")
    add.add_argument("name")
    add.add_argument("--domain", required=True, help="the agency's mail domain")
    add.add_argument("--country", help="ISO 3166 two-letter code")
    add.add_argument("--key", type=Path, help="the agency's public key (armored): keys it certifies "
                     "are accepted without manual enrolment")
    keyed = agency.add_parser("set-key", help="give an agency its certifying key, or replace it")
    keyed.add_argument("name")
    keyed.add_argument("--key", type=Path, required=True, help="the agency's public key (armored)")
    suspended = agency.add_parser("suspend", help="suspend an agency and so all its officers, at once")
    suspended.add_argument("name")
    suspended.add_argument("--reason", required=True)
    reinstated = agency.add_parser("reinstate", help="end an agency's suspension")
    reinstated.add_argument("name")
    revoked = agency.add_parser("revoke-key", help="import a revocation certificate for an agency key")
    revoked.add_argument("file", type=Path)

    officer = commands.add_parser("officer", help="manage officers").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    add = officer.add_parser("add", help="enrol an officer with their public key")
    add.add_argument("email")
    add.add_argument("--agency", required=True)
    add.add_argument("--key", type=Path, required=True, help="the officer's public key (armored)")
    add.add_argument("--name")
    add.add_argument("--telegram-id", type=int, help="their Telegram user id, to submit through the bot")
    listing = officer.add_parser("list", help="officers with status, agency and key expiry")
    listing.add_argument("--json", action="store_true")
    suspended = officer.add_parser("suspend", help="suspend an officer at once (messages refused, "
                                   "replies held)")
    suspended.add_argument("email")
    suspended.add_argument("--reason", required=True)
    reinstated = officer.add_parser("reinstate", help="end a suspension; held replies are sent")
    reinstated.add_argument("email")
    revoked = officer.add_parser("revoke-key", help="import a revocation certificate for an officer key")
    revoked.add_argument("file", type=Path)

    reviewer = commands.add_parser("reviewer", help="manage reviewers (Telegram)").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    add = reviewer.add_parser("add", help="register a reviewer by Telegram user id")
    add.add_argument("telegram_id", type=int, metavar="TELEGRAM_USER_ID")
    add.add_argument("--name", required=True)
    add.add_argument("--role", required=True, choices=["reviewer", "approver", "admin"])
    listing = reviewer.add_parser("list", help="registered reviewers")
    listing.add_argument("--json", action="store_true")
    remove = reviewer.add_parser("remove", help="stop a reviewer's access (history is kept)")
    remove.add_argument("telegram_id", type=int, metavar="TELEGRAM_USER_ID")

    imap = commands.add_parser("imap", help="polled IMAP mailboxes").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    listing = imap.add_parser("status", help="per account: connection, last UID, backlog, last error")
    listing.add_argument("--json", action="store_true")
    imported = imap.add_parser("import", help="read a mailbox once, now, with progress (e.g. a large "
                               "first import before `lers serve`)")
    imported.add_argument("name", nargs="?", help="the [[imap]] account (default: every enabled one)")

    database = commands.add_parser("db", help="the database schema").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    database.add_parser("status", help="the schema revision of the database and of this code")
    database.add_parser("upgrade", help="apply the schema migrations (back up first)")
    copy = database.add_parser("copy", help="copy the whole database into another, empty one")
    copy.add_argument("--from", dest="source", required=True, metavar="URL")
    copy.add_argument("--to", dest="target", required=True, metavar="URL")

    made = commands.add_parser("backup", help="database and keyring in one encrypted file (online)")
    made.add_argument("path", type=Path)
    made.add_argument("--passphrase-file", type=Path, required=True)
    restored = commands.add_parser("restore", help="restore a backup into an empty data dir")
    restored.add_argument("path", type=Path)
    restored.add_argument("--passphrase-file", type=Path, required=True)

    key = commands.add_parser("key", help="the gateway's key").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    key.add_parser("export", help="print the gateway's public key, armored")

    requests = commands.add_parser("requests", help="inspect requests").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    listing = requests.add_parser("list", help="all requests")
    listing.add_argument("--json", action="store_true")
    show = requests.add_parser("show", help="one request in full")
    show.add_argument("ref")
    show.add_argument("--json", action="store_true")

    quarantine = commands.add_parser("quarantine", help="refused messages").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    listing = quarantine.add_parser("list", help="refused messages with their reasons")
    listing.add_argument("--json", action="store_true")
    shown = quarantine.add_parser("show", help="one refused message (--raw: its bytes, as received)")
    shown.add_argument("id", type=int)
    shown.add_argument("--json", action="store_true")
    shown.add_argument("--raw", action="store_true")
    released = quarantine.add_parser("release", help="judge a refused message again, from scratch")
    released.add_argument("id", type=int)
    purged = quarantine.add_parser("purge", help="delete refused messages older than N days")
    purged.add_argument("--older-than", type=float, required=True, metavar="DAYS")

    review = commands.add_parser("review", help="a reviewer's chat command, from the terminal")
    review.add_argument("--as", dest="reviewer", type=int, required=True, metavar="TELEGRAM_USER_ID",
                        help="the registered reviewer acting (their role applies)")
    review.add_argument("words", nargs=argparse.REMAINDER, metavar="COMMAND",
                        help="as in chat, e.g. /approve LERS-2026-000001 note")
    source = commands.add_parser("data-source", help="the platform's user data").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    source.add_parser("check", help="run every query of the mapping once and report problems")
    notices = commands.add_parser("notices", help="notices to the platform's users").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    listing = notices.add_parser("list", help="every notice, its hold and when it may go")
    listing.add_argument("--due", action="store_true", help="only notices due now")
    listing.add_argument("--json", action="store_true")
    audit_cmd = commands.add_parser("audit", help="the audit log").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    audit_cmd.add_parser("verify", help="check the hash chain")
    export = audit_cmd.add_parser("export", help="a signed chain-of-custody bundle for one request")
    export.add_argument("ref")
    export.add_argument("--out", type=Path, required=True, metavar="DIR")
    report = commands.add_parser("report", help="the transparency report for a period: HTML page with "
                                 "charts, CSV and JSON")
    report.add_argument("--from", dest="start", required=True, metavar="DATE",
                        help="first day, YYYY-MM-DD (UTC, included)")
    report.add_argument("--to", dest="end", required=True, metavar="DATE",
                        help="last day, YYYY-MM-DD (UTC, included)")
    report.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="directory for report.html, report.csv, report.json and charts/")
    return parser


def main(argv: list[str] | None = None) -> int:
    os.umask(0o077)  # everything the gateway writes (database, WAL, keyring, temp files) is private
    args = build_parser().parse_args(argv)
    try:
        overrides = dict(_split_override(item) for item in args.set)
        settings = load_settings(config_path(args.config), overrides)
        if args.command in ("backup", "restore"):
            setup_logging("WARNING")
            return asyncio.run(_backup_or_restore(settings, args))
        if args.command == "serve":
            roles = tuple(r.strip() for r in args.roles.split(",") if r.strip())
            unknown = set(roles) - set(ROLES)
            if unknown or not roles:
                raise CliError(f"--roles: unknown role(s) {', '.join(sorted(unknown)) or '(none given)'}; "
                               f"choose from {','.join(ROLES)}")
            setup_logging()
            return_large_blocks_promptly()  # gateway/malloc.py: large mail must not leave RSS behind
            asyncio.run(serve(settings, roles))
            return 0
        setup_logging("WARNING")
        name = _name(args)
        return asyncio.run(_with_core(settings, lambda core: COMMANDS[name](core, args),
                                      check_schema=not name.startswith("db ")))
    except (CliError, ConfigError, OpenPGPError, ChatStartError, SchemaError, UnsafePermissions) as exc:
        print(f"lers: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _name(args: argparse.Namespace) -> str:
    return f"{args.command} {args.action}" if getattr(args, "action", None) else args.command


def _split_override(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep:
        raise CliError(f"--set {item!r}: expected SECTION.KEY=VALUE")
    return key.strip(), value


async def _backup_or_restore(settings: Settings, args: argparse.Namespace) -> int:
    """Not through open_core: restore must find the data dir empty, and backup needs no key."""
    from gateway.backup import BackupError, backup, restore
    try:
        if args.command == "backup":
            size = await backup(settings, args.path, args.passphrase_file)
            print(f"backup written: {args.path} ({size} bytes, AES-256, passphrase from "
                  f"{args.passphrase_file})")
        else:
            entries = await restore(settings, args.path, args.passphrase_file)
            print(f"restored into {settings.data_dir}; audit chain OK: {entries} entries")
    except BackupError as exc:
        raise CliError(str(exc)) from exc
    return 0


async def _with_core(settings: Settings, command: Callable[[Core], Awaitable[int]],
                     check_schema: bool = True) -> int:
    core = await open_core(settings, check_schema=check_schema)
    try:
        return await command(core)
    finally:
        await core.close()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from exc


def _print(data: Any, as_json: bool, text: Callable[[Any], str]) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False) if as_json else text(data))


async def cmd_init(core: Core, args: argparse.Namespace) -> int:
    state = "generated" if core.key_created else "already present"
    print(f"data dir: {core.settings.data_dir}")
    print(f"gateway key ({state}): {core.gateway_fingerprint}")
    return 0


async def cmd_agency_add(core: Core, args: argparse.Namespace) -> int:
    from handlers.enrolment import EnrolmentError, add_agency
    try:
        agency = await add_agency(core, args.name, args.domain, args.country,
                                  _read(args.key) if args.key else None)
    except EnrolmentError as exc:
        raise CliError(str(exc)) from exc
    print(f"agency added: {agency.name} ({agency.domain})")
    return 0


async def cmd_agency_set_key(core: Core, args: argparse.Namespace) -> int:
    from handlers.enrolment import EnrolmentError, set_agency_key
    try:
        agency, previous = await set_agency_key(core, args.name, _read(args.key))
    except EnrolmentError as exc:
        raise CliError(str(exc)) from exc
    print(f"agency key set: {agency.name} {agency.key_fingerprint}"
          + (f" (replaces {previous}: its certifications no longer enrol officers)" if previous else ""))
    return 0


async def cmd_officer_add(core: Core, args: argparse.Namespace) -> int:
    from handlers.enrolment import EnrolmentError, add_officer
    try:
        officer = await add_officer(core, args.email, args.agency, _read(args.key), args.name,
                                    telegram_id=args.telegram_id)
    except EnrolmentError as exc:
        raise CliError(str(exc)) from exc
    print(f"officer enrolled: {officer.email} key {officer.key_fingerprint}")
    return 0


async def cmd_officer_list(core: Core, args: argparse.Namespace) -> int:
    from handlers.officers import list_officers
    rows = await list_officers(core.db)
    _print(rows, args.json, lambda rs: "\n".join(
        f"{r['email']:<32} {r['status']:<16} {r['agency']:<20} via {r['enrolled_via']:<9} key "
        f"{r['key']} {'REVOKED' if r['key_revoked'] else 'expires ' + (r['key_expires_at'] or 'never')[:10]}"
        + (f"  ({r['reason']})" if r['reason'] else "") for r in rs) or "no officers")
    return 0


async def _officer_act(core: Core, act: Callable[[], Awaitable[Any]]) -> Any:
    from gateway.pgp import KeyImportError
    from handlers.officers import OfficerError
    try:
        return await act()
    except (OfficerError, KeyImportError) as exc:
        raise CliError(str(exc)) from exc


async def cmd_officer_suspend(core: Core, args: argparse.Namespace) -> int:
    from handlers.officers import suspend_officer
    officer = await _officer_act(core, lambda: suspend_officer(core.db, args.email, args.reason, "operator"))
    print(f"officer suspended: {officer.email} ({args.reason}); their messages are refused and "
          "replies to them are held")
    return 0


async def cmd_officer_reinstate(core: Core, args: argparse.Namespace) -> int:
    from handlers.officers import reinstate_officer
    officer, released = await _officer_act(core, lambda: reinstate_officer(core.db, args.email, "operator"))
    print(f"officer reinstated: {officer.email}; {released} held reply(ies) released")
    return 0


async def cmd_key_revocation(core: Core, args: argparse.Namespace) -> int:
    from handlers.officers import revoke_key
    data = _read(args.file)
    for line in await _officer_act(core, lambda: revoke_key(core.db, core.pgp, data, "operator")):
        print(f"key revoked: {line}")
    return 0


async def cmd_agency_suspend(core: Core, args: argparse.Namespace) -> int:
    from handlers.officers import suspend_agency
    agency, count = await _officer_act(core, lambda: suspend_agency(core.db, args.name, args.reason,
                                                                    "operator"))
    print(f"agency suspended: {agency.name} ({args.reason}); {count} officer(s) suspended with it")
    return 0


async def cmd_agency_reinstate(core: Core, args: argparse.Namespace) -> int:
    from handlers.officers import reinstate_agency
    agency, released = await _officer_act(core, lambda: reinstate_agency(core.db, args.name, "operator"))
    print(f"agency reinstated: {agency.name}; {released} held reply(ies) released")
    return 0


async def cmd_reviewer_add(core: Core, args: argparse.Namespace) -> int:
    from handlers.enrolment import EnrolmentError, add_reviewer
    try:
        reviewer = await add_reviewer(core, args.telegram_id, args.name, args.role)
    except EnrolmentError as exc:
        raise CliError(str(exc)) from exc
    print(f"reviewer added: {reviewer.name} ({reviewer.role}), Telegram id {reviewer.telegram_id}")
    return 0


async def cmd_reviewer_list(core: Core, args: argparse.Namespace) -> int:
    from handlers.enrolment import list_reviewers
    rows = [{"telegram_id": r.telegram_id, "name": r.name, "role": r.role, "active": r.active}
            for r in await list_reviewers(core)]
    _print(rows, args.json, lambda rs: "\n".join(
        f"{r['telegram_id']:>12}  {r['role']:<9} {r['name']}{'' if r['active'] else '  (removed)'}"
        for r in rs) or "no reviewers")
    return 0


async def cmd_reviewer_remove(core: Core, args: argparse.Namespace) -> int:
    from handlers.enrolment import EnrolmentError, remove_reviewer
    try:
        reviewer = await remove_reviewer(core, args.telegram_id)
    except EnrolmentError as exc:
        raise CliError(str(exc)) from exc
    print(f"reviewer removed: {reviewer.name} ({reviewer.telegram_id})")
    return 0


async def cmd_imap_status(core: Core, args: argparse.Namespace) -> int:
    from gateway.imap import imap_status
    rows = await imap_status(core.db, core.settings)
    _print(rows, args.json, lambda rs: "\n".join(_imap_line(r) for r in rs) or "no IMAP accounts configured")
    return 0


async def cmd_imap_import(core: Core, args: argparse.Namespace) -> int:
    """One pass over each mailbox, holding its lease (so no running gateway reads it meanwhile)."""
    accounts = [a for a in core.settings.imap if a.enabled and args.name in (None, a.name)]
    if not accounts:
        raise CliError(f"no enabled [[imap]] account {args.name or ''}".rstrip()
                       + f" (configured: {', '.join(a.name for a in core.settings.imap) or 'none'})")
    for account in accounts:
        new = await _import_mailbox(core, account)
        print(f"{account.name}: {new} new message(s) stored; a running gateway verifies and answers them")
    return 0


async def _import_mailbox(core: Core, account: Any) -> int:
    from gateway import leases
    from gateway.imap import ImapPoller
    from gateway.progress import bar
    duty, ttl = f"imap:{account.name}", core.settings.worker.duty_lease_seconds
    if not await leases.acquire(core.db, duty, ttl):
        raise CliError(f"{account.name}: a running gateway is reading this mailbox; stop it first, "
                       "or let it do the import")

    async def keep_lease() -> None:
        while True:
            await asyncio.sleep(ttl / 3)
            await leases.acquire(core.db, duty, ttl)

    renewing = asyncio.create_task(keep_lease())
    poller = ImapPoller(core.settings, account, core.db)
    try:
        with bar(account.name, unit=" messages") as shown:
            def waiting(count: int) -> None:
                shown.total = (shown.total or 0) + count
                shown.refresh()

            poller.on_waiting, poller.on_handled = waiting, shown.update
            return await poller.poll_once()
    except Exception as exc:
        raise CliError(f"{account.name}: {type(exc).__name__}: {exc}") from exc
    finally:
        renewing.cancel()
        await poller.close()
        await leases.release(core.db, duty)


def _imap_line(r: dict[str, Any]) -> str:
    def shown(value: object) -> object:
        return "-" if value is None else value

    line = (f"{r['name']}  {'connected' if r['connected'] else 'disconnected'}  "
            f"{r['host']}:{r['port']}/{r['mailbox']}  last UID {shown(r['last_uid'])}"
            f"  backlog {shown(r['backlog'])}  ingested {r['messages_ingested']}"
            f"  last poll {shown(r['last_poll_at'])}")
    if r["last_error"]:
        line += f"\n    last error {r['last_error_at']}: {r['last_error']}"
    return line


async def cmd_db_status(core: Core, args: argparse.Namespace) -> int:
    current, head, tables = await core.db.schema_state()
    state = "up to date" if current == head else (
        "empty" if current is None and not tables else "needs `lers db upgrade`")
    print(f"database: {current or '(none)'}; this version: {head}; {state}")
    return 0


async def cmd_db_upgrade(core: Core, args: argparse.Namespace) -> int:
    before, head, _ = await core.db.schema_state()
    if before == head:
        print(f"already at {head}")
        return 0
    await core.db.upgrade()
    print(f"upgraded from {before or '(none)'} to {head}")
    return 0


async def cmd_db_copy(core: Core, args: argparse.Namespace) -> int:
    from gateway.dbcopy import copy_database
    from gateway.progress import bar
    with bar("copying", unit=" rows") as shown:
        def advance(table: str, rows: int) -> None:
            shown.set_postfix_str(table, refresh=False)
            shown.update(rows)

        def total(rows: int) -> None:
            shown.reset(total=rows)

        copied = await copy_database(args.source, args.target, advance, total)
    for table, rows in copied.items():
        print(f"{table:<18} {rows:>8} rows")
    print(f"copied {sum(copied.values())} rows; "
          "check the copy with `lers --set storage.url=URL audit verify`")
    return 0


async def cmd_key_export(core: Core, args: argparse.Namespace) -> int:
    sys.stdout.write(await core.pgp.export_gateway_public_key())
    return 0


async def cmd_requests_list(core: Core, args: argparse.Namespace) -> int:
    rows = await list_requests(core.db)
    _print(rows, args.json, lambda rs: "\n".join(
        f"{r['ref']}  {r['status']:<14} {r['type'] or '-':<22} {r['officer']}  {r['created_at'][:16]}"
        for r in rs) or "no requests")
    return 0


async def cmd_requests_show(core: Core, args: argparse.Namespace) -> int:
    data = await show_request(core.db, args.ref)
    if data is None:
        raise CliError(f"no request {args.ref}")
    _print(data, args.json, _request_text)
    return 0


def _request_text(r: dict[str, Any]) -> str:
    lines = [f"{r['ref']}  {r['status']}  {r['type'] or '(type missing)'}"
             + ("  EMERGENCY" if r["emergency"] else "")]
    officer = r["officer"]
    lines.append(f"officer: {officer['email']} ({officer['agency']}) key {officer['key']}")
    for field in ("case_number", "legal_basis", "date_from", "date_to", "nondisclosure_until",
                  "emergency_justification", "supervisor", "investigation_status"):
        if r.get(field):
            lines.append(f"{field}: {r[field]}")
    lines.append("subjects: " + ", ".join(f"{s['type']}:{s['value']}" for s in r["subjects"]))
    lines.append("data_categories: " + ", ".join(r["data_categories"]))
    if r["missing_fields"]:
        lines.append("missing: " + "; ".join(r["missing_fields"]))
    for d in r["documents"]:
        lines.append(f"document: {d['filename']} {d['size']} bytes sha256 {d['sha256']}")
    for o in r["replies"]:
        lines.append(f"reply: {o['kind']} {o['state']} {o['subject']}")
    return "\n".join(lines)


async def cmd_quarantine_list(core: Core, args: argparse.Namespace) -> int:
    rows = await list_quarantine(core.db)
    _print(rows, args.json, lambda rs: "\n".join(
        f"{r['id']:>6}  {r['received_at'][:19]}  {r['reason']:<24} {r['claimed_from'] or '-'}  "
        f"{r['detail']}" for r in rs) or "quarantine is empty")
    return 0


async def cmd_quarantine_show(core: Core, args: argparse.Namespace) -> int:
    from handlers.quarantine import QuarantineError, show
    try:
        data, raw = await show(core.db, args.id)
    except QuarantineError as exc:
        raise CliError(str(exc)) from exc
    if args.raw:
        sys.stdout.buffer.write(raw)
        return 0
    _print(data, args.json, lambda d: "\n".join(
        [f"{d['id']}  {d['received_at'][:19]}  {d['transport']} from {d['peer'] or '-'}  {d['size']} bytes",
         f"refused: {d['reason']}: {d['detail']}",
         f"signature: {(d['verification'] or {}).get('signer_fingerprint') or 'none verified'}",
         "headers (not verified):"]
        + [f"  {k}: {v}" for k, v in d["unverified_headers"].items() if v]))
    return 0


async def cmd_quarantine_release(core: Core, args: argparse.Namespace) -> int:
    from handlers.quarantine import QuarantineError, release
    try:
        await release(core.db, args.id)
    except QuarantineError as exc:
        raise CliError(str(exc)) from exc
    print(f"message {args.id} released: a running gateway judges it again")
    return 0


async def cmd_quarantine_purge(core: Core, args: argparse.Namespace) -> int:
    from handlers.quarantine import purge
    print(f"purged {await purge(core.db, args.older_than, actor='operator')} message(s)")
    return 0


async def cmd_audit_verify(core: Core, args: argparse.Namespace) -> int:
    async with core.db.transaction() as session:
        report = await verify_chain(session)
    if not report.ok:
        raise CliError(f"audit chain broken at entry {report.first_bad_id}: {report.problem}")
    print(f"audit chain OK: {report.entries} entries")
    return 0


async def cmd_audit_export(core: Core, args: argparse.Namespace) -> int:
    from gateway.custody import ExportError, export_request
    try:
        files = await export_request(core, args.ref, args.out)
    except ExportError as exc:
        raise CliError(str(exc)) from exc
    print(f"{len(files)} files in {args.out}; check them offline with:\n"
          "  gpg --import gateway.asc && gpg --verify SHA256SUMS.asc SHA256SUMS && sha256sum -c SHA256SUMS")
    return 0


async def cmd_review(core: Core, args: argparse.Namespace) -> int:
    """The same plain functions the bot calls, for operators without Telegram (audited as the
    reviewer, and marked as coming from the terminal)."""
    from sqlalchemy import select

    from gateway import audit
    from gateway.chat import run_reviewer_command
    from gateway.models import Reviewer
    from handlers.review import ReviewContext
    if not args.words:
        raise CliError("give a command, e.g. lers review --as 123456789 /queue")
    async with core.db.transaction() as session:
        reviewer = await session.scalar(select(Reviewer).where(Reviewer.telegram_id == args.reviewer))
        if reviewer is None or not reviewer.active:
            raise CliError(f"no active reviewer with Telegram id {args.reviewer} (see lers reviewer list)")
        await audit.record(session, f"reviewer:{reviewer.telegram_id}", "review.terminal", None,
                           command=args.words[0].lstrip("/"))
    reply = await run_reviewer_command(ReviewContext(core.settings, core.db, core.pgp),
                                       args.words[0].lstrip("/").lower(), reviewer, args.words[1:])
    print(reply.text)
    for name, data, caption in reply.documents:
        print(f"document {name}: {len(data)} bytes; {caption.splitlines()[-1]}")
    return 0


async def cmd_data_source_check(core: Core, args: argparse.Namespace) -> int:
    from gateway.datasource import DataSource, DataSourceError
    try:
        source = DataSource.from_settings(core.settings)
    except DataSourceError as exc:
        raise CliError(str(exc)) from exc
    try:
        if await source.ensure_demo(core.settings):
            print(f"created the demo exchange database in {core.settings.data_dir}")
        problems = await source.check()
    finally:
        await source.close()
    held, not_held = source.coverage()
    print(f"data source: {source.url.split('://')[0]}; categories mapped: {', '.join(held) or 'none'}")
    if not_held:
        print(f"not held (productions say so): {', '.join(not_held)}")
    for problem in problems:
        print(f"problem: {problem}")
    if problems:
        raise CliError(f"{len(problems)} problem(s) in the data source mapping")
    print("every query ran")
    return 0


async def cmd_notices_list(core: Core, args: argparse.Namespace) -> int:
    from handlers.notices import list_notices
    rows = await list_notices(core.db, core.settings, args.due)
    _print(rows, args.json, lambda rs: "\n".join(
        f"{r['id']:>6}  {r['ref']}  {r['state']:<9} {r['hold']:<14} "
        f"{'due now' if r['due'] else (r['not_before'] or 'until lifted')[:16]:<16}  {r['email']}"
        for r in rs) or ("no notice is due" if args.due else "no notices"))
    return 0


def _date(option: str, value: str) -> date:
    """A calendar date written YYYY-MM-DD, and nothing looser."""
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            return date.fromisoformat(value)
    except ValueError:
        pass
    raise CliError(f"{option}: not a date (YYYY-MM-DD): {value!r}")


def _report_period(args: argparse.Namespace) -> tuple[date, date]:
    start, end = _date("--from", args.start), _date("--to", args.end)
    if start > end:
        raise CliError(f"--from {start} is after --to {end}")
    return start, end


async def cmd_report(core: Core, args: argparse.Namespace) -> int:
    from gateway.progress import bar
    from gateway.report.write import ReportError, write_report
    start, end = _report_period(args)
    try:
        with bar("report", unit=" steps") as shown:
            report, files = await write_report(core.db, core.settings, start, end, args.out,
                                               advance=lambda step: shown.update(1),
                                               total=lambda steps: shown.reset(total=steps))
    except ReportError as exc:
        raise CliError(str(exc)) from exc
    requests = next(s.value for s in report.summary if s.name == "requests")
    print(f"transparency report {start} to {end}: {requests} requests; {len(files)} files in {args.out}")
    for path in files[:3]:
        print(f"  {path}")
    return 0


COMMANDS: dict[str, Callable[[Core, argparse.Namespace], Awaitable[int]]] = {
    "init": cmd_init,
    "agency add": cmd_agency_add,
    "agency set-key": cmd_agency_set_key,
    "agency suspend": cmd_agency_suspend,
    "agency reinstate": cmd_agency_reinstate,
    "agency revoke-key": cmd_key_revocation,
    "officer add": cmd_officer_add,
    "officer list": cmd_officer_list,
    "officer suspend": cmd_officer_suspend,
    "officer reinstate": cmd_officer_reinstate,
    "officer revoke-key": cmd_key_revocation,
    "reviewer add": cmd_reviewer_add,
    "reviewer list": cmd_reviewer_list,
    "reviewer remove": cmd_reviewer_remove,
    "imap status": cmd_imap_status,
    "imap import": cmd_imap_import,
    "db status": cmd_db_status,
    "db upgrade": cmd_db_upgrade,
    "db copy": cmd_db_copy,
    "key export": cmd_key_export,
    "requests list": cmd_requests_list,
    "requests show": cmd_requests_show,
    "quarantine list": cmd_quarantine_list,
    "quarantine show": cmd_quarantine_show,
    "quarantine release": cmd_quarantine_release,
    "quarantine purge": cmd_quarantine_purge,
    "review": cmd_review,
    "data-source check": cmd_data_source_check,
    "notices list": cmd_notices_list,
    "audit verify": cmd_audit_verify,
    "audit export": cmd_audit_export,
    "report": cmd_report,
}
