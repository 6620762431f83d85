"""OpenAI's chat API: ``POST /v1/chat/completions`` and ``GET /v1/models``.

As the ``openai`` client and vLLM's server speak them: completions whole, or streamed as SSE chunks ending
with ``data: [DONE]``.

``n`` must be 1; ``stream_options.include_usage`` adds a last chunk with token counts. Sampling
parameters the engines do not implement (penalties, logprobs, tools) are refused rather than ignored.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.responses import StreamingResponse

from tunekit_train.serve.app import Chat, Server, complete
from tunekit_train.serve.engine import Delta, Event, Finish, StopReason
from tunekit_train.serve.errors import ApiError, parse_body, refuse_unsupported
from tunekit_train.serve.images import require_images, url_image, url_video
from tunekit_train.serve.models import ServedModel

router = APIRouter()
FINISH_REASONS: dict[StopReason, str] = {"end": "stop", "length": "length", "stop_sequence": "stop"}
_UNSUPPORTED = ("tools", "functions", "logprobs", "top_logprobs", "response_format", "logit_bias")
_ROLES = {"developer": "system"}  # OpenAI's newer name for the system role


class _Url(BaseModel):
    url: str


class _Part(BaseModel):
    type: str = Field(pattern="^(text|image_url|video_url)$")
    text: str = ""
    image_url: _Url | None = None
    video_url: _Url | None = None
    """vLLM's extension (OpenAI defines no video part): `tunekit_train.serve.images`."""


class _Message(BaseModel):
    role: str = Field(pattern="^(system|developer|user|assistant)$")
    content: str | list[_Part] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""

    def content_for(self, index: int, model: ServedModel) -> str | list[dict[str, Any]]:
        """The text, or text, image and video parts (resolved) when the message has media."""
        if not isinstance(self.content, list) or all(p.type == "text" for p in self.content):
            return self.text()
        require_images(model)
        parts: list[dict[str, Any]] = []
        for j, part in enumerate(self.content):
            if part.type == "text":
                parts.append({"type": "text", "text": part.text})
                continue
            url, field = getattr(part, part.type), f"messages[{index}].content[{j}].{part.type}"
            if url is None:
                msg = f"messages[{index}].content[{j}]: an {part.type} part needs {part.type}.url"
                raise ApiError(msg, param="messages")
            if part.type == "image_url":
                parts.append({"type": "image", "image": url_image(url.url, field)})
            else:
                parts.append({"type": "video", "video": url_video(url.url, field, model)})
        return parts


class _StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    """The body of a chat completion request (what a text model can honour)."""

    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[_Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(1, ge=1, le=1)
    stream: bool = False
    stream_options: _StreamOptions | None = None
    presence_penalty: float = Field(0, ge=0, le=0)
    frequency_penalty: float = Field(0, ge=0, le=0)

    @model_validator(mode="after")
    def _supported(self) -> ChatRequest:
        refuse_unsupported(self, _UNSUPPORTED)
        return self


async def _chat(request: Request) -> tuple[ChatRequest, Chat]:
    server: Server = request.app.state.server
    body = parse_body(ChatRequest, await server.admit(request))
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    chat = server.chat(
        body.model,
        [{"role": _ROLES.get(m.role, m.role), "content": m.content_for(i, server.model(body.model))} for i, m in enumerate(body.messages)],
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        stop=stop,
        seed=body.seed,
    )
    return body, chat


def _usage(finish: Finish) -> dict[str, int]:
    total = finish.prompt_tokens + finish.completion_tokens
    return {
        "prompt_tokens": finish.prompt_tokens,
        "completion_tokens": finish.completion_tokens,
        "total_tokens": total,
    }


@router.get("/v1/models")
async def models(request: Request) -> dict[str, object]:
    """The served model ids."""
    server: Server = request.app.state.server
    await server.admit(request)
    data = [
        {"id": m, "object": "model", "created": server.started, "owned_by": "tunekit"} for m in server.models
    ]
    return {"object": "list", "data": data}


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(request: Request) -> dict[str, object] | StreamingResponse:
    """A chat completion; with ``stream`` an SSE stream of chunks, checked (400/404) before it opens."""
    body, chat = await _chat(request)
    events = request.app.state.server.submit(chat)
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": body.model}
    if body.stream:
        usage = body.stream_options is not None and body.stream_options.include_usage
        return StreamingResponse(_chunks(events, head, include_usage=usage), media_type="text/event-stream")
    text, finish = await complete(events)
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "finish_reason": FINISH_REASONS[finish.reason],
        "logprobs": None,
    }
    return {**head, "object": "chat.completion", "choices": [choice], "usage": _usage(finish)}


async def _chunks(
    events: AsyncIterator[Event], head: dict[str, object], *, include_usage: bool
) -> AsyncIterator[str]:
    def chunk(delta: dict[str, str], finish_reason: str | None = None, **extra: object) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        return f"data: {json.dumps({**head, 'object': 'chat.completion.chunk', 'choices': [choice], **extra})}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    async for item in events:
        if isinstance(item, Delta):
            yield chunk({"content": item.text})
            continue
        if (
            item.error
        ):  # the status line is already sent: the error goes in the stream, as OpenAI's servers do
            error = {
                "message": f"generation failed: {item.error}",
                "type": "server_error",
                "param": None,
                "code": None,
            }
            yield f"data: {json.dumps({'error': error})}\n\n"
            return
        yield chunk({}, FINISH_REASONS[item.reason])
        if include_usage:
            yield f"data: {json.dumps({**head, 'object': 'chat.completion.chunk', 'choices': [], 'usage': _usage(item)})}\n\n"
        yield "data: [DONE]\n\n"
        return
