"""Fair share and quotas: each project's share, priority, quotas, pools and disk cap, and its
decayed use of each pool.

Revision ID: 0004_shares
Revises: 0003
Create Date: 2026-12-01

Every setting is nullable (None: the server file's default share, or no limit), so existing
projects keep running as before: equal shares, no quotas, every pool.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_shares"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)
_LIMITS = ("max_slots", "max_concurrent_trials", "user_max_slots", "user_max_concurrent_trials")


def upgrade() -> None:
    with op.batch_alter_table("ty_projects") as batch:
        batch.add_column(sa.Column("share", sa.Double(), nullable=True))
        batch.add_column(sa.Column("priority", sa.Integer(), nullable=False, server_default="0"))
        for limit in _LIMITS:
            batch.add_column(sa.Column(limit, sa.Integer(), nullable=True))
        batch.add_column(sa.Column("pools", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("disk_cap_bytes", sa.BigInteger(), nullable=True))
    op.create_table(
        "ty_project_usage",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("pool", sa.String(64), nullable=False),
        sa.Column("slot_seconds", sa.Double(), nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ty_project_usage"),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["ty_projects.id"],
            name="fk_ty_project_usage_project_id_ty_projects",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("project_id", "pool", name="uq_ty_project_usage_project_id_pool"),
    )
    op.create_index("ix_ty_project_usage_project_id", "ty_project_usage", ["project_id"])


def downgrade() -> None:
    op.drop_index("ix_ty_project_usage_project_id", table_name="ty_project_usage")
    op.drop_table("ty_project_usage")
    with op.batch_alter_table("ty_projects") as batch:
        for column in ("disk_cap_bytes", "pools", *reversed(_LIMITS), "priority", "share"):
            batch.drop_column(column)
