"""news items, paper events, shared rate limits, subscribers' update opt-out

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'news_items',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('url', sa.String(length=2000), nullable=False),
        sa.Column('source_id', sa.String(length=64), nullable=False),
        sa.Column('headline', sa.Text(), nullable=False),
        sa.Column('summary', sa.Text(), nullable=True),
        sa.Column('outlet', sa.String(length=500), nullable=True),
        sa.Column('published', sa.Date(), nullable=True),
        sa.Column('topics', sa.JSON(), nullable=False),
        sa.Column('first_seen', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_news_items')),
        sa.UniqueConstraint('url', name=op.f('uq_news_items_url')),
    )
    op.create_index(op.f('ix_news_items_first_seen'), 'news_items', ['first_seen'])
    op.create_table(
        'delivery_news',
        sa.Column('delivery_id', sa.Integer(), nullable=False),
        sa.Column('news_id', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ['delivery_id'], ['deliveries.id'],
            name=op.f('fk_delivery_news_delivery_id_deliveries'), ondelete='CASCADE',
        ),
        sa.ForeignKeyConstraint(
            ['news_id'], ['news_items.id'],
            name=op.f('fk_delivery_news_news_id_news_items'), ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('delivery_id', 'news_id', name=op.f('pk_delivery_news')),
    )
    op.create_index(op.f('ix_delivery_news_news_id'), 'delivery_news', ['news_id'])
    op.create_table(
        'paper_events',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('paper_id', sa.Integer(), nullable=False),
        sa.Column('type', sa.String(length=32), nullable=False),
        sa.Column('key', sa.String(length=400), nullable=False),
        sa.Column('notice_doi', sa.String(length=300), nullable=True),
        sa.Column('notice_pmid', sa.String(length=16), nullable=True),
        sa.Column('notice_title', sa.Text(), nullable=True),
        sa.Column('notice_url', sa.String(length=2000), nullable=True),
        sa.Column('source', sa.String(length=32), nullable=False),
        sa.Column('date', sa.Date(), nullable=True),
        sa.Column('detected_at', sa.DateTime(), nullable=False),
        sa.Column('withdrawn_at', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ['paper_id'], ['papers.id'],
            name=op.f('fk_paper_events_paper_id_papers'), ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_paper_events')),
        sa.UniqueConstraint('key', name=op.f('uq_paper_events_key')),
    )
    op.create_index(op.f('ix_paper_events_paper_id'), 'paper_events', ['paper_id'])
    op.create_index(op.f('ix_paper_events_detected_at'), 'paper_events', ['detected_at'])
    op.create_table(
        'delivery_events',
        sa.Column('delivery_id', sa.Integer(), nullable=False),
        sa.Column('event_id', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ['delivery_id'], ['deliveries.id'],
            name=op.f('fk_delivery_events_delivery_id_deliveries'), ondelete='CASCADE',
        ),
        sa.ForeignKeyConstraint(
            ['event_id'], ['paper_events.id'],
            name=op.f('fk_delivery_events_event_id_paper_events'), ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('delivery_id', 'event_id', name=op.f('pk_delivery_events')),
    )
    op.create_index(op.f('ix_delivery_events_event_id'), 'delivery_events', ['event_id'])
    op.create_table(
        'rate_limits',
        sa.Column('key', sa.String(length=200), nullable=False),
        sa.Column('window_start', sa.DateTime(), nullable=False),
        sa.Column('count', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('key', name=op.f('pk_rate_limits')),
    )
    with op.batch_alter_table('subscribers') as batch_op:
        batch_op.add_column(
            sa.Column('updates', sa.Boolean(), server_default=sa.true(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table('subscribers') as batch_op:
        batch_op.drop_column('updates')
    op.drop_table('rate_limits')
    op.drop_index(op.f('ix_delivery_events_event_id'), table_name='delivery_events')
    op.drop_table('delivery_events')
    op.drop_index(op.f('ix_paper_events_detected_at'), table_name='paper_events')
    op.drop_index(op.f('ix_paper_events_paper_id'), table_name='paper_events')
    op.drop_table('paper_events')
    op.drop_index(op.f('ix_delivery_news_news_id'), table_name='delivery_news')
    op.drop_table('delivery_news')
    op.drop_index(op.f('ix_news_items_first_seen'), table_name='news_items')
    op.drop_table('news_items')
