"""What every executor does alike for a script trial (an experiment's `entrypoint`): where its
program is found, and the torchrun variables a one-rank trial gets without torchrun.

A multi-rank script trial runs under torchrun's agent (local) or srun (SLURM), which set RANK,
LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT per rank; a one-rank
trial gets the same variables here, so a script's `init_process_group()` works either way.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

PYTHON_NAMES = frozenset({"python", "python3"})


def script_path_variable(path: str | None = None) -> str:
    """PATH for a script trial: the folder of the interpreter trainyard runs in first, so
    `python train.py` runs with trainyard (and `trainyard.core`) importable."""
    here = str(Path(sys.executable).parent)
    rest = os.environ.get("PATH", "") if path is None else path
    return os.pathsep.join([here, *[p for p in rest.split(os.pathsep) if p and p != here]])


def find_program(program: str, workdir: Path) -> Path | None:
    """The file `program` names: relative to `workdir` when it has a slash, else on the
    script trial's PATH; None when there is no such file."""
    if "/" in program:
        candidate = workdir / program
        return candidate if candidate.exists() else None
    found = shutil.which(program, mode=os.F_OK, path=script_path_variable())
    return Path(found) if found else None


def single_rank_env(master_port: int) -> dict[str, str]:
    """torchrun's variables for a trial of one rank."""
    return {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(master_port),
    }
