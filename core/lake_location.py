"""Where the lake is: a local folder, or a prefix in an S3 bucket, and how each engine reaches it.

`lake.uri` names it: a folder (`{data_dir}/lake`, the default) or `s3a://bucket/prefix` (`s3://` is read the
same way). Spark reaches an object store through Hadoop's S3A connector (`s3a://` paths, `fs.s3a.*` settings,
the `hadoop-aws` package), delta-rs and pyarrow through their own S3 clients (`s3://` paths and storage
options): one `LakeLocation` gives each its form, so no caller spells a scheme or an option itself.

Credentials never come from `conf/`: the key pair is the environment's `AWS_ACCESS_KEY_ID` and
`AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN` for temporary ones), the variables every S3 tool reads; an
Airflow task takes them from the connection `airflow.lake_conn_id` instead when that exists
(`core.airflow_task`). The endpoint of an S3-compatible store (SeaweedFS, Ceph, MinIO, R2) is `lake.endpoint_url`,
else `AWS_ENDPOINT_URL`; the region `lake.region`, else `AWS_REGION`/`AWS_DEFAULT_REGION`. The secret is kept
out of this object's repr and never logged. Spark is not given the key pair as settings (they would show in its
UI and event logs): its S3A connector reads the same variables from the JVM's environment.

No heavy imports here: `core.config` uses this module.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

#: The schemes a lake URI on S3 may have; Spark's form is s3a://, delta-rs' and pyarrow's s3://.
S3_SCHEMES = ("s3a", "s3")
#: hadoop-aws of the Hadoop that the pyspark wheel bundles (its jars/hadoop-client-api-3.5.0.jar): S3A for Spark.
HADOOP_AWS_PACKAGE = "org.apache.hadoop:hadoop-aws:3.5.0"
#: The AWS SDK v2 reads the key pair from these variables (the S3A connector's credentials provider).
ENVIRONMENT_CREDENTIALS_PROVIDER = "software.amazon.awssdk.auth.credentials.EnvironmentVariableCredentialsProvider"


class LakeLocationError(ValueError):
    """The lake's URI or its object store's access is incomplete; the message says what is missing."""


@dataclass(frozen=True)
class LakeLocation:
    """The lake's root: a local folder (`bucket` empty) or a prefix in an S3 bucket, with what reaches it."""

    folder: Path | None = None
    bucket: str = ""
    prefix: str = ""
    endpoint_url: str = ""
    region: str = ""
    path_style: bool = True
    access_key_id: str = ""
    secret_access_key: str = field(default="", repr=False)
    session_token: str = field(default="", repr=False)

    @classmethod
    def parse(
        cls, uri: str | Path, endpoint_url: str = "", region: str = "", path_style: bool = True, environ: Mapping[str, str] | None = None
    ) -> LakeLocation:
        """The location of `uri`; for an object store the endpoint, region and key pair from the arguments, else
        the environment (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`)."""
        if isinstance(uri, LakeLocation):
            return uri
        text = str(uri)
        scheme = urlsplit(text).scheme
        if scheme not in S3_SCHEMES:
            if scheme and len(scheme) > 1:  # C:\ is a path; gs://, abfss:// are not supported (yet)
                raise LakeLocationError(f"lake.uri: unsupported scheme {scheme}:// in {text!r}; expected a folder or s3a://bucket/prefix")
            return cls(folder=Path(text))
        environ = os.environ if environ is None else environ
        parts = urlsplit(text)
        if not parts.netloc:
            raise LakeLocationError(f"lake.uri: no bucket in {text!r}; expected s3a://bucket/prefix")
        location = cls(
            bucket=parts.netloc,
            prefix=parts.path.strip("/"),
            endpoint_url=(endpoint_url or environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL") or "").rstrip("/"),
            region=region or environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or "us-east-1",
            path_style=path_style,
            access_key_id=environ.get("AWS_ACCESS_KEY_ID", ""),
            secret_access_key=environ.get("AWS_SECRET_ACCESS_KEY", ""),
            session_token=environ.get("AWS_SESSION_TOKEN", ""),
        )
        if not (location.access_key_id and location.secret_access_key):
            raise LakeLocationError(
                f"lake.uri is {location}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment "
                "(or, in an Airflow task, the connection airflow.lake_conn_id)"
            )
        return location

    @property
    def is_local(self) -> bool:
        return not self.bucket

    @property
    def uses_http(self) -> bool:
        """True when the endpoint is plain HTTP (a local test server): delta-rs refuses it unless told."""
        return self.endpoint_url.startswith("http://")

    def __str__(self) -> str:
        return str(self.folder) if self.is_local else self.spark_uri()

    # ---- paths ---------------------------------------------------------------------------------
    def _key(self, *parts: str) -> str:
        return "/".join(part.strip("/") for part in (self.prefix, *parts) if part.strip("/"))

    def spark_uri(self, *parts: str) -> str:
        """The path Spark reads and writes: a folder, or s3a://bucket/prefix/parts."""
        return self._path("s3a://", *parts)

    def delta_rs_uri(self, *parts: str) -> str:
        """The path delta-rs reads and writes: a folder, or s3://bucket/prefix/parts."""
        return self._path("s3://", *parts)

    def arrow_path(self, *parts: str) -> str:
        """The path in `arrow_filesystem()`: a folder, or bucket/prefix/parts."""
        return self._path("", *parts)

    def _path(self, scheme: str, *parts: str) -> str:
        if self.is_local:
            return str(self.folder.joinpath(*parts))
        return f"{scheme}{self.bucket}/{self._key(*parts)}".rstrip("/")

    def child(self, *parts: str) -> LakeLocation:
        """The location of a folder (or prefix) under this one, reached the same way."""
        if self.is_local:
            return replace(self, folder=self.folder.joinpath(*parts))
        return replace(self, prefix=self._key(*parts))

    def remove(self) -> None:
        """Delete everything under this location (a scratch table's folder or prefix), if anything is there."""
        filesystem, path = self.arrow_filesystem(), self.arrow_path()
        from pyarrow import fs  # deferred: core.config imports this module

        if filesystem.get_file_info(path).type != fs.FileType.NotFound:
            filesystem.delete_dir(path)

    # ---- access --------------------------------------------------------------------------------
    def delta_rs_options(self) -> dict[str, str] | None:
        """delta-rs' storage options (None for a folder).

        `conditional_put: etag` makes each commit a PutObject with `If-None-Match: *`: of two writers that
        commit the same version, the store refuses the second (412) and delta-rs retries it on the next version
        or fails with a conflict, instead of one overwriting the other's commit. delta-rs 1.x sets it by default
        for S3; it is stated here so that a change of default cannot undo it.
        """
        if self.is_local:
            return None
        options = {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_REGION": self.region,
            "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "false" if self.path_style else "true",
            "conditional_put": "etag",
        }
        if self.session_token:
            options["AWS_SESSION_TOKEN"] = self.session_token
        if self.endpoint_url:
            options["AWS_ENDPOINT_URL"] = self.endpoint_url
        if self.uses_http:
            options["AWS_ALLOW_HTTP"] = "true"
        return options

    def arrow_filesystem(self):
        """A pyarrow file system for `arrow_path()`s: the local one, or S3 with this store's access."""
        from pyarrow import fs  # deferred: core.config imports this module

        if self.is_local:
            return fs.LocalFileSystem()
        endpoint = urlsplit(self.endpoint_url) if self.endpoint_url else None
        return fs.S3FileSystem(
            access_key=self.access_key_id,
            secret_key=self.secret_access_key,
            session_token=self.session_token or None,
            region=self.region,
            endpoint_override=endpoint.netloc if endpoint else None,
            scheme=endpoint.scheme if endpoint else "https",
            force_virtual_addressing=not self.path_style,
        )

    def spark_packages(self) -> list[str]:
        """JVM packages Spark needs beyond the configured ones to reach the lake: S3A for an object store."""
        return [] if self.is_local else [HADOOP_AWS_PACKAGE]

    def spark_settings(self) -> dict[str, str]:
        """Spark's `fs.s3a.*` settings for this store (none for a folder); no secret among them."""
        if self.is_local:
            return {}
        values = {
            "spark.hadoop.fs.s3a.aws.credentials.provider": ENVIRONMENT_CREDENTIALS_PROVIDER,
            "spark.hadoop.fs.s3a.path.style.access": "true" if self.path_style else "false",
            "spark.hadoop.fs.s3a.endpoint.region": self.region,
        }
        if self.endpoint_url:
            values["spark.hadoop.fs.s3a.endpoint"] = self.endpoint_url
            values["spark.hadoop.fs.s3a.connection.ssl.enabled"] = "false" if self.uses_http else "true"
        return values
