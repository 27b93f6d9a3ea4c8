"""sealed chunks: a large inbound message's raw bytes and a large attachment are stored in sealed
pieces of about 1 MiB instead of one value (issue 8, item 5: memory)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24 03:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gateway.vault

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table, owner in (('message_chunks', 'messages'), ('attachment_chunks', 'attachments')):
        key = f'{owner[:-1]}_id'
        op.create_table(table,
        sa.Column(key, sa.Integer(), nullable=False),
        sa.Column('seq', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('data', gateway.vault.PreSealedBytes(), nullable=False),
        sa.ForeignKeyConstraint([key], [f'{owner}.id'], ),
        sa.PrimaryKeyConstraint(key, 'seq')
        )
        with op.batch_alter_table(owner) as batch:
            batch.add_column(sa.Column('chunks', sa.Integer(), nullable=False, server_default='0'))


def downgrade() -> None:
    for table, owner in (('attachment_chunks', 'attachments'), ('message_chunks', 'messages')):
        with op.batch_alter_table(owner) as batch:
            batch.drop_column('chunks')
        op.drop_table(table)
