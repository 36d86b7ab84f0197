"""`trainyard admin project create|set|show|list` and `trainyard admin member add|remove`:
facility admins manage projects, their shares, quotas, pools and disk caps, and members.

They talk to a shared Master with the signed-in credentials, as `trainyard token` does.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from trainyard.cli.output import make_console
from trainyard.cli.tokens import MasterOption, master_client
from trainyard.errors import TrainyardError
from trainyard.protocol import ProjectRole
from trainyard.suggest import did_you_mean

if TYPE_CHECKING:
    from trainyard.auth.schemas import ProjectAdminOut, ProjectSettings

admin_app = typer.Typer(
    help="Facility admins: projects, shares, quotas and members.", no_args_is_help=True
)
project_app = typer.Typer(help="Projects and their shares and quotas.", no_args_is_help=True)
member_app = typer.Typer(help="Members of a project and their roles.", no_args_is_help=True)
admin_app.add_typer(project_app, name="project")
admin_app.add_typer(member_app, name="member")
console = make_console()

CLEARABLE = (
    "share",
    "priority",
    "max-slots",
    "max-concurrent-trials",
    "user-max-slots",
    "user-max-concurrent-trials",
    "pools",
    "disk-cap",
)
_UNITS = {"": 1, "B": 1, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
_UNITS |= {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}

Share = Annotated[float | None, typer.Option(help="Weight in each pool's fair share.")]
Priority = Annotated[int | None, typer.Option(help="Higher tiers are served first (default 0).")]
MaxSlots = Annotated[int | None, typer.Option(help="Most slots the project holds at once.")]
MaxTrials = Annotated[int | None, typer.Option(help="Most trials the project runs at once.")]
UserSlots = Annotated[int | None, typer.Option(help="Most slots one member's experiments hold.")]
UserTrials = Annotated[int | None, typer.Option(help="Most trials one member runs at once.")]
Pools = Annotated[
    str | None, typer.Option(help="Comma-separated pools it may use (default: every pool).")
]
DiskCap = Annotated[
    str | None, typer.Option(help="Cap on its checkpoints and logs, e.g. 500GiB or 2TB.")
]
Clear = Annotated[
    list[str] | None,
    typer.Option(help=f"Unset a setting (repeatable): {', '.join(CLEARABLE)}."),
]


def parse_size(text: str) -> int:
    """'500GiB' -> bytes; plain numbers are bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).upper() if match else ""
    if match is None or unit not in _UNITS:
        raise TrainyardError(
            f"--disk-cap: {text!r} is not a size; write a number with a unit, e.g. 500GiB, "
            "2TB or 800MiB"
        )
    return int(float(match.group(1)) * _UNITS[unit])


def _settings(options: dict[str, Any]) -> ProjectSettings:
    """The PATCH body from a command's options (its `locals()`): the settings given, and null
    for each one cleared. Not validated here: the server checks it and its message comes
    back (with the field's name)."""
    from trainyard.auth.schemas import ProjectSettings

    pools, disk_cap = options["pools"], options["disk_cap"]
    given: dict[str, Any] = {key: options.get(key) for key in ProjectSettings.model_fields}
    given["pools"] = [p.strip() for p in pools.split(",") if p.strip()] if pools else None
    given["disk_cap_bytes"] = parse_size(disk_cap) if disk_cap is not None else None
    body = {key: value for key, value in given.items() if value is not None}
    for name in options.get("clear") or []:
        if name not in CLEARABLE:
            raise TrainyardError(
                f"--clear {name}: not a setting; {did_you_mean(name, CLEARABLE)}settings: "
                f"{', '.join(CLEARABLE)}"
            )
        key = "disk_cap_bytes" if name == "disk-cap" else name.replace("-", "_")
        if key in body:
            raise TrainyardError(f"--clear {name} and --{name} contradict; give one of them")
        body[key] = None
    return ProjectSettings.model_construct(**body)


@project_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Lower-case letters, digits, '.', '_', '-'.")],
    share: Share = None,
    priority: Priority = None,
    max_slots: MaxSlots = None,
    max_concurrent_trials: MaxTrials = None,
    user_max_slots: UserSlots = None,
    user_max_concurrent_trials: UserTrials = None,
    pools: Pools = None,
    disk_cap: DiskCap = None,
    master: MasterOption = None,
) -> None:
    """Create a project, with its settings when given."""
    body = _settings(locals())
    from trainyard.auth.schemas import ProjectAdminOut, ProjectIn, ProjectOut

    client = master_client(master)
    client.call("POST", "/projects", ProjectOut, body=ProjectIn.model_construct(name=name))
    shown = client.call("PATCH", f"/admin/projects/{name}", ProjectAdminOut, body=body)
    console.print(f"created project {escape(name)}")
    _print_project(shown)


@project_app.command("set")
def set_project(
    name: Annotated[str, typer.Argument(help="The project.")],
    share: Share = None,
    priority: Priority = None,
    max_slots: MaxSlots = None,
    max_concurrent_trials: MaxTrials = None,
    user_max_slots: UserSlots = None,
    user_max_concurrent_trials: UserTrials = None,
    pools: Pools = None,
    disk_cap: DiskCap = None,
    clear: Clear = None,
    master: MasterOption = None,
) -> None:
    """Change a project's share, priority, quotas, pools or disk cap; the next placement
    follows them (running trials keep their slots unless preemption is on)."""
    body = _settings(locals())
    from trainyard.auth.schemas import ProjectAdminOut

    if not body.model_fields_set:
        raise TrainyardError(
            "nothing to set: give at least one of --share, --priority, --max-slots, "
            "--max-concurrent-trials, --user-max-slots, --user-max-concurrent-trials, "
            "--pools, --disk-cap or --clear"
        )
    client = master_client(master)
    shown = client.call("PATCH", f"/admin/projects/{name}", ProjectAdminOut, body=body)
    _print_project(shown)


@project_app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="The project.")],
    master: MasterOption = None,
) -> None:
    """A project's settings, disk use (measured now), pool usage and members."""
    from trainyard.auth.schemas import ProjectAdminOut

    client = master_client(master)
    shown = client.call("GET", f"/admin/projects/{name}?fresh=true", ProjectAdminOut)
    _print_project(shown)


@project_app.command("list")
def list_projects(master: MasterOption = None) -> None:
    """Every project with its share, priority, quotas and disk use."""
    from trainyard.auth.schemas import ProjectAdminOut

    projects = master_client(master).call("GET", "/admin/projects", list[ProjectAdminOut])
    table = Table("project", "share", "priority", "slots", "trials", "per user", "pools", "disk")
    for project in projects:
        s = project.settings
        table.add_row(
            escape(project.name),
            _value(s.share, "default"),
            str(s.priority or 0),
            _value(s.max_slots),
            _value(s.max_concurrent_trials),
            f"{_value(s.user_max_slots)} slots, {_value(s.user_max_concurrent_trials)} trials",
            escape(", ".join(s.pools)) if s.pools is not None else "all",
            _disk(project),
        )
    console.print(table)


@member_app.command("add")
def add_member(
    project: Annotated[str, typer.Argument(help="The project.")],
    user: Annotated[str, typer.Argument(help="Their username or subject (signed in once).")],
    role: Annotated[ProjectRole, typer.Option(help="Their role there.")] = ProjectRole.EDITOR,
    master: MasterOption = None,
) -> None:
    """Add a user to a project, or change their role there."""
    from trainyard.auth.schemas import MemberIn, MemberOut

    body = MemberIn.model_construct(user=user, role=role)
    client = master_client(master)
    member = client.call("PUT", f"/projects/{project}/members", MemberOut, body=body)
    console.print(
        f"{escape(member.username or member.subject)} is {member.role.value} of {escape(project)}"
    )


@member_app.command("remove")
def remove_member(
    project: Annotated[str, typer.Argument(help="The project.")],
    user: Annotated[str, typer.Argument(help="Their username or subject.")],
    master: MasterOption = None,
) -> None:
    """Remove a user from a project; their experiments stay in it."""
    master_client(master).call("DELETE", f"/projects/{project}/members/{user}", type(None))
    console.print(f"removed {escape(user)} from {escape(project)}")


def _print_project(project: ProjectAdminOut) -> None:
    s = project.settings
    table = Table("setting", "value", title=f"project {escape(project.name)}")
    rows = [
        ("share", _value(s.share, "default (server file's shares.default_share)")),
        ("priority", str(s.priority or 0)),
        ("max slots", _value(s.max_slots)),
        ("max concurrent trials", _value(s.max_concurrent_trials)),
        ("max slots per user", _value(s.user_max_slots)),
        ("max concurrent trials per user", _value(s.user_max_concurrent_trials)),
        ("pools", escape(", ".join(s.pools)) if s.pools is not None else "all"),
        ("disk (checkpoints and logs)", _disk(project)),
    ]
    for usage in project.usage:
        rows.append((f"usage on {escape(usage.pool)}", f"{usage.slot_hours:.2f} slot-hours"))
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)
    members = Table("member", "subject", "role")
    for member in project.members:
        members.add_row(escape(member.username or "-"), escape(member.subject), member.role.value)
    console.print(members)


def _value(value: object, default: str = "no limit") -> str:
    return default if value is None else str(value)


def _disk(project: ProjectAdminOut) -> str:
    from trainyard.master.project_disk import format_bytes

    used = format_bytes(project.disk_used_bytes)
    cap = project.settings.disk_cap_bytes
    return used if cap is None else f"{used} of {format_bytes(cap)}"
