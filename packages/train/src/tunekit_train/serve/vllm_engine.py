"""The ``vllm`` engine (GPU): vLLM's async engine with continuous batching, LoRA adapters as `LoRARequest`s.

vLLM serves one base model per engine, so every served id must be that base's adapter, or the one
full model. It is imported only here, so `train serve` runs without vLLM installed; untested in CI.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from tunekit_data.errors import UsageError
from tunekit_train.serve.engine import Delta, Event, Finish, SamplingParams
from tunekit_train.serve.models import ServedModel

_REASONS = {"stop": "end", "length": "length"}


class VllmEngine:
    """`Engine` on ``vllm.AsyncLLMEngine`` (see the module docstring)."""

    def __init__(self, models: list[ServedModel], *, max_batch: int = 256) -> None:
        try:
            from vllm import AsyncEngineArgs, AsyncLLMEngine
            from vllm.lora.request import LoRARequest
        except ImportError as exc:
            msg = "--engine vllm needs vLLM (a CUDA machine: `uv pip install vllm`); --engine transformers runs anywhere"
            raise UsageError(msg) from exc
        bases = {m.base or m.directory for m in models}
        if len(bases) != 1 or (len(models) > 1 and any(m.base is None for m in models)):
            msg = "--engine vllm serves one base model: one full model, or adapters that share a base"
            raise UsageError(msg)
        self._lora = {
            m.model_id: LoRARequest(m.model_id, i + 1, str(m.directory))
            for i, m in enumerate(models)
            if m.base is not None
        }
        ranks = [_rank(m) for m in models if m.base is not None]
        args = AsyncEngineArgs(
            model=str(bases.pop()),
            tokenizer=str(models[0].directory),
            enable_lora=bool(self._lora),
            max_loras=max(1, len(self._lora)),
            max_lora_rank=max(ranks, default=16),
            max_num_seqs=max_batch,
        )
        self._engine = AsyncLLMEngine.from_engine_args(args)
        self._requests = 0

    def submit(self, model: ServedModel, prompt: list[int], params: SamplingParams, *, images: dict[str, Any] | None = None) -> AsyncIterator[Event]:
        """Start a completion on vLLM (text prompts only: images need ``--engine transformers``)."""
        if images is not None:
            from tunekit_train.serve.errors import ApiError

            msg = "the vllm engine serves text prompts only; serve this model with --engine transformers for images"
            raise ApiError(msg, param="messages")
        self._requests += 1
        return self._stream(model, prompt, params)

    async def _stream(
        self, model: ServedModel, prompt: list[int], params: SamplingParams
    ) -> AsyncIterator[Event]:
        from vllm import SamplingParams as VllmSampling

        sampling = VllmSampling(
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            stop=list(params.stop),
            seed=params.seed,
        )
        sent, request_id = "", uuid.uuid4().hex
        generator = self._engine.generate(
            {"prompt_token_ids": prompt}, sampling, request_id, lora_request=self._lora.get(model.model_id)
        )
        async for output in generator:
            done = output.outputs[0]
            if len(done.text) > len(sent):
                yield Delta(done.text[len(sent) :])
                sent = done.text
            if output.finished:
                # vLLM's stop_reason is the stop string that matched (an int for a stop token id).
                reason = (
                    "stop_sequence"
                    if isinstance(done.stop_reason, str)
                    else _REASONS.get(done.finish_reason, "end")
                )
                yield Finish(reason, len(prompt), len(done.token_ids))  # type: ignore[arg-type]
                return

    def stats(self) -> dict[str, object]:
        """Requests seen (vLLM schedules its own batches)."""
        return {"engine": "vllm", "requests": self._requests}

    def close(self) -> None:
        """vLLM's engine stops with the process."""


def _rank(model: ServedModel) -> int:
    import json

    config: dict[str, Any] = json.loads((model.directory / "adapter_config.json").read_text(encoding="utf-8"))
    return int(config.get("r", 16))
