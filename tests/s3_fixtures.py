"""A real S3-compatible server for tests: moto's server mode (PyPI `moto[server]`), in this
process on 127.0.0.1 with a free port, one bucket per test.

`s3` points this process at the bucket (ROSTERDROP_STORAGE_URL, boto3's own AWS_* variables);
`S3.env` is the same for a `rosterdrop serve` or `rosterdrop import` in a subprocess.
`backend` runs a test once on the data folder and once on S3.
"""

import itertools
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

_buckets = itertools.count()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """The endpoint URL of a moto server running for the whole session."""
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@dataclass
class S3:
    """One test's bucket, and what rosterdrop keeps in it (under `prefix`)."""

    client: Any
    bucket: str
    prefix: str
    env: dict[str, str]

    def objects(self, folder: str = "") -> list[str]:
        """The objects under the prefix (and `folder` in it: `inbox/` for the raw uploads), as
        keys relative to the prefix (`inbox/SLUG/...`)."""
        found = self.client.list_objects_v2(Bucket=self.bucket, Prefix=f"{self.prefix}/{folder}")
        return sorted(o["Key"].removeprefix(f"{self.prefix}/") for o in found.get("Contents", []))

    def read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=f"{self.prefix}/{key}")["Body"].read()

    def unfinished(self) -> list[str]:
        """Keys of the multipart uploads begun and neither completed nor aborted."""
        found = self.client.list_multipart_uploads(Bucket=self.bucket)
        return [u["Key"] for u in found.get("Uploads", [])]


@pytest.fixture
def s3(moto_endpoint, monkeypatch, settings) -> S3:
    """A fresh bucket that this process keeps raw uploads in."""
    env = {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "rosterdrop-test",
        "AWS_SECRET_ACCESS_KEY": "rosterdrop-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    bucket = f"rosterdrop-{next(_buckets)}"
    client = boto3.session.Session().client("s3")
    client.create_bucket(Bucket=bucket)
    env["ROSTERDROP_STORAGE_URL"] = settings.STORAGE_URL = f"s3://{bucket}/rd"
    return S3(client, bucket, "rd", env)


@pytest.fixture(params=["folder", "s3"])
def backend(request) -> S3 | None:
    """Run the test on the data folder (None) and on S3 (the bucket)."""
    return request.getfixturevalue("s3") if request.param == "s3" else None


def is_stored(backend: S3 | None, key: str) -> bool:
    """Whether raw bytes are kept under `key` in the test's storage."""
    from django.conf import settings

    return key in backend.objects() if backend else (settings.DATA_DIR / key).is_file()
