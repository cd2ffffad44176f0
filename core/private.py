"""Private by default: what the pipeline writes under the data root is for the user who runs it alone.

The data root holds the shop's customers (bronze and silver, the CRM SQLite file, MLflow's store, the
exports): every entry point (the `crm` command, each Airflow task, the night's Spark server, which its JVM
inherits) sets the umask 077 before it writes anything, so new folders are 0700 and new files 0600, and the
data root itself is made 0700. Spark's Hadoop file system applies a umask of its own (022 unless told):
`core.spark_local` gives it this one too.

Modes of folders and files that already exist are never changed: `crm doctor` warns about a data root that
others can enter, and says the command that closes it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

#: No permission for group or others on anything the pipeline creates.
PRIVATE_UMASK = 0o077


def private_files() -> None:
    """Create every folder 0700 and every file 0600 from now on, in this process and the ones it starts."""
    os.umask(PRIVATE_UMASK)


def make_private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) for this user alone; an existing folder keeps its mode."""
    private_files()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def shared_with_others(path: Path) -> str | None:
    """How group or others may use the existing folder `path` (e.g. 'group r-x, others r-x'), or None when
    they may not (or it does not exist yet). A data root others cannot enter keeps everything under it private."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    shared = []
    for who, read, write, execute in (
        ("group", stat.S_IRGRP, stat.S_IWGRP, stat.S_IXGRP),
        ("others", stat.S_IROTH, stat.S_IWOTH, stat.S_IXOTH),
    ):
        bits = "".join(letter if mode & bit else "-" for letter, bit in (("r", read), ("w", write), ("x", execute)))
        if bits != "---":
            shared.append(f"{who} {bits}")
    return ", ".join(shared) or None
