"""Bedrock Runtime's Converse API: ``POST /model/{modelId}/converse`` and ``/converse-stream``.

Shapes as AWS documents them (and botocore's service model encodes): a request has ``messages`` (role
``user``/``assistant``, content blocks), ``system`` blocks and ``inferenceConfig`` (``maxTokens``,
``temperature`` 0..1, ``topP`` 0..1, ``stopSequences``); an answer has ``output.message``,
``stopReason`` (``end_turn``, ``max_tokens``, ``stop_sequence``), ``usage`` and ``metrics.latencyMs``.
The stream sends ``messageStart``, ``contentBlockDelta``..., ``contentBlockStop``, ``messageStop`` and
``metadata`` events in the AWS event-stream framing. Only text content is served: other blocks
(images, documents, tools) are a ``ValidationException``, as Bedrock answers models without them.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.responses import StreamingResponse

from tunekit_train.serve import eventstream
from tunekit_train.serve.app import Chat, Server, complete
from tunekit_train.serve.engine import Delta, Finish, StopReason
from tunekit_train.serve.errors import parse_body, refuse_unsupported
from tunekit_train.serve.images import converse_image, converse_video, require_images
from tunekit_train.serve.models import ServedModel

router = APIRouter()
STOP_REASONS: dict[StopReason, str] = {
    "end": "end_turn",
    "length": "max_tokens",
    "stop_sequence": "stop_sequence",
}
_UNSUPPORTED = ("toolConfig", "guardrailConfig", "promptVariables")


class _Block(BaseModel):
    model_config = ConfigDict(extra="allow")
    text: str | None = None

    image: dict[str, Any] | None = None
    video: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _text_only(self) -> _Block:
        others = sorted(k for k in (self.model_extra or {}) if k != "cachePoint")
        if others:
            msg = f"only text, image and video content blocks are supported, got {', '.join(others)}"
            raise ValueError(msg)
        return self


class _Message(BaseModel):
    role: str = Field(pattern="^(user|assistant)$")
    content: list[_Block] = Field(min_length=1)


class _InferenceConfig(BaseModel):
    maxTokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=1)
    topP: float | None = Field(None, ge=0, le=1)
    stopSequences: list[str] = Field(default_factory=list, max_length=2500)


class ConverseRequest(BaseModel):
    """The body of a Converse / ConverseStream request (the fields a text model uses)."""

    model_config = ConfigDict(extra="allow")
    messages: list[_Message] = Field(min_length=1)
    system: list[_Block] = Field(default_factory=list)
    inferenceConfig: _InferenceConfig = Field(default_factory=_InferenceConfig)

    @model_validator(mode="after")
    def _supported(self) -> ConverseRequest:
        refuse_unsupported(self, _UNSUPPORTED)
        if self.messages[-1].role != "user":
            msg = "the last message must have the user role"
            raise ValueError(msg)
        return self


def _text(blocks: list[_Block]) -> str:
    # Text blocks are joined without a separator, as the data package reads Converse datasets for training.
    return "".join(b.text or "" for b in blocks)


def _content(blocks: list[_Block], index: int, model: ServedModel) -> str | list[dict[str, Any]]:
    """The text of a message, or its text, image and video parts in order when it has media."""
    if all(b.image is None and b.video is None for b in blocks):
        return _text(blocks)
    require_images(model)
    parts: list[dict[str, Any]] = []
    for j, b in enumerate(blocks):
        if b.image is not None:
            parts.append({"type": "image", "image": converse_image(b.image, f"messages[{index}].content[{j}].image")})
        elif b.video is not None:
            parts.append({"type": "video", "video": converse_video(b.video, f"messages[{index}].content[{j}].video", model)})
        else:
            parts.append({"type": "text", "text": b.text or ""})
    return parts


async def _chat(request: Request, model_id: str) -> Chat:
    server: Server = request.app.state.server
    raw = await server.admit(request)
    model = server.model(model_id)  # an unknown model is a 404 before the body is looked at
    body = parse_body(ConverseRequest, raw)
    turns = [{"role": "system", "content": _text(body.system)}] if body.system else []
    turns += [{"role": m.role, "content": _content(m.content, i, model)} for i, m in enumerate(body.messages)]
    config = body.inferenceConfig
    return server.chat(
        model_id,
        turns,
        max_tokens=config.maxTokens,
        temperature=1.0 if config.temperature is None else config.temperature,
        top_p=1.0 if config.topP is None else config.topP,
        stop=tuple(config.stopSequences),
    )


def _usage(finish: Finish) -> dict[str, int]:
    return {
        "inputTokens": finish.prompt_tokens,
        "outputTokens": finish.completion_tokens,
        "totalTokens": finish.prompt_tokens + finish.completion_tokens,
    }


@router.post("/model/{model_id:path}/converse")
async def converse(model_id: str, request: Request) -> dict[str, object]:
    """Converse: the whole answer at once."""
    started = time.perf_counter()
    chat = await _chat(request, model_id)
    text, finish = await complete(request.app.state.server.submit(chat))
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
        "stopReason": STOP_REASONS[finish.reason],
        "usage": _usage(finish),
        "metrics": {"latencyMs": round((time.perf_counter() - started) * 1000)},
    }


@router.post("/model/{model_id:path}/converse-stream")
async def converse_stream(model_id: str, request: Request) -> StreamingResponse:
    """ConverseStream: the answer as event-stream events, checked (400/404) before the stream opens."""
    started = time.perf_counter()
    chat = await _chat(request, model_id)
    events = request.app.state.server.submit(chat)
    return StreamingResponse(_frames(events, started), media_type="application/vnd.amazon.eventstream")


async def _frames(events: AsyncIterator[Delta | Finish], started: float) -> AsyncIterator[bytes]:
    yield eventstream.event("messageStart", {"role": "assistant"})
    async for item in events:
        if isinstance(item, Delta):
            yield eventstream.event(
                "contentBlockDelta", {"delta": {"text": item.text}, "contentBlockIndex": 0}
            )
        elif item.error:
            yield eventstream.exception("modelStreamErrorException", f"generation failed: {item.error}")
            return
        else:
            yield eventstream.event("contentBlockStop", {"contentBlockIndex": 0})
            yield eventstream.event("messageStop", {"stopReason": STOP_REASONS[item.reason]})
            latency = round((time.perf_counter() - started) * 1000)
            yield eventstream.event("metadata", {"usage": _usage(item), "metrics": {"latencyMs": latency}})
            return
