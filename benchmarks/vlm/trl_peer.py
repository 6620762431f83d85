"""TRL's VLM SFT path as the peer of `bench_vlm`: `trl.SFTTrainer` on the same tiny Qwen2-VL (the same
initial weights) and the same image records, one sample per row padded to the longest of the batch
(``DataCollatorForVisionLanguageModeling``: the processor's chat template, tokenization and image
processing on the fly; TRL packs no vision data).

Needs the ``bench`` group (``trl``, and ``torchvision``: ``Qwen2VLProcessor`` loads Qwen2-VL's video
processor, which imports it). The processor gets a chat template that renders TRL's structured content
exactly as tunekit renders Converse records with the same tokenizer template (image parts as
``<|vision_start|><|image_pad|><|vision_end|>``), so both sides train the same token sequences.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

# The tiny tokenizer's ChatML, over structured content parts as Qwen2-VL's own template renders them.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for part in message['content'] %}"
    "{%- if part['type'] == 'image' %}{{- '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'text' %}{{- part['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
)


def trl_records(data: Path) -> list[dict[str, Any]]:
    """The Converse image records of ``data`` as TRL's conversational vision rows (``messages`` + ``images``)."""
    from PIL import Image

    rows = []
    for line in data.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        images, messages = [], []
        for message in record["messages"]:
            parts = []
            for block in message["content"]:
                if "image" in block:
                    images.append(Image.open(block["image"]["source"]["s3Location"]["uri"]).convert("RGB"))
                    parts.append({"type": "image"})
                else:
                    parts.append({"type": "text", "text": block["text"]})
            messages.append({"role": message["role"], "content": parts})
        rows.append({"messages": messages, "images": images})
    return rows


def qwen2_vl_processor(directory: Path) -> Any:
    """``Qwen2VLProcessor`` of a processor directory saved without ``processor_config.json`` (the tests'
    fixture saves the tokenizer and the image processor only, so ``AutoProcessor`` returns the tokenizer)."""
    from transformers import AutoTokenizer, Qwen2VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    images = Qwen2VLImageProcessorPil.from_pretrained(directory)
    videos = Qwen2VLVideoProcessor(size=images.size, patch_size=images.patch_size, merge_size=images.merge_size, temporal_patch_size=images.temporal_patch_size)
    return Qwen2VLProcessor(image_processor=images, tokenizer=AutoTokenizer.from_pretrained(directory), video_processor=videos, chat_template=CHAT_TEMPLATE)


def bench_trl(data: Path, processor_dir: Path, model_dir: Path, out: Path, *, batch: int, steps: int, warmup: int) -> dict[str, float]:
    """Samples/s of ``steps`` SFTTrainer steps of ``batch`` samples after ``warmup`` steps (collate,
    forward, backward and AdamW step, as TRL's training loop runs them), one CPU thread."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from tunekit_train.model import load_model

    torch.set_num_threads(1)
    processor = qwen2_vl_processor(processor_dir)
    model, _ = load_model(model_dir, backend="sdpa", seed=0)

    class Clock(TrainerCallback):
        """Starts timing at step ``warmup`` and stops at the last step's end."""

        started = stopped = cpu_started = cpu_stopped = 0.0

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == warmup:
                self.started, self.cpu_started = time.perf_counter(), time.process_time()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.stopped, self.cpu_stopped = time.perf_counter(), time.process_time()

    clock = Clock()
    config = SFTConfig(
        output_dir=str(out),
        max_steps=steps + warmup,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=1,
        learning_rate=1e-3,
        lr_scheduler_type="constant",
        optim="adamw_torch",
        max_length=None,  # tunekit's packs keep every sample whole too
        # tunekit's sides run float32 without activation checkpointing; TRL's defaults (bf16 autocast,
        # gradient checkpointing) would time other arithmetic, and CPU bf16 is slow here.
        bf16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        dataloader_num_workers=0,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(trl_records(data)), processing_class=processor, callbacks=[clock])
    trainer.train()
    return {
        "trl_samples_per_s": steps * batch / (clock.stopped - clock.started),
        "trl_samples_per_cpu_s": steps * batch / (clock.cpu_stopped - clock.cpu_started),
        "trl_batch": batch,
    }
