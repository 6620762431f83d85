"""`train serve` with images and videos: OpenAI ``image_url`` parts (data: URIs), vLLM-style ``video_url``
parts and Converse ``image``/``video`` blocks (base64 bytes, s3Location) answer what `train generate`
answers for the same media and prompt."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image
from starlette.testclient import TestClient
from tests.vision.shapes import shape_png, square_video

from tunekit_cli.train import main as train_main
from tunekit_train.generate import GenerationSettings, generate, load_trained
from tunekit_train.generate import hf_tokenizer as load_tokenizer
from tunekit_train.model import load_model
from tunekit_train.serve.app import Server, ServeSettings, create_app
from tunekit_train.serve.engine import make_engine
from tunekit_train.serve.models import resolve_models
from tunekit_train.vision import load_image_processor, load_videos, vision_inputs

PROMPT = "What colour is the shape?"


@contextmanager
def _client(weights: Path) -> Iterator[TestClient]:
    """The served app in process, for the model at ``weights`` named ``colours``; its engine closed after."""
    models = resolve_models([f"colours={weights}"])
    engine = make_engine("transformers", models, max_batch=4, device="cpu")
    try:
        yield TestClient(create_app(Server(models, engine, ServeSettings())))
    finally:
        engine.close()


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
    with _client(vlm_weights) as client:
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


def test_converse_video_blocks_and_video_url_parts_answer_as_generate(vlm_weights: Path, s3, tmp_path: Path, capsys) -> None:
    video = square_video("green", size=40, seed=5)
    path = tmp_path / "green.mp4"
    path.write_bytes(video)
    processor = load_image_processor(vlm_weights)
    frames = load_videos([str(path)], processor)
    assert frames[0].shape[0] % processor.temporal_patch_size == 0
    inputs = vision_inputs(load_tokenizer(vlm_weights), processor, [{"role": "user", "content": [{"type": "video", "video": frames[0]}]}])
    assert inputs["video_grid_thw"].tolist() == [[frames[0].shape[0] // 2, 10, 10]] and int((inputs["mm_token_type_ids"] == 2).sum()) == 25 * frames[0].shape[0] // 2
    expected = generate(
        load_trained(vlm_weights), load_tokenizer(vlm_weights), [PROMPT], GenerationSettings(max_new_tokens=5, do_sample=False),
        videos=frames, image_processor=processor,
    )[0]
    argv = ["generate", str(vlm_weights), "--video", str(path), "--prompt", PROMPT, "--greedy", "--max-new-tokens", "5", "--json"]
    assert train_main(argv) == 0
    assert json.loads(capsys.readouterr().out)["completions"][0]["text"] == expected
    uri = f"s3://{s3.bucket()}/served/green.mp4"
    s3.put(uri, video)
    with _client(vlm_weights) as client:
        data_uri = "data:video/mp4;base64," + base64.b64encode(video).decode()
        for url in (data_uri, str(path)):
            chat = client.post("/v1/chat/completions", json={
                "model": "colours", "max_tokens": 5, "temperature": 0,
                "messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": PROMPT}]}],
            })
            assert chat.status_code == 200, chat.text
            assert chat.json()["choices"][0]["message"]["content"] == expected
        converse = client.post("/model/colours/converse", json={
            "messages": [{"role": "user", "content": [{"video": {"format": "mp4", "source": {"s3Location": {"uri": uri}}}}, {"text": PROMPT}]}],
            "inferenceConfig": {"maxTokens": 5, "temperature": 0},
        })
        assert converse.status_code == 200, converse.text
        assert converse.json()["output"]["message"]["content"][0]["text"] == expected
        broken = client.post("/model/colours/converse", json={
            "messages": [{"role": "user", "content": [{"video": {"format": "mp4", "source": {"bytes": base64.b64encode(b"not a video").decode()}}}, {"text": PROMPT}]}],
        })
        assert broken.status_code == 400 and "messages[0].content[0].video: [undecodable]" in broken.text
