"""Where a benchmark ran: processor, memory, Python, torch, and the GPU with its driver.

Every result file records this, so numbers are only compared between like machines. Run as a
script (`python -m benchmarks.environment OUT.json`) it writes the record on its own, which
benchmarks/gpu.sh does first.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict

from benchmarks.results_files import cpu_model


class Gpu(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    memory_gib: float
    capability: str


class Environment(BaseModel):
    """The machine and software of one benchmark run."""

    model_config = ConfigDict(frozen=True)

    date: str
    cpu_model: str
    cores: int | None
    memory_gib: float
    python: str
    torch: str
    torch_cuda: str | None
    """The CUDA version torch was built with (None for a CPU build)."""
    cudnn: int | None
    driver: str | None
    """The NVIDIA driver, from nvidia-smi, where there is one."""
    gpus: list[Gpu]
    load_average: tuple[float, float, float]


def describe() -> Environment:
    """This machine, now."""
    gpus = [
        Gpu(
            name=torch.cuda.get_device_name(index),
            memory_gib=round(torch.cuda.get_device_properties(index).total_memory / 2**30, 1),
            capability="{}.{}".format(*torch.cuda.get_device_capability(index)),
        )
        for index in range(torch.cuda.device_count())
    ]
    return Environment(
        date=time.strftime("%Y-%m-%d %H:%M %Z"),
        cpu_model=cpu_model(),
        cores=os.cpu_count(),
        memory_gib=round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        python=platform.python_version(),
        torch=torch.__version__,
        torch_cuda=torch.version.cuda,
        cudnn=torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        driver=_nvidia_driver(),
        gpus=gpus,
        load_average=tuple(round(load, 2) for load in os.getloadavg()),
    )


def load_average() -> float:
    """The 1-minute load average now: a busy machine slows every measurement."""
    return os.getloadavg()[0]


def _nvidia_driver() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
    try:
        answer = subprocess.run(query, capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return answer.stdout.strip().splitlines()[0] if answer.stdout.strip() else None


if __name__ == "__main__":
    record = describe().model_dump_json(indent=2)
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(record + "\n")
    print(record)
