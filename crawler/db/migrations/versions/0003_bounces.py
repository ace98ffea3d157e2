"""bounces and complaints; suspended subscribers

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'bounces',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('message_key', sa.String(length=300), nullable=False),
        sa.Column('recipient', sa.String(length=320), nullable=False),
        sa.Column('subscriber_id', sa.Integer(), nullable=True),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=True),
        sa.Column('diagnostic', sa.Text(), nullable=True),
        sa.Column('action', sa.String(length=32), nullable=False),
        sa.Column('source', sa.String(length=32), nullable=False),
        sa.Column('received_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ['subscriber_id'], ['subscribers.id'],
            name=op.f('fk_bounces_subscriber_id_subscribers'), ondelete='SET NULL',
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_bounces')),
        sa.UniqueConstraint('message_key', 'recipient', name='uq_bounces_message_key'),
    )
    op.create_index(op.f('ix_bounces_subscriber_id'), 'bounces', ['subscriber_id'])
    op.create_index(op.f('ix_bounces_received_at'), 'bounces', ['received_at'])
    with op.batch_alter_table('subscribers') as batch_op:
        batch_op.add_column(sa.Column('suspended_reason', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('suspended_at', sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('subscribers') as batch_op:
        batch_op.drop_column('suspended_at')
        batch_op.drop_column('suspended_reason')
    op.drop_index(op.f('ix_bounces_received_at'), table_name='bounces')
    op.drop_index(op.f('ix_bounces_subscriber_id'), table_name='bounces')
    op.drop_table('bounces')
