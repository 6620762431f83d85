"""`train serve` with images: OpenAI ``image_url`` parts (data: URIs) and Converse ``image`` blocks
(base64 bytes, s3Location) answer what `train generate` answers for the same image and prompt."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image
from starlette.testclient import TestClient
from tests.vision.shapes import shape_png

from tunekit_train.generate import GenerationSettings, generate, load_trained
from tunekit_train.generate import hf_tokenizer as load_tokenizer
from tunekit_train.model import load_model
from tunekit_train.serve.app import Server, ServeSettings, create_app
from tunekit_train.serve.engine import make_engine
from tunekit_train.serve.models import resolve_models
from tunekit_train.vision import load_image_processor

PROMPT = "What colour is the shape?"


@pytest.fixture(scope="module")
def vlm_weights(tmp_path_factory: pytest.TempPathFactory, vlm_dir: Path) -> Path:
    """The tiny Qwen2-VL with saved (random) weights, tokenizer and image processor: a servable model."""
    out = tmp_path_factory.mktemp("served") / "colours"
    model, _ = load_model(vlm_dir, backend="sdpa", seed=0)
    model.save_pretrained(out)
    for file in vlm_dir.iterdir():
        if file.name != "config.json":
            (out / file.name).write_bytes(file.read_bytes())
    return out


def test_openai_and_converse_images_answer_as_generate(vlm_weights: Path, s3) -> None:
    png = shape_png("blue", "triangle", (40, 32), seed=3)
    expected = generate(
        load_trained(vlm_weights), load_tokenizer(vlm_weights), [PROMPT], GenerationSettings(max_new_tokens=5, do_sample=False),
        images=[Image.open(io.BytesIO(png))], image_processor=load_image_processor(vlm_weights),
    )[0]
    uri = f"s3://{s3.bucket()}/served/blue.png"
    s3.put(uri, png)
    models = resolve_models([f"colours={vlm_weights}"])
    engine = make_engine("transformers", models, max_batch=4, device="cpu")
    try:
        client = TestClient(create_app(Server(models, engine, ServeSettings())))
        data_uri = "data:image/png;base64," + base64.b64encode(png).decode()
        chat = client.post("/v1/chat/completions", json={
            "model": "colours", "max_tokens": 5, "temperature": 0,
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_uri}}, {"type": "text", "text": PROMPT}]}],
        })
        assert chat.status_code == 200, chat.text
        assert chat.json()["choices"][0]["message"]["content"] == expected
        for source in ({"bytes": base64.b64encode(png).decode()}, {"s3Location": {"uri": uri}}):
            converse = client.post("/model/colours/converse", json={
                "messages": [{"role": "user", "content": [{"image": {"format": "png", "source": source}}, {"text": PROMPT}]}],
                "inferenceConfig": {"maxTokens": 5, "temperature": 0},
            })
            assert converse.status_code == 200, converse.text
            assert converse.json()["output"]["message"]["content"][0]["text"] == expected
        refused = client.post("/v1/chat/completions", json={
            "model": "colours", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/x.png"}}]}],
        })
        assert refused.status_code == 400 and "http(s) image URLs are not fetched" in refused.text
        missing = client.post("/model/colours/converse", json={
            "messages": [{"role": "user", "content": [{"image": {"format": "png", "source": {"s3Location": {"uri": uri + ".gone"}}}}, {"text": PROMPT}]}],
        })
        assert missing.status_code == 400 and "messages[0].content[0].image: [missing]" in missing.text
    finally:
        engine.close()
