"""paper_versions: a preprint and its journal version are one work

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'paper_versions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('preprint_doi', sa.String(length=300), nullable=False),
        sa.Column('published_doi', sa.String(length=300), nullable=True),
        sa.Column('published_pmid', sa.String(length=16), nullable=True),
        sa.Column('server', sa.String(length=64), nullable=True),
        sa.Column('preprint_posted', sa.Date(), nullable=True),
        sa.Column('published_journal', sa.String(length=500), nullable=True),
        sa.Column('published_date', sa.Date(), nullable=True),
        sa.Column('source', sa.String(length=32), nullable=False),
        sa.Column('learned_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_paper_versions')),
        sa.UniqueConstraint('preprint_doi', name=op.f('uq_paper_versions_preprint_doi')),
    )
    op.create_index(
        op.f('ix_paper_versions_published_doi'), 'paper_versions', ['published_doi']
    )
    op.create_index(
        op.f('ix_paper_versions_published_pmid'), 'paper_versions', ['published_pmid']
    )


def downgrade() -> None:
    op.drop_index(op.f('ix_paper_versions_published_pmid'), table_name='paper_versions')
    op.drop_index(op.f('ix_paper_versions_published_doi'), table_name='paper_versions')
    op.drop_table('paper_versions')
