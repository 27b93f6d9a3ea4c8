"""audit: no unique index on the entry hash; nothing looks an entry up by its hash, and every
entry paid for a random place in that index, a page written to the disk per entry (issue 8)

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-24 17:00:00
"""

from __future__ import annotations

from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

# 0001 made the constraint without a name: PostgreSQL named it audit_hash_key, and SQLite's batch
# mode finds the unnamed one by this naming convention
NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def _name() -> str:
    return 'uq_audit_hash' if op.get_bind().dialect.name == 'sqlite' else 'audit_hash_key'


def upgrade() -> None:
    with op.batch_alter_table('audit', naming_convention=NAMING) as batch:
        batch.drop_constraint(_name(), type_='unique')


def downgrade() -> None:
    with op.batch_alter_table('audit', naming_convention=NAMING) as batch:
        batch.create_unique_constraint(_name(), ['hash'])
