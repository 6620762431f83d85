"""``train eval``: a trained model measured on a held-out chat file, recorded in its run like a validation.

Two kinds of figures:

- teacher-forced, on the tokens training would have trained on: each example is tokenized exactly as
  ``ds pack`` / ``train run`` did for this run (same template, same loss masks: `tunekit_tokenize`), and
  ``loss`` is the mean cross-entropy over those tokens, ``perplexity`` its exp, ``token_accuracy`` the
  share where the most likely next token is the right one;
- generated: the conversation up to its last assistant turn is rendered as ``train generate`` and
  ``train serve`` render prompts, completed greedily, and compared with that turn: ``exact_match``
  (after trimming whitespace) and ``rouge_l`` (ROUGE-L F1 of Google's ``rouge-score``).

Results go to ``RUN_DIR/eval.json`` (written atomically) and an ``eval`` event in ``events.jsonl``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunekit_data.errors import InputError, at_least
from tunekit_train.generate import (
    GenerationSettings,
    complete_ids,
    load_trained,
    model_dir,
    prompt_ids,
    tokenizer_for,
)
from tunekit_train.logs import STATE_FILE, append_event, write_json_atomic
from tunekit_train.losses import DEFAULT_CHUNK, head_inputs
from tunekit_train.serve import pack_settings, trained_template

EVAL_FILE = "eval.json"


@dataclass(frozen=True)
class EvalItem:
    """One example: its training tokens and, for generation, its prompt turns and reference answer."""

    line: int
    input_ids: list[int]
    labels: list[int]
    prompt: list[dict[str, str]]
    reference: str


def load_items(data: Path, run: Path, directory: Path, max_samples: int | None) -> tuple[list[EvalItem], int]:
    """The usable examples of ``data`` (tokenized as the run trained) and how many records were skipped.

    Raises:
        InputError: the file cannot be read or holds no usable chat example.
    """
    from tunekit_data.convert import Rejection, read_examples
    from tunekit_data.examples import ChatExample
    from tunekit_tokenize import ExampleRejected, encode_example, load_tokenizer, resolve_template

    settings = pack_settings(run)
    bundle = load_tokenizer(directory)
    template = resolve_template(bundle, settings["template"])
    items, skipped = [], 0
    for source, example in read_examples([str(data)]):
        if max_samples is not None and len(items) >= max_samples:
            break
        if (
            isinstance(example, Rejection)
            or not isinstance(example, ChatExample)
            or example.messages[-1].role != "assistant"
        ):
            skipped += 1
            continue
        try:
            encoded = encode_example(bundle, example, template=template, loss_on=settings["loss_on"])  # type: ignore[arg-type]
        except ExampleRejected:
            skipped += 1
            continue
        sequence = encoded.sequences[0]
        turns = [{"role": m.role, "content": m.content} for m in example.messages[:-1]]
        items.append(
            EvalItem(
                source.line,
                sequence.input_ids.tolist(),
                sequence.labels.tolist(),
                turns,
                example.messages[-1].content,
            )
        )
    if not items:
        msg = f"{data}: no chat example ending with an assistant turn to evaluate ({skipped} records skipped)"
        raise InputError(msg)
    return items, skipped


@torch.no_grad()
def teacher_forced(model: nn.Module, item: EvalItem, device: torch.device) -> tuple[float, int, int]:
    """Summed cross-entropy, trained-token count and correct argmax predictions of one example."""
    ids = torch.tensor([item.input_ids], device=device)
    labels = torch.tensor(item.labels[1:], device=device)  # the model predicts token t+1 from position t
    trained = labels != -100
    # Only the trained positions go through the head, a chunk at a time, as in training: a long example's
    # [length, vocab] float32 logits would not fit.
    hidden, head = head_inputs(model, {"input_ids": ids}, nn.functional.pad(trained, (0, 1), value=False)[None])
    loss = correct = 0.0
    for h, t in zip(hidden.split(DEFAULT_CHUNK), labels[trained].split(DEFAULT_CHUNK), strict=True):
        logits = head(h).float()
        loss += float(nn.functional.cross_entropy(logits, t, reduction="sum"))
        correct += int((logits.argmax(-1) == t).sum())
    return loss, int(trained.sum()), int(correct)


def evaluate_run(
    run: Path, data: Path, *, max_samples: int | None = None, max_new_tokens: int = 64, progress: Any = None
) -> dict[str, Any]:
    """Evaluate the model of ``run`` on ``data`` and record the result (module docstring).

    ``progress(done, total)`` is called after each example.

    Raises:
        UsageError: ``max_samples`` or ``max_new_tokens`` below 1.
        InputError: no model at ``run``, or nothing to evaluate in ``data``.
    """
    greedy = GenerationSettings(max_new_tokens=max_new_tokens, do_sample=False)  # the bounds first
    if max_samples is not None:
        at_least("--max-samples", max_samples, 1)
    from rouge_score import rouge_scorer

    directory = model_dir(run)
    items, skipped = load_items(data, run, directory, max_samples)
    model, tokenizer = load_trained(directory), tokenizer_for(directory)
    device = next(model.parameters()).device
    template = trained_template(run, directory)
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    nll = tokens = correct = exact = 0
    rouge = 0.0
    samples = []
    for done, item in enumerate(items, 1):
        item_nll, item_tokens, item_correct = teacher_forced(model, item, device)
        nll, tokens, correct = nll + item_nll, tokens + item_tokens, correct + item_correct
        ids = torch.tensor([prompt_ids(tokenizer, item.prompt, template)], device=device)
        prediction = complete_ids(model, tokenizer, ids, greedy)
        match = prediction.strip() == item.reference.strip()
        score = scorer.score(item.reference, prediction)["rougeL"].fmeasure
        exact, rouge = exact + match, rouge + score
        samples.append(
            {
                "line": item.line,
                "reference": item.reference,
                "prediction": prediction,
                "exact_match": match,
                "rouge_l": score,
            }
        )
        if progress is not None:
            progress(done, len(items))
    loss = nll / tokens  # every encoded example has trained tokens (the encoder rejects the others)
    metrics = {
        "loss": loss,
        "perplexity": math.exp(min(loss, 700.0)),
        "token_accuracy": correct / tokens,
        "exact_match": exact / len(items),
        "rouge_l": rouge / len(items),
    }
    result = {"model": str(directory), "data": str(data), "examples": len(items), "skipped": skipped, "tokens": tokens,
              "max_new_tokens": max_new_tokens, **metrics, "samples": samples}  # fmt: skip
    _record(run, directory, result, metrics)
    return result


def _record(run: Path, directory: Path, result: dict[str, Any], metrics: dict[str, float]) -> None:
    """``eval.json`` in the run directory (else next to the model) and, in a run, an ``eval`` event."""
    # RUN_DIR, RUN_DIR/final or RUN_DIR/checkpoints/step-N
    run_dir = next((p for p in (run, run.parent, run.parent.parent) if (p / STATE_FILE).is_file()), None)
    target = run_dir or directory
    write_json_atomic(target / EVAL_FILE, result)
    result["written"] = str(target / EVAL_FILE)
    if run_dir is not None:
        step = json.loads((run_dir / STATE_FILE).read_text(encoding="utf-8")).get("step")
        summary = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        append_event(
            run_dir,
            "eval",
            f"eval on {result['data']} ({result['examples']} examples): {summary}",
            step=step,
            data=result["data"],
            **metrics,
        )
