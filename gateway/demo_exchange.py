"""A small generated exchange database, so productions work out of the box (`[data_source] url`
empty). Deterministic: the same seed gives the same users, logins and transactions, which the
README's walk-through and the tests rely on (account 42 is the README's example subject)."""

from __future__ import annotations

import os
import random
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

SCHEMA = """
CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT UNIQUE, phone TEXT, full_name TEXT,
                    country TEXT, language TEXT, created_at TEXT, status TEXT);
CREATE TABLE kyc (user_id INTEGER, document_type TEXT, document_number TEXT, nationality TEXT,
                  date_of_birth TEXT, verified_at TEXT);
CREATE TABLE logins (user_id INTEGER, at TEXT, ip TEXT, user_agent TEXT, device_id TEXT);
CREATE TABLE devices (user_id INTEGER, device_id TEXT, model TEXT, os TEXT, first_seen TEXT,
                      last_seen TEXT);
CREATE TABLE wallets (user_id INTEGER, asset TEXT, address TEXT UNIQUE, created_at TEXT);
CREATE TABLE transactions (user_id INTEGER, at TEXT, kind TEXT, asset TEXT, amount TEXT,
                           tx_hash TEXT, counterparty TEXT);
CREATE TABLE balances (user_id INTEGER, asset TEXT, amount TEXT, as_of TEXT);
CREATE TABLE support_tickets (user_id INTEGER, at TEXT, subject TEXT, body TEXT);
CREATE INDEX logins_user ON logins (user_id, at);
CREATE INDEX transactions_user ON transactions (user_id, at);
"""
# the README's example request names these; a second known user helps show partial approvals
KNOWN_USERS = (
    (42, "suspect@example.com", "+15555550142", "Sam Suspect", "US", "en", "bc1qxyexample"),
    (43, "partner@example.net", "+15555550143", "Pat Partner", "DE", "de", "bc1qpartnerexample"),
)
START = datetime(2025, 6, 1, tzinfo=UTC)
DAYS = 520  # up to early November 2026


def create_demo_exchange(path: Path, users: int = 120, seed: int = 2026) -> None:
    """Write the demo database at `path` (replacing nothing: the caller checks it is absent)."""
    rng = random.Random(seed)
    # a name of its own: several gateway processes sharing a data dir may start at once; the
    # content is the same whoever wins the rename
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    connection = sqlite3.connect(tmp)
    try:
        connection.executescript(SCHEMA)
        for user_id in range(1, users + 1):
            known = next((k for k in KNOWN_USERS if k[0] == user_id), None)
            _add_user(connection, rng, user_id, known)
        connection.commit()
    finally:
        connection.close()
    tmp.replace(path)
    path.chmod(0o600)


def _stamp(rng: random.Random) -> str:
    return (START + timedelta(seconds=rng.randrange(DAYS * 86400))).isoformat()


def _add_user(db: sqlite3.Connection, rng: random.Random, user_id: int,
              known: tuple[str | int, ...] | None) -> None:
    if known:
        _, email, phone, name, country, language, wallet = known
    else:
        email, phone = f"user{user_id}@mail.example", f"+1555555{user_id:04d}"
        name, country = f"User {user_id}", rng.choice(["US", "DE", "FR", "GB", "BR", "JP", "NG"])
        language, wallet = "en", f"bc1qdemo{user_id:06d}"
    created = (START - timedelta(days=rng.randrange(1, 400))).isoformat()
    db.execute("INSERT INTO users VALUES (?,?,?,?,?,?,?,?)",
               (user_id, email, phone, name, country, language, created, "active"))
    db.execute("INSERT INTO kyc VALUES (?,?,?,?,?,?)",
               (user_id, "passport", f"P{rng.randrange(10**8):08d}", country,
                f"{rng.randrange(1950, 2004)}-0{rng.randrange(1, 10)}-1{rng.randrange(10)}", created))
    devices = [f"dev-{user_id}-{n}" for n in range(rng.randrange(1, 4))]
    for device in devices:
        db.execute("INSERT INTO devices VALUES (?,?,?,?,?,?)",
                   (user_id, device, rng.choice(["Pixel 8", "iPhone 15", "ThinkPad", "MacBook"]),
                    rng.choice(["Android 15", "iOS 18", "Linux", "macOS 15"]), created, _stamp(rng)))
    for _ in range(rng.randrange(20, 60)):
        db.execute("INSERT INTO logins VALUES (?,?,?,?,?)",
                   (user_id, _stamp(rng), f"203.0.113.{rng.randrange(1, 255)}",
                    "Mozilla/5.0", rng.choice(devices)))
    db.execute("INSERT INTO wallets VALUES (?,?,?,?)", (user_id, "BTC", wallet, created))
    for _ in range(rng.randrange(10, 40)):
        kind = rng.choice(["deposit", "withdrawal", "trade"])
        db.execute("INSERT INTO transactions VALUES (?,?,?,?,?,?,?)",
                   (user_id, _stamp(rng), kind, rng.choice(["BTC", "ETH", "USDT"]),
                    f"{rng.uniform(0.001, 5):.6f}", f"{rng.getrandbits(256):064x}",
                    f"bc1qcounter{rng.randrange(10**6):06d}" if kind != "trade" else ""))
    db.execute("INSERT INTO balances VALUES (?,?,?,?)",
               (user_id, "BTC", f"{rng.uniform(0, 3):.8f}", "2026-11-01T00:00:00+00:00"))
    if rng.random() < 0.3 or known:
        db.execute("INSERT INTO support_tickets VALUES (?,?,?,?)",
                   (user_id, _stamp(rng), "Withdrawal delayed", "My withdrawal has not arrived."))
