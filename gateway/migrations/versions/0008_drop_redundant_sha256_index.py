"""messages: drop the index on sha256 alone; every look-up by a message's hash also names its
direction, which the unique (direction, sha256) index serves, and each stored message paid for
a second index entry (issue 8)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24 09:10:00
"""

from __future__ import annotations

from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('messages') as batch:
        batch.drop_index('ix_messages_sha256')


def downgrade() -> None:
    with op.batch_alter_table('messages') as batch:
        batch.create_index('ix_messages_sha256', ['sha256'], unique=False)
