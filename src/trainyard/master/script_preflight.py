"""Preflight of a script trial (`entrypoint`): the folder, the program and, for a Python
script, the script file exist, so a typo fails before anything is queued."""

from __future__ import annotations

import os
from pathlib import Path

from trainyard.config import ExperimentConfig
from trainyard.config.entrypoint import EntrypointSpec
from trainyard.executors.script import PYTHON_NAMES, find_program


def entrypoint_problems(config: ExperimentConfig) -> list[str]:
    """One line per problem with the entrypoint's folder, program or script file."""
    entrypoint = config.entrypoint
    assert entrypoint is not None, "a script trial's experiment"
    workdir = Path(entrypoint.workdir or ".")
    if not workdir.is_dir():
        return [
            f"`entrypoint.workdir`: no such folder: {workdir}; give the folder the command "
            "starts in (relative to the folder trainyard runs in)"
        ]
    program = entrypoint.command[0]
    found = find_program(program, workdir)
    if found is None:
        where = f"in {workdir}" if "/" in program else "on PATH"
        return [
            f"`entrypoint.command`: program {program!r} not found {where}; give its path "
            "relative to `entrypoint.workdir` (e.g. ./train.sh), or a program on PATH such as "
            "`python train.py`"
        ]
    if found.is_dir() or not os.access(found, os.X_OK):
        interpreter = "python" if found.suffix == ".py" else "bash"
        return [
            f"`entrypoint.command`: program {program!r} ({found}) is not an executable file; "
            f"make it executable (chmod +x {found}) or start it with its interpreter, e.g. "
            f"`{interpreter} {program}`"
        ]
    return _script_file_problems(entrypoint, workdir)


def _script_file_problems(entrypoint: EntrypointSpec, workdir: Path) -> list[str]:
    """`python train.py`: train.py must exist (python itself would only fail in the trial)."""
    program, *arguments = entrypoint.command
    if Path(program).name not in PYTHON_NAMES or not arguments:
        return []
    script = arguments[0]
    if script.startswith("-") or (workdir / script).is_file():
        return []
    return [
        f"`entrypoint.command`: the Python script {script!r} is not in {workdir}; give its "
        "path relative to `entrypoint.workdir`, or set `entrypoint.workdir` to its folder"
    ]
