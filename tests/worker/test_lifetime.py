"""exit_now: a worker ends at once, yet keeps what a normal exit guarantees.

Each case runs in a fresh interpreter, since exit_now ends the process that calls it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_EXITING = """
import atexit, logging, sys, threading, time
from pathlib import Path
from trainyard.worker.lifetime import exit_now

out = Path(sys.argv[1])
logging.basicConfig(handlers=[logging.FileHandler(out / "log")], level=logging.INFO)
logging.getLogger("worker").info("outcome reported")
atexit.register(lambda: (out / "atexit").write_text("ran"))

def late_writer():
    time.sleep(0.3)
    (out / "thread").write_text("joined")

threading.Thread(target=late_writer).start()  # not a daemon: a normal exit waits for it
sys.stdout.write("buffered, no newline")
exit_now(7)
(out / "after").write_text("exit_now returned")
"""


def test_exit_now_joins_threads_runs_exit_handlers_and_flushes(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _EXITING, str(tmp_path)],
        stdout=subprocess.PIPE,  # a pipe: stdout is block-buffered, so the flush matters
        text=True,
        timeout=60,
    )
    assert done.returncode == 7
    assert done.stdout == "buffered, no newline"
    assert (tmp_path / "thread").read_text() == "joined"
    assert (tmp_path / "atexit").read_text() == "ran"
    assert "outcome reported" in (tmp_path / "log").read_text()
    assert not (tmp_path / "after").exists()


def test_the_worker_module_exits_with_mains_code_without_an_executor() -> None:
    """`python -m trainyard.worker` outside an executor: main's code 2 and its message."""
    done = subprocess.run(
        [sys.executable, "-m", "trainyard.worker"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2
    assert "TRAINYARD_" in done.stderr
