"""indexes for look-ups that read whole tables (issue 8): who signed (officers and agencies by
key fingerprint, every inbound message); the reviewers' notice's history (an officer's earlier
requests by status, the agency's, refused mail that claimed the officer's address), counted in
the transaction that records each new request; a request's subjects, attachments, messages,
replies and held notices (every load of a request); messages, jobs, replies, enrolments and
attachments by message (the quarantine purge, whose foreign-key checks read every child table);
open requests with their deadlines, holds by state and expiry, jobs by state and kind, and
requests by date (scheduler ticks, /stats, the metrics)

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


INDEXES = [
    ('officers', 'ix_officers_key_fingerprint', ['key_fingerprint']),
    ('agencies', 'ix_agencies_key_fingerprint', ['key_fingerprint']),
    ('requests', 'ix_requests_officer_status', ['officer_id', 'status']),
    ('requests', 'ix_requests_agency_id', ['agency_id']),
    ('requests', 'ix_requests_status_deadline', ['status', 'deadline']),
    ('requests', 'ix_requests_created_at', ['created_at']),
    ('messages', 'ix_messages_claimed_from_state', ['claimed_from', 'state', 'received_at']),
    ('messages', 'ix_messages_state_received_at', ['state', 'received_at']),
    ('messages', 'ix_messages_request_id', ['request_id']),
    ('request_subjects', 'ix_request_subjects_request_id', ['request_id']),
    ('attachments', 'ix_attachments_request_id', ['request_id']),
    ('attachments', 'ix_attachments_message_id', ['message_id']),
    ('jobs', 'ix_jobs_message_id', ['message_id']),
    ('jobs', 'ix_jobs_state_kind', ['state', 'kind']),
    ('outbox', 'ix_outbox_request_id', ['request_id']),
    ('outbox', 'ix_outbox_in_reply_to_message', ['in_reply_to_message']),
    ('enrolments', 'ix_enrolments_message_id', ['message_id']),
    ('holds', 'ix_holds_state_expires_at', ['state', 'expires_at']),
    ('notices', 'ix_notices_request_state', ['request_id', 'state']),
]


def upgrade() -> None:
    for table, name, columns in INDEXES:
        with op.batch_alter_table(table) as batch:
            batch.create_index(name, columns, unique=False)
    with op.batch_alter_table('messages') as batch:
        batch.drop_index('ix_messages_claimed_from')  # the first column of a new one
    with op.batch_alter_table('jobs') as batch:
        batch.drop_index('ix_jobs_state')  # likewise


def downgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.create_index('ix_jobs_state', ['state'], unique=False)
    with op.batch_alter_table('messages') as batch:
        batch.create_index('ix_messages_claimed_from', ['claimed_from'], unique=False)
    for table, name, _columns in reversed(INDEXES):
        with op.batch_alter_table(table) as batch:
            batch.drop_index(name)
