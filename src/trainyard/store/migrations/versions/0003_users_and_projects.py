"""Users, projects, memberships and personal API tokens; every experiment gets a project.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

Experiments written before this revision are put in the `default` project (created here) and
have no owner, so an upgraded store keeps every experiment, visible to that project's members.
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ENUM = sa.String(16)  # StrEnum values, see models._enum_column
TIMESTAMP = sa.DateTime(timezone=True)
DEFAULT_PROJECT = "default"


def upgrade() -> None:
    _create_users_and_projects()
    _create_memberships_and_tokens()
    projects = sa.table(
        "ty_projects", sa.column("name", sa.String), sa.column("created_at", TIMESTAMP)
    )
    op.bulk_insert(projects, [{"name": DEFAULT_PROJECT, "created_at": datetime.now(UTC)}])
    with op.batch_alter_table("ty_experiments") as batch:
        batch.add_column(sa.Column("project_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("owner_id", sa.Integer(), nullable=True))
    op.execute(
        sa.text(
            "UPDATE ty_experiments SET project_id = "
            "(SELECT id FROM ty_projects WHERE name = :name)"
        ).bindparams(name=DEFAULT_PROJECT)
    )
    with op.batch_alter_table("ty_experiments") as batch:
        batch.alter_column("project_id", existing_type=sa.Integer(), nullable=False)
        batch.create_foreign_key(
            "fk_ty_experiments_project_id_ty_projects", "ty_projects", ["project_id"], ["id"]
        )
        batch.create_foreign_key(
            "fk_ty_experiments_owner_id_ty_users", "ty_users", ["owner_id"], ["id"]
        )
        batch.create_index("ix_ty_experiments_project_id", ["project_id"])


def _create_users_and_projects() -> None:
    op.create_table(
        "ty_users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("issuer", sa.String(512), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("username", sa.String(255), nullable=True),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("last_seen_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_ty_users"),
        sa.UniqueConstraint("issuer", "subject", name="uq_ty_users_issuer_subject"),
    )
    op.create_table(
        "ty_projects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ty_projects"),
        sa.UniqueConstraint("name", name="uq_ty_projects_name"),
    )


def _create_memberships_and_tokens() -> None:
    op.create_table(
        "ty_memberships",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("role", ENUM, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ty_memberships"),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["ty_projects.id"],
            name="fk_ty_memberships_project_id_ty_projects",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["ty_users.id"],
            name="fk_ty_memberships_user_id_ty_users",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("project_id", "user_id", name="uq_ty_memberships_project_id_user_id"),
    )
    op.create_index("ix_ty_memberships_project_id", "ty_memberships", ["project_id"])
    op.create_index("ix_ty_memberships_user_id", "ty_memberships", ["user_id"])
    op.create_table(
        "ty_api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
        sa.Column("revoked_at", TIMESTAMP, nullable=True),
        sa.Column("last_used_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_ty_api_tokens"),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["ty_users.id"],
            name="fk_ty_api_tokens_user_id_ty_users",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("token_sha256", name="uq_ty_api_tokens_token_sha256"),
    )
    op.create_index("ix_ty_api_tokens_user_id", "ty_api_tokens", ["user_id"])


def downgrade() -> None:
    with op.batch_alter_table("ty_experiments") as batch:
        batch.drop_index("ix_ty_experiments_project_id")
        batch.drop_constraint("fk_ty_experiments_owner_id_ty_users", type_="foreignkey")
        batch.drop_constraint("fk_ty_experiments_project_id_ty_projects", type_="foreignkey")
        batch.drop_column("owner_id")
        batch.drop_column("project_id")
    op.drop_index("ix_ty_api_tokens_user_id", table_name="ty_api_tokens")
    op.drop_table("ty_api_tokens")
    op.drop_index("ix_ty_memberships_user_id", table_name="ty_memberships")
    op.drop_index("ix_ty_memberships_project_id", table_name="ty_memberships")
    op.drop_table("ty_memberships")
    op.drop_table("ty_projects")
    op.drop_table("ty_users")
