"""S3 and S3-compatible stores through ``pyarrow.fs.S3FileSystem``, with errors a user can act on.

- Credentials come from the standard AWS chain, resolved by the AWS SDK inside pyarrow: environment
  (``AWS_ACCESS_KEY_ID`` ...), ``AWS_PROFILE`` / ``~/.aws``, web identity, instance or task role.
- The endpoint of an S3-compatible store (MinIO, Ceph, moto) comes from ``set_endpoint`` (the CLI's
  ``--endpoint-url``) or the standard ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` variables. Without
  one, each bucket's region is looked up once, because pyarrow does not follow S3's cross-region
  redirects; the configured region is the fallback.
- Every request is retried by the SDK's standard strategy (``AWS_MAX_ATTEMPTS`` attempts, default
  ``DEFAULT_MAX_ATTEMPTS``): throttling, 5xx answers, dropped connections and timeouts, with jittered
  exponential backoff (up to 1 s, 2 s, 4 s ..., at most 20 s). Reads are ranged GETs, so a retried
  read returns exactly the bytes asked for: nothing is lost or read twice.
- Failures become ``InputError`` naming the object and what is wrong (``describe``), never an
  Arrow traceback.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from tunekit_data.errors import InputError

if TYPE_CHECKING:
    from pyarrow import fs

SCHEME = "s3://"
# The one spelling of S3 URIs for every check and option (as regex text: pyarrow's kernels take it too).
S3_BUCKET_NAME = r"[a-z0-9][.\-a-z0-9]{1,61}[a-z0-9]"  # S3's bucket naming rules, 3-63 characters
# Bedrock API S3Location pattern, plus a non-empty key limited to the characters AWS's validators
# accept (spec M5): the API alone would let through keys the service's pre-checks reject.
S3_OBJECT_URI = rf"^s3://{S3_BUCKET_NAME}/[A-Za-z0-9_./\-]+$"
S3_PREFIX_URI = rf"^s3://(?P<bucket>{S3_BUCKET_NAME})(/.*)?$"  # a valid bucket, then any prefix
S3_LEADING_BUCKET = r"^s3://(?P<bucket>[^/]+)"  # whatever stands where the bucket goes, valid or not
DEFAULT_MAX_ATTEMPTS = 6
_ENDPOINT_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
# Where the AWS chain finds credentials other than an instance role (which only a request can tell).
_CREDENTIAL_VARS = (
    "AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)  # fmt: skip
# Errors that are about one object (it is missing or not readable), not about the store.
_OBJECT_ERRORS = {"NO_SUCH_BUCKET", "NO_SUCH_KEY", "RESOURCE_NOT_FOUND", "ACCESS_DENIED"}
_SERVER_ERRORS = {"INTERNAL_FAILURE", "SERVICE_UNAVAILABLE", "REQUEST_TIMEOUT"}
_AWS_ERROR = re.compile(r"AWS Error (\w+)(?: \(HTTP status (\d+)\))?")
# The SDK's error names (``AWS Error NAME``), as a user would say them.
_REASONS = {
    "NO_SUCH_BUCKET": "no such bucket",
    "NO_SUCH_KEY": "no such key",
    "RESOURCE_NOT_FOUND": "no such key",
    "INVALID_ACCESS_KEY_ID": "the access key id is not valid for this endpoint",
    "SIGNATURE_DOES_NOT_MATCH": "the secret key does not match the access key id",
    "MISSING_AUTHENTICATION_TOKEN": "no credentials (set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or run with an instance role)",
    "EXPIRED_TOKEN": "the session token has expired",
    "NETWORK_CONNECTION": "cannot reach the S3 endpoint",
    "REQUEST_TIME_TOO_SKEWED": "the local clock is too far off the server's",
    "SLOW_DOWN": "still throttled after retrying (SlowDown)",
    "THROTTLING": "still throttled after retrying",
}


@dataclass(frozen=True, slots=True)
class S3Path:
    """An ``s3://bucket/key`` URI split into its bucket and key (the key may be empty or a prefix)."""

    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> S3Path:
        """Split ``uri``; InputError if it names no bucket."""
        bucket, _, key = uri[len(SCHEME) :].partition("/")
        if not uri.startswith(SCHEME) or not bucket:
            msg = f"{uri}: not an S3 URI (expected s3://bucket/key)"
            raise InputError(msg)
        return cls(bucket, key)

    @property
    def uri(self) -> str:
        """The ``s3://`` form."""
        return f"{SCHEME}{self.bucket}/{self.key}"

    @property
    def arrow(self) -> str:
        """The ``bucket/key`` form pyarrow's filesystem takes."""
        return f"{self.bucket}/{self.key}".rstrip("/")

    def sibling(self, name: str) -> S3Path:
        """The key ``name`` in this key's "directory"."""
        parent = self.key.rpartition("/")[0]
        return S3Path(self.bucket, f"{parent}/{name}" if parent else name)


def bucket_of(uri: str) -> str | None:
    """The bucket of an ``s3://bucket/key`` URI, valid or not; None if ``uri`` is not one."""
    m = re.match(S3_LEADING_BUCKET, uri)
    return m.group("bucket") if m else None


def is_s3(uri: str) -> bool:
    """True for ``s3://`` URIs."""
    return uri.startswith(SCHEME)


def set_endpoint(url: str | None) -> None:
    """Use the S3-compatible store at ``url`` (e.g. ``http://127.0.0.1:9000``) for this process.

    It is stored as ``AWS_ENDPOINT_URL`` so that worker processes started later inherit it.
    """
    if url:
        os.environ["AWS_ENDPOINT_URL"] = url


def endpoint() -> str | None:
    """The configured endpoint URL, or None for AWS itself."""
    return next((os.environ[v] for v in _ENDPOINT_VARS if os.environ.get(v)), None)


def filesystem(bucket: str) -> fs.S3FileSystem:
    """The filesystem that serves ``bucket`` (one per endpoint, region and retry budget; cached)."""
    url = endpoint()
    attempts = int(os.environ.get("AWS_MAX_ATTEMPTS") or DEFAULT_MAX_ATTEMPTS)
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if url is None:
        region = _bucket_region(bucket) or region
    return _filesystem(url, region, attempts)


@cache
def _bucket_region(bucket: str) -> str | None:
    from pyarrow import fs  # here, not at the top: every `ds` command imports this module (set_endpoint)

    try:
        return fs.resolve_s3_region(bucket)
    except OSError:  # offline, or a name S3 does not know: the request itself will say what is wrong
        return None


@cache
def _filesystem(url: str | None, region: str | None, attempts: int) -> fs.S3FileSystem:
    from pyarrow import fs

    options: dict[str, object] = {}
    if url is not None:
        parts = urlsplit(url if "://" in url else f"https://{url}")
        options = {"endpoint_override": parts.netloc, "scheme": parts.scheme}
    return fs.S3FileSystem(
        region=region,
        retry_strategy=fs.AwsStandardS3RetryStrategy(max_attempts=attempts),
        # Writers are only ever new temporary keys (see storage.open_output); creating the
        # multipart upload when the stream opens checks bucket and permissions before any work.
        allow_delayed_open=False,
        **options,
    )


def describe(exc: OSError) -> str:
    """A short reason for a failed S3 request (``no such bucket``, ``access denied`` ...)."""
    if isinstance(exc, FileNotFoundError):
        return "no such key"
    text = str(exc)
    m = _AWS_ERROR.search(text)
    if m is None:
        return text.splitlines()[0] if text else type(exc).__name__
    name, status = m.group(1), m.group(2)
    if name == "ACCESS_DENIED":
        return f"access denied ({_credentials_hint()})"
    if name in _REASONS:
        reason = _REASONS[name]
        return f"{reason} ({endpoint()})" if name == "NETWORK_CONNECTION" and endpoint() else reason
    what = name.lower().replace("_", " ") + (f", HTTP {status}" if status else "")
    if name in _SERVER_ERRORS or (status or "").startswith("5"):
        return f"the server kept failing after retrying ({what})"
    return what


def _credentials_hint() -> str:
    if any(os.environ.get(v) for v in _CREDENTIAL_VARS) or (Path.home() / ".aws").is_dir():
        return "check the credentials in use and the bucket policy"
    # Without credentials the SDK sends unsigned requests, which S3 refuses as access denied.
    return "no credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or run with an instance role"


def about_object(exc: OSError) -> bool:
    """True if ``exc`` says the object is missing or unreadable, rather than the store failing."""
    m = _AWS_ERROR.search(str(exc))
    return isinstance(exc, FileNotFoundError) or (m is not None and m.group(1) in _OBJECT_ERRORS)


def error(path: S3Path, exc: OSError, doing: str) -> InputError:
    """An InputError for ``path``: ``s3://b/k: cannot {doing}: {reason}``.

    A missing object in a missing bucket reads as "no such key" to pyarrow; one HEAD of the bucket
    tells the two apart, so the user learns which name is wrong.
    """
    reason = describe(exc)
    if reason == "no such key" and not bucket_exists(path.bucket):
        reason = "no such bucket"
    msg = f"{path.uri}: cannot {doing}: {reason}"
    return InputError(msg)


def bucket_exists(bucket: str) -> bool:
    """True if ``bucket`` exists, or cannot be inspected (then another error says what is wrong)."""
    from pyarrow import fs

    try:
        return filesystem(bucket).get_file_info(bucket).type != fs.FileType.NotFound
    except OSError:
        return True
