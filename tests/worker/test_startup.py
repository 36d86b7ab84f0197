"""What a worker imports at start: nothing heavy that a trial reusing staged data never uses.

The check runs in a fresh interpreter, since an import done by another test would hide one.
"""

from __future__ import annotations

import json
import subprocess
import sys

NOT_BEFORE_THE_FIRST_STEP = (
    "sklearn",  # metrics compute the ROC curve in numpy
    "scipy",
    "pyarrow.compute",  # only staging needs it
    "awkward",  # only reading ROOT/HDF5 branches and weaver expressions (staging) need it
)


def _fresh(code: str) -> object:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    return json.loads(done.stdout.splitlines()[-1])


def test_the_worker_path_leaves_heavy_modules_unimported() -> None:
    loaded = _fresh(
        "import json, sys\n"
        "import trainyard.worker.main\n"
        "from trainyard.worker import distributed, trainer\n"
        f"print(json.dumps(sorted(m for m in {list(NOT_BEFORE_THE_FIRST_STEP)!r} "
        "if m in sys.modules)))"
    )
    assert loaded == []
