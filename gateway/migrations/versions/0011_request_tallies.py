"""request_tallies: each officer's and agency's requests by status, kept by triggers on requests;
the reviewers' notice of a new request read them by counting a large agency's every request, in
the transaction that records the request (issue 8)

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-25 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

# gateway/audit.py's AUDIT_LOCK (a migration keeps the value it was written with)
AUDIT_LOCK = 0x4C455253
SCOPES = (("officer", "officer_id"), ("agency", "agency_id"))  # a tally's scope, the column it counts by


def _add(row: str) -> str:
    """One more request in `row`'s (NEW or OLD) status, for its officer and for its agency."""
    return "\n".join(
        f"INSERT INTO request_tallies (scope, owner_id, status, total) "
        f"VALUES ('{scope}', {row}.{column}, {row}.status, 1) "
        f"ON CONFLICT (scope, owner_id, status) DO UPDATE SET total = request_tallies.total + 1;"
        for scope, column in SCOPES)


def _remove(row: str) -> str:
    return "\n".join(
        f"UPDATE request_tallies SET total = total - 1 "
        f"WHERE scope = '{scope}' AND owner_id = {row}.{column} AND status = {row}.status;"
        for scope, column in SCOPES)


CHANGED = " OR ".join(f"OLD.{column} IS NOT NEW.{column}" for column in ("status", "officer_id", "agency_id"))

SQLITE_TRIGGERS = [
    f"CREATE TRIGGER request_tallies_insert AFTER INSERT ON requests BEGIN\n{_add('NEW')}\nEND",
    f"CREATE TRIGGER request_tallies_update AFTER UPDATE OF status, officer_id, agency_id ON requests "
    f"WHEN {CHANGED} BEGIN\n{_remove('OLD')}\n{_add('NEW')}\nEND",
    f"CREATE TRIGGER request_tallies_delete AFTER DELETE ON requests BEGIN\n{_remove('OLD')}\nEND",
]

# PostgreSQL: the audit's lock first, so that whoever holds a tally row also holds that lock,
# and a transaction that changes a request after appending to the audit never waits for a
# tally row held by one waiting for the lock (a deadlock); every change of a request is audited
# in the same transaction, which takes the lock anyway
POSTGRESQL_FUNCTION = f"""
CREATE FUNCTION request_tallies_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock({AUDIT_LOCK});
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        {_remove('OLD')}
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        {_add('NEW')}
    END IF;
    RETURN NULL;
END
$$"""
POSTGRESQL_TRIGGERS = [
    "CREATE TRIGGER request_tallies_insert_delete AFTER INSERT OR DELETE ON requests "
    "FOR EACH ROW EXECUTE FUNCTION request_tallies_count()",
    "CREATE TRIGGER request_tallies_update AFTER UPDATE OF status, officer_id, agency_id ON requests "
    f"FOR EACH ROW WHEN ({CHANGED.replace('IS NOT', 'IS DISTINCT FROM')}) "
    "EXECUTE FUNCTION request_tallies_count()",
]

BACKFILL = [
    f"INSERT INTO request_tallies (scope, owner_id, status, total) "
    f"SELECT '{scope}', {column}, status, count(*) FROM requests GROUP BY {column}, status"
    for scope, column in SCOPES]


def upgrade() -> None:
    op.create_table(
        'request_tallies',
        sa.Column('scope', sa.String(length=10), nullable=False),
        sa.Column('owner_id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('status', sa.String(length=30), nullable=False),
        sa.Column('total', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('scope', 'owner_id', 'status'),
    )
    for statement in BACKFILL:
        op.execute(statement)
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(POSTGRESQL_FUNCTION)
        for statement in POSTGRESQL_TRIGGERS:
            op.execute(statement)
    else:
        for statement in SQLITE_TRIGGERS:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("DROP TRIGGER request_tallies_update ON requests")
        op.execute("DROP TRIGGER request_tallies_insert_delete ON requests")
        op.execute("DROP FUNCTION request_tallies_count()")
    else:
        for name in ('insert', 'update', 'delete'):
            op.execute(f"DROP TRIGGER request_tallies_{name}")
    op.drop_table('request_tallies')
