"""`train eval` against a direct computation: HF's own loss on the chat-templated conversation with the
answer's tokens as labels, argmax accuracy, `train generate`'s greedy answers and rouge-score's ROUGE-L."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from rouge_score import rouge_scorer
from tests.serve.conftest import ROOT, Runs

from tunekit_cli.train import main
from tunekit_train.generate import load_trained, tokenizer_for

NEW_TOKENS = 6


def test_eval_matches_a_direct_computation(runs: Runs, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = [json.loads(line) for line in (ROOT / "examples/data/sft-val.jsonl").read_text().splitlines()[:2]]
    data = tmp_path / "val.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["eval", str(runs.a), "--data", str(data), "--max-new-tokens", str(NEW_TOKENS), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)

    model, tokenizer = load_trained(runs.a), tokenizer_for(runs.a)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    nll = tokens = correct = 0.0
    exact, rouge = 0, 0.0
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    for record in records:
        system, user, answer = record["system"][0]["text"], *(m["content"][0]["text"] for m in record["messages"])
        turns = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        prompt = tokenizer.apply_chat_template(turns, add_generation_prompt=True, return_dict=True)["input_ids"]
        full = tokenizer.apply_chat_template([*turns, {"role": "assistant", "content": answer}], return_dict=True)["input_ids"]
        last = len(full) - 1 - full[::-1].index(end)  # the answer and its <|im_end|> are trained, the newline after is not
        labels = torch.full((len(full),), -100)
        labels[len(prompt) : last + 1] = torch.tensor(full[len(prompt) : last + 1])
        with torch.no_grad():
            out = model(input_ids=torch.tensor([full]), labels=labels[None])
        count = int((labels[1:] != -100).sum())
        nll, tokens = nll + float(out.loss) * count, tokens + count
        predicted = out.logits[0, :-1].argmax(-1)
        correct += int((predicted[labels[1:] != -100] == labels[1:][labels[1:] != -100]).sum())
        args = ["generate", str(runs.a), "--greedy", "--system", system, "--prompt", user, "--max-new-tokens", str(NEW_TOKENS), "--json"]
        assert main(args) == 0
        text = json.loads(capsys.readouterr().out)["completions"][0]["text"]
        exact += text.strip() == answer.strip()
        rouge += scorer.score(answer, text)["rougeL"].fmeasure

    assert result["examples"] == 2 and result["tokens"] == tokens
    assert result["loss"] == pytest.approx(nll / tokens, rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(nll / tokens), rel=1e-5)
    assert result["token_accuracy"] == pytest.approx(correct / tokens)
    assert result["exact_match"] == exact / 2 and result["rouge_l"] == pytest.approx(rouge / 2)
    saved = json.loads((runs.a / "eval.json").read_text())
    assert saved["loss"] == result["loss"]
    event = json.loads((runs.a / "events.jsonl").read_text().splitlines()[-1])
    assert event["type"] == "eval" and event["loss"] == result["loss"] and event["data"] == str(data)


def test_eval_reports_a_file_without_chat_examples(runs: Runs, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "empty.jsonl"
    data.write_text(json.dumps({"schemaVersion": "bedrock-conversation-2024", "messages": [{"role": "user", "content": [{"text": "hi"}]}]}) + "\n")
    assert main(["eval", str(runs.a), "--data", str(data), "--json"]) == 2
    assert f"{data}: no chat example ending with an assistant turn" in capsys.readouterr().err
