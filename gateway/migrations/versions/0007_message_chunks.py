"""message chunks: a large inbound message's raw bytes are stored in sealed pieces of about 1 MiB
instead of one value (issue 8, item 5: memory)

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
    op.create_table('message_chunks',
    sa.Column('message_id', sa.Integer(), nullable=False),
    sa.Column('seq', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('data', gateway.vault.PreSealedBytes(), nullable=False),
    sa.ForeignKeyConstraint(['message_id'], ['messages.id'], ),
    sa.PrimaryKeyConstraint('message_id', 'seq')
    )
    with op.batch_alter_table('messages') as batch:
        batch.add_column(sa.Column('chunks', sa.Integer(), nullable=False, server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('messages') as batch:
        batch.drop_column('chunks')
    op.drop_table('message_chunks')
