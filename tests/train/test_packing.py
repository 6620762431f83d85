"""Packed batches: no cross-contamination, so a packed row trains exactly like its sequences one by one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tunekit_data.errors import InputError
from tunekit_train.attention import (
    SEGMENT_SDPA,
    attention_kwargs,
    block_causal_mask,
    flattens_rows,
    register_segment_sdpa,
)
from tunekit_train.data import BatchStream, collate, load_packed
from tunekit_train.losses import causal_lm_loss

from .conftest import TINY_LLAMA, row_columns, sft_sequences, write_packed


def _model(backend: str, **config: int) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, LlamaConfig

    register_segment_sdpa()
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(LlamaConfig(**{**TINY_LLAMA, **config}), attn_implementation=backend, dtype=torch.float32)


def _loss_and_grads(model: torch.nn.Module, batches: list, backend: str) -> tuple[float, list[torch.Tensor]]:
    model.zero_grad()
    total = 0.0
    for batch in batches:
        loss, _ = causal_lm_loss(model, batch, backend)
        loss.backward()
        total += float(loss.detach())
    return total, [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize(("backend", "kv_heads"), [("sdpa", None), ("eager", None), (SEGMENT_SDPA, None), (SEGMENT_SDPA, 1)])
def test_packed_equals_unpacked_loss_and_gradients(backend: str, kv_heads: int | None) -> None:
    shape = {"num_key_value_heads": kv_heads} if kv_heads else {}
    seqs = sft_sequences(7, seed=3, lengths=(2, 30))
    # Two packed rows of different lengths in one micro-batch (padded, or flattened into one row for the
    # per-segment backend), against each sequence alone through plain causal SDPA (same seeded weights).
    packed = [collate([row_columns(seqs[:4]), row_columns(seqs[4:])], flatten=flattens_rows(backend))]
    alone = [collate([row_columns([s])], flatten=False) for s in seqs]
    loss_packed, grads_packed = _loss_and_grads(_model(backend, **shape), packed, backend)
    loss_alone, grads_alone = _loss_and_grads(_model("sdpa", **shape), alone, "sdpa")
    # The losses are token sums (~300) in float32, whose spacing there is 3e-5: compare relatively.
    assert loss_packed == pytest.approx(loss_alone, rel=1e-6)
    for a, b in zip(grads_packed, grads_alone, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_flattened_micro_batch_keeps_segments_apart() -> None:
    # The varlen layout (one flattened row) must describe the same segments as the padded layout.
    rows = [row_columns(sft_sequences(3, seed=4)), row_columns(sft_sequences(2, seed=5))]
    flat, padded = collate(rows, flatten=True), collate(rows, flatten=False)
    assert flat.input_ids.shape[0] == 1 and flat.n_targets == padded.n_targets and flat.n_tokens == padded.n_tokens
    assert flat.segment_ids[0].unique().numel() == 5


def test_block_causal_mask_is_causal_within_segments_only() -> None:
    mask = block_causal_mask(torch.tensor([[0, 0, 1, 1, 1, 2]]))[0, 0]
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [0, 0, 1, 0, 0, 0],
            [0, 0, 1, 1, 0, 0],
            [0, 0, 1, 1, 1, 0],
            [0, 0, 0, 0, 0, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(mask, expected)


def test_collate_counts_trained_tokens_and_isolates_padding() -> None:
    rows = [row_columns(sft_sequences(2, seed=1)), row_columns(sft_sequences(1, seed=2))]
    batch = collate(rows, flatten=False)
    n0 = len(rows[0]["input_ids"])
    n1 = len(rows[1]["input_ids"])
    assert batch.n_tokens == n0 + n1
    assert batch.n_targets == sum(int((r["labels"][1:] != -100).sum()) for r in rows)
    if n1 < n0:  # the padding of the shorter row is a segment of its own, with nothing trained
        assert (batch.segment_ids[1, n1:] == len(rows[1]["seq_lens"])).all()
        assert (batch.labels[1, n1:] == -100).all()


def test_stream_visits_every_row_once_per_epoch_and_resumes_mid_epoch(packed_sft: Path) -> None:
    rows = load_packed(packed_sft)
    stream = BatchStream(rows, global_batch=4, micro_batch=2, seed=0, flatten=False)
    steps = stream.steps()
    epoch = [next(steps) for _ in range(stream.steps_per_epoch)]
    assert sum(s.n_tokens for s in epoch) == rows.n_tokens
    assert epoch[-1].offset_after == len(rows)
    second = next(steps)
    assert second.epoch == 1
    again = next(stream.steps(epoch=0, offset=epoch[1].offset_after - 4))
    assert torch.equal(again.micro_batches[0].input_ids, epoch[1].micro_batches[0].input_ids)


def test_load_packed_rejects_rows_that_break_the_contract(tmp_path: Path) -> None:
    write_packed(tmp_path / "p", sft_sequences(4), max_length=64)
    table = pq.read_table(tmp_path / "p/data/train-00000-of-00001.parquet")
    seq_lens = pa.array([[1] for _ in range(table.num_rows)], type=pa.list_(pa.int32()))
    pq.write_table(table.set_column(3, "seq_lens", seq_lens), tmp_path / "p/data/train-00000-of-00001.parquet")
    with pytest.raises(InputError, match=r"row 0: seq_lens sum to 1, but the row has \d+ tokens"):
        load_packed(tmp_path / "p")
    with pytest.raises(InputError, match="expected a packed dataset"):
        load_packed(tmp_path)


def test_rows_read_back_as_written(packed_sft: Path) -> None:
    rows = load_packed(packed_sft)
    row = rows.row(0)
    assert row["input_ids"].dtype == np.int32 and row["position_ids"][0] == 0
    assert int(row["seq_lens"].sum()) == len(row["input_ids"]) == rows.lengths[0]


def test_varlen_kwargs_describe_the_flattened_segments() -> None:
    # The flash-attention path (GPU only) gets segment boundaries as cumulative lengths, not a mask.
    rows = [row_columns(sft_sequences(3, seed=4)), row_columns(sft_sequences(2, seed=5))]
    batch = collate(rows, flatten=True)
    kwargs = attention_kwargs(batch.segment_ids, "flash_attention_2", torch.float32)
    lengths = np.concatenate([r["seq_lens"] for r in rows])
    assert kwargs["cu_seq_lens_q"].tolist() == [0, *np.cumsum(lengths).tolist()]
    assert kwargs["max_length_q"] == lengths.max() and "attention_mask" not in kwargs
