"""deliveries: an index on (state, sent_at) for status's deliverability over 30 days

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f('ix_deliveries_state_sent_at'), 'deliveries', ['state', 'sent_at'])


def downgrade() -> None:
    op.drop_index(op.f('ix_deliveries_state_sent_at'), table_name='deliveries')
