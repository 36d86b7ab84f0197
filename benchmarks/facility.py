"""The HATS session in miniature: many users submit to one facility server at once.

Issue 9's facility benchmark. On a real PostgreSQL with a real OIDC provider
(benchmarks/facility_services.py), users in projects sign in (the provider mints their
tokens), a facility admin makes the projects and their members through the API, and every
user submits experiments within a window, through the HTTP API with their own token, while
other users read experiments. The trials are short script trials (`trainyard.core`, no torch),
so what is measured is the facility, not the training. It reports:

- submit latency p50/p99 (a submission is checked on the server before it is stored);
- API latency p50/p99 of reads under that load (`GET /experiments`, `GET /experiments/{id}`);
- the placement's decision time with 1,000 queued trials (the pure function the server calls
  every tick), median of repeats;
- slot-seconds per project against the configured shares while every project had work
  waiting, and Jain's fairness index of slot-seconds / share (1 is perfectly fair);
- trials lost (an experiment or trial that did not complete) and trials run twice (a
  validation step reported by two attempts): both must be 0;
- cross-project accesses: every user asks for, and tries to pause, another project's
  experiment; any answer but 404 counts (must be 0).

There is no peer run beside it: determined and Kueue need their clusters, which cannot run
here. Run from the repository's root:

    python -m benchmarks.facility                          # 30 users, 6 projects, 60 experiments
    python -m benchmarks.facility --users 6 --experiments 6 --out /tmp/x   # quick
    python -m benchmarks.facility --slurm-nodes 4    # trials as SLURM jobs on 8 slots (root)
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import yaml
from pydantic import BaseModel

from benchmarks.environment import describe, load_average
from benchmarks.facility_services import ADMIN_SUBJECT, Facility, facility, slurm_pool
from benchmarks.facility_store import StoreReport, read_store
from benchmarks.results_files import write_results
from trainyard.auth.schemas import (
    MemberIn,
    MemberOut,
    MeOut,
    ProjectAdminOut,
    ProjectIn,
    ProjectOut,
    ProjectSettings,
)
from trainyard.cli.client import MasterClient
from trainyard.errors import NotFoundError, TrainyardError
from trainyard.protocol import ExperimentOut, ExperimentState, ExperimentSubmission, ProjectRole
from trainyard.scheduler.placement import ExperimentWant, ProjectPolicy, place

RESULTS_DIR = Path(__file__).parent / "results"
DONE = {ExperimentState.COMPLETED, ExperimentState.ERRORED, ExperimentState.CANCELED}

TRIAL_SCRIPT = textwrap.dedent(
    """
    import os, pathlib, tempfile, time
    import trainyard.core

    steps, pause = int(os.environ["STEPS"]), float(os.environ["STEP_S"])
    with trainyard.core.init(hparams={"lr": 0.1}) as ctx:
        latest = ctx.checkpoint.latest()
        for step in range((latest.step + 1) if latest else 1, steps + 1):
            time.sleep(pause)
            ctx.report_validation(step, {"score": step * float(ctx.hparams["lr"])})
            folder = pathlib.Path(tempfile.mkdtemp())
            (folder / "step").write_text(str(step))
            ctx.checkpoint.save(folder, step)
            if ctx.should_stop():
                break
    """
)


class Percentiles(BaseModel):
    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float


class FacilityResult(BaseModel):
    users: int
    projects: int
    experiments: int
    submit_window_s: float
    servers: int
    pool: str
    """Where the trials ran: this machine's cores, or a SLURM cluster's nodes x slots."""
    pool_slots: int
    submit: Percentiles
    api_reads: Percentiles
    placement_1000_queued_ms: float
    store: StoreReport
    cross_project_attempts: int
    cross_project_leaks: int
    leader_killed: bool
    takeover_s: float | None
    """From the leader's SIGKILL to the follower's `leading:` log line."""
    wall_s: float


class Latencies:
    """Thread-safe latency samples, in seconds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.samples: list[float] = []

    def add(self, seconds: float) -> None:
        with self._lock:
            self.samples.append(seconds)

    def summary(self) -> Percentiles:
        ordered = sorted(self.samples) or [0.0]
        return Percentiles(
            count=len(self.samples),
            p50_ms=1000 * _quantile(ordered, 0.50),
            p99_ms=1000 * _quantile(ordered, 0.99),
            max_ms=1000 * ordered[-1],
        )


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    args = _arguments()
    if args.kill_leader:
        args.servers = max(args.servers, 2)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="trainyard-facility-") as folder, ExitStack() as stack:
        root = Path(folder)
        options: dict[str, str] = {}
        env: dict[str, str] = {}
        if args.slurm_nodes:
            path, env = stack.enter_context(
                slurm_pool(root, nodes=args.slurm_nodes, cpus=args.slurm_slots_per_node)
            )
            options["facility"] = str(path)
        with facility(root, servers=args.servers, server_options=options, env=env) as running:
            result = _scenario(running, root, args)
    result.wall_s = time.monotonic() - started
    name = "facility-leader-killed" if args.kill_leader else "facility"
    if args.slurm_nodes:
        name += f"-slurm-{result.pool_slots}"
    environment = describe()
    write_results(
        args.out,
        name,
        {"environment": environment.model_dump(), "result": result.model_dump()},
        _table(result, environment.cpu_model, load_average()),
    )


def _scenario(running: Facility, root: Path, args: argparse.Namespace) -> FacilityResult:
    projects = [f"project-{index}" for index in range(args.projects)]
    users = {f"user-{index:02d}": projects[index % len(projects)] for index in range(args.users)}
    # With a leader to kill, users talk to the follower (a load balancer would steer them).
    answering = running.servers[1:] if args.kill_leader else running.servers
    clients = {
        name: MasterClient(answering[index % len(answering)].url, token=running.token(name))
        for index, name in enumerate(users)
    }
    weights = [float(w) for w in args.shares.split(",")]
    shares = {p: weights[i % len(weights)] for i, p in enumerate(projects)}
    _make_projects(running, shares, users, clients)
    script = root / "trial.py"
    script.write_text(TRIAL_SCRIPT)
    plan = _plan(users, args.experiments, args.submit_window_s, seed=args.seed)
    submit, reads = Latencies(), Latencies()
    submitted: dict[str, list[ExperimentOut]] = {name: [] for name in users}
    finished = threading.Event()
    readers = [
        threading.Thread(target=_read_load, args=(clients, submitted, reads, finished))
        for _ in range(2)
    ]
    for reader in readers:
        reader.start()
    takeover: list[float] = []
    try:
        _submit_all(plan, users, clients, submitted, submit, root, script, args)
        leaks, attempts = _cross_project(users, clients, submitted)
        if args.kill_leader:
            takeover.append(_kill_leader(running, clients, submitted))
        _wait_done(clients, submitted)
    finally:
        finished.set()
        for reader in readers:
            reader.join()
    return FacilityResult(
        users=args.users,
        projects=args.projects,
        experiments=args.experiments,
        submit_window_s=args.submit_window_s,
        servers=args.servers,
        pool=_pool_words(args),
        pool_slots=_pool_slots(args),
        submit=submit.summary(),
        api_reads=reads.summary(),
        placement_1000_queued_ms=_placement_time(args.projects),
        store=read_store(running.database_url, shares=shares),
        cross_project_attempts=attempts,
        cross_project_leaks=leaks,
        leader_killed=args.kill_leader,
        takeover_s=takeover[0] if takeover else None,
        wall_s=0.0,
    )


def _make_projects(
    running: Facility,
    shares: dict[str, float],
    users: dict[str, str],
    clients: dict[str, MasterClient],
) -> None:
    """Every user signs in once (the server learns them), then the admin makes the projects
    with their shares and adds the users."""
    admin = MasterClient(running.servers[-1].url, token=running.token(ADMIN_SUBJECT))
    for client in clients.values():
        client.call("GET", "/me", MeOut)
    for project, share in shares.items():
        admin.call("POST", "/projects", ProjectOut, body=ProjectIn(name=project))
        settings = ProjectSettings(share=share)
        admin.call("PATCH", f"/admin/projects/{project}", ProjectAdminOut, body=settings)
    for user, project in users.items():
        member = MemberIn(user=user, role=ProjectRole.EDITOR)
        admin.call("PUT", f"/projects/{project}/members", MemberOut, body=member)


def _plan(
    users: dict[str, str], experiments: int, window_s: float, *, seed: int
) -> list[tuple[float, str, int]]:
    """(offset in the window, user, number): users take turns, offsets at random."""
    rng = random.Random(seed)
    names = list(users)
    plan = [(rng.uniform(0, window_s), names[i % len(names)], i) for i in range(experiments)]
    return sorted(plan)


def _submit_all(
    plan: list[tuple[float, str, int]],
    users: dict[str, str],
    clients: dict[str, MasterClient],
    submitted: dict[str, list[ExperimentOut]],
    latencies: Latencies,
    root: Path,
    script: Path,
    args: argparse.Namespace,
) -> None:
    start = time.monotonic()

    def submit(offset: float, user: str, number: int) -> None:
        time.sleep(max(0.0, start + offset - time.monotonic()))
        config = {
            "name": f"{user}-{number:03d}",
            "entrypoint": {
                "command": f"python {script.name}",
                "workdir": str(script.parent),
                "environment": {"STEPS": args.steps, "STEP_S": args.step_s},
            },
            "searcher": {"name": "single", "metric": "score"},
        }
        submission = ExperimentSubmission(
            yaml=yaml.safe_dump(config), source=str(root / "x.yaml"), project=users[user]
        )
        began = time.perf_counter()
        created = clients[user].submit(submission)
        latencies.add(time.perf_counter() - began)
        submitted[user].append(created)

    with ThreadPoolExecutor(max_workers=len(users)) as pool:
        for future in [pool.submit(submit, *entry) for entry in plan]:
            future.result()


def _read_load(
    clients: dict[str, MasterClient],
    submitted: dict[str, list[ExperimentOut]],
    latencies: Latencies,
    finished: threading.Event,
) -> None:
    """Users looking at their experiments while the others submit and train."""
    rng = random.Random(threading.get_ident())
    names = list(clients)
    while not finished.is_set():
        user = rng.choice(names)
        began = time.perf_counter()
        if submitted[user] and rng.random() < 0.5:
            clients[user].get_experiment(str(rng.choice(submitted[user]).id))
        else:
            clients[user].list_experiments(limit=20)
        latencies.add(time.perf_counter() - began)
        finished.wait(0.05)


def _cross_project(
    users: dict[str, str],
    clients: dict[str, MasterClient],
    submitted: dict[str, list[ExperimentOut]],
) -> tuple[int, int]:
    """Each user reads and tries to pause an experiment of another project; (leaks, tries)."""
    leaks = attempts = 0
    for user, project in users.items():
        others = [e for other, mine in submitted.items() if users[other] != project for e in mine]
        client = clients[user]
        for target in others[:1]:
            ref = str(target.id)
            for call, call_args in (
                (client.get_experiment, (ref,)),
                (client.control_experiment, (ref, "pause")),
                (client.trial_records, (ref,)),
            ):
                attempts += 1
                try:
                    call(*call_args)
                    leaks += 1
                except NotFoundError:
                    pass
                except TrainyardError:
                    leaks += 1  # anything but "not found" tells the experiment exists
    return leaks, attempts


def _kill_leader(
    running: Facility,
    clients: dict[str, MasterClient],
    submitted: dict[str, list[ExperimentOut]],
) -> float:
    """SIGKILL the leading server once a third of the experiments ended; seconds until a
    follower logs that it leads."""
    leader, *followers = running.servers
    assert "leading: " in leader.log.read_text(), "the first server started should lead"
    total = sum(len(e) for e in submitted.values())
    deadline = time.monotonic() + 3600
    while _ended(clients, submitted) < total / 3 and time.monotonic() < deadline:
        time.sleep(0.5)
    leader.kill()
    killed_at = time.monotonic()
    while not any("leading: " in f.log.read_text() for f in followers):
        if time.monotonic() - killed_at > 120:
            raise RuntimeError("no follower took over within 120 s")
        time.sleep(0.05)
    return time.monotonic() - killed_at


def _ended(clients: dict[str, MasterClient], submitted: dict[str, list[ExperimentOut]]) -> int:
    return sum(
        clients[user].get_experiment(str(e.id)).state in DONE
        for user, experiments in submitted.items()
        for e in experiments
    )


def _wait_done(
    clients: dict[str, MasterClient], submitted: dict[str, list[ExperimentOut]]
) -> None:
    deadline = time.monotonic() + 3600
    for user, experiments in submitted.items():
        for experiment in experiments:
            while clients[user].get_experiment(str(experiment.id)).state not in DONE:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"experiment {experiment.id} did not end in an hour")
                time.sleep(1.0)


def _placement_time(projects: int, *, queued: int = 1000, repeats: int = 200) -> float:
    """Median ms of one tick's placement (`scheduler.placement.place`, what the leader calls
    for each pool every tick): 1,000 queued single-slot trials in 60 experiments of 30 users
    in `projects` projects, with shares, past usage and a per-user quota, on 64 slots."""
    rng = random.Random(0)
    demand = [0] * 60
    for _ in range(queued):
        demand[rng.randrange(60)] += 1
    policies = [
        ProjectPolicy(
            f"project-{p}", share=1.0 + p % 3, usage=1000.0 * p, user_max_concurrent_trials=8
        )
        for p in range(projects)
    ]
    wants = [
        ExperimentWant(i, f"project-{i % projects}", demand[i], owner=f"user-{i % 30:02d}")
        for i in range(60)
    ]
    timings = []
    for _ in range(repeats):
        began = time.perf_counter()
        place(64, policies, wants)
        timings.append(time.perf_counter() - began)
    return 1000 * statistics.median(timings)


def _table(result: FacilityResult, cpu: str, load: float) -> str:
    store = result.store
    lines = [
        f"# Facility benchmark: {result.users} users, {result.projects} projects, "
        f"{result.experiments} experiments",
        "",
        f"{cpu}; load average {load:.1f}; {result.servers} server(s) on one PostgreSQL; "
        f"submissions within {result.submit_window_s:.0f} s; {result.wall_s:.0f} s in all.",
        f"Trials ran on {result.pool} ({result.pool_slots} slots).",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| submit latency p50 / p99 | {result.submit.p50_ms:.0f} / {result.submit.p99_ms:.0f} "
        f"ms ({result.submit.count} submissions) |",
        f"| API reads p50 / p99 under load | {result.api_reads.p50_ms:.0f} / "
        f"{result.api_reads.p99_ms:.0f} ms ({result.api_reads.count} reads) |",
        f"| placement with 1,000 queued trials | {result.placement_1000_queued_ms:.2f} ms |",
        f"| Jain's index of slot-seconds / share (contended window) | {_fairness(store)} |",
        f"| trials lost | {store.trials_lost} of {store.trials} |",
        f"| trials run twice | {store.trials_run_twice} |",
        f"| cross-project accesses | {result.cross_project_leaks} of "
        f"{result.cross_project_attempts} tries |",
        f"| leader SIGKILLed mid-run; follower leading after | {_takeover(result)} |",
        "",
        "| project | share | slot-seconds (contended window) |",
        "| --- | --- | --- |",
        *(f"| {p.name} | {p.share:g} | {p.slot_seconds:.1f} |" for p in store.projects),
        "",
    ]
    return "\n".join(lines)


def _fairness(store: StoreReport) -> str:
    if store.contended_window_s <= 0:
        return "none: no time when every project had work waiting"
    return f"{store.jain_index:.3f} over {store.contended_window_s:.0f} s"


def _pool_slots(args: argparse.Namespace) -> int:
    if args.slurm_nodes:
        return int(args.slurm_nodes * args.slurm_slots_per_node)
    return len(os.sched_getaffinity(0))


def _pool_words(args: argparse.Namespace) -> str:
    if args.slurm_nodes:
        return (
            f"a SLURM cluster on this machine (deploy/slurm): {args.slurm_nodes} nodes x "
            f"{args.slurm_slots_per_node} one-core slots, each trial a batch job"
        )
    return f"the built-in local pool: this machine's {_pool_slots(args)} cores"


def _takeover(result: FacilityResult) -> str:
    if not result.leader_killed or result.takeover_s is None:
        return "(not killed in this run)"
    return f"{result.takeover_s:.2f} s (polled every 0.05 s)"


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=30)
    parser.add_argument("--projects", type=int, default=6)
    parser.add_argument("--experiments", type=int, default=60)
    parser.add_argument("--submit-window-s", type=float, default=60.0)
    parser.add_argument("--steps", type=int, default=4, help="validations per trial")
    parser.add_argument("--step-s", type=float, default=0.5, help="seconds per step")
    parser.add_argument(
        "--shares", default="1,1,2,2,3,3", help="projects' shares, in turn (comma-separated)"
    )
    parser.add_argument("--servers", type=int, default=1)
    parser.add_argument(
        "--kill-leader",
        action="store_true",
        help="two servers; SIGKILL the leader once a third of the experiments ended",
    )
    parser.add_argument(
        "--slurm-nodes",
        type=int,
        default=0,
        help="run the trials on a real SLURM cluster of this many simulated nodes "
        "(deploy/slurm; needs root and slurm-wlm) instead of the local pool",
    )
    parser.add_argument("--slurm-slots-per-node", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    return parser.parse_args()


if __name__ == "__main__":
    main()
