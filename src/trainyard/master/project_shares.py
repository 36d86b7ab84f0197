"""The facility loop's link between the store and the pure placement: projects' shares,
quotas and decayed usage in, offers and reasons out; and the checks a submission passes.

Usage is kept per (project, pool) as slot-seconds decayed by the server's half-life
(`shares.half_life_hours`): each tick adds the slots a project holds times the seconds since
the last tick, and a stored value is decayed to now when read, so an idle project's history
fades without being written. The placement itself is `scheduler.placement.place`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from trainyard.config import ExperimentConfig
from trainyard.config.server import SharesSpec
from trainyard.errors import PermissionDeniedError, QuotaExceededError
from trainyard.master.project_disk import ProjectDisk, format_bytes
from trainyard.scheduler.fair_share import decay_usage
from trainyard.scheduler.placement import ExperimentWant, Placement, ProjectPolicy, place
from trainyard.store import Experiment, Project, Store, User, accounts, utcnow
from trainyard.store import shares as share_rows

QUOTA_WAIT = "waiting for quota"
"""How the reasons `place` gives begin; a message so marked is cleared when the wait ends."""


class ProjectShares:
    """Projects' placement on each pool, over one store; called from the loop's thread, and
    `check_submission` from the API's."""

    def __init__(self, store: Store, spec: SharesSpec, disk: ProjectDisk) -> None:
        self._store = store
        self._spec = spec
        self.disk = disk
        self._last_tick: dict[str, datetime] = {}

    @property
    def spec(self) -> SharesSpec:
        return self._spec

    def describe(self, experiment_id: int) -> tuple[str, str | None]:
        """The experiment's project name and its owner's name (None: no owner)."""
        with self._store.session() as session:
            experiment = session.get_one(Experiment, experiment_id)
            project = session.get_one(Project, experiment.project_id)
            owner = session.get(User, experiment.owner_id) if experiment.owner_id else None
            return project.name, (owner.username or owner.subject) if owner else None

    def place(
        self,
        pool: str,
        capacity: int,
        wants: Sequence[ExperimentWant],
        *,
        now: datetime | None = None,
    ) -> Placement:
        """Account the slots held since the last call, then place the pool's experiments."""
        now = now or utcnow()
        elapsed = (now - self._last_tick.get(pool, now)).total_seconds()
        self._last_tick[pool] = now
        held: dict[str, int] = {}
        for want in wants:
            held[want.project] = held.get(want.project, 0) + want.held
        half_life_s = self._spec.half_life_hours * 3600
        with self._store.session() as session:
            projects = {p.name: p for p in accounts.list_projects(session)}
            usage = share_rows.usage_by_pool(session)
            policies = []
            for name in sorted({w.project for w in wants}):
                project = projects[name]
                row = usage.get((project.id, pool))
                decayed = 0.0
                if row is not None:
                    since = (now - row.updated_at).total_seconds()
                    decayed = decay_usage(
                        row.slot_seconds, elapsed_s=since, half_life_s=half_life_s, used=0
                    )
                if held.get(name, 0) > 0 and elapsed > 0:
                    decayed += held[name] * elapsed
                    share_rows.record_usage(
                        session, project_id=project.id, pool=pool, slot_seconds=decayed, at=now
                    )
                policies.append(self._policy(project, decayed))
        return place(capacity, policies, wants)

    def note_waits(self, experiment_ids: Sequence[int], waits: dict[int, str]) -> None:
        """Each experiment's message says which quota it waits for; cleared once it does not."""
        with self._store.session() as session:
            for experiment_id in experiment_ids:
                experiment = session.get(Experiment, experiment_id)
                if experiment is None:
                    continue
                reason = waits.get(experiment_id)
                if reason is not None and experiment.message != reason:
                    experiment.message = reason
                elif reason is None and (experiment.message or "").startswith(QUOTA_WAIT):
                    experiment.message = None

    def _policy(self, project: Project, usage: float) -> ProjectPolicy:
        return ProjectPolicy(
            name=project.name,
            share=project.share if project.share is not None else self._spec.default_share,
            priority=project.priority,
            usage=usage,
            max_slots=project.max_slots,
            max_concurrent_trials=project.max_concurrent_trials,
            user_max_slots=project.user_max_slots,
            user_max_concurrent_trials=project.user_max_concurrent_trials,
        )

    # -- submissions --------------------------------------------------------------------------

    def check_submission(self, config: ExperimentConfig, project: Project) -> None:
        """Refuse what the project may never run: a pool it may not use, a trial larger than
        a quota, or a project over its disk cap.

        Raises:
            PermissionDeniedError: the pool is not among the project's pools.
            QuotaExceededError: one trial needs more than a quota allows, or the project's
                checkpoints and logs are at its disk cap.
        """
        with self._store.session() as session:  # the settings as they are now
            project = session.get_one(Project, project.id)
        pool = config.resources.pool
        if project.pools is not None and pool not in project.pools:
            allowed = ", ".join(project.pools) or "none"
            raise PermissionDeniedError(
                f"project {project.name!r} may not use pool {pool!r} (resources.pool); its "
                f"pools: {allowed}; set resources.pool to one of them, or ask a facility admin "
                f"(`trainyard admin project set {project.name} --pools ...`)"
            )
        spt = config.resources.slots_per_trial
        for quota in ("max_slots", "user_max_slots"):
            limit = getattr(project, quota)
            if limit is not None and spt > limit:
                raise QuotaExceededError(
                    f"a trial of {config.name!r} needs {spt} slot(s) (resources.slots_per_trial) "
                    f"but project {project.name!r} allows {limit} at once ({quota}); lower "
                    "slots_per_trial, or ask a facility admin to raise the quota "
                    f"(`trainyard admin project set {project.name} --{quota.replace('_', '-')} N`)"
                )
        for quota in ("max_concurrent_trials", "user_max_concurrent_trials"):
            if getattr(project, quota) == 0:
                raise QuotaExceededError(
                    f"project {project.name!r} may run 0 trials at once ({quota}); ask a "
                    f"facility admin (`trainyard admin project set {project.name} "
                    f"--{quota.replace('_', '-')} N`)"
                )
        cap = project.disk_cap_bytes
        if cap is not None:
            used = self.disk.bytes_used(project.name)
            if used >= cap:
                raise QuotaExceededError(
                    f"project {project.name!r} uses {format_bytes(used)} of checkpoints and "
                    f"logs, at its disk cap of {format_bytes(cap)} (disk_cap); delete "
                    f"experiments' checkpoints under {self.disk.folder(project.name)}, or ask "
                    f"a facility admin to raise it (`trainyard admin project set "
                    f"{project.name} --disk-cap SIZE`)"
                )
