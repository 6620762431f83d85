"""Packed attention without cross-contamination: each token attends only to earlier tokens of its own segment.

A packed row holds several sequences back to back; ``position_ids`` restart at 0 per segment (so rotary
embeddings see each sequence from position 0) and attention is restricted per segment by the backend:

- ``flash_attention_2`` (GPU, when installed): the micro-batch is flattened into one row and the kernel gets
  ``cu_seq_lens``; no mask is materialised (attention cost is sum(len_i^2), not len^2).
- ``sdpa_varlen`` (the default without flash-attention, CPU included): the same flattened row and
  ``cu_seq_lens``, with PyTorch's SDPA called causally on each segment in turn. No mask either, and the same
  sum(len_i^2) cost: at 16k tokens in 14 segments one layer's attention forward and backward took 4.0 s
  against 56 s with the block-diagonal mask (CPU, measured).
- ``sdpa`` / ``eager``: a block-diagonal causal 4-D mask ``[batch, 1, L, L]`` (bool for SDPA on CUDA, additive
  float for eager and for SDPA on CPU). Padding at the end of a shorter row is its own segment, so no row of the mask is empty.
- ``flex_attention``: the same segment rule as a ``BlockMask``, which skips fully masked blocks.

Transformers returns a 4-D mask or a BlockMask to the attention layers unchanged, so what is built here is
exactly what every layer uses.
"""

from __future__ import annotations

import importlib.util
import itertools
from typing import Any, Literal

import torch

Backend = Literal["sdpa_varlen", "sdpa", "eager", "flex_attention", "flash_attention_2"]

SEGMENT_SDPA = "sdpa_varlen"
"""The name `register_segment_sdpa` gives the per-segment SDPA in transformers' attention registry."""


def resolve_backend(requested: Literal["auto"] | Backend, device: torch.device) -> Backend:
    """The backend to use: ``auto`` is varlen flash-attention on CUDA when installed, per-segment SDPA otherwise."""
    if requested != "auto":
        return requested
    if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return SEGMENT_SDPA


def flattens_rows(backend: Backend) -> bool:
    """Whether the backend takes a micro-batch as one flattened row (varlen kernels) instead of padded rows."""
    return backend in ("flash_attention_2", SEGMENT_SDPA)


def attention_kwargs(segment_ids: torch.Tensor, backend: Backend, dtype: torch.dtype) -> dict[str, Any]:
    """Model keyword arguments that confine attention to segments.

    Args:
        segment_ids: ``[batch, L]`` integers, equal within a segment and different across segments
            (increasing along each row).
        backend: the model's attention implementation.
        dtype: the model's compute dtype (for the additive eager mask).
    """
    if flattens_rows(backend):
        return _varlen_kwargs(segment_ids)
    if backend == "flex_attention":
        return {"attention_mask": _block_mask(segment_ids)}
    mask = block_causal_mask(segment_ids)
    if backend == "eager" or mask.device.type == "cpu":
        # Eager attention adds the mask to the scores: 0 where allowed, the dtype's minimum elsewhere.
        # SDPA on CPU turns a boolean mask into such a float mask at every call, and each layer kept its
        # own copy for backward (4 L^2 bytes per layer, measured); built once here, all layers share it.
        mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
    return {"attention_mask": mask}


def block_causal_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """Boolean ``[batch, 1, L, L]`` mask, True where query i may attend to key j (same segment and j <= i)."""
    length = segment_ids.shape[1]
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    causal = torch.ones(length, length, dtype=torch.bool, device=segment_ids.device).tril()
    return (same & causal)[:, None]


def _block_mask(segment_ids: torch.Tensor) -> Any:
    from torch.nn.attention.flex_attention import create_block_mask

    def same_segment_causal(b: torch.Tensor, h: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return (segment_ids[b, q] == segment_ids[b, k]) & (k <= q)

    batch, length = segment_ids.shape
    return create_block_mask(same_segment_causal, batch, None, length, length, device=segment_ids.device)


def _varlen_kwargs(segment_ids: torch.Tensor) -> dict[str, Any]:
    # One flattened row: segment boundaries are where the id changes.
    ids = segment_ids[0]
    starts = torch.nonzero(torch.diff(ids, prepend=ids[:1] - 1)).flatten()
    cu = torch.cat([starts, torch.tensor([ids.numel()], device=ids.device)]).to(torch.int32)
    longest = int((cu[1:] - cu[:-1]).max())
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": longest, "max_length_k": longest}


def register_segment_sdpa() -> None:
    """Add ``sdpa_varlen`` to transformers' attention registry (idempotent), before a model is built with it.

    It is not in the mask registry, so transformers builds no mask for it: the segments come as ``cu_seq_lens_q``.
    """
    from transformers import AttentionInterface

    AttentionInterface.register(SEGMENT_SDPA, _segment_sdpa)


def _segment_sdpa(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    # PyTorch has no varlen SDPA (nested tensors do not take a causal flag with backward on CPU), and
    # flash-attention is CUDA-only, so the segments of the flattened row are attended to one at a time.
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    bounds = kwargs.get("cu_seq_lens_q")
    if bounds is None:  # not a flattened training row (a vision tower's blocks, generation): plain SDPA
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    edges = bounds.tolist()
    gqa = key.shape[1] != query.shape[1]
    p = dropout if module.training else 0.0
    out = torch.cat(
        [
            torch.nn.functional.scaled_dot_product_attention(
                query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], dropout_p=p, is_causal=True, scale=scaling, enable_gqa=gqa
            )
            for a, b in itertools.pairwise(edges)
        ],
        dim=2,
    )
    return out.transpose(1, 2).contiguous(), None
