"""Direct preference optimisation on packed pairs (Rafailov et al. 2023, arXiv 2305.18290).

A `ds pack` DPO row holds whole pairs: the chosen and the rejected answer of a pair are adjacent segments
of one row (chosen first), and attention stays inside each segment. One forward pass over a micro-batch
gives the log-prob of every trained (answer) token; summing them per segment gives each answer's
log-likelihood log pi(y|x). A row of k pairs therefore costs one forward over its real tokens, with no
padding to the longest answer (TRL pads a ``[chosen; rejected]`` batch: ``padding_free`` is disabled in
its DPO trainer, shared/spec/pack-train-notes.md section 3.3).

With the margin D = (log pi(y_c) - log ref(y_c)) - (log pi(y_r) - log ref(y_r)), the per-pair losses are
those of TRL 1.16 ``DPOTrainer._compute_loss`` (notes section 3.1):

- ``sigmoid``: -(1 - e) log sigmoid(beta D) - e log sigmoid(-beta D), e = ``label_smoothing``
  (conservative DPO, Mitchell 2023; e = 0 is DPO);
- ``ipo``: (D' - 1 / (2 beta))^2 where D' is the margin of per-token *averaged* log-ratios (IPO,
  arXiv 2310.12036; TRL normalises by answer length, "confirmed with the IPO authors");
- ``hinge``: max(0, 1 - beta D) (SLiC / RSO, arXiv 2309.06657).

The loss and the metrics (rewards beta * (log pi - log ref) per answer, their margin and accuracy, the
policy log-probs) are SUMS over pairs; the loop divides them by the pairs of the whole optimizer step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tunekit_data.errors import InputError
from tunekit_train.attention import Backend
from tunekit_train.data import IGNORE, Batch, PackedRows, collate
from tunekit_train.losses import DEFAULT_CHUNK, MetricSums, token_losses, trained_hidden
from tunekit_train.recipe import DPO_METRICS, DpoCfg

REFERENCE_COLUMN = "ref_logps"
"""Per-segment column of precomputed reference log-probs (`tunekit_train.reference.attach_reference`)."""
METRIC_COLUMNS = DPO_METRICS + tuple(f"val_{name}" for name in DPO_METRICS)
"""The columns a DPO run adds to ``metrics.csv``."""


def check_pairs(rows: PackedRows) -> None:
    """Check that packed rows hold whole pairs: per row, segments alternate chosen / rejected of one pair.

    Raises:
        InputError: the pair columns are missing, or some row breaks the layout.
    """
    missing = [name for name in ("pair_ids", "is_chosen") if not rows.has_column(name)]
    if missing:
        msg = f"{rows.source}: DPO rows lack the column(s) {', '.join(missing)}; pack preference data with `ds pack`"
        raise InputError(msg)
    # Per-segment columns only: a rank of a multi-process job checks every row without reading the tokens.
    seq_lens, chosen, pair_ids = rows.column("seq_lens"), rows.column("is_chosen"), rows.column("pair_ids")
    # Rows of an even number of segments whose flat chosen flags alternate True, False start each with a
    # chosen answer, so every pair lies inside one row.
    expected = np.arange(len(chosen.values)) % 2 == 0
    bad = (chosen.values.astype(bool) != expected) | (pair_ids.values != pair_ids.values[np.arange(len(expected)) & ~1])
    odd = np.flatnonzero(seq_lens.row_lengths() % 2)
    if odd.size or bad.any() or not np.array_equal(chosen.offsets, seq_lens.offsets):
        row = int(odd[0]) if odd.size else int(np.searchsorted(seq_lens.offsets, np.argmax(bad), side="right") - 1)
        msg = f"{rows.source}: row {row}: segments are not chosen/rejected pairs of one record (is_chosen, pair_ids)"
        raise InputError(msg)


@dataclass
class PairBatch:
    """A micro-batch of whole pairs: the packed tokens, and the segment each trained token belongs to.

    Segments are numbered across the micro-batch in row order, so chosen answers have even numbers and
    each rejected answer follows its chosen one. ``reference`` holds precomputed reference log-probs per
    segment when the rows carry them.
    """

    tokens: Batch
    target_segments: torch.Tensor
    """Segment of each trained token, in the order `trained_hidden` returns them."""
    n_segments: int
    reference: torch.Tensor | None = None

    @property
    def n_targets(self) -> int:
        """Pairs: the unit DPO's loss is normalised by."""
        return self.n_segments // 2

    @property
    def n_tokens(self) -> int:
        """Tokens the micro-batch processes."""
        return self.tokens.n_tokens

    def answer_lengths(self) -> torch.Tensor:
        """Trained tokens of each segment."""
        return torch.bincount(self.target_segments, minlength=self.n_segments)

    def to(self, device: torch.device) -> PairBatch:
        """The same batch on ``device``."""
        reference = None if self.reference is None else self.reference.to(device)
        return PairBatch(self.tokens.to(device), self.target_segments.to(device), self.n_segments, reference)


def collate_pairs(rows: list[dict[str, np.ndarray]], *, flatten: bool, build: Callable[..., Batch] = collate) -> PairBatch:
    """Build a DPO micro-batch from packed pair rows (see `collate` for the token layout).

    ``build`` makes the token batch: `tunekit_train.vision.VisionCollate` for rows with images.
    """
    tokens = build(rows, flatten=flatten)
    counts = [len(row["seq_lens"]) for row in rows]
    segments = tokens.segment_ids
    if not flatten:  # padded rows number their segments from 0: shift each row past the rows before it
        segments = segments + torch.tensor(np.cumsum([0, *counts[:-1]]))[:, None]
    # Padding never carries a trained label, so its segment number is never used.
    target_segments = segments[:, 1:][tokens.labels[:, 1:] != IGNORE]
    reference = None
    if REFERENCE_COLUMN in rows[0]:
        reference = torch.from_numpy(np.concatenate([row[REFERENCE_COLUMN] for row in rows]).astype(np.float32))
    return PairBatch(tokens, target_segments, sum(counts), reference)


def segment_logps(model: nn.Module, batch: PairBatch, backend: Backend, *, chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """Summed log-prob of each segment's trained tokens, ``[n_segments]``, from one forward pass.

    The output head runs ``chunk`` trained tokens at a time (`tunekit_train.losses.token_losses`).
    """
    hidden, head, targets = trained_hidden(model, batch.tokens, backend)
    token_logps = -token_losses(hidden, head, targets, chunk=chunk)
    return torch.zeros(batch.n_segments, device=hidden.device).index_add(0, batch.target_segments, token_logps)


def pair_losses(policy: torch.Tensor, reference: torch.Tensor, lengths: torch.Tensor, cfg: DpoCfg) -> torch.Tensor:
    """Per-pair loss from per-segment log-probs (chosen at even indices, rejected after each).

    Args:
        policy: summed log-probs of the trained model, ``[2 * pairs]``.
        reference: the same for the reference model.
        lengths: trained tokens per segment (IPO averages the log-ratios over them).
        cfg: ``beta``, ``loss`` and ``label_smoothing``.
    """
    logratios = policy - reference
    if cfg.loss == "ipo":
        averaged = logratios / lengths.clamp(min=1)
        return (averaged[0::2] - averaged[1::2] - 1 / (2 * cfg.beta)) ** 2
    margin = cfg.beta * (logratios[0::2] - logratios[1::2])
    if cfg.loss == "hinge":
        return torch.relu(1 - margin)
    smoothing = cfg.label_smoothing
    return -(1 - smoothing) * F.logsigmoid(margin) - smoothing * F.logsigmoid(-margin)


def pair_metrics(policy: torch.Tensor, reference: torch.Tensor, beta: float) -> MetricSums:
    """Sums over pairs of the logged DPO metrics (`DPO_METRICS`), without gradients."""
    policy = policy.detach()
    rewards = beta * (policy - reference)
    chosen, rejected = rewards[0::2], rewards[1::2]
    return {
        "rewards/chosen": chosen.sum(),
        "rewards/rejected": rejected.sum(),
        "rewards/margins": (chosen - rejected).sum(),
        "rewards/accuracy": (chosen > rejected).float().sum(),
        "logps/chosen": policy[0::2].sum(),
        "logps/rejected": policy[1::2].sum(),
    }


Reference = Callable[[nn.Module, PairBatch, Backend], torch.Tensor]
"""``reference(policy_model, batch, backend)``: the reference log-prob of each segment (run without grad)."""


class DpoLoss:
    """The DPO loss of `train run`: policy log-probs with gradients, reference log-probs without.

    Returns the summed per-pair loss and `pair_metrics` (the `tunekit_train.losses.LossFn` contract).
    """

    def __init__(self, cfg: DpoCfg, reference: Reference, *, chunk: int = DEFAULT_CHUNK) -> None:
        self.cfg, self.reference, self.chunk = cfg, reference, chunk

    def __call__(self, model: nn.Module, batch: PairBatch, backend: Backend) -> tuple[torch.Tensor, MetricSums]:
        """The batch's summed DPO loss and metric sums (a `tunekit_train.losses.LossFn`)."""
        # Reference first: its no-grad activations are freed before the policy's graph is built.
        with torch.no_grad():
            reference = self.reference(model, batch, backend)
        policy = segment_logps(model, batch, backend, chunk=self.chunk)
        losses = pair_losses(policy, reference, batch.answer_lengths(), self.cfg)
        return losses.sum(), pair_metrics(policy, reference, self.cfg.beta)
