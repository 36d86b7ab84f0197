"""A throwaway PostgreSQL server for the test session, built from the system's own binaries.

The store's PostgreSQL path is only trustworthy if it is tested against a real server, so the
suite starts one itself: `initdb` into a private temporary folder, then the `postgres` server
as a child of the test process, listening only on a unix socket in that folder (no TCP port,
so nothing can collide with another server or another test run). It is stopped by its PID at
the end of the session, and the stop checks that none of its processes survives.

PostgreSQL refuses to run as root. When the tests run as root, the server runs as the
`postgres` system user that Debian's package creates; otherwise as the current user.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import psycopg

DEBIAN_ROOT = Path("/usr/lib/postgresql")
SERVER_USER = "postgres"
SUPERUSER = "postgres"
ADMIN_DATABASE = "postgres"
# Not UTC, so a datetime that skips the store's UTC conversion shows up as a wrong value.
SERVER_TIMEZONE = "Asia/Kathmandu"
# Trust: only this user can reach the socket folder, and the data dies with the session.
INITDB_OPTIONS = ("--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync")
SERVER_OPTIONS = {
    "listen_addresses": "",
    "timezone": SERVER_TIMEZONE,
    # A throwaway server: durability only costs time here.
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}
FOLDER_PREFIX = "trainyard-pg-"
OWNER_FILE = "owner.pid"
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 60
PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded before any fork, not in the child
INSTALL_HINT = "install Debian's `postgresql` package: `make postgres-deps` (`make test` does it)"


class PostgresUnavailable(RuntimeError):
    """The binaries or the user needed to start a server are missing."""


@dataclass(frozen=True)
class PostgresServer:
    """A running server and its folder: data/, server.log and the socket clients connect to."""

    root: Path
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def url(self, database: str) -> str:
        """A SQLAlchemy URL (psycopg 3 driver) for `database` on this server."""
        return f"postgresql+psycopg://{SUPERUSER}@/{database}?host={self.root}"

    def connect(self, database: str = ADMIN_DATABASE) -> psycopg.Connection:
        """An autocommit driver connection, for CREATE / DROP DATABASE."""
        return psycopg.connect(
            host=str(self.root), user=SUPERUSER, dbname=database, autocommit=True
        )


def find_bin_dir() -> Path:
    """The newest /usr/lib/postgresql/<major>/bin that has initdb and postgres."""
    candidates = sorted(
        (path for path in DEBIAN_ROOT.glob("*/bin") if path.parent.name.isdigit()),
        key=lambda path: int(path.parent.name),
    )
    for bin_dir in reversed(candidates):
        if (bin_dir / "initdb").is_file() and (bin_dir / "postgres").is_file():
            return bin_dir
    raise PostgresUnavailable(f"no initdb and postgres under {DEBIAN_ROOT}/*/bin; {INSTALL_HINT}")


def _server_account() -> pwd.struct_passwd | None:
    """Whom the server runs as: None for the current user, the `postgres` user under root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise PostgresUnavailable(
            f"the tests run as root, which PostgreSQL refuses, and there is no "
            f"`{SERVER_USER}` user to run it as; {INSTALL_HINT}"
        ) from None


class _RunAs(TypedDict):
    """How subprocess starts the server's programs: in its folder, as its user."""

    cwd: Path
    user: int | None
    group: int | None
    extra_groups: list[int] | None


def _run_as(account: pwd.struct_passwd | None, root: Path) -> _RunAs:
    """None keeps the current user (subprocess then changes nothing); an account also drops
    root's supplementary groups."""
    if account is None:
        return _RunAs(cwd=root, user=None, group=None, extra_groups=None)
    return _RunAs(cwd=root, user=account.pw_uid, group=account.pw_gid, extra_groups=[])


def _die_with_parent() -> None:
    """Runs in the server's child process: a killed test run must not leave a server behind.

    The kernel sends the signal (SIGINT: fast shutdown) when the test process dies.
    """
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGINT)


def start_server() -> PostgresServer:
    """initdb into a fresh temporary folder and start the server; waits until it accepts."""
    bin_dir = find_bin_dir()
    account = _server_account()
    remove_abandoned_folders()
    root = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX))
    try:
        (root / OWNER_FILE).write_text(str(os.getpid()))
        if account is not None:
            os.chown(root, account.pw_uid, account.pw_gid)
        return _initdb_and_start(bin_dir, root, account)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def remove_abandoned_folders() -> None:
    """Delete the folders of test runs that were killed before they could clean up.

    The server of such a run has stopped (it dies with its parent), but its folder stays; the
    PID of the run that made it, written inside, tells whether that run is still going.
    """
    for folder in Path(tempfile.gettempdir()).glob(f"{FOLDER_PREFIX}*"):
        try:
            owner = int((folder / OWNER_FILE).read_text())
            os.kill(owner, 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (OSError, ValueError):
            continue  # still running, or not ours to judge


def _initdb_and_start(
    bin_dir: Path, root: Path, account: pwd.struct_passwd | None
) -> PostgresServer:
    data = root / "data"
    log_path = root / "server.log"
    run_as = _run_as(account, root)
    subprocess.run(
        [bin_dir / "initdb", "-D", data, "-U", SUPERUSER, *INITDB_OPTIONS],
        check=True,
        capture_output=True,
        timeout=START_TIMEOUT_S,
        **run_as,
    )
    options = [arg for name, value in SERVER_OPTIONS.items() for arg in ("-c", f"{name}={value}")]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [bin_dir / "postgres", "-D", data, "-k", root, *options],
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own session: a Ctrl-C meant for pytest must not stop it mid-test.
            start_new_session=True,
            preexec_fn=_die_with_parent,
            **run_as,
        )
    server = PostgresServer(root=root, process=process)
    try:
        _wait_until_ready(server, log_path)
    except BaseException:
        _stop_process(process)
        raise
    return server


def _wait_until_ready(server: PostgresServer, log_path: Path) -> None:
    """Connect until the server answers; fails with the server's log if it died."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"the test PostgreSQL server exited with {server.process.returncode} while "
                f"starting; its log ({log_path}):\n{log_path.read_text()}"
            )
        try:
            server.connect().close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def stop_server(server: PostgresServer) -> None:
    """Fast shutdown by PID; raises if any server process is left afterwards (then killed)."""
    try:
        _stop_process(server.process)
        survivors = server_processes(server)
        for pid in survivors:
            os.kill(pid, signal.SIGKILL)
        if survivors:
            raise RuntimeError(
                f"PostgreSQL server {server.pid} stopped but left processes {survivors}; "
                "they were killed"
            )
    finally:
        shutil.rmtree(server.root, ignore_errors=True)


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGINT is PostgreSQL's fast shutdown: clients disconnected, nothing left to recover."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise


def server_processes(server: PostgresServer) -> list[int]:
    """PIDs of the server and its children, live or orphaned, read from /proc.

    Every one of them works in the data folder; their process groups say nothing, since each
    child starts a session of its own.
    """
    data = server.root / "data"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "cwd").resolve() == data:
                found.append(int(entry.name))
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
    return found
