"""A tiny vision-language setup built locally: the tiny tokenizer with Qwen2-VL's vision tokens, a
Qwen2-VL image processor with small pixel bounds, a 2-layer Qwen2-VL config, and coloured-shape images."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[2]
TINY_TOKENIZER = ROOT / "examples" / "tiny" / "tokenizer"
VISION_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
PATCH, MERGE = 4, 2
COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (230, 210, 20)}
SHAPES = ("circle", "square", "triangle")


def make_processor_dir(path: Path) -> Path:
    """A processor directory: tokenizer files (with the vision tokens) and preprocessor_config.json."""
    from transformers import AutoTokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = AutoTokenizer.from_pretrained(TINY_TOKENIZER)
    tokenizer.add_special_tokens({"additional_special_tokens": VISION_TOKENS})
    tokenizer.save_pretrained(path)
    # 8x8-pixel merged patches; 16 to 64 image tokens per image
    Qwen2VLImageProcessorPil(
        patch_size=PATCH, merge_size=MERGE, temporal_patch_size=2, min_pixels=32 * 32, max_pixels=64 * 64
    ).save_pretrained(path)
    return path


def make_model_dir(path: Path, processor_dir: Path, *, layers: int = 2) -> Path:
    """A config-only Qwen2-VL directory (random init when trained) matching the processor's tokens."""
    from transformers import AutoTokenizer, Qwen2VLConfig

    tokenizer = AutoTokenizer.from_pretrained(processor_dir)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in VISION_TOKENS}
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": layers,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 1024,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
            "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": 64,
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": PATCH,
            "spatial_merge_size": MERGE,
            "temporal_patch_size": 2,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    config.save_pretrained(path)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "preprocessor_config.json"):
        if (processor_dir / name).is_file():
            (path / name).write_bytes((processor_dir / name).read_bytes())
    return path


def shape_png(colour: str, shape: str, size: tuple[int, int] = (32, 32), seed: int = 0) -> bytes:
    """A PNG of one filled shape of ``colour`` on a white background, at a random place."""
    rng = random.Random(seed)
    width, height = size
    image = Image.new("RGB", size, "white")
    s = rng.randint(min(size) // 2, min(size) - 2)
    x, y = rng.randint(0, width - s), rng.randint(0, height - s)
    draw = ImageDraw.Draw(image)
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse((x, y, x + s, y + s), fill=fill)
    elif shape == "square":
        draw.rectangle((x, y, x + s, y + s), fill=fill)
    else:
        draw.polygon([(x, y + s), (x + s, y + s), (x + s // 2, y)], fill=fill)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def image_block(uri: str) -> dict:
    """A Converse image block referencing ``uri``."""
    return {"image": {"format": "png", "source": {"s3Location": {"uri": uri}}}}


def colour_record(uri: str, colour: str, *, question: str = "What colour is the shape?") -> dict:
    """A Converse SFT record: an image and a question, answered with the colour."""
    return {
        "schemaVersion": "bedrock-conversation-2024",
        "messages": [
            {"role": "user", "content": [image_block(uri), {"text": question}]},
            {"role": "assistant", "content": [{"text": colour}]},
        ],
    }


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def square_video(colour: str, *, frames: int = 8, size: int = 32, fps: int = 4, fmt: str = "mp4", seed: int = 0) -> bytes:
    """A ``fmt`` (mp4, mkv, mov) video (PyAV, MPEG-4 Part 2) of a filled square of ``colour`` moving on a white background."""
    import av
    import numpy as np

    rng = random.Random(seed)
    side = rng.randint(size // 3, size // 2)
    x, y = rng.randint(0, size - side - 4), rng.randint(0, size - side)
    out = io.BytesIO()
    with av.open(out, mode="w", format={"mkv": "matroska"}.get(fmt, fmt)) as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            pixels = np.full((size, size, 3), 255, dtype=np.uint8)
            step = i % 4  # the square moves right and back
            pixels[y : y + side, x + step : x + step + side] = COLOURS[colour]
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())
    return out.getvalue()


def video_record(uri: str, colour: str, *, fmt: str = "mp4", question: str = "What colour is the square?") -> dict:
    """A Converse SFT record: a video and a question, answered with the colour."""
    video = {"video": {"format": fmt, "source": {"s3Location": {"uri": uri}}}}
    return {
        "schemaVersion": "bedrock-conversation-2024",
        "messages": [
            {"role": "user", "content": [video, {"text": question}]},
            {"role": "assistant", "content": [{"text": colour}]},
        ],
    }
