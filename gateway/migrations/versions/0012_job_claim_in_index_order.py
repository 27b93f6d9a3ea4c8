"""jobs: the (state, kind) index gains (priority, id), the order in which the claim takes jobs,
so that a claim reads the first few runnable jobs of each state and kind instead of sorting the
whole backlog (a flood of forged mail queued behind a real request) at every claim (issue 8)

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-25 12:00:00
"""

from __future__ import annotations

from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_jobs_state_kind_priority', 'jobs', ['state', 'kind', 'priority', 'id'])
    op.drop_index('ix_jobs_state_kind', table_name='jobs')


def downgrade() -> None:
    op.create_index('ix_jobs_state_kind', 'jobs', ['state', 'kind'])
    op.drop_index('ix_jobs_state_kind_priority', table_name='jobs')
