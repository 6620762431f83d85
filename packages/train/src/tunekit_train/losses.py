"""Losses, each a SUM over its units (trained tokens for SFT/CPT, pairs for DPO).

Each returns that sum, so the loop can normalise by the units of the whole optimizer step, across
micro-batches and data-parallel ranks, and the sums of its metrics over the same units (empty for
SFT/CPT; DPO's rewards and log-probs).

Averaging per micro-batch and then over micro-batches weights a token in a short micro-batch more than a
token in a long one, so gradient accumulation would not equal the big batch (huggingface/trl#2175). Here
``loss = sum_over_micro_batches(loss_sum) / total_units`` exactly, whatever the split.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tunekit_train.attention import Backend
from tunekit_train.data import IGNORE, Batch
from tunekit_train.recipe import Method

MetricSums = dict[str, torch.Tensor]
LossFn = Callable[[nn.Module, Any, Backend], tuple[torch.Tensor, MetricSums]]
"""``loss_fn(model, batch, backend) -> (loss_sum, metric_sums)``; the batch is what the method's collate built."""


DEFAULT_CHUNK = 4096
"""Trained tokens per chunk of the output head (``training_config.loss_chunk_tokens``)."""


def trained_hidden(model: nn.Module, batch: Batch, backend: Backend) -> tuple[torch.Tensor, nn.Module, torch.Tensor]:
    """The hidden states that predict trained tokens, the output head, and those tokens.

    The hidden states are ``[n, hidden]``, at the n positions that predict a trained token. Labels are aligned with ``input_ids`` (position t predicts label t+1). Only those positions are kept
    (``logits_to_keep``), which skips the prompt tokens. The model's own head call is handed zero rows (a
    pre-hook captures its input), so the ``[n, vocab]`` logits are never built here: `token_losses` projects
    the hidden states chunk by chunk. The call still goes through the top module, so DDP and FSDP hooks
    run as in any forward. Rows are taken in order, so the i-th hidden state predicts the i-th label.
    """
    trained = batch.labels[:, 1:] != IGNORE
    dtype = next(model.parameters()).dtype
    hidden, head = head_inputs(model, batch.model_inputs(backend, dtype), F.pad(trained, (0, 1), value=False))
    return hidden, head, batch.labels[:, 1:][trained]


def head_inputs(model: nn.Module, inputs: dict[str, Any], keep: torch.Tensor) -> tuple[torch.Tensor, nn.Module]:
    """The final hidden states at ``keep`` of a forward with ``inputs``, and the output head.

    ``keep`` is ``[batch, L]`` bool; the states come back as ``[n, hidden]``, without computing any
    logits (see `trained_hidden`).
    """
    head = output_head(model)
    captured: dict[str, torch.Tensor] = {}

    def capture(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        captured["hidden"] = args[0]
        return (args[0][:0], *args[1:])

    handle = head.register_forward_pre_hook(capture)
    try:
        model(**inputs, logits_to_keep=keep, use_cache=False)
    finally:
        handle.remove()
    return captured["hidden"].reshape(-1, captured["hidden"].shape[-1]), head


def output_head(model: nn.Module) -> nn.Module:
    """The output projection (``lm_head``) of a causal LM, through DDP and peft wrappers."""
    while not hasattr(model, "get_output_embeddings") and hasattr(model, "module"):  # DDP
        model = model.module
    head = model.get_output_embeddings()  # type: ignore[operator]
    assert head is not None, f"{type(model).__name__} has no output head"
    return head


def token_losses(hidden: torch.Tensor, head: nn.Module, targets: torch.Tensor, *, chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """Cross-entropy of each target ``[n]`` (float32) from its hidden state, ``chunk`` tokens at a time.

    Each chunk's logits (float32, like the unchunked loss) exist only while that chunk is computed: the
    chunk is checkpointed, so backward recomputes its logits instead of keeping them. For any downstream
    use of the per-token values (DPO's per-answer sums); `summed_loss` is the faster path for a plain sum.
    """
    from torch.utils.checkpoint import checkpoint

    def chunk_losses(h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(head(h).float(), t, reduction="none")

    if not torch.is_grad_enabled():
        return torch.cat([chunk_losses(h, t) for h, t in zip(hidden.split(chunk), targets.split(chunk), strict=True)] or [hidden.new_zeros(0)])
    parts = [checkpoint(chunk_losses, h, t, use_reentrant=False) for h, t in zip(hidden.split(chunk), targets.split(chunk), strict=True)]
    return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)


def summed_loss(hidden: torch.Tensor, head: nn.Module, targets: torch.Tensor, *, chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """Summed cross-entropy of the targets, never holding more than ``chunk x vocab`` logits.

    A plain linear head gets the gradients computed during forward (Liger's fused linear cross-entropy
    on CUDA where ``liger_kernel`` is installed, else `_ChunkedLinearCrossEntropy`), so backward only
    scales them: no recomputation. Any other head (LoRA on ``lm_head``) goes through `token_losses`.
    """
    if type(head) is not nn.Linear or not torch.is_grad_enabled():
        return token_losses(hidden, head, targets, chunk=chunk).sum()
    if hidden.is_cuda and (liger := _liger()) is not None:
        weight, bias = head.weight, head.bias
        if torch.is_autocast_enabled("cuda"):  # the kernel runs in its inputs' dtype: give it autocast's
            dtype = torch.get_autocast_dtype("cuda")
            hidden, weight, bias = hidden.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype)
        with torch.autocast("cuda", enabled=False):
            loss = liger(hidden, weight, targets, bias=bias, ignore_index=IGNORE, reduction="sum")
        return (loss[0] if isinstance(loss, tuple) else loss).float()
    return _ChunkedLinearCrossEntropy.apply(hidden, head.weight, head.bias, targets, chunk)


def _liger() -> Any:
    # Optional and GPU-only (Triton): used where installed, never a dependency.
    try:
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy
    except ImportError:
        return None
    return liger_fused_linear_cross_entropy


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """``sum(cross_entropy(hidden @ weight.T + bias, targets))``, with gradients computed in forward.

    The gradients are computed chunk by chunk in forward, so that neither pass holds more than one
    chunk's logits.

    Written by hand because the gradient of a summed loss is known up to the incoming scalar: each chunk's
    softmax gives ``d logits = softmax - one_hot`` at once, turned into the hidden-state and weight
    gradients before the next chunk; backward multiplies them by the incoming gradient. Matmuls run in the
    ambient autocast dtype and logits in float32, as in the unchunked ``head(h).float()``.
    """

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor, chunk: int) -> torch.Tensor:
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros_like(weight, dtype=torch.float32)
        grad_bias = None if bias is None else torch.zeros_like(bias, dtype=torch.float32)
        total = torch.zeros((), device=hidden.device, dtype=torch.float32)
        for start in range(0, hidden.shape[0], chunk):
            h, t = hidden[start : start + chunk], targets[start : start + chunk]
            logits = F.linear(h, weight, bias).float()
            total += F.cross_entropy(logits, t, reduction="sum")
            grad_logits = logits.softmax(-1)
            grad_logits[torch.arange(len(t), device=t.device), t] -= 1
            grad_hidden[start : start + chunk] = (grad_logits.to(h.dtype) @ weight.to(h.dtype)).to(hidden.dtype)
            grad_weight += (grad_logits.T.to(h.dtype) @ h).float()
            if grad_bias is not None:
                grad_bias += grad_logits.sum(0)
        ctx.save_for_backward(grad_hidden, grad_weight, *(() if grad_bias is None else (grad_bias,)))
        ctx.dtypes = weight.dtype, None if bias is None else bias.dtype
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_hidden, grad_weight, *grad_bias = ctx.saved_tensors
        weight_dtype, bias_dtype = ctx.dtypes
        bias = (grad * grad_bias[0]).to(bias_dtype) if grad_bias else None
        return grad * grad_hidden, (grad * grad_weight).to(weight_dtype), bias, None, None


def causal_lm_loss(model: nn.Module, batch: Batch, backend: Backend, *, chunk: int = DEFAULT_CHUNK) -> tuple[torch.Tensor, MetricSums]:
    """Summed next-token cross-entropy over the trained tokens of ``batch`` (no metrics)."""
    if not batch.n_targets:
        return torch.zeros((), device=batch.input_ids.device), {}
    hidden, head, targets = trained_hidden(model, batch, backend)
    return summed_loss(hidden, head, targets, chunk=chunk), {}


# Methods differ by the loss (and, for DPO, by the batch builder); the loop is the same for all. DPO's
# loss needs the recipe and a reference model, so `train run` builds it (`tunekit_train.dpo`).
LOSSES: dict[Method, LossFn] = {"sft": causal_lm_loss, "cpt": causal_lm_loss}
