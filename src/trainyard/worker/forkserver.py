"""A warm parent for one-slot local workers: import torch and the worker once, fork per trial.

A fresh `python -m trainyard.worker` spends seconds importing torch, torch.distributed's
checkpointing and the data stack before it trains; on a short ASHA rung that is most of the
trial's start-up (benchmarks/startup.py). The local executor instead starts this server once
(`python -m trainyard.worker.forkserver`), which imports all of that and then forks one child
per trial, so a trial's worker starts with everything loaded.

Protocol: JSON lines, `ForkRequest` on stdin; `ForkStarted` (the child's pid) and `ForkExited`
(its exit status, as `Popen.returncode` gives it) on stdout. Each child starts a new session, so
the executor signals its process group exactly as it does a Popen'd worker; takes the trial's
whole environment; writes stdout and stderr to the trial's log; names itself `trial-<id>` (how
a later Master recognises a leftover worker: /proc/<pid>/environ still shows the server's
environment); and runs `worker.main`. The server itself never runs a torch operation nor
touches CUDA, so each child starts from an untouched torch, the state DataLoader's forked
workers rely on too. The only other threads alive at a fork are idle library threads that
register their own fork handlers: numpy's OpenBLAS thread server and pyarrow's jemalloc
background thread (Python 3.12 warns about any fork of a threaded process; the server silences
that one warning for this reason). When its stdin closes (the executor closed it, or the Master
is gone), the server exits; children still running carry on, as orphaned workers always have.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import select
import signal
import sys
import traceback
import warnings
from typing import NoReturn

from trainyard.protocol import ForkExited, ForkRequest, ForkStarted

POLL_INTERVAL_S = 0.05
_PR_SET_NAME = 15


def serve(commands_fd: int, replies_fd: int) -> None:
    """Fork a worker per request until `commands_fd` closes; report every child's exit."""
    pending = b""
    while True:
        readable, _, _ = select.select([commands_fd], [], [], POLL_INTERVAL_S)
        if readable:
            chunk = os.read(commands_fd, 65536)
            if not chunk:
                return
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                request = ForkRequest.model_validate_json(line)
                _send(replies_fd, ForkStarted(trial_id=request.trial_id, pid=_fork(request)))
        _report_exits(replies_fd)


def _fork(request: ForkRequest) -> int:
    """Fork the trial's worker; return once it leads its own session, so that signalling its
    process group (the executor's stop and kill) reaches it from the first moment, and bears
    its trial's name, so that a Master finds it as a leftover from then on too."""
    ready_read, ready_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_read)
        os.setsid()
        _name_process(f"trial-{request.trial_id}")
        os.close(ready_write)
        _run_worker(request)
    os.close(ready_write)
    os.read(ready_read, 1)  # end of file once the child closed its end (or died)
    os.close(ready_read)
    return pid


def _report_exits(replies_fd: int) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(replies_fd, ForkExited(pid=pid, code=os.waitstatus_to_exitcode(status)))


def _send(replies_fd: int, reply: ForkStarted | ForkExited) -> None:
    os.write(replies_fd, reply.model_dump_json().encode() + b"\n")


def _run_worker(request: ForkRequest) -> NoReturn:
    """In the child: become the trial's worker process and exit with the worker's status."""
    code = 1
    try:
        log_fd = os.open(request.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        null_fd = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null_fd, 0)  # also closes the server's command pipe in this process
        os.dup2(log_fd, 1)  # ... and its reply pipe
        os.dup2(log_fd, 2)
        os.close(log_fd)
        os.close(null_fd)
        os.environ.clear()
        os.environ.update(request.env)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)
        from trainyard.worker.main import main

        code = main()
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _name_process(name: str) -> None:
    """Set /proc/self/comm (what ps shows), at most 15 bytes."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


PRELOADED = (
    "torch._dynamo",  # torch's optimizers import it when they are built
    "torch._inductor.config",  # the determinism switch imports it
    "trainyard.worker.main",
    "trainyard.worker.trainer",
    "trainyard.worker.reporter",
    "trainyard.worker.packing.loop",
)
"""Everything a worker imports before it trains, so no child imports it again."""


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the CLI, which stops workers
    warnings.filterwarnings("ignore", message=r".*use of fork\(\) may lead to deadlocks")
    for module in PRELOADED:
        importlib.import_module(module)
    serve(sys.stdin.fileno(), sys.stdout.fileno())
