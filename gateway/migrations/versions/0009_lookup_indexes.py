"""indexes for look-ups that read whole tables: the officer or agency a signing key belongs to
(every inbound message), an officer's earlier requests by status, the agency's, and refused mail
that claimed the officer's address (counted for the reviewers' notice in the transaction that
records each new request), and the open states with their deadlines (lists, overdue checks,
metrics) (issue 8)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24 14:00:00
"""

from __future__ import annotations

from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('officers') as batch:
        batch.create_index('ix_officers_key_fingerprint', ['key_fingerprint'], unique=False)
    with op.batch_alter_table('agencies') as batch:
        batch.create_index('ix_agencies_key_fingerprint', ['key_fingerprint'], unique=False)
    with op.batch_alter_table('requests') as batch:
        batch.create_index('ix_requests_officer_status', ['officer_id', 'status'], unique=False)
        batch.create_index('ix_requests_agency_id', ['agency_id'], unique=False)
        batch.create_index('ix_requests_status_deadline', ['status', 'deadline'], unique=False)
    with op.batch_alter_table('messages') as batch:
        batch.drop_index('ix_messages_claimed_from')
        batch.create_index('ix_messages_claimed_from_state', ['claimed_from', 'state', 'received_at'],
                           unique=False)


def downgrade() -> None:
    with op.batch_alter_table('messages') as batch:
        batch.drop_index('ix_messages_claimed_from_state')
        batch.create_index('ix_messages_claimed_from', ['claimed_from'], unique=False)
    with op.batch_alter_table('requests') as batch:
        batch.drop_index('ix_requests_status_deadline')
        batch.drop_index('ix_requests_agency_id')
        batch.drop_index('ix_requests_officer_status')
    with op.batch_alter_table('agencies') as batch:
        batch.drop_index('ix_agencies_key_fingerprint')
    with op.batch_alter_table('officers') as batch:
        batch.drop_index('ix_officers_key_fingerprint')
