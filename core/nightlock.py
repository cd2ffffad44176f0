"""One night per data root: the lock file `<data>/night.lock`.

Two nights on one data root break each other (`dag.test()` deletes the other's Airflow run, Delta writers
collide), so whatever runs a night holds the root's lock for as long as it runs:

- `crm run` (one date or a backfill), `crm demo`, `crm train` and `crm export` hold it for the whole
  command (`hold`); the night's own child process inherits it, and the tasks it runs know it for theirs by
  the token the holder puts in their environment (`CRM_NIGHT_TOKEN`).
- A task run by an Airflow scheduler (each task a process of its own) holds it while its job runs
  (`hold_for_task`, through `core.airflow_task.run_task`), shared with the tasks of its own run that run at
  the same time: a task of another run refuses while a night or a task of another run holds the root.

The lock is `fcntl.flock` on the file: the kernel releases it when its holder dies, however it dies, so a
killed night leaves nothing to clean up. The file holds the holder's record (pid, host, command, run date,
run id, task, start), read for the message that names the running night and by `crm status`, which shows
a run whose tasks are still marked running but that holds no lock as interrupted.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

from core.config import Settings

#: The lock file, directly under the data root.
LOCK_FILE = "night.lock"
#: The environment variable through which the tasks of a held night know it for theirs.
TOKEN_ENV = "CRM_NIGHT_TOKEN"
#: How often `hold(wait=True)` tries again (seconds).
WAIT_POLL_S = 5.0
#: How often a holder touches the lock file (seconds): its time is the night's last sign of life.
HEARTBEAT_S = 10.0
#: Tries (0.1 s apart) before a night counts as held: `crm status` looks at the lock for an instant.
TRIES = 5


class NightBusyError(RuntimeError):
    """Another night holds the data root; the message names it."""


@dataclass
class _Held:
    fd: int
    path: Path
    record: dict = field(default_factory=dict)


#: The locks this process holds, by lock file (a `crm demo` holds it, then its `crm run` finds it held).
_held: dict[Path, _Held] = {}


def lock_path(settings: Settings) -> Path:
    return Path(settings.data_dir) / LOCK_FILE


@contextmanager
def hold(settings: Settings, command: str, run_date: date | None = None, wait: bool = False, on_wait=None) -> Iterator[None]:
    """Hold the data root for a night run from the command line, or raise NightBusyError naming its holder.

    `wait`: wait for the running night to end instead (`on_wait(message)` is called once, first).
    """
    path = lock_path(settings)
    if path in _held:  # this process holds it already (crm demo, then crm run)
        if run_date is not None:
            _update(_held[path], run_date=run_date.isoformat())
        yield
        return
    token = secrets.token_hex(8)
    record = {"command": command, "run_date": run_date.isoformat() if run_date else None, "run_id": None, "task": None, "token": token}
    fd = _open(path)
    try:
        while not _try_lock(fd):
            busy = busy_message(settings, _read(path))
            if not wait:
                raise NightBusyError(busy)
            if on_wait is not None:
                on_wait(f"{busy.split(';')[0]}; waiting for it to end ...")
                on_wait = None
            time.sleep(WAIT_POLL_S)
        held = _Held(fd, path, record)
        _update(held, **_who())
        _held[path] = held
        previous, os.environ[TOKEN_ENV] = os.environ.get(TOKEN_ENV), token
        try:
            with _heartbeat(fd):
                yield
        finally:
            del _held[path]
            if previous is None:
                os.environ.pop(TOKEN_ENV, None)
            else:
                os.environ[TOKEN_ENV] = previous
    finally:
        os.close(fd)  # releases the lock


def held_fds() -> list[int]:
    """The lock file descriptors this process holds: a night's child process inherits them, so the lock
    stays held while either of them runs."""
    return [held.fd for held in _held.values()]


@contextmanager
def hold_for_task(settings: Settings, run_id: str, run_date: date, task: str) -> Iterator[None]:
    """Hold the data root while one task of run `run_id` runs, or raise NightBusyError naming its holder.

    A task of the night that holds the root (its token in the environment) goes on under that hold and
    records which run and task it is. A task run by a scheduler holds the root shared with the other tasks
    of its own run, so a night's independent tasks run side by side (LocalExecutor, CeleryExecutor on one
    root), while a task of another run, or any task while a `crm run` holds the root, refuses.
    """
    path = lock_path(settings)
    token = os.environ.get(TOKEN_ENV)
    record = _read(path)
    if token and record and record.get("token") == token and not _lockable(path):
        held = _Held(-1, path, record)
        _update(held, run_id=run_id, run_date=run_date.isoformat(), task=task)
        yield
        return
    fd = _open(path)
    try:
        with _deciding(path):  # one task at a time decides: hold, share or refuse
            alone = _try_lock(fd)
            if not alone:
                record = _read(path)
                same_run = record and record.get("run_id") == run_id and not record.get("token")
                if not same_run or not _try_lock(fd, fcntl.LOCK_SH):
                    raise NightBusyError(busy_message(settings, _read(path)))
            held = _Held(fd, path, {"command": "airflow task", "run_id": run_id, "run_date": run_date.isoformat(), "task": task})
            _update(held, **_who())
            if alone and not _try_lock(fd, fcntl.LOCK_SH):  # shared from now on, for the run's other tasks
                raise NightBusyError(busy_message(settings, _read(path)))
        with _heartbeat(fd):
            yield
    finally:
        os.close(fd)


@contextmanager
def _deciding(path: Path) -> Iterator[None]:
    """The gate `<lock>.gate`, held exclusively for the instant a scheduler task decides whether it may run."""
    fd = _open(path.with_name(path.name + ".gate"))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def holder(settings: Settings) -> dict | None:
    """The record of the night holding the data root, or None when none does (it never takes the lock)."""
    path = lock_path(settings)
    if not path.exists() or _lockable(path):
        return None
    return _read(path) or {}


def last_seen(settings: Settings) -> tuple[str, datetime] | None:
    """The run id of the night that held the data root last (or holds it) and its last sign of life (UTC)."""
    path = lock_path(settings)
    record = _read(path)
    if not record or not record.get("run_id"):
        return None
    return record["run_id"], datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)


def busy_message(settings: Settings, record: dict | None) -> str:
    """One line naming the night that holds the data root, and what to do."""
    return (
        f"another night holds data root {settings.data_dir}: {describe(record)}; "
        "wait for it to end (crm run --wait waits), or stop that process first"
    )


def describe(record: dict | None) -> str:
    """The holder as a person reads it: `crm run (run date 2026-11-26, run manual__..., pid 4242 on host, since ...)`."""
    record = record or {}
    what = record.get("command") or "a night"
    if record.get("task"):
        what += f", task {record['task']}"
    facts = [
        f"run date {record['run_date']}" if record.get("run_date") else None,
        f"run {record['run_id']}" if record.get("run_id") else None,
        f"pid {record['pid']} on {record.get('host', '?')}" if record.get("pid") else None,
        f"since {record['since']}" if record.get("since") else None,
    ]
    shown = ", ".join(fact for fact in facts if fact)
    return f"{what} ({shown})" if shown else what


def _who() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}


@contextmanager
def _heartbeat(fd: int) -> Iterator[None]:
    """Touch the lock file every `HEARTBEAT_S` while the block runs."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            try:
                os.utime(fd)
            except OSError:  # a full or read-only disk: the night fails elsewhere, visibly
                return

    threading.Thread(target=beat, name="night-heartbeat", daemon=True).start()
    try:
        yield
    finally:
        stop.set()


def _open(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)


def _try_lock(fd: int, kind: int = fcntl.LOCK_EX) -> bool:
    """Take (or convert to) the lock of `kind` within `TRIES` tries; False when another holder keeps it."""
    for attempt in range(TRIES):
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
            return True
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
        if attempt < TRIES - 1:
            time.sleep(0.1)
    return False


def _lockable(path: Path) -> bool:
    """Whether nobody holds the lock, shared or not: the lock for an instant (holders retry over `TRIES`)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as error:
        if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise
        return False
    finally:
        os.close(fd)


def _read(path: Path) -> dict | None:
    """The holder's record; None when there is none. A record being rewritten is read again."""
    for _ in range(3):
        try:
            text = path.read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not text:
            return None
        try:
            return json.loads(text)
        except ValueError:
            time.sleep(0.05)
    return None


def _update(held: _Held, **changes) -> None:
    """Rewrite the record in place (the locked file itself: replacing it would leave the lock behind)."""
    held.record.update(changes)
    data = json.dumps(held.record).encode()
    fd = os.open(held.path, os.O_WRONLY) if held.fd < 0 else held.fd
    try:
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    finally:
        if held.fd < 0:
            os.close(fd)
