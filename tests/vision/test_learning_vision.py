"""`train run` on Converse records with images on S3: a tiny Qwen2-VL learns to name a shape's colour
(held-out accuracy), `train generate --image` answers the same, the vision encoder stays frozen (its projector trains), LoRA
adapts the language model only."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import torch
from PIL import Image
from tests.vision.shapes import COLOURS, SHAPES, colour_record, shape_png, write_jsonl

from tunekit_cli.train import main as train_main
from tunekit_train.generate import GenerationSettings, complete_ids, load_trained
from tunekit_train.generate import hf_tokenizer as load_tokenizer
from tunekit_train.model import load_model
from tunekit_train.recipe import parse_recipe
from tunekit_train.run import run_training
from tunekit_train.vision import load_image_processor, vision_inputs

torch.set_num_threads(1)


def _dataset(s3, n: int, seed: int) -> list[tuple[dict, bytes, str]]:
    bucket, rng, out = s3.bucket(), random.Random(seed), []
    for i in range(n):
        colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
        data = shape_png(colour, shape, (rng.choice((24, 32, 40)), 32), seed=seed * 100_000 + i)
        uri = f"s3://{bucket}/shapes/{seed}-{i}.png"
        s3.put(uri, data)
        out.append((colour_record(uri, colour), data, colour))
    return out


def _recipe(model_dir: Path, data: Path, **model: object) -> dict:
    return {
        "run": {"name": "colours", "model_name_or_path": str(model_dir), "data_s3_path": str(data)},
        "training_config": {
            "max_length": 256,
            "global_batch_size": 4,
            "micro_batch_size": 4,
            "trainer": {"max_steps": 60, "log_every_n_steps": 20},
            "model": {"optim": {"lr": 3e-3, "sched": {"warmup_steps": 5, "min_lr": 1e-4}}, **model},
        },
    }


def _answers(run_dir: Path, examples: list[tuple[dict, bytes, str]]) -> list[tuple[str, str]]:
    model, tokenizer = load_trained(run_dir), load_tokenizer(run_dir / "final")
    processor = load_image_processor(run_dir / "final")
    settings = GenerationSettings(max_new_tokens=4, do_sample=False)
    out = []
    for _record, data, colour in examples:
        parts = [{"type": "image", "image": Image.open(io.BytesIO(data))}, {"type": "text", "text": "What colour is the shape?"}]
        inputs = vision_inputs(tokenizer, processor, [{"role": "user", "content": parts}])
        out.append((complete_ids(model, tokenizer, inputs.pop("input_ids"), settings, **inputs).strip(), colour))
    return out


def test_tiny_vlm_learns_colours_and_lora_skips_the_vision_tower(s3, tmp_path, vlm_dir, monkeypatch, capsys) -> None:
    monkeypatch.setenv("TUNEKIT_CACHE", str(tmp_path / "cache"))
    train = _dataset(s3, 160, seed=1)
    data = write_jsonl(tmp_path / "train.jsonl", [r for r, _, _ in train])
    run_training(parse_recipe(_recipe(vlm_dir, data), source="colours"), output_dir=tmp_path / "full")
    initial, trained = load_model(vlm_dir, backend="sdpa", seed=0)[0].state_dict(), load_trained(tmp_path / "full").state_dict()
    changed = {name for name, value in initial.items() if not torch.equal(value, trained[name])}
    assert not any(".visual." in n and ".merger." not in n for n in changed)  # freeze_vision: true (default)
    assert any(".visual.merger." in n for n in changed) and any("language_model" in n for n in changed)
    held_out = _dataset(s3, 40, seed=2)
    answers = _answers(tmp_path / "full", held_out)
    accuracy = sum(got == want for got, want in answers) / len(answers)
    assert accuracy >= 0.9, answers
    uri = held_out[0][0]["messages"][0]["content"][0]["image"]["source"]["s3Location"]["uri"]
    argv = ["generate", str(tmp_path / "full"), "--image", uri, "--prompt", "What colour is the shape?", "--greedy", "--max-new-tokens", "4", "--json"]
    assert train_main(argv) == 0
    assert json.loads(capsys.readouterr().out)["completions"][0]["text"].strip() == answers[0][0]

    lora = _recipe(vlm_dir, data, peft={"peft_scheme": "lora", "lora_tuning": {"adapter_dim": 8, "alpha": 32}})
    lora["training_config"]["trainer"]["max_steps"] = 2
    run_training(parse_recipe(lora, source="colours-lora"), output_dir=tmp_path / "lora")
    adapter = load_trained(tmp_path / "lora")
    names = [n for n, _ in adapter.named_parameters() if "lora_" in n]
    assert names and not any(".visual." in n for n in names)
    assert len(_answers(tmp_path / "lora", train[:2])) == 2  # the adapter loads and generates with images
