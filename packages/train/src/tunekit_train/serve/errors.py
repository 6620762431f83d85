"""Errors in each API's own shape.

Bedrock's ``{"message"}`` with ``x-amzn-ErrorType`` (what botocore reads to raise ``ValidationException``
etc.), OpenAI's ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import json
from typing import Literal, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.responses import JSONResponse

Kind = Literal["validation", "not_found", "auth", "too_large", "internal"]

# kind -> HTTP status, Bedrock error code, OpenAI (type, code)
_SHAPES: dict[Kind, tuple[int, str, str, str | None]] = {
    "validation": (400, "ValidationException", "invalid_request_error", None),
    "not_found": (404, "ResourceNotFoundException", "invalid_request_error", "model_not_found"),
    "auth": (403, "AccessDeniedException", "invalid_request_error", "invalid_api_key"),
    "too_large": (413, "ValidationException", "invalid_request_error", "request_too_large"),
    "internal": (500, "InternalServerException", "server_error", None),
}
BEDROCK_PREFIX = "/model/"
M = TypeVar("M", bound=BaseModel)


class ApiError(Exception):
    """A request the server answers with an error (rendered in the calling API's shape)."""

    def __init__(self, message: str, *, kind: Kind = "validation", param: str | None = None) -> None:
        super().__init__(message)
        self.kind, self.message, self.param = kind, message, param

    def response(self, path: str) -> JSONResponse:
        """The JSON response for a request to ``path`` (Bedrock's routes start with /model/)."""
        status, code, kind, openai_code = _SHAPES[self.kind]
        if path.startswith(BEDROCK_PREFIX):
            return JSONResponse({"message": self.message}, status, headers={"x-amzn-ErrorType": code})
        status = 401 if self.kind == "auth" else status  # OpenAI answers a bad key with 401, Bedrock with 403
        body = {"error": {"message": self.message, "type": kind, "param": self.param, "code": openai_code}}
        return JSONResponse(body, status)


def refuse_unsupported(body: BaseModel, names: tuple[str, ...]) -> None:
    """Refuse request fields the server does not implement rather than ignore them (call from a validator).

    Raises:
        ValueError: ``body`` sets one of ``names``.
    """
    asked = [k for k in names if (body.model_extra or {}).get(k)]
    if asked:
        msg = f"{', '.join(asked)} is not supported by this server"
        raise ValueError(msg)


def parse_body(model: type[M], body: bytes) -> M:
    """``body`` as a ``model``, or an `ApiError` naming the first bad field.

    Raises:
        ApiError: not JSON, or a field fails the model's constraints.
    """
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        msg = f"request body is not valid JSON: {exc}"
        raise ApiError(msg) from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = exc.errors(include_url=False)
        where = ".".join(str(p) for p in problems[0]["loc"]) or "body"
        details = "; ".join(
            f"value at '{'.'.join(map(str, p['loc'])) or 'body'}' failed to satisfy constraint: {p['msg']}"
            for p in problems
        )
        noun = "error" if len(problems) == 1 else "errors"
        msg = f"{len(problems)} validation {noun} detected: {details}"
        raise ApiError(msg, param=where) from exc
