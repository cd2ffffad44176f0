"""A throwaway S3-compatible object store for tests: SeaweedFS (`weed server` with its S3 gateway).

Like tests/dbservers.py: :func:`seaweedfs_server` starts the binary as a child process that we own, in a fresh
temporary folder (its volumes, metadata and logs), listening on free TCP ports of 127.0.0.1 only, with an S3
access key and secret generated for this server (given to weed in its S3 identities file, never logged);
creates one bucket; yields an :class:`ObjectStore`; and on exit stops the server by the pid we started and
removes the folder. The binary is `.cache/bin/weed` (`make seaweedfs`) or `$CRM_WEED`; a missing binary is an
error that says how to build it (tests fail, they do not skip).

SeaweedFS would report anonymous usage to its telemetry server and open an Iceberg and a Lance catalog port by
default: all off here.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

try:  # tests/ on sys.path (pytest "prepend" import mode), or imported as a package
    import dbservers as servers
except ImportError:
    from tests import dbservers as servers

log = logging.getLogger(__name__)

__all__ = ["ObjectStore", "seaweedfs_server", "weed_binary"]

BUCKET = "crm-lake"
#: Seconds to wait for the gateway to accept the bucket once it answers (the filer joins the master first).
BUCKET_TIMEOUT = 60.0

_WEED_MISSING = (
    "SeaweedFS binary not found at {path}: `make seaweedfs` builds it (go install of tools/seaweedfs, which pins "
    "github.com/seaweedfs/seaweedfs, from the Go module proxy); or set CRM_WEED to a weed binary"
)


@dataclass(frozen=True)
class ObjectStore:
    """An S3 endpoint with one bucket and the key pair that may use it."""

    endpoint_url: str  # http://127.0.0.1:<port>
    bucket: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    region: str = "us-east-1"
    pid: int = field(default=0, compare=False)
    base_dir: Path | None = field(default=None, compare=False)
    timings: dict = field(default_factory=dict, compare=False, repr=False)

    def environment(self) -> dict[str, str]:
        """The variables S3 tools (AWS CLI, boto3, delta-rs, the pipeline's lake) read to reach this store."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_REGION": self.region,
        }

    def filesystem(self):
        """A pyarrow S3 file system on this store (to list and read objects as they are)."""
        from pyarrow import fs

        return fs.S3FileSystem(
            access_key=self.access_key_id,
            secret_key=self.secret_access_key,
            endpoint_override=self.endpoint_url,
            scheme="http",
            region=self.region,
            force_virtual_addressing=False,
            allow_bucket_creation=True,
            retry_strategy=fs.AwsStandardS3RetryStrategy(max_attempts=2),
        )


def weed_binary() -> Path:
    """Where `weed` is: $CRM_WEED, else the project's .cache/bin/weed (`make seaweedfs`)."""
    return Path(os.environ.get("CRM_WEED") or Path(__file__).resolve().parent.parent / ".cache" / "bin" / "weed")


def _answers(port: int) -> bool:
    """The S3 gateway answers HTTP (any status: an anonymous request is refused with 403)."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(f"http://{servers.HOST}:{port}/", timeout=1).close()
        return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def _create_bucket(store: ObjectStore, proc: subprocess.Popen, logfile: Path) -> None:
    """Create the bucket, retrying while the gateway's filer is not yet connected to the master."""
    from pyarrow.lib import ArrowException

    deadline = time.monotonic() + BUCKET_TIMEOUT
    while True:
        try:
            store.filesystem().create_dir(store.bucket)
            return
        except (ArrowException, OSError) as error:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"weed: bucket {store.bucket} not created ({error}); last lines of {logfile}:\n{servers._tail(logfile)}"
                ) from None
            time.sleep(0.3)


@contextmanager
def seaweedfs_server(base_dir: Path | None = None, bucket: str = BUCKET) -> Iterator[ObjectStore]:
    """Start a throwaway SeaweedFS (master, volume, filer, S3 gateway in one process); yields an :class:`ObjectStore`."""
    t0 = time.monotonic()
    binary = weed_binary()
    if not binary.is_file():
        raise RuntimeError(_WEED_MISSING.format(path=binary))
    base = servers._make_base(base_dir)
    proc: subprocess.Popen | None = None
    store: ObjectStore | None = None
    try:
        data = base / "data"
        data.mkdir()
        access_key_id = "crm" + secrets.token_hex(8)
        secret_access_key = secrets.token_urlsafe(30)
        identities = base / "s3.json"
        identities.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "crm-tests",
                            "credentials": [{"accessKey": access_key_id, "secretKey": secret_access_key}],
                            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                        }
                    ]
                }
            )
        )
        identities.chmod(0o600)
        logfile = base / "weed.log"
        for attempt in range(servers.PORT_ATTEMPTS):
            ports = {
                name: servers._free_port()
                for name in ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3", "s3.grpc")
            }
            command = [
                str(binary),
                "server",
                f"-dir={data}",
                f"-ip={servers.HOST}",
                f"-ip.bind={servers.HOST}",
                f"-master.port={ports['master']}",
                f"-master.port.grpc={ports['master.grpc']}",
                "-master.telemetry=false",
                "-master.volumeSizeLimitMB=64",
                "-volume.max=0",
                f"-volume.port={ports['volume']}",
                f"-volume.port.grpc={ports['volume.grpc']}",
                "-volume.preStopSeconds=0",
                "-filer",
                f"-filer.port={ports['filer']}",
                f"-filer.port.grpc={ports['filer.grpc']}",
                f"-filer.localSocket={base / 'filer.sock'}",
                "-s3",
                f"-s3.port={ports['s3']}",
                f"-s3.port.grpc={ports['s3.grpc']}",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                f"-s3.localSocket={base / 's3.sock'}",
                f"-s3.config={identities}",
            ]
            with logfile.open("ab") as out:
                proc = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=str(base),
                    env=servers._env(),
                    start_new_session=True,
                    preexec_fn=servers._die_with_parent(signal.SIGTERM),
                )
            try:
                servers._wait_ready(proc, lambda: _answers(ports["s3"]), logfile, "weed", lambda tail: "address already in use" in tail)
                break
            except servers._PortInUse:
                proc.wait()
                proc = None
                if attempt == servers.PORT_ATTEMPTS - 1:
                    raise RuntimeError(
                        f"weed could not bind free ports after {servers.PORT_ATTEMPTS} attempts; log:\n{servers._tail(logfile)}"
                    ) from None
        store = ObjectStore(
            endpoint_url=f"http://{servers.HOST}:{ports['s3']}",
            bucket=bucket,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            pid=proc.pid,
            base_dir=base,
        )
        _create_bucket(store, proc, logfile)
        store.timings["start"] = time.monotonic() - t0
        log.info("weed pid %d, S3 on port %d, started in %.2fs", proc.pid, ports["s3"], store.timings["start"])
        yield store
    finally:
        t1 = time.monotonic()
        if proc is not None:
            # weed's graceful stop gives its servers up to 15 s (measured: 15.3 s every time); the data is
            # thrown away, so nothing is lost by not waiting.
            servers._stop_process(proc, signal.SIGKILL, "weed")
        servers._rmtree(base)
        if store is not None:
            store.timings["stop"] = time.monotonic() - t1
            log.info("weed stopped in %.2fs", store.timings["stop"])
