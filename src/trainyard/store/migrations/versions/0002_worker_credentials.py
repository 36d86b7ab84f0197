"""Worker credentials: one hashed bearer token per trial attempt.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "ty_worker_credentials",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.Column("issued_at", TIMESTAMP, nullable=False),
        sa.Column("revoked_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_ty_worker_credentials"),
        sa.ForeignKeyConstraint(
            ["trial_id"],
            ["ty_trials.id"],
            name="fk_ty_worker_credentials_trial_id_ty_trials",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "trial_id", "attempt", name="uq_ty_worker_credentials_trial_id_attempt"
        ),
        sa.UniqueConstraint("token_sha256", name="uq_ty_worker_credentials_token_sha256"),
    )
    op.create_index("ix_ty_worker_credentials_trial_id", "ty_worker_credentials", ["trial_id"])


def downgrade() -> None:
    op.drop_index("ix_ty_worker_credentials_trial_id", table_name="ty_worker_credentials")
    op.drop_table("ty_worker_credentials")
