"""Global test guards: nothing downloads, ever, and S3 means a local moto server.

The ``s3`` fixture serves a real S3-compatible endpoint on 127.0.0.1: moto in server mode (one per
session), behind a small reverse proxy that can fail requests on demand (``S3Server.faults``), so
the retry and error paths run against real HTTP. Tests reach it through ``AWS_ENDPOINT_URL``, as a
user would; the AWS SDK never looks for an instance role or a real region.
"""

from __future__ import annotations

import http.client
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"  # no instance-metadata lookups (169.254.169.254)

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


@dataclass
class Faults:
    """What the proxy does to the next requests: answer them with an S3 error, or cut their bodies."""

    fail: int = 0
    status: int = 500
    code: str = "InternalError"
    truncate: int = 0  # GET responses sent with only half of their body, then the connection dropped
    only: str = ""  # fail only requests whose path contains this
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(self, n: int, *, status: int = 500, code: str = "InternalError", only: str = "") -> None:
        """Answer the next ``n`` requests (whose path contains ``only``) with ``status`` and the S3 error ``code``."""
        with self.lock:
            self.fail, self.status, self.code, self.only = n, status, code, only

    def drop_next(self, n: int) -> None:
        """Drop the connection half-way through the body of the next ``n`` GET responses."""
        with self.lock:
            self.truncate = n

    def take(self, method: str, path: str) -> str | None:
        """The fault for this request, if any: "fail" or "truncate"."""
        with self.lock:
            if self.fail and self.only in path:
                self.fail -= 1
                return "fail"
            if self.truncate and method == "GET":
                self.truncate -= 1
                return "truncate"
        return None

    def clear(self) -> None:
        """No more faults."""
        self.fail_next(0)
        self.drop_next(0)


class _FaultProxy:
    """Forwards every request to moto, unless ``faults`` says otherwise."""

    def __init__(self, target_port: int) -> None:
        from werkzeug.serving import make_server

        self.faults = Faults()
        self._target_port = target_port
        self._local = threading.local()
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.port = self._server.server_port
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _forward(self, method: str, url: str, body: bytes, headers: dict[str, str]) -> http.client.HTTPResponse:
        conn = getattr(self._local, "conn", None) or http.client.HTTPConnection("127.0.0.1", self._target_port, timeout=30)
        self._local.conn = conn
        try:
            conn.request(method, url, body=body, headers=headers)
            return conn.getresponse()
        except (OSError, http.client.HTTPException):
            conn.close()
            self._local.conn = None
            raise

    def _app(self, environ, start_response):
        from werkzeug.wsgi import get_input_stream

        method = environ["REQUEST_METHOD"]
        fault = self.faults.take(method, environ["PATH_INFO"])
        if fault == "fail":
            xml = f"<?xml version='1.0'?><Error><Code>{self.faults.code}</Code><Message>injected</Message></Error>".encode()
            start_response(f"{self.faults.status} Injected", [("Content-Type", "application/xml"), ("Content-Length", str(len(xml)))])
            return [b"" if method == "HEAD" else xml]
        body = get_input_stream(environ).read()
        headers = {k[5:].replace("_", "-"): v for k, v in environ.items() if k.startswith("HTTP_") and k[5:].replace("_", "-").lower() not in _HOP_BY_HOP}
        if environ.get("CONTENT_TYPE"):
            headers["Content-Type"] = environ["CONTENT_TYPE"]
        headers["Content-Length"] = str(len(body))
        query = environ.get("QUERY_STRING")
        url = environ.get("RAW_URI") or environ["PATH_INFO"] + (f"?{query}" if query else "")
        response = self._forward(method, url, body, headers)
        data = response.read()
        start_response(f"{response.status} {response.reason}", [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP])
        if fault == "truncate" and len(data) > 1:
            return _cut(data)
        return [data]

    def stop(self) -> None:
        self._server.shutdown()


def _cut(data: bytes) -> Iterator[bytes]:
    yield data[: len(data) // 2]
    msg = "injected: connection dropped mid-body"
    raise ConnectionAbortedError(msg)


@dataclass
class S3Server:
    """The test S3 endpoint: ``endpoint`` (through the proxy), ``client`` (boto3, straight to moto)."""

    endpoint: str
    client: object
    faults: Faults

    def bucket(self) -> str:
        """Create a fresh bucket and return its name."""
        name = f"tk-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=name)
        return name

    def put(self, uri: str, data: bytes) -> None:
        """Store ``data`` at ``s3://bucket/key``."""
        bucket, _, key = uri[len("s3://") :].partition("/")
        self.client.put_object(Bucket=bucket, Key=key, Body=data)

    def get(self, uri: str) -> bytes:
        """The bytes at ``s3://bucket/key``."""
        bucket, _, key = uri[len("s3://") :].partition("/")
        return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def keys(self, bucket: str) -> list[str]:
        """Every key in ``bucket``."""
        return [o["Key"] for o in self.client.list_objects_v2(Bucket=bucket).get("Contents", [])]


_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def _s3_session() -> Iterator[S3Server]:
    pytest.importorskip("moto")
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.CRITICAL)  # one access-log line per request otherwise
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    port = moto.get_host_and_port()[1]
    proxy = _FaultProxy(port)
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    yield S3Server(f"http://127.0.0.1:{proxy.port}", client, proxy.faults)
    proxy.stop()
    moto.stop()


@pytest.fixture
def s3(_s3_session: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """The session's S3 server, configured for this test through the standard AWS variables."""
    for name, value in {**_CREDENTIALS, "AWS_ENDPOINT_URL": _s3_session.endpoint}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_REGION", "AWS_MAX_ATTEMPTS"):
        monkeypatch.delenv(name, raising=False)
    yield _s3_session
    _s3_session.faults.clear()


@pytest.fixture(scope="session")
def ray_cluster():
    """One in-process Ray instance (2 CPUs) for every ``--engine ray`` test of the session: starting
    Ray costs seconds, so it is started once and shut down at the end."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for servers and process groups a test starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
