"""What the HTTP side asks of an inference engine, whichever one runs the models.

A request is a model id, prompt ids and `SamplingParams`; the engine answers with a stream of
`Delta` (new text) ending with one `Finish`. Stop sequences, the token budget and incremental
detokenisation are the same for every engine and live in `Completion`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from tunekit_train.serve.models import ServedModel

StopReason = Literal["end", "length", "stop_sequence"]
"""Why a completion ended: the model's end token, the token budget, or a stop sequence."""


@dataclass(frozen=True)
class SamplingParams:
    """How one request samples: greedy when ``temperature`` is 0."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class Delta:
    """New completion text."""

    text: str


@dataclass(frozen=True)
class Finish:
    """The end of a completion: why, and its token counts."""

    reason: StopReason
    prompt_tokens: int
    completion_tokens: int
    error: str | None = None
    """Set when the engine failed on this request (the stream then reports an error)."""


Event = Delta | Finish


class Engine(Protocol):
    """An inference engine serving `ServedModel`s."""

    def submit(self, model: ServedModel, prompt: list[int], params: SamplingParams, *, images: dict[str, Any] | None = None) -> AsyncIterator[Event]:
        """Start a completion; iterate for its events (closing the iterator early cancels it)."""
        ...

    def stats(self) -> dict[str, object]:
        """Counters for ``/health`` (requests, batches, batch sizes)."""
        ...

    def close(self) -> None:
        """Stop the engine's workers."""
        ...


@dataclass
class Completion:
    """One request's generated tokens, turned into text deltas as tokens arrive (thread-safe hand-off).

    Text is held back while it ends in a partial UTF-8 character (U+FFFD) or in a prefix of a stop
    sequence, so a stream never shows text that the final answer drops.
    """

    model: ServedModel
    prompt: list[int]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    images: dict[str, Any] | None = None
    """Image tensors of a vision-language prompt (decoded one request at a time)."""
    events: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    tokens: list[int] = field(default_factory=list)
    sent: int = 0
    done: bool = False
    cancelled: bool = False

    def push(self, token: int) -> bool:
        """Add a generated token; returns True when the completion is finished."""
        if self.done:
            return True
        if token in self.model.eos_ids:
            return self._finish("end", self.model.decode(self.tokens), count=len(self.tokens) + 1)
        self.tokens.append(token)
        text = self.model.decode(self.tokens)
        for stop in self.params.stop:
            at = text.find(stop, max(0, self.sent - len(stop)))
            if at >= 0:
                return self._finish("stop_sequence", text[:at])
        if len(self.tokens) >= self.params.max_tokens:
            return self._finish("length", text)
        keep = max((len(s) - 1 for s in self.params.stop), default=0)
        ready = len(text) - keep
        while ready > self.sent and text[ready - 1] == "\ufffd":
            ready -= 1
        if ready > self.sent:
            self._emit(Delta(text[self.sent : ready]))
            self.sent = ready
        return False

    def end(self) -> None:
        """Finish a completion whose generator stopped by itself (no-op when already finished)."""
        if not self.done:
            self._finish("end", self.model.decode(self.tokens))

    def fail(self, message: str) -> None:
        """End the completion with an engine error."""
        if not self.done:
            self.done = True
            self._emit(Finish("end", len(self.prompt), len(self.tokens), error=message))

    def _finish(self, reason: StopReason, text: str, *, count: int | None = None) -> bool:
        if len(text) > self.sent:
            self._emit(Delta(text[self.sent :]))
            self.sent = len(text)
        self.done = True
        self._emit(Finish(reason, len(self.prompt), len(self.tokens) if count is None else count))
        return True

    def _emit(self, event: Event) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)

    async def stream(self) -> AsyncIterator[Event]:
        """The events, until `Finish`; a consumer that stops early cancels the completion."""
        try:
            while True:
                event = await self.events.get()
                yield event
                if isinstance(event, Finish):
                    return
        finally:
            self.cancelled = True


def make_engine(name: str, models: list[ServedModel], *, max_batch: int, device: str | None) -> Engine:
    """The engine called ``name`` (``transformers`` or ``vllm``) with ``models`` loaded.

    Raises:
        UsageError: an unknown engine, or vLLM is not installed.
    """
    if name == "vllm":
        from tunekit_train.serve.vllm_engine import VllmEngine

        return VllmEngine(models, max_batch=max_batch)
    if name == "transformers":
        from tunekit_train.serve.batching import TransformersEngine

        return TransformersEngine(models, max_batch=max_batch, device=device)
    from tunekit_data.errors import UsageError

    msg = f"--engine must be transformers or vllm, got {name!r}"
    raise UsageError(msg)
