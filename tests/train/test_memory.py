"""Issue 12: activation checkpointing and the chunked loss change memory, never the numbers (float32,
1e-6 relative), for SFT and DPO, full and LoRA; bf16 storage and compile keep the loss."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from tunekit_train.checkpointing import checkpoint_layers, decoder_layers
from tunekit_train.data import collate
from tunekit_train.dpo import DpoLoss, collate_pairs
from tunekit_train.lora import add_lora
from tunekit_train.losses import causal_lm_loss, summed_loss, token_losses, trained_hidden
from tunekit_train.model import Dropouts, apply_dropouts
from tunekit_train.precision import store_weights
from tunekit_train.recipe import DpoCfg, LoraTuning
from tunekit_train.reference import AdaptersOff, FrozenCopy

from .conftest import TINY_LLAMA, row_columns, sft_sequences
from .dpo_data import pair_row, random_pairs


def trained_logits(model, batch, backend):
    """Float32 logits ``[n, vocab]`` at the n trained positions and those n tokens, all at once: the
    reference the chunked losses are checked against (training never holds every logit)."""
    hidden, head, targets = trained_hidden(model, batch, backend)
    return head(hidden).float(), targets

CPU = torch.device("cpu")


def _model(lora: bool) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(LlamaConfig(**TINY_LLAMA), attn_implementation="sdpa", dtype=torch.float32)
    if lora:
        model = add_lora(model, LoraTuning(adapter_dim=4, alpha=8, adapter_dropout=0.1))
        for name, param in model.named_parameters():  # B starts at zero: give the adapters a gradient path both ways
            if "lora_B" in name:
                torch.nn.init.normal_(param, std=0.02)
    # Dropout on: the recomputation must draw the same masks.
    assert not apply_dropouts(model, Dropouts(hidden=0.1, attention=0.1, ffn=0.1))
    return model.train()


def _grads(model: torch.nn.Module, loss_fn, batch) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad()
    torch.manual_seed(1)
    loss = loss_fn(model, batch, "sdpa")[0]
    loss.backward()
    return float(loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same(a: tuple[float, dict], b: tuple[float, dict]) -> None:
    assert a[0] == pytest.approx(b[0], rel=1e-6)
    assert a[1].keys() == b[1].keys() and a[1]
    for name in a[1]:
        torch.testing.assert_close(a[1][name], b[1][name], rtol=1e-6, atol=1e-9, msg=name)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    # Relative to the whole tensor: chunking reorders float32 sums, which moves entries near zero by
    # more than 1e-6 of themselves but the gradient by far less than 1e-6 of its norm.
    return float((a - b).norm() / b.norm())


def _sft_batch():
    seqs = sft_sequences(8, seed=3, lengths=(4, 30))
    return collate([row_columns(seqs[:4]), row_columns(seqs[4:])], flatten=False)


def _dpo_batch():
    return collate_pairs([pair_row(random_pairs(3, seed=1)), pair_row(random_pairs(2, seed=2), 3)], flatten=False)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_checkpointing_gives_the_same_loss_and_gradients(method: str, lora: bool) -> None:
    model = _model(lora)
    if method == "sft":
        loss_fn, batch = causal_lm_loss, _sft_batch()
    else:
        reference = AdaptersOff(model) if lora else FrozenCopy(model)
        loss_fn, batch = DpoLoss(DpoCfg(beta=0.1), reference), _dpo_batch()
    plain = _grads(model, loss_fn, batch)
    assert checkpoint_layers(model) == TINY_LLAMA["num_hidden_layers"]
    # Parameter names (checkpoints, LoRA+ groups, exports) are unchanged.
    assert plain[1].keys() <= dict(model.named_parameters()).keys()
    _assert_same(plain, _grads(model, loss_fn, batch))


def test_checkpointed_layers_recompute_in_backward() -> None:
    # Proof that checkpointing is on: each layer's forward runs again during backward.
    model = _model(False)
    checkpoint_layers(model)
    calls = []
    for layer in decoder_layers(model):
        # A pre-hook of the first module: recomputation stops early, once the last saved tensor is back.
        layer.input_layernorm.register_forward_pre_hook(lambda *args: calls.append(1))
    loss = causal_lm_loss(model, _sft_batch(), "sdpa")[0]
    assert len(calls) == 2
    loss.backward()
    assert len(calls) == 4
    frozen = copy.deepcopy(model)  # DPO's frozen copy checkpoints its own layers
    assert all(type(a) is type(b) for a, b in zip(decoder_layers(model), decoder_layers(frozen), strict=True))


@pytest.mark.parametrize("chunk", [1, 7, 16, 10_000])
def test_chunked_loss_equals_the_full_loss_and_gradients(chunk: int) -> None:
    # 7 does not divide the 70 trained positions, 1 and 16 stress many chunks, 10,000 is one chunk.
    torch.manual_seed(0)
    hidden = torch.randn(70, 32, dtype=torch.float64).float().requires_grad_()
    head = torch.nn.Linear(32, 50, bias=True)
    targets = torch.randint(0, 50, (70,))
    weights = torch.rand(70)  # a non-uniform downstream use of per-token values (DPO's segment sums)

    def run(loss_of) -> tuple[torch.Tensor, list[torch.Tensor]]:
        for t in (hidden, *head.parameters()):
            t.grad = None
        loss = loss_of()
        loss.backward()
        return loss.detach(), [hidden.grad.clone(), head.weight.grad.clone(), head.bias.grad.clone()]

    want_sum = run(lambda: F.cross_entropy(head(hidden).float(), targets, reduction="sum"))
    want_weighted = run(lambda: (F.cross_entropy(head(hidden).float(), targets, reduction="none") * weights).sum())
    for want, got in (
        (want_sum, run(lambda: summed_loss(hidden, head, targets, chunk=chunk))),
        (want_weighted, run(lambda: (token_losses(hidden, head, targets, chunk=chunk) * weights).sum())),
    ):
        torch.testing.assert_close(got[0], want[0], rtol=1e-6, atol=0)
        for a, b in zip(got[1], want[1], strict=True):
            assert _relative(a, b) < 1e-6


def test_chunked_loss_of_no_trained_tokens_is_zero_with_zero_gradients() -> None:
    hidden = torch.randn(0, 32, requires_grad=True)
    head = torch.nn.Linear(32, 50, bias=False)
    loss = summed_loss(hidden, head, torch.zeros(0, dtype=torch.long), chunk=4)
    loss.backward()
    assert float(loss) == 0.0 and not head.weight.grad.any()
    assert token_losses(hidden, head, torch.zeros(0, dtype=torch.long), chunk=4).shape == (0,)


def test_model_loss_is_the_full_logits_loss_with_a_chunk_that_does_not_divide() -> None:
    model = _model(False).eval()  # same function, dropout off
    batch = _sft_batch()
    logits, targets = trained_logits(model, batch, "sdpa")
    full = F.cross_entropy(logits, targets, reduction="sum")
    full.backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    chunked = causal_lm_loss(model, batch, "sdpa", chunk=5)[0]
    chunked.backward()
    assert targets.numel() % 5 and float(chunked) == pytest.approx(float(full), rel=1e-6)
    for name, param in model.named_parameters():
        assert _relative(param.grad, want[name]) < 1e-6, name


def test_bf16_lora_stores_the_frozen_base_in_bf16_and_keeps_adapters_float32() -> None:
    model = _model(True)
    store_weights(model, "bf16", CPU)
    dtypes = {p.dtype for p in model.parameters() if not p.requires_grad}
    assert dtypes == {torch.bfloat16}
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    full = _model(False)
    store_weights(full, "bf16-mixed", CPU)  # mixed keeps float32 weights
    assert {p.dtype for p in full.parameters()} == {torch.float32}


@pytest.mark.slow
def test_compiled_layers_give_the_same_loss() -> None:
    from tunekit_train.checkpointing import compile_layers

    model = _model(False).eval()
    batch = _sft_batch()
    with torch.no_grad():
        want = causal_lm_loss(model, batch, "sdpa")[0]
        compile_layers(model)
        got = causal_lm_loss(model, batch, "sdpa")[0]
    assert float(got) == pytest.approx(float(want), rel=1e-5)
