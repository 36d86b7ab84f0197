"""A trial's worker key: `worker_pid` becomes `worker_key`, a 64-bit integer.

The column named a local process id; on SLURM a trial's worker (a pack's too) is known by its
batch job id, which the same column now holds (federated SLURM job ids pass 2^31, hence the
wider type). The rows keep their values: a local pid is still the local worker's key.

Revision ID: 0007_worker_key
Revises: 0006_curves
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_worker_key"
down_revision: str | Sequence[str] | None = "0006_curves"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("ty_trials") as batch:
        batch.alter_column(
            "worker_pid",
            new_column_name="worker_key",
            existing_type=sa.Integer(),
            type_=sa.BigInteger(),
            existing_nullable=True,
        )


def downgrade() -> None:
    with op.batch_alter_table("ty_trials") as batch:
        batch.alter_column(
            "worker_key",
            new_column_name="worker_pid",
            existing_type=sa.BigInteger(),
            type_=sa.Integer(),
            existing_nullable=True,
        )
