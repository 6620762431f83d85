"""The AWS event-stream binary framing (``application/vnd.amazon.eventstream``) that ``converse-stream`` speaks.

Written by hand because no well-kept Python library encodes it: botocore ships only the decoder
(``botocore.eventstream``, which the tests use to read these frames, as boto3 does), and awscrt's
event-stream support is an RPC client, not a frame encoder. The format is small::

    prelude   total length (uint32), headers length (uint32), CRC32 of those 8 bytes (uint32)
    headers   per header: name length (uint8), name, value type (uint8, 7 = string), value length (uint16), value
    payload   the event's JSON
    trailer   CRC32 of everything before it (uint32)

All integers are big-endian; the CRC is the IEEE CRC32 of zlib.
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

_STRING = 7


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message with string ``headers``."""
    head = b"".join(_header(name, value) for name, value in headers.items())
    total = 12 + len(head) + len(payload) + 4
    prelude = struct.pack(">II", total, len(head))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + head + payload
    return body + struct.pack(">I", zlib.crc32(body))


def event(event_type: str, value: dict[str, Any]) -> bytes:
    """An event of a Bedrock stream (``messageStart``, ``contentBlockDelta`` ...) with a JSON payload."""
    headers = {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}
    return encode_message(headers, json.dumps(value).encode())


def exception(exception_type: str, message: str) -> bytes:
    """An error inside a stream (``modelStreamErrorException`` ...): boto3 raises it while iterating."""
    headers = {
        ":exception-type": exception_type,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return encode_message(headers, json.dumps({"message": message}).encode())


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return (
        struct.pack(">B", len(raw_name)) + raw_name + struct.pack(">BH", _STRING, len(raw_value)) + raw_value
    )
