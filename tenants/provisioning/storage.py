"""S3 access for tenant provisioning: the client, per-tenant bucket names, bucket creation and a health probe.

Configuration comes from the standard AWS variables: ``AWS_ENDPOINT_URL_S3`` (set for the
local S3 server, absent on real AWS), ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``
(or any other source in boto3's credential chain in production) and ``AWS_DEFAULT_REGION``.
"""

from __future__ import annotations

import os
import re

import boto3
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tenants.provisioning.base import TENANT_SLUG_RE

DEFAULT_REGION = "us-east-1"

_BUCKET_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_BUCKET_PREFIX_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def _endpoint_url() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or None


def _region() -> str:
    return os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION


def s3_client(*, connect_timeout: float = 5.0, read_timeout: float = 60.0, max_attempts: int = 5) -> BaseClient:
    """A boto3 S3 client with signature v4, bounded timeouts and standard-mode retries."""
    endpoint_url = _endpoint_url()
    config = Config(
        signature_version="s3v4",
        # Local S3 servers (rclone serve s3) only understand path-style requests. On real AWS
        # path-style is deprecated, so botocore's virtual-hosted default is kept there.
        s3={"addressing_style": "path" if endpoint_url else "auto"},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"max_attempts": max_attempts, "mode": "standard"},
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, region_name=_region(), config=config)


def bucket_name_for(slug: str, prefix: str = "readroom") -> str:
    """The tenant's bucket name, ``<prefix>-<slug>``; raises ValueError instead of bending an invalid name.

    Bending (trimming a trailing hyphen, truncating) could map two tenants onto one bucket,
    so an unusable slug or prefix is refused. On AWS bucket names are global: production
    passes a prefix unique to the account and environment.
    """
    if not TENANT_SLUG_RE.fullmatch(slug):
        raise ValueError(f"tenant slug {slug!r} must match {TENANT_SLUG_RE.pattern}")
    if not _BUCKET_PREFIX_RE.fullmatch(prefix):
        raise ValueError(f"bucket prefix {prefix!r} must be lowercase letters, digits and hyphens")
    name = f"{prefix}-{slug}"
    if not _BUCKET_NAME_RE.fullmatch(name) or name.startswith("xn--") or name.endswith("-s3alias"):
        raise ValueError(
            f"{name!r} is not a valid S3 bucket name (3-63 lowercase characters, alphanumeric at both ends)"
        )
    return name


def bucket_ensure(name: str, *, client: BaseClient | None = None) -> None:
    """Create the bucket unless this account already owns it; a bucket owned by someone else is an error."""
    client = client or s3_client()
    arguments: dict[str, object] = {"Bucket": name}
    region = _region()
    # us-east-1 is the one region that rejects an explicit LocationConstraint.
    if _endpoint_url() is None and region != DEFAULT_REGION:
        arguments["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        client.create_bucket(**arguments)
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code")
        if code == "BucketAlreadyOwnedByYou":
            return
        if code != "BucketAlreadyExists":
            raise
        # Some S3 servers (rclone serve s3) answer BucketAlreadyExists even to the owner;
        # HeadBucket tells ours (200) from a stranger's (403 on AWS).
        try:
            client.head_bucket(Bucket=name)
        except ClientError:
            raise error from None


def s3_ping(timeout: float = 2.0) -> str | None:
    """Return None when the S3 server answers ListBuckets with our credentials, else a short reason."""
    client = s3_client(connect_timeout=timeout, read_timeout=timeout, max_attempts=1)
    try:
        client.list_buckets()
    except ClientError as error:
        details = error.response.get("Error", {})
        return f"S3 refused ListBuckets: {details.get('Code', 'error')} {details.get('Message', '')}".strip()
    except BotoCoreError as error:
        return f"S3 unreachable at {_endpoint_url() or 'AWS'}: {error}"
    return None


_shared: dict[int, BaseClient] = {}


def shared_s3_client() -> BaseClient:
    """One client per process: creating a boto3 client costs far more than an upload of a small object.

    Clients are thread-safe but must not cross a fork (Celery prefork workers), hence the pid key.
    """
    pid = os.getpid()
    client = _shared.get(pid)
    if client is None:
        client = _shared[pid] = s3_client()
    return client
