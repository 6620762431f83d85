"""The ``--api-key`` check: a bearer token, or for Bedrock clients an AWS SigV4 signature made with the key.

OpenAI clients and Bedrock API keys send ``Authorization: Bearer KEY``. boto3 sends a bearer token only
over HTTPS, so a plain-HTTP Bedrock client signs with SigV4 instead: the server accepts a signature
made with the API key as the secret access key (any access key id), recomputed with botocore's own
signer over the request as received, so the key never travels.
"""

from __future__ import annotations

import hmac
import re

_SIGV4 = re.compile(r"AWS4-HMAC-SHA256 Credential=(?P<key_id>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request, ?"
                    r"SignedHeaders=(?P<signed>[^,]+), ?Signature=(?P<signature>[0-9a-f]{64})")  # fmt: skip


def authorized(method: str, url: str, headers: dict[str, str], body: bytes, key: str) -> bool:
    """Whether a request carries ``key``: as a bearer token, or as the secret of its SigV4 signature.

    ``headers`` are lower-cased names; ``url`` is the URL as the client addressed it (raw path and query).
    """
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return hmac.compare_digest(token.strip().encode(), key.encode())
    match = _SIGV4.fullmatch(headers.get("authorization", "").strip())
    return match is not None and hmac.compare_digest(
        _signature(method, url, headers, body, key, match), match["signature"]
    )


def _signature(
    method: str, url: str, headers: dict[str, str], body: bytes, key: str, match: re.Match[str]
) -> str:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    signed = match["signed"].split(";")
    request = AWSRequest(
        method=method, url=url, data=body, headers={name: headers.get(name, "") for name in signed}
    )
    request.context["timestamp"] = headers.get("x-amz-date", "")
    signer = SigV4Auth(Credentials(match["key_id"], key), match["service"], match["region"])
    return signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
