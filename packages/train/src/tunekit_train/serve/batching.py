"""The ``transformers`` engine: concurrent requests decoded together in left-padded batches, on CPU or GPU.

One worker thread owns the models. It takes the oldest waiting request, waits for others to arrive,
and decodes every waiting request for the same model id (up to ``max_batch``) as one batch: a prefill of the left-padded prompts, then one token per step for all rows
with a shared KV cache. Rows that finish are dropped from the batch and its cache at once, so a long
answer does not keep short ones' compute alive. Requests that arrive meanwhile wait for the next batch.

How long to wait adapts to the load: the requests of the last batch are expected back (clients that got
their answers send the next question), plus those that queued while it ran, so the worker waits up to
``max_wait_s`` for that many,
and only ``gather_s`` when the last batch was a single request. Without that, clients whose answers
left together come back a few milliseconds apart and split into small batches.

Why batches per gather window rather than step-level continuous batching: joining a request into a
running batch means merging KV caches of different lengths, which transformers' caches do not do; the
gain would matter for long completions under load, where the vLLM engine (paged attention, continuous
batching) is the one to use. Each row samples with its own settings (temperature, top_p, seed), so
requests with different settings still share a batch; a row that decodes greedily takes the argmax of
the same logits `model.generate` would (batch of one: the same computation as ``train generate``).

LoRA adapters of one base are loaded once, as peft adapters named by model id, and a batch switches
to its adapter with ``set_adapter``; full fine-tunes load as their own models.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunekit_train.serve.engine import Completion, Event, SamplingParams
from tunekit_train.serve.models import ServedModel


class TransformersEngine:
    """Batched decoding of `ServedModel`s with transformers (+ peft for adapters); see the module docstring."""

    def __init__(
        self,
        models: list[ServedModel],
        *,
        max_batch: int = 32,
        device: str | None = None,
        gather_s: float = 0.002,
        max_wait_s: float = 0.05,
    ) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.max_batch = max_batch
        self.gather_s, self.max_wait_s = gather_s, max_wait_s
        self._expected = 1
        self._modules = _load(models, self.device)
        self._waiting: deque[Completion] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._batch_sizes: Counter[int] = Counter()
        self._requests = 0
        self._tokens = 0
        self._worker = threading.Thread(target=self._run, name="tunekit-serve-engine", daemon=True)
        self._worker.start()

    def submit(self, model: ServedModel, prompt: list[int], params: SamplingParams, *, images: dict[str, Any] | None = None) -> AsyncIterator[Event]:
        """Queue a completion; iterate the result for its events."""
        completion = Completion(model, prompt, params, asyncio.get_running_loop(), images=images)
        with self._cond:
            self._waiting.append(completion)
            self._cond.notify()
        return completion.stream()

    def stats(self) -> dict[str, object]:
        """Requests and tokens served, batches run and how many requests each held."""
        with self._cond:
            sizes = dict(sorted(self._batch_sizes.items()))
            return {
                "engine": "transformers",
                "device": str(self.device),
                "requests": self._requests,
                "completion_tokens": self._tokens,
                "waiting": len(self._waiting),
                "batches": sum(sizes.values()),
                "batch_sizes": {str(k): v for k, v in sizes.items()},
                "max_batch_size": max(sizes, default=0),
            }

    def close(self) -> None:
        """Stop the worker after the batch in progress."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._worker.join(timeout=30)

    def _next_batch(self) -> list[Completion] | None:
        with self._cond:
            while not self._waiting and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            expected = min(self.max_batch, self._expected)
            deadline = time.monotonic() + (self.gather_s if expected == 1 else self.max_wait_s)
            while len(self._waiting) < expected and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            first = self._waiting[0]
            # A prompt with images runs alone: its pixel values and M-RoPE positions are its own.
            same = [c for c in self._waiting if c.model.model_id == first.model.model_id and not c.cancelled and c.images is None]
            batch = [first] if first.images is not None else same[: self.max_batch]
            chosen = {id(c) for c in batch}
            self._waiting = deque(c for c in self._waiting if id(c) not in chosen and not c.cancelled)
            if batch:
                self._batch_sizes[len(batch)] += 1
                self._requests += len(batch)
            return batch

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            if not batch:
                continue
            try:
                module = self._modules[batch[0].model.model_id]
                self._tokens += decode_batch(module, batch, self.device)
                with self._cond:  # those answered come back, and those who queued meanwhile are waiting
                    self._expected = len(batch) + len(self._waiting)
            except Exception as exc:  # a failed batch fails its requests, never the server
                for completion in batch:
                    completion.fail(f"{type(exc).__name__}: {exc}")


@torch.no_grad()
def decode_batch(module: nn.Module, batch: list[Completion], device: torch.device) -> int:
    """Decode ``batch`` to the end of every completion; returns the tokens generated."""
    if batch[0].model.base is not None:  # adapters are named after the model id (see _load)
        module.set_adapter(batch[0].model.adapter_name)
    if batch[0].images is not None:
        return decode_with_images(module, batch[0], device)
    pad = batch[0].model.pad_id
    width = max(len(c.prompt) for c in batch)
    input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, completion in enumerate(batch):
        input_ids[row, width - len(completion.prompt) :] = torch.tensor(completion.prompt)
        mask[row, width - len(completion.prompt) :] = 1
    input_ids, mask = input_ids.to(device), mask.to(device)
    # As generate() derives them: positions count real tokens only, so a left-padded row matches its unpadded self.
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    generators = [_generator(c.params, device) for c in batch]
    live = list(range(len(batch)))
    out = module(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True)
    cache, generated = out.past_key_values, 0
    while True:
        tokens = _choose(
            out.logits[:, -1, :].float(), [batch[i].params for i in live], [generators[i] for i in live]
        )
        generated += len(live)
        keep = [k for k, i in enumerate(live) if not (batch[i].cancelled or batch[i].push(int(tokens[k])))]
        if not keep:
            return generated
        if len(keep) < len(live):
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            tokens, mask, positions = tokens[index], mask[index], positions[index]
            live = [live[k] for k in keep]
        mask = torch.cat([mask, mask.new_ones((len(live), 1))], dim=1)
        positions = positions[:, -1:] + 1
        out = module(
            input_ids=tokens[:, None],
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
        )


@torch.no_grad()
def decode_with_images(module: nn.Module, completion: Completion, device: torch.device) -> int:
    """Decode one vision-language prompt, each token handed to the completion as it comes.

    With the model's own ``generate``, which derives the M-RoPE positions of the images and of each new token.
    """
    from transformers.generation import BaseStreamer, StoppingCriteria, StoppingCriteriaList

    class _Push(BaseStreamer):
        def __init__(self) -> None:
            self.prompt_seen, self.count = False, 0

        def put(self, value: torch.Tensor) -> None:
            if not self.prompt_seen:  # generate hands the prompt over first
                self.prompt_seen = True
                return
            for token in value.reshape(-1).tolist():
                self.count += 1
                completion.push(int(token))

        def end(self) -> None:
            completion.end()  # generate stopped on an end token of the model's generation config

    class _Done(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            return torch.full((input_ids.shape[0],), completion.done or completion.cancelled, dtype=torch.bool, device=input_ids.device)

    params = completion.params
    ids = torch.tensor([completion.prompt], device=device)
    sampling = {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p, "top_k": 0} if params.temperature > 0 else {"do_sample": False}
    if params.temperature > 0 and params.seed is not None:
        torch.manual_seed(params.seed)
    streamer = _Push()
    module.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=params.max_tokens,
        pad_token_id=completion.model.pad_id,
        streamer=streamer,
        stopping_criteria=StoppingCriteriaList([_Done()]),
        **{k: v.to(device) for k, v in (completion.images or {}).items()},
        **sampling,
    )
    return streamer.count


def _choose(
    logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator | None]
) -> torch.Tensor:
    """The next token of each row: argmax for greedy rows, else nucleus sampling at the row's temperature."""
    tokens = logits.argmax(dim=-1)
    for row, (p, generator) in enumerate(zip(params, generators, strict=True)):
        if p.temperature <= 0:
            continue
        probs = torch.softmax(logits[row] / p.temperature, dim=-1)
        if p.top_p < 1.0:
            ordered, order = probs.sort(descending=True)
            # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
            drop = ordered.cumsum(-1) - ordered >= p.top_p
            ordered[drop] = 0
            probs = torch.zeros_like(probs).scatter_(0, order, ordered)
        tokens[row] = torch.multinomial(probs, 1, generator=generator)[0]
    return tokens


def _generator(params: SamplingParams, device: torch.device) -> torch.Generator | None:
    if params.temperature <= 0:
        return None
    generator = torch.Generator(device=device)
    if params.seed is None:
        generator.seed()
    else:
        generator.manual_seed(params.seed)
    return generator


def _load(models: list[ServedModel], device: torch.device) -> dict[str, nn.Module]:
    """One module per model id; adapters of the same base share one peft model, each named by its model id."""
    from tunekit_train.generate import load_trained
    from tunekit_train.model import load_model

    modules: dict[str, nn.Module] = {}
    by_base: dict[Path, Any] = {}
    for served in models:
        if served.base is None:
            modules[served.model_id] = load_trained(served.directory).to(device)
            continue
        peft_model = by_base.get(served.base)
        if peft_model is None:
            from peft import PeftModel

            base = load_model(served.base, backend="sdpa", seed=0)[0]
            peft_model = PeftModel.from_pretrained(base, served.directory, adapter_name=served.adapter_name)
            by_base[served.base] = peft_model
        else:
            peft_model.load_adapter(served.directory, adapter_name=served.adapter_name)
        modules[served.model_id] = peft_model
    for module in {id(m): m for m in modules.values()}.values():
        module.to(device).eval()
    return modules
