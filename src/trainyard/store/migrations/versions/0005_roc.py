"""Validation ROC curves: the down-sampled ROC of a validation report, one row per report.

Revision ID: 0005_roc
Revises: 0004_shares
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_roc"
down_revision: str | Sequence[str] | None = "0004_shares"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ty_validation_rocs",
        sa.Column("metric_id", sa.Integer(), nullable=False),
        sa.Column("signal_efficiency", sa.JSON(), nullable=False),
        sa.Column("background_efficiency", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("metric_id", name="pk_ty_validation_rocs"),
        sa.ForeignKeyConstraint(
            ["metric_id"],
            ["ty_metrics.id"],
            name="fk_ty_validation_rocs_metric_id_ty_metrics",
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("ty_validation_rocs")
