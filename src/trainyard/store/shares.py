"""Reading and writing projects' shares, quotas and decayed pool usage.

Like `repository`, every function takes the caller's `Session` and never commits.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from trainyard.store.models import Project, ProjectUsage

SETTINGS = (
    "share",
    "priority",
    "max_slots",
    "max_concurrent_trials",
    "user_max_slots",
    "user_max_concurrent_trials",
    "pools",
    "disk_cap_bytes",
)
"""The project columns a facility admin sets."""


def update_project(session: Session, project: Project, changes: Mapping[str, object]) -> Project:
    """Set the given settings (None clears one: the server's default, or no limit)."""
    unknown = sorted(set(changes) - set(SETTINGS))
    if unknown:
        raise ValueError(f"not project settings: {unknown}")
    for name, value in changes.items():
        setattr(project, name, value)
    session.flush()
    return project


def usage_by_pool(session: Session) -> dict[tuple[int, str], ProjectUsage]:
    """(project id, pool) -> its usage row."""
    return {(u.project_id, u.pool): u for u in session.scalars(select(ProjectUsage))}


def record_usage(
    session: Session, *, project_id: int, pool: str, slot_seconds: float, at: datetime
) -> None:
    """Store a project's decayed slot-seconds on a pool as of `at`."""
    row = session.scalars(
        select(ProjectUsage).where(
            ProjectUsage.project_id == project_id, ProjectUsage.pool == pool
        )
    ).first()
    if row is None:
        row = ProjectUsage(project_id=project_id, pool=pool)
        session.add(row)
    row.slot_seconds = slot_seconds
    row.updated_at = at
    session.flush()


def project_usage(session: Session, project_id: int) -> dict[str, ProjectUsage]:
    """Pool -> the project's usage row there."""
    query = select(ProjectUsage).where(ProjectUsage.project_id == project_id)
    return {row.pool: row for row in session.scalars(query.order_by(ProjectUsage.pool))}
