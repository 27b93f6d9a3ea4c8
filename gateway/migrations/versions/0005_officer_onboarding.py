"""officer onboarding: enrolments by signed mail, their documents and reviewer acts; officer and
agency suspension reasons; how an officer was enrolled; key expiry warnings; the From a refused
message claimed

Revision ID: 0005
Revises: 0004 (re-pointed at merge time after 0003)
Create Date: 2026-11-24 00:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gateway.models

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('enrolments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('key_fingerprint', sa.String(length=64), nullable=False),
    sa.Column('form', sa.JSON(), nullable=False),
    sa.Column('message_id', sa.Integer(), nullable=False),
    sa.Column('officer_id', sa.Integer(), nullable=True),
    sa.Column('decision_text', sa.Text(), nullable=True),
    sa.Column('decided_at', gateway.models.UTCDateTime(), nullable=True),
    sa.Column('created_at', gateway.models.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['message_id'], ['messages.id'], ),
    sa.ForeignKeyConstraint(['officer_id'], ['officers.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_enrolments_email'), 'enrolments', ['email'], unique=False)
    op.create_table('enrolment_documents',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('enrolment_id', sa.Integer(), nullable=False),
    sa.Column('original_filename', sa.Text(), nullable=True),
    sa.Column('stored_name', sa.String(length=255), nullable=False),
    sa.Column('content_type', sa.String(length=255), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.Column('extracted_text', sa.Text(), nullable=True),
    sa.Column('extraction_error', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['enrolment_id'], ['enrolments.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_enrolment_documents_enrolment_id'), 'enrolment_documents',
                    ['enrolment_id'], unique=False)
    op.create_table('enrolment_acts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('enrolment_id', sa.Integer(), nullable=False),
    sa.Column('reviewer_id', sa.Integer(), nullable=False),
    sa.Column('action', sa.String(length=20), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('created_at', gateway.models.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['enrolment_id'], ['enrolments.id'], ),
    sa.ForeignKeyConstraint(['reviewer_id'], ['reviewers.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_enrolment_acts_enrolment_id'), 'enrolment_acts', ['enrolment_id'],
                    unique=False)
    with op.batch_alter_table('agencies') as batch:
        batch.add_column(sa.Column('status_reason', sa.Text(), nullable=True))
    with op.batch_alter_table('messages') as batch:
        batch.add_column(sa.Column('claimed_from', sa.String(length=320), nullable=True))
        batch.create_index(batch.f('ix_messages_claimed_from'), ['claimed_from'], unique=False)
    with op.batch_alter_table('officers') as batch:
        batch.add_column(sa.Column('enrolled_via', sa.String(length=20), nullable=False,
                                   server_default='operator'))
        batch.add_column(sa.Column('status_reason', sa.Text(), nullable=True))
        batch.add_column(sa.Column('key_expiry_warned_at', gateway.models.UTCDateTime(),
                                   nullable=True))
    with op.batch_alter_table('officers') as batch:  # the default was only for existing rows
        batch.alter_column('enrolled_via', server_default=None)


def downgrade() -> None:
    with op.batch_alter_table('officers') as batch:
        batch.drop_column('key_expiry_warned_at')
        batch.drop_column('status_reason')
        batch.drop_column('enrolled_via')
    with op.batch_alter_table('messages') as batch:
        batch.drop_index(batch.f('ix_messages_claimed_from'))
        batch.drop_column('claimed_from')
    with op.batch_alter_table('agencies') as batch:
        batch.drop_column('status_reason')
    op.drop_index(op.f('ix_enrolment_acts_enrolment_id'), table_name='enrolment_acts')
    op.drop_table('enrolment_acts')
    op.drop_index(op.f('ix_enrolment_documents_enrolment_id'), table_name='enrolment_documents')
    op.drop_table('enrolment_documents')
    op.drop_index(op.f('ix_enrolments_email'), table_name='enrolments')
    op.drop_table('enrolments')
