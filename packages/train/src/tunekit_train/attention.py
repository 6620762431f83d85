"""Packed attention without cross-contamination: each token attends only to earlier tokens of its own segment.

A packed row holds several sequences back to back; ``position_ids`` restart at 0 per segment (so rotary
embeddings see each sequence from position 0) and attention is restricted per segment by the backend:

- ``flash_attention_2`` (GPU, when installed): the micro-batch is flattened into one row and the kernel gets
  ``cu_seq_lens``; no mask is materialised (attention cost is sum(len_i^2), not len^2).
- ``sdpa`` / ``eager``: a block-diagonal causal 4-D mask ``[batch, 1, L, L]`` (bool for SDPA on CUDA, additive
  float for eager and for SDPA on CPU). Padding at the end of a shorter row is its own segment, so no row of the mask is empty.
- ``flex_attention``: the same segment rule as a ``BlockMask``, which skips fully masked blocks.

Transformers returns a 4-D mask or a BlockMask to the attention layers unchanged, so what is built here is
exactly what every layer uses.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Literal

import torch

Backend = Literal["sdpa", "eager", "flex_attention", "flash_attention_2"]


def resolve_backend(requested: Literal["auto"] | Backend, device: torch.device) -> Backend:
    """The backend to use: ``auto`` is varlen flash-attention on CUDA when installed, SDPA otherwise."""
    if requested != "auto":
        return requested
    if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def flattens_rows(backend: Backend) -> bool:
    """Whether the backend takes a micro-batch as one flattened row (varlen kernels) instead of padded rows."""
    return backend == "flash_attention_2"


def attention_kwargs(segment_ids: torch.Tensor, backend: Backend, dtype: torch.dtype) -> dict[str, Any]:
    """Model keyword arguments that confine attention to segments.

    Args:
        segment_ids: ``[batch, L]`` integers, equal within a segment and different across segments
            (increasing along each row).
        backend: the model's attention implementation.
        dtype: the model's compute dtype (for the additive eager mask).
    """
    if backend == "flash_attention_2":
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
