"""Media resolution: S3 (moto), local and inline images through the content-addressed cache, and
each kind of failure reported as a MediaProblem rather than raised."""

from __future__ import annotations

import base64
import io
import subprocess
import sys

from PIL import Image, ImageDraw

from tunekit_data.media import MediaCache, MediaProblem, default_cache_dir, resolve_image, resolve_record


def _png(colour: str, size: int = 32) -> bytes:
    image = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(image).ellipse((4, 4, size - 4, size - 4), fill=colour)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _s3_block(uri: str) -> dict:
    return {"format": "png", "source": {"s3Location": {"uri": uri}}}


def test_s3_image_is_fetched_once_per_machine(s3, tmp_path) -> None:
    bucket = s3.bucket()
    s3.put(f"s3://{bucket}/img/red.png", _png("red"))
    first = MediaCache(tmp_path / "cache")
    key, image = resolve_image(_s3_block(f"s3://{bucket}/img/red.png"), first)
    assert image.size == (32, 32) and image.getpixel((16, 16)) == (255, 0, 0)
    again = resolve_image(_s3_block(f"s3://{bucket}/img/red.png"), first)
    second = MediaCache(tmp_path / "cache")  # a later run on the same machine
    assert resolve_image(_s3_block(f"s3://{bucket}/img/red.png"), second)[0] == key == again[0]
    assert (first.fetches, second.fetches) == (1, 0)
    assert first.get(key) == _png("red")


def test_local_and_inline_sources_share_the_content_key(tmp_path) -> None:
    data = _png("blue")
    (tmp_path / "blue.png").write_bytes(data)
    cache = MediaCache(tmp_path / "cache")
    local = resolve_image(_s3_block(str(tmp_path / "blue.png")), cache)
    inline = resolve_image({"format": "png", "source": {"bytes": base64.b64encode(data).decode()}}, cache)
    assert local[0] == inline[0] and inline[1].getpixel((16, 16)) == (0, 0, 255)


def test_each_failure_kind_is_a_problem(s3, tmp_path) -> None:
    bucket = s3.bucket()
    s3.put(f"s3://{bucket}/img/broken.png", b"\x89PNG not really")
    cache = MediaCache(tmp_path / "cache")
    cases = {
        "missing": _s3_block(f"s3://{bucket}/img/absent.png"),
        "undecodable": _s3_block(f"s3://{bucket}/img/broken.png"),
        "bad-block": {"format": "png"},
    }
    for kind, block in cases.items():
        problem = resolve_image(block, cache)
        assert isinstance(problem, MediaProblem) and problem.kind == kind, (kind, problem)
    too_large = resolve_image({"source": {"bytes": _png("red", 64)}}, cache, max_pixels=64 * 64 - 1)
    assert isinstance(too_large, MediaProblem) and too_large.kind == "too-large"
    assert too_large.located("a.jsonl", 3, "messages[0].content[1].image").startswith(
        "a.jsonl:3: messages[0].content[1].image: [too-large]"
    )
    bad_base64 = resolve_image({"source": {"bytes": "not base64!"}}, cache)
    assert isinstance(bad_base64, MediaProblem) and bad_base64.kind == "undecodable"


def test_default_cache_dir_follows_tunekit_cache(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TUNEKIT_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "media"
    monkeypatch.delenv("TUNEKIT_CACHE")
    assert default_cache_dir().parts[-3:] == (".cache", "tunekit", "media")


def test_transient_s3_failure_is_retried(s3, tmp_path) -> None:
    bucket = s3.bucket()
    s3.put(f"s3://{bucket}/img/green.png", _png("green"))
    s3.faults.fail_next(1, status=503, code="SlowDown", only="green.png")
    _key, image = resolve_image(_s3_block(f"s3://{bucket}/img/green.png"), MediaCache(tmp_path / "cache"))
    assert image.getpixel((16, 16)) == (0, 128, 0)


def test_record_reports_every_bad_image_by_line_and_field(s3, tmp_path) -> None:
    bucket = s3.bucket()
    s3.put(f"s3://{bucket}/img/red.png", _png("red"))
    record = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"text": "colour?"},
                    {"image": _s3_block(f"s3://{bucket}/img/red.png")},
                    {"image": _s3_block(f"s3://{bucket}/img/gone.png")},
                ],
            },
            {"role": "assistant", "content": [{"text": "red"}]},
        ]
    }
    media = resolve_record(record, MediaCache(tmp_path / "cache"))
    assert len(media.images) == 1
    (report,) = media.report("train.jsonl", 7)
    assert (
        report.startswith("train.jsonl:7: messages[0].content[2].image: [missing]") and "gone.png" in report
    )


def test_media_resolution_does_not_import_torch() -> None:
    code = "import sys; import tunekit_data.media; assert 'torch' not in sys.modules and 'transformers' not in sys.modules and 'PIL' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
