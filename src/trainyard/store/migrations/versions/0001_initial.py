"""Initial schema: experiments, trials, metrics, checkpoints.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Types are spelled out here rather than imported from models.py, so this revision keeps
creating the same tables when the models change later.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ENUM = sa.String(16)  # StrEnum values, see models._enum_column
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "ty_experiments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("state", ENUM, nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("home_dir", sa.Text(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("ended_at", TIMESTAMP, nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_ty_experiments"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_ty_experiments_name", "ty_experiments", ["name"])

    op.create_table(
        "ty_trials",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("state", ENUM, nullable=False),
        sa.Column("hyperparameters", sa.JSON(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=True),
        sa.Column("ended_at", TIMESTAMP, nullable=True),
        sa.Column("last_heartbeat_at", TIMESTAMP, nullable=True),
        sa.Column("batches_trained", sa.Integer(), nullable=False),
        sa.Column("total_batches", sa.Integer(), nullable=True),
        sa.Column("num_restarts", sa.Integer(), nullable=False),
        sa.Column("log_path", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("worker_pid", sa.Integer(), nullable=True),
        sa.Column("searcher_trial_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_ty_trials"),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["ty_experiments.id"],
            name="fk_ty_trials_experiment_id_ty_experiments",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("experiment_id", "number", name="uq_ty_trials_experiment_id_number"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_ty_trials_state", "ty_trials", ["state"])

    op.create_table(
        "ty_metrics",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("kind", ENUM, nullable=False),
        sa.Column("batches", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Double(), nullable=False),
        sa.Column("values", sa.JSON(), nullable=False),
        sa.Column("reported_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ty_metrics"),
        sa.ForeignKeyConstraint(
            ["trial_id"],
            ["ty_trials.id"],
            name="fk_ty_metrics_trial_id_ty_trials",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_ty_metrics_trial_id", "ty_metrics", ["trial_id"])

    op.create_table(
        "ty_checkpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("batches", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("state", ENUM, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ty_checkpoints"),
        sa.ForeignKeyConstraint(
            ["trial_id"],
            ["ty_trials.id"],
            name="fk_ty_checkpoints_trial_id_ty_trials",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_ty_checkpoints_trial_id", "ty_checkpoints", ["trial_id"])


def downgrade() -> None:
    op.drop_index("ix_ty_checkpoints_trial_id", table_name="ty_checkpoints")
    op.drop_table("ty_checkpoints")
    op.drop_index("ix_ty_metrics_trial_id", table_name="ty_metrics")
    op.drop_table("ty_metrics")
    op.drop_index("ix_ty_trials_state", table_name="ty_trials")
    op.drop_table("ty_trials")
    op.drop_index("ix_ty_experiments_name", table_name="ty_experiments")
    op.drop_table("ty_experiments")
