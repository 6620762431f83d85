"""The HTTP server of `train serve`: FastAPI routes for the Bedrock Runtime and OpenAI APIs over one engine.

Every API route first passes the same gate (`Server.admit`): the body size limit, then the API key
(`tunekit_train.serve.auth`); ``/health`` is open. Every failure answers in the
calling API's error shape (`tunekit_train.serve.errors`); an unexpected one is logged here and answered
with a 500, so a bad request never takes the server down.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from tunekit_data.errors import UsageError, at_least, between
from tunekit_train.launch import MAX_PORT
from tunekit_train.serve.auth import authorized
from tunekit_train.serve.engine import Delta, Engine, Event, Finish, SamplingParams
from tunekit_train.serve.errors import ApiError
from tunekit_train.serve.models import ServedModel

log = logging.getLogger("tunekit.serve")


@dataclass(frozen=True)
class ServeSettings:
    """Limits and access of the server."""

    api_key: str | None = None
    max_tokens_limit: int = 4096
    """The largest maxTokens / max_tokens a request may ask for."""
    default_max_tokens: int = 512
    """Tokens generated when a request gives no limit (bounded by the model's context)."""
    max_body_bytes: int = 4 * 1024 * 1024

    def __post_init__(self) -> None:
        """Raise UsageError naming the option and its allowed range."""
        at_least("--max-tokens-limit", self.max_tokens_limit, 1)
        at_least("--default-max-tokens", self.default_max_tokens, 1)
        at_least("--max-body-bytes", self.max_body_bytes, 1024)


@dataclass(frozen=True)
class ServeOptions:
    """Where the server listens and the engine that decodes (``train serve``'s options)."""

    host: str = "127.0.0.1"
    """0.0.0.0 exposes the server to the network."""
    port: int = 8080
    """0: a free one."""
    engine: str = "transformers"
    max_batch: int = 32
    """Requests decoded together."""
    device: str | None = None
    """The transformers engine's torch device; None: cuda if available, else cpu."""
    tracking_uri: str | None = None
    """The MLflow server or store that ``models:/`` arguments name."""

    def __post_init__(self) -> None:
        """Raise UsageError naming the option and its allowed range."""
        between("--port", self.port, 0, MAX_PORT)
        at_least("--max-batch", self.max_batch, 1)


@dataclass(frozen=True)
class Chat:
    """A chat request in neutral form: the model, the rendered prompt and how to sample."""

    model: ServedModel
    prompt: list[int]
    params: SamplingParams
    images: dict[str, Any] | None = None
    """A vision-language prompt's image tensors (pixel values, grids, token types)."""


class Server:
    """The models, the engine and the settings that every route works with."""

    def __init__(self, models: list[ServedModel], engine: Engine, settings: ServeSettings) -> None:
        self.models = {m.model_id: m for m in models}
        self.engine = engine
        self.settings = settings
        self.started = int(time.time())

    def model(self, model_id: str) -> ServedModel:
        """The model called ``model_id`` (a Bedrock ARN's last segment counts too).

        Raises:
            ApiError: no such model.
        """
        name = model_id.rsplit("/", 1)[-1] if model_id.startswith("arn:") else model_id
        if name not in self.models:
            served = ", ".join(self.models)
            msg = f"model {model_id!r} is not served here (models: {served})"
            raise ApiError(msg, kind="not_found", param="model")
        return self.models[name]

    def chat(
        self,
        model_id: str,
        messages: list[dict[str, Any]],
        *,
        max_tokens: int | None,
        temperature: float,
        top_p: float,
        stop: tuple[str, ...] = (),
        seed: int | None = None,
    ) -> Chat:
        """Render and check a chat request.

        A message's content is text, or a list of text and image parts: see `tunekit_train.vision.vision_inputs`.

        Raises:
            ApiError: unknown model, a conversation the template refuses, or a prompt/token budget too long.
        """
        model = self.model(model_id)
        limit = self.settings.max_tokens_limit
        if max_tokens is not None and max_tokens > limit:
            msg = f"max tokens {max_tokens} is above this server's limit of {limit}"
            raise ApiError(msg, param="max_tokens")
        images = None
        try:
            if any(isinstance(m["content"], list) for m in messages):
                prompt, images = model.encode_images(messages)
            else:
                prompt = model.encode(messages)
        except ValueError as exc:
            raise ApiError(str(exc), param="messages") from exc
        room = model.context - len(prompt)
        if room < 1 or (max_tokens is not None and max_tokens > room):
            asked = len(prompt) + (max_tokens or 1)
            msg = f"this model's context is {model.context} tokens; the prompt is {len(prompt)} tokens and {asked} were requested with the completion"
            raise ApiError(msg, param="messages")
        budget = max_tokens if max_tokens is not None else min(self.settings.default_max_tokens, limit, room)
        return Chat(model, prompt, SamplingParams(budget, temperature, top_p, stop, seed), images)

    async def admit(self, request: Request) -> bytes:
        """The body of a request that passes the gate: the size limit, then the API key (every API route calls this).

        Raises:
            ApiError: too large, or no valid key.
        """
        body = await read_body(request, self.settings.max_body_bytes)
        key = self.settings.api_key
        if key is not None and not _authorized(request, body, key):
            msg = "missing or wrong API key (send Authorization: Bearer KEY, or sign with it as the AWS secret key)"
            raise ApiError(msg, kind="auth")
        return body

    def submit(self, chat: Chat) -> AsyncIterator[Event]:
        """Start generating."""
        return self.engine.submit(chat.model, chat.prompt, chat.params, images=chat.images)


async def complete(events: AsyncIterator[Event]) -> tuple[str, Finish]:
    """The whole text and the `Finish` of a completion.

    Raises:
        ApiError: the engine failed on it.
    """
    parts: list[str] = []
    async for item in events:
        if isinstance(item, Delta):
            parts.append(item.text)
        elif item.error:
            msg = f"generation failed: {item.error}"
            raise ApiError(msg, kind="internal")
        else:
            return "".join(parts), item
    msg = "generation ended without a result"
    raise ApiError(msg, kind="internal")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused once it passes ``limit`` bytes (declared or streamed).

    Raises:
        ApiError: too large.
    """
    declared = request.headers.get("content-length")
    too_large = ApiError(
        f"request body is larger than this server's limit of {limit} bytes", kind="too_large"
    )
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(server: Server) -> FastAPI:
    """The FastAPI application for ``server``."""
    from tunekit_train.serve import bedrock, openai_api

    app = FastAPI(title="tunekit serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response(request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found" if exc.status_code == 404 else "validation"
        error = ApiError(f"{request.method} {request.url.path}: {exc.detail}", kind=kind)
        response = error.response(request.url.path)
        response.status_code = exc.status_code
        return response

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("error while serving %s %s", request.method, request.url.path)
        return ApiError(f"internal error: {type(exc).__name__}", kind="internal").response(request.url.path)

    @app.get("/health")
    async def health() -> dict[str, object]:
        return {"status": "ok", "models": list(server.models), **server.engine.stats()}

    app.include_router(bedrock.router)
    app.include_router(openai_api.router)
    return app


def _authorized(request: Request, body: bytes, key: str) -> bool:
    raw = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string") or b""
    url = f"{request.url.scheme}://{request.headers.get('host', '')}{raw.decode('latin-1')}" + (
        f"?{query.decode('latin-1')}" if query else ""
    )
    return authorized(request.method, url, {k.lower(): v for k, v in request.headers.items()}, body, key)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0 picks a free one), bound before the server starts so its address can be shown.

    Raises:
        OSError: the address is in use or not available.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def prepare(specs: list[str], options: ServeOptions, settings: ServeSettings) -> tuple[Server, socket.socket]:
    """Bind the address, then load the models ``specs`` name into the engine; `run` serves the result.

    Raises:
        UsageError, InputError: bad arguments or model directories, or the address cannot be bound.
    """
    from tunekit_train.serve.engine import make_engine
    from tunekit_train.serve.models import resolve_models

    models = resolve_models(specs, tracking_uri=options.tracking_uri)
    try:
        sock = bind(options.host, options.port)
    except OSError as exc:
        msg = f"{options.host}:{options.port}: cannot listen there: {exc.strerror or exc}"
        raise UsageError(msg) from exc
    try:
        engine = make_engine(options.engine, models, max_batch=options.max_batch, device=options.device)
        return Server(models, engine, settings), sock
    except BaseException:
        sock.close()
        raise


def run(server: Server, sock: socket.socket) -> None:
    """Serve on ``sock`` until interrupted, then stop the engine."""
    import uvicorn

    config = uvicorn.Config(
        create_app(server), log_level="warning", access_log=False, timeout_graceful_shutdown=5
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        server.engine.close()
