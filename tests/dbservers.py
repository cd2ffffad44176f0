"""Throwaway PostgreSQL / MariaDB servers for tests.

Each context manager initialises a fresh data directory in a short temporary
folder (``/dev/shm/crmdbXXXX`` if /dev/shm is a roomy tmpfs, else
``/tmp/crmdbXXXX``; see :func:`_default_parent`), starts the server binary as a child
process that we own, listening on a free TCP port on 127.0.0.1 only, creates a
non-superuser application user with a random password, and yields a
:class:`DbServer`.  On exit the server is stopped by the pid we started
(graceful signal, then escalation), and the folder is removed.

No system service, no system data directory and no system config file is
touched (``--no-defaults`` for MariaDB; an explicit data dir, socket dir and
port for PostgreSQL).

Running as root: PostgreSQL refuses to run as root, so initdb/postgres are run
as the ``postgres`` system user, and MariaDB as the ``mysql`` system user (the
temp folder is chowned to that user).  Without root, everything runs as the current
user.

Missing binaries raise :class:`RuntimeError` naming the Debian package to
install; tests are expected to fail loudly, not skip.
"""

from __future__ import annotations

import glob
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping
from urllib.parse import quote

log = logging.getLogger(__name__)

__all__ = ["DbServer", "postgres_server", "mariadb_server", "ferretdb_server"]

HOST = "127.0.0.1"
APP_USER = "crm"
START_TIMEOUT = 60.0  # seconds to wait for a server to accept connections
STOP_TIMEOUT = 30.0  # seconds to wait for a graceful shutdown
PORT_ATTEMPTS = 3  # retries when the picked port was taken in the meantime
# sun_path is 108 bytes on Linux including the NUL; keep a margin.
_MAX_SOCKET_PATH = 100

_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


# --------------------------------------------------------------------------- #
# Public data type
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class DbServer:
    kind: str  # "postgresql" or "mariadb"
    host: str
    port: int
    user: str  # application user (not a superuser)
    password: str  # random per server
    # --- extras (not part of equality) ----------------------------------- #
    pid: int = field(default=0, compare=False)  # server process we started
    base_dir: Path | None = field(default=None, compare=False)  # removed on exit
    socket: str = field(default="", compare=False, repr=False)  # admin socket (dir for PG, file for MariaDB)
    admin_user: str = field(default="", compare=False, repr=False)
    # "start" is filled before the server is yielded, "stop" after it is gone.
    timings: dict = field(default_factory=dict, compare=False, repr=False)

    def url(self, database: str) -> str:
        """SQLAlchemy URL for ``database`` as the application user over TCP."""
        cred = f"{quote(self.user, safe='')}:{quote(self.password, safe='')}"
        db = quote(database, safe="")
        if self.kind == "postgresql":
            return f"postgresql+psycopg2://{cred}@{self.host}:{self.port}/{db}"
        if self.kind == "mariadb":
            return f"mysql+pymysql://{cred}@{self.host}:{self.port}/{db}?charset=utf8mb4"
        if self.kind == "ferretdb":  # FerretDB 1.x over SQLite has no users: loopback only, no password
            return f"mongodb://{self.host}:{self.port}/{db}"
        raise ValueError(f"unknown kind {self.kind!r}")

    def create_database(self, name: str) -> None:
        """(Re)create database ``name`` owned by / fully granted to ``user``."""
        if not _IDENT_RE.match(name):
            raise ValueError(f"invalid database name {name!r} (use [A-Za-z_][A-Za-z0-9_]*)")
        if self.kind == "postgresql":
            with _pg_admin(self) as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                cur.execute(f'CREATE DATABASE "{name}" OWNER "{self.user}" TEMPLATE template0 ENCODING \'UTF8\'')
        elif self.kind == "mariadb":
            with _maria_admin(self) as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
                cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
                for host in ("%", HOST, "localhost"):
                    cur.execute(f"GRANT ALL PRIVILEGES ON `{name}`.* TO %s@%s", (self.user, host))
        elif self.kind == "ferretdb":
            from pymongo import MongoClient

            with MongoClient(self.url(name)) as client:
                client.drop_database(name)
        else:
            raise ValueError(f"unknown kind {self.kind!r}")


# --------------------------------------------------------------------------- #
# Generic helpers
# --------------------------------------------------------------------------- #


class _PortInUse(Exception):
    """The server could not bind its port (someone took it); retry."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _is_root() -> bool:
    return os.geteuid() == 0


def _service_account(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise RuntimeError(
            f"running as root but system user {name!r} does not exist; "
            f"install the server package (it creates the user) or run tests as non-root"
        ) from None


def _default_parent() -> Path:
    """Where temp folders go when no base_dir is given.

    ``$CRM_DB_TMPDIR`` if set; else /dev/shm when it is a writable tmpfs with
    >= 1 GiB free (data directories in RAM: server start-up and CREATE
    DATABASE are several times faster than on a VM disk, even with fsync off);
    else /tmp.  Never $TMPDIR, which may be long (unix socket path limit).
    """
    env = os.environ.get("CRM_DB_TMPDIR")
    if env:
        return Path(env)
    shm = Path("/dev/shm")
    try:
        st = os.statvfs(shm)
        if (
            shm.is_dir()
            and os.access(shm, os.W_OK | os.X_OK)
            and (os.stat(shm).st_mode & 0o1777) == 0o1777  # world-writable + sticky
            and st.f_bavail * st.f_frsize >= 1 << 30
        ):
            return shm
    except OSError:
        pass
    return Path("/tmp")


def _make_base(base_dir: Path | None) -> Path:
    parent = Path(base_dir) if base_dir is not None else _default_parent()
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="crmdb", dir=parent))


def _socket_dir(base: Path, extra_dirs: list[Path]) -> Path:
    """A directory for unix sockets with a path short enough for sun_path."""
    d = base / "s"
    if len(str(d)) + 20 <= _MAX_SOCKET_PATH:
        d.mkdir()
        return d
    d = Path(tempfile.mkdtemp(prefix="crms", dir="/tmp"))
    extra_dirs.append(d)
    return d


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            os.lchown(os.path.join(root, n), uid, gid)


def _check_traversable(path: Path, acct: pwd.struct_passwd) -> None:
    """As root, make sure the service user can reach ``path`` (parents must be +x)."""
    r = subprocess.run(
        ["/bin/sh", "-c", 'test -w "$1" && test -x "$1"', "sh", str(path)],
        user=acct.pw_uid,
        group=acct.pw_gid,
        extra_groups=[],
        cwd="/",
        capture_output=True,
    )
    if r.returncode != 0:
        raise RuntimeError(
            f"system user {acct.pw_name!r} cannot access {path}; pass a base_dir whose parents are world-traversable (e.g. /tmp)"
        )


def _rmtree(path: Path) -> None:
    if not path.exists():
        return

    def onerror(func, p, exc_info):  # make read-only bits writable and retry once
        try:
            os.chmod(os.path.dirname(p), 0o700)
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, 0o700)
            func(p)
        except FileNotFoundError:
            pass

    shutil.rmtree(path, onerror=onerror)


def _tail(path: Path, n: int = 40) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as e:
        return f"<cannot read {path}: {e}>"
    return "\n".join(lines[-n:])


def _pgrp_members(pgid: int) -> list[int]:
    """Pids whose process group is ``pgid`` (the session we started)."""
    out = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            data = Path(stat).read_text()
        except OSError:
            continue
        # fields after the ")" of comm: state ppid pgrp ...
        rest = data.rsplit(")", 1)[-1].split()
        if len(rest) > 2 and int(rest[2]) == pgid:
            out.append(int(stat.split("/")[2]))
    return out


def _stop_process(proc: subprocess.Popen, graceful: int, name: str) -> None:
    """Stop the server we started: graceful signal, then SIGKILL its process group.

    The server is started with ``start_new_session=True``, so its pid is also
    the id of a process group containing only the server and its children.
    """
    if proc.poll() is None:
        try:
            os.kill(proc.pid, graceful)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            log.warning("%s (pid %d) did not stop in %.0fs; killing", name, proc.pid, STOP_TIMEOUT)
    # Whatever is left in the group (server still alive, orphaned children): kill it.
    if proc.poll() is None or _pgrp_members(proc.pid):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait(timeout=STOP_TIMEOUT)
        deadline = time.monotonic() + 5
        while _pgrp_members(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.02)


def _die_with_parent(sig: int) -> Callable[[], None] | None:
    """preexec_fn: have the kernel send ``sig`` to the server if we die.

    Guards against orphaned servers when the test process is SIGKILLed (the
    temp folder is then left behind, but no process keeps running).  Runs in
    the child after the uid switch, so the setting is not reset by it.
    Linux only; silently skipped elsewhere.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def _set() -> None:
        PR_SET_PDEATHSIG = 1
        prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # parent already gone before prctl took effect
            os.kill(os.getpid(), sig)

    return _set


def _wait_ready(proc: subprocess.Popen, probe: Callable[[], bool], logfile: Path, name: str, port_in_use: Callable[[str], bool]) -> None:
    _wait_all_ready({name: (proc, logfile)}, probe, port_in_use, f"{name} (pid {proc.pid}) did not accept connections")


def _wait_all_ready(
    processes: Mapping[str, tuple[subprocess.Popen, Path]],
    probe: Callable[[], bool],
    port_in_use: Callable[[str], bool],
    not_ready: str,
    timeout_s: float = START_TIMEOUT,
) -> None:
    """Wait until `probe()` holds while every process of `processes` (name -> the process and its log) runs.

    A process that ends raises `_PortInUse` when its log's tail says its port was taken meanwhile (the caller
    retries on other ports), else RuntimeError with that tail; no `probe()` within `timeout_s` raises RuntimeError
    with `not_ready` and every log's tail.
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.02
    while True:
        for name, (proc, logfile) in processes.items():
            if proc.poll() is not None:
                tail = _tail(logfile)
                if port_in_use(tail):
                    raise _PortInUse(tail)
                raise RuntimeError(f"{name} exited with code {proc.returncode} during startup; last lines of {logfile}:\n{tail}")
        if probe():
            return
        if time.monotonic() > deadline:
            tails = "\n".join(f"last lines of {logfile}:\n{_tail(logfile)}" for _, logfile in processes.values())
            raise RuntimeError(f"{not_ready} within {timeout_s:.0f}s; {tails}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)


def _run_checked(cmd: list[str], name: str, **kw) -> None:
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)
    if r.returncode != 0:
        out = r.stdout.decode(errors="replace").splitlines()
        raise RuntimeError(f"{name} failed with code {r.returncode}: {' '.join(cmd)}\n" + "\n".join(out[-40:]))


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "MYSQL", "MARIADB"))}
    env["LC_ALL"] = "C"
    env["LANG"] = "C"
    return env


# --------------------------------------------------------------------------- #
# PostgreSQL
# --------------------------------------------------------------------------- #

_PG_SUPERUSER = "postgres"
_PG_BINDIR_GLOBS = ["/usr/lib/postgresql/*/bin"]  # Debian/Ubuntu layout; newest first
_PG_MISSING = "PostgreSQL server binaries (initdb, postgres) not found; install them with `apt-get install postgresql`"


def _pg_bindir() -> Path:
    def ok(d: Path) -> bool:
        return (d / "initdb").is_file() and (d / "postgres").is_file()

    candidates: list[Path] = []
    if os.environ.get("CRM_PG_BINDIR"):
        candidates.append(Path(os.environ["CRM_PG_BINDIR"]))
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                candidates.append(Path(out.stdout.strip()))
        except (OSError, subprocess.SubprocessError):
            pass

    def version_key(p: str) -> tuple:
        v = Path(p).parent.name
        return tuple(int(x) if x.isdigit() else 0 for x in v.split("."))

    for pattern in _PG_BINDIR_GLOBS:
        candidates += [Path(p) for p in sorted(glob.glob(pattern), key=version_key, reverse=True)]
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    for d in candidates:
        if ok(d):
            return d
    raise RuntimeError(_PG_MISSING)


@contextmanager
def _pg_admin(server: DbServer):
    import psycopg2

    conn = psycopg2.connect(host=server.socket, port=server.port, user=server.admin_user, dbname="postgres", connect_timeout=10)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


@contextmanager
def postgres_server(base_dir: Path | None = None) -> Iterator[DbServer]:
    """Start a throwaway PostgreSQL server; yields a :class:`DbServer`."""
    t0 = time.monotonic()
    bindir = _pg_bindir()
    import psycopg2  # noqa: F401  (fail early if the driver is missing)

    extra_dirs: list[Path] = []
    base = _make_base(base_dir)
    proc: subprocess.Popen | None = None
    server: DbServer | None = None
    try:
        sockdir = _socket_dir(base, extra_dirs)
        data = base / "data"
        logfile = base / "postgres.log"
        run_as: dict = {}
        if _is_root():
            acct = _service_account("postgres")
            for d in [base, *extra_dirs]:
                _chown_tree(d, acct.pw_uid, acct.pw_gid)
            _check_traversable(base, acct)
            _check_traversable(sockdir, acct)
            run_as = dict(user=acct.pw_uid, group=acct.pw_gid, extra_groups=[])
        env = _env()

        _run_checked(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                _PG_SUPERUSER,
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ],
            "initdb",
            cwd=str(base),
            env=env,
            **run_as,
        )
        # Only our rules: trust on the private unix socket (setup), scram over TCP.
        (data / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n")

        def probe(port: int) -> Callable[[], bool]:
            import psycopg2

            def _p() -> bool:
                try:
                    psycopg2.connect(host=str(sockdir), port=port, user=_PG_SUPERUSER, dbname="postgres", connect_timeout=2).close()
                    return True
                except psycopg2.OperationalError:
                    return False

            return _p

        port = 0
        for attempt in range(PORT_ATTEMPTS):
            port = _free_port()
            with open(logfile, "ab") as lf:
                proc = subprocess.Popen(
                    [
                        str(bindir / "postgres"),
                        "-D",
                        str(data),
                        "-c",
                        f"listen_addresses={HOST}",
                        "-c",
                        f"port={port}",
                        "-c",
                        f"unix_socket_directories={sockdir}",
                        "-c",
                        "fsync=off",
                        "-c",
                        "full_page_writes=off",
                        "-c",
                        "synchronous_commit=off",
                        "-c",
                        "password_encryption=scram-sha-256",
                        "-c",
                        "logging_collector=off",
                        "-c",
                        "max_connections=50",
                        "-c",
                        "shared_buffers=32MB",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=lf,
                    stderr=subprocess.STDOUT,
                    cwd=str(base),
                    env=env,
                    start_new_session=True,
                    **run_as,
                    preexec_fn=_die_with_parent(signal.SIGINT),
                )
            try:
                _wait_ready(
                    proc, probe(port), logfile, "postgres", lambda tail: "could not bind" in tail or "Address already in use" in tail
                )
                break
            except _PortInUse:
                proc.wait()
                proc = None
                if attempt == PORT_ATTEMPTS - 1:
                    raise RuntimeError(
                        f"postgres could not bind a free port after {PORT_ATTEMPTS} attempts; log:\n{_tail(logfile)}"
                    ) from None

        password = secrets.token_urlsafe(18)
        server = DbServer(
            kind="postgresql",
            host=HOST,
            port=port,
            user=APP_USER,
            password=password,
            pid=proc.pid,
            base_dir=base,
            socket=str(sockdir),
            admin_user=_PG_SUPERUSER,
        )
        with _pg_admin(server) as cur:
            cur.execute("SET password_encryption = 'scram-sha-256'")
            cur.execute(f'CREATE ROLE "{APP_USER}" LOGIN PASSWORD %s NOSUPERUSER NOCREATEROLE NOCREATEDB', (password,))
        server.timings["start"] = time.monotonic() - t0
        log.info("postgres pid %d on port %d started in %.2fs", proc.pid, port, server.timings["start"])
        yield server
    finally:
        t1 = time.monotonic()
        if proc is not None:
            # SIGINT = "fast" shutdown (same as pg_ctl stop -m fast).
            _stop_process(proc, signal.SIGINT, "postgres")
        for d in [base, *extra_dirs]:
            _rmtree(d)
        if server is not None:
            server.timings["stop"] = time.monotonic() - t1
            log.info("postgres stopped in %.2fs", server.timings["stop"])


# --------------------------------------------------------------------------- #
# MariaDB
# --------------------------------------------------------------------------- #

_MARIA_MISSING = "MariaDB server binaries ({what}) not found; install them with `apt-get install mariadb-server`"
_SBIN_DIRS = ["/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin", "/usr/libexec"]


def _find_binary(names: list[str]) -> str | None:
    for n in names:
        p = shutil.which(n)
        if p:
            return p
        for d in _SBIN_DIRS:
            cand = os.path.join(d, n)
            if os.path.isfile(cand) and os.access(cand, os.X_OK):
                return cand
    return None


@contextmanager
def _maria_admin(server: DbServer):
    import pymysql

    conn = pymysql.connect(
        unix_socket=server.socket, user=server.admin_user, password="", charset="utf8mb4", autocommit=True, connect_timeout=10
    )
    try:
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


# Files mariadb-install-db feeds to `mariadbd --bootstrap`, minus the 2.4 MB of
# help tables and the sys schema (which take ~1 s and that tests do not need).
_MARIA_BOOTSTRAP_SQL = [
    "mysql_system_tables.sql",
    "mysql_performance_tables.sql",
    "mysql_system_tables_data.sql",
    "maria_add_gis_sp_bootstrap.sql",
]


def _maria_share_dir(mariadbd: str) -> Path | None:
    prefix = Path(mariadbd).resolve().parent.parent
    for d in (prefix / "share" / "mysql", prefix / "share" / "mariadb", Path("/usr/share/mysql"), Path("/usr/share/mariadb")):
        if all((d / f).is_file() for f in _MARIA_BOOTSTRAP_SQL):
            return d
    return None


def _maria_init_datadir(mariadbd: str, install_db: str | None, run_as: dict, common: list[str], base: Path, env: dict[str, str]) -> None:
    """Create the system tables in the (empty, existing) data directory.

    Fast path: pipe the system-table scripts into ``mariadbd --bootstrap``
    exactly like mariadb-install-db does (root@localhost without password,
    no test db, no hostname-specific root account), skipping help tables and
    the sys schema.  Fallback: run mariadb-install-db itself.
    """
    share = None if os.environ.get("CRM_MARIADB_INSTALL_DB") else _maria_share_dir(mariadbd)
    if share is not None:
        parts = [b"create database if not exists mysql;\nuse mysql;\nSET @auth_root_socket=NULL;\n"]
        for f in _MARIA_BOOTSTRAP_SQL:
            # like `mariadb-install-db --cross-bootstrap`: no root@<hostname>
            parts += [ln for ln in (share / f).read_bytes().splitlines(keepends=True) if b"@current_hostname" not in ln]
            parts.append(b"\n")
        cmd = [
            mariadbd,
            "--no-defaults",
            "--bootstrap",
            *common,
            "--log-warnings=0",
            "--enforce-storage-engine=",
            "--max-allowed-packet=8M",
            "--net-buffer-length=16K",
        ]
        r = subprocess.run(cmd, input=b"".join(parts), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=str(base), env=env, **run_as)
        if r.returncode != 0:
            out = r.stdout.decode(errors="replace").splitlines()
            raise RuntimeError(f"mariadbd --bootstrap failed with code {r.returncode}: {' '.join(cmd)}\n" + "\n".join(out[-40:]))
        return
    if not install_db:
        raise RuntimeError(_MARIA_MISSING.format(what="mariadb-install-db / bootstrap SQL files"))
    _run_checked(
        [
            install_db,
            "--no-defaults",
            *common,
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--skip-name-resolve",
            "--cross-bootstrap",
        ],
        "mariadb-install-db",
        cwd=str(base),
        env=env,
        **run_as,
    )


@contextmanager
def mariadb_server(base_dir: Path | None = None) -> Iterator[DbServer]:
    """Start a throwaway MariaDB server; yields a :class:`DbServer`."""
    t0 = time.monotonic()
    mariadbd = _find_binary(["mariadbd", "mysqld"])
    if not mariadbd:
        raise RuntimeError(_MARIA_MISSING.format(what="mariadbd"))
    install_db = _find_binary(["mariadb-install-db", "mysql_install_db"])
    import pymysql  # noqa: F401  (fail early if the driver is missing)

    extra_dirs: list[Path] = []
    base = _make_base(base_dir)
    proc: subprocess.Popen | None = None
    server: DbServer | None = None
    try:
        sockdir = _socket_dir(base, extra_dirs)
        sock = sockdir / "mysqld.sock"
        data = base / "data"
        tmp = base / "tmp"
        tmp.mkdir()
        errlog = base / "error.log"
        run_as: dict = {}
        if _is_root():
            acct = _service_account("mysql")
            for d in [base, *extra_dirs]:
                _chown_tree(d, acct.pw_uid, acct.pw_gid)
            _check_traversable(base, acct)
            _check_traversable(sockdir, acct)
            # run as `mysql` ourselves (rather than mariadbd --user=mysql) so the
            # parent-death signal set in preexec_fn survives the uid switch
            run_as = dict(user=acct.pw_uid, group=acct.pw_gid, extra_groups=[])
        env = _env()
        common = [
            f"--datadir={data}",
            f"--tmpdir={tmp}",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=64M",
            "--innodb-log-file-size=16M",
            "--innodb-flush-log-at-trx-commit=0",
            "--innodb-doublewrite=0",
            "--innodb-flush-method=nosync",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_unicode_ci",
        ]

        data.mkdir()
        if run_as:
            os.chown(data, acct.pw_uid, acct.pw_gid)
        _maria_init_datadir(mariadbd, install_db, run_as, common, base, env)

        def probe() -> bool:
            import pymysql

            try:
                pymysql.connect(unix_socket=str(sock), user="root", password="", connect_timeout=2).close()
                return True
            except pymysql.err.OperationalError:
                return False

        port = 0
        for attempt in range(PORT_ATTEMPTS):
            port = _free_port()
            proc = subprocess.Popen(
                [
                    mariadbd,
                    "--no-defaults",
                    *common,
                    f"--port={port}",
                    f"--bind-address={HOST}",
                    f"--socket={sock}",
                    f"--pid-file={base / 'mariadbd.pid'}",
                    f"--log-error={errlog}",
                    "--skip-name-resolve",
                    "--max-connections=100",
                    "--performance-schema=0",
                    "--innodb-use-native-aio=0",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=str(base),
                env=env,
                start_new_session=True,
                **run_as,
                preexec_fn=_die_with_parent(signal.SIGTERM),
            )
            try:
                _wait_ready(
                    proc,
                    probe,
                    errlog,
                    "mariadbd",
                    lambda tail: "Can't start server: Bind on TCP/IP port" in tail or "Address already in use" in tail,
                )
                break
            except _PortInUse:
                proc.wait()
                proc = None
                if attempt == PORT_ATTEMPTS - 1:
                    raise RuntimeError(
                        f"mariadbd could not bind a free port after {PORT_ATTEMPTS} attempts; log:\n{_tail(errlog)}"
                    ) from None

        password = secrets.token_urlsafe(18)
        server = DbServer(
            kind="mariadb",
            host=HOST,
            port=port,
            user=APP_USER,
            password=password,
            pid=proc.pid,
            base_dir=base,
            socket=str(sock),
            admin_user="root",
        )
        with _maria_admin(server) as cur:
            # root stays reachable only through the private unix socket
            cur.execute("SELECT Host FROM mysql.user WHERE User = 'root' AND Host <> 'localhost'")
            for (host,) in cur.fetchall():
                cur.execute("DROP USER %s@%s", ("root", host))
            for host in ("%", HOST, "localhost"):
                cur.execute("CREATE USER %s@%s IDENTIFIED BY %s", (APP_USER, host, password))
        server.timings["start"] = time.monotonic() - t0
        log.info("mariadbd pid %d on port %d started in %.2fs", proc.pid, port, server.timings["start"])
        yield server
    finally:
        t1 = time.monotonic()
        if proc is not None:
            _stop_process(proc, signal.SIGTERM, "mariadbd")
        for d in [base, *extra_dirs]:
            _rmtree(d)
        if server is not None:
            server.timings["stop"] = time.monotonic() - t1
            log.info("mariadbd stopped in %.2fs", server.timings["stop"])


# --------------------------------------------------------------------------- #
# FerretDB (the MongoDB wire protocol over SQLite)
# --------------------------------------------------------------------------- #

_FERRETDB_MISSING = (
    "FerretDB binary not found at {path}: `make ferretdb` builds it (go install of tools/ferretdb, which "
    "pins github.com/FerretDB/FerretDB v1.24.2, from the Go module proxy); or set CRM_FERRETDB to a binary"
)


def ferretdb_binary() -> Path:
    """Where the FerretDB binary is: $CRM_FERRETDB, else the project's .cache/bin/ferretdb (`make ferretdb`)."""
    return Path(os.environ.get("CRM_FERRETDB") or Path(__file__).resolve().parent.parent / ".cache" / "bin" / "ferretdb")


@contextmanager
def ferretdb_server(base_dir: Path | None = None) -> Iterator[DbServer]:
    """Start a throwaway FerretDB (MongoDB wire protocol) with an SQLite backend folder; yields a
    :class:`DbServer` of kind ``ferretdb``."""
    t0 = time.monotonic()
    binary = ferretdb_binary()
    if not binary.is_file():
        raise RuntimeError(_FERRETDB_MISSING.format(path=binary))
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    base = _make_base(base_dir)
    proc: subprocess.Popen | None = None
    server: DbServer | None = None
    try:
        data = base / "data"
        data.mkdir()
        errlog = base / "ferretdb.log"
        port = 0
        for attempt in range(PORT_ATTEMPTS):
            port = _free_port()

            def probe() -> bool:
                try:
                    with MongoClient(HOST, port, serverSelectionTimeoutMS=500, connectTimeoutMS=500) as client:
                        client.admin.command("ping")
                    return True
                except PyMongoError:
                    return False

            with errlog.open("ab") as out:
                proc = subprocess.Popen(
                    [str(binary), f"--listen-addr={HOST}:{port}", f"--sqlite-url=file:{data}/", "--log-level=warn"],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=str(base),
                    env=_env(),
                    start_new_session=True,
                    preexec_fn=_die_with_parent(signal.SIGTERM),
                )
            try:
                _wait_ready(proc, probe, errlog, "ferretdb", lambda tail: "address already in use" in tail)
                break
            except _PortInUse:
                proc.wait()
                proc = None
                if attempt == PORT_ATTEMPTS - 1:
                    raise RuntimeError(
                        f"ferretdb could not bind a free port after {PORT_ATTEMPTS} attempts; log:\n{_tail(errlog)}"
                    ) from None
        server = DbServer(kind="ferretdb", host=HOST, port=port, user="", password="", pid=proc.pid, base_dir=base)
        server.timings["start"] = time.monotonic() - t0
        log.info("ferretdb pid %d on port %d started in %.2fs", proc.pid, port, server.timings["start"])
        yield server
    finally:
        t1 = time.monotonic()
        if proc is not None:
            _stop_process(proc, signal.SIGTERM, "ferretdb")
        _rmtree(base)
        if server is not None:
            server.timings["stop"] = time.monotonic() - t1
            log.info("ferretdb stopped in %.2fs", server.timings["stop"])
