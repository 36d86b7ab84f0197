"""The worker's malloc setting: freed tensors stay mapped, so the next step does not fault them
in again. Each case runs in a fresh process, since malloc settings are per process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

BUFFER_PAGES = (64 << 20) // 4096
"""A 64 MiB buffer: above glibc's largest automatic mmap threshold (32 MiB)."""
WARM_UP_ROUNDS = 10
"""Rounds before counting: the heap grows for a few rounds before freed buffers fit again."""
ROUNDS = 10

_ALLOCATE_AND_FREE = f"""
import json, resource, sys
import torch
from trainyard.worker.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
def rounds(count):
    for _ in range(count):
        buffer = torch.ones({BUFFER_PAGES * 4096}, dtype=torch.uint8)  # touches every page
        del buffer
rounds({WARM_UP_ROUNDS})
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds({ROUNDS})
after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(json.dumps({{"applied": applied, "faults": after - before}}))
"""


def _run(mode: str, **env: str) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_"))}
    done = subprocess.run(
        [sys.executable, "-c", _ALLOCATE_AND_FREE, mode],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout.splitlines()[-1])


def test_with_the_setting_a_freed_buffer_is_reused_without_faulting_it_in_again() -> None:
    kept = _run("keep")
    assert kept["applied"] is True
    # Once the heap has grown, every round reuses pages an earlier round freed.
    assert int(kept["faults"]) < BUFFER_PAGES, kept


def test_without_the_setting_every_round_faults_its_buffer_in_again() -> None:
    # The baseline the setting fixes: if this stops holding, the setting may be unneeded.
    default = _run("default")
    assert int(default["faults"]) > (ROUNDS - 2) * BUFFER_PAGES, default


def test_malloc_settings_in_the_environment_win() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import logging; logging.basicConfig(level=logging.INFO);"
            "from trainyard.worker.allocator import keep_freed_memory;"
            "print(keep_freed_memory())",
        ],
        env={**os.environ, "MALLOC_TRIM_THRESHOLD_": "131072"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "False"
    assert "malloc: left as MALLOC_TRIM_THRESHOLD_ in the environment sets it" in done.stderr
