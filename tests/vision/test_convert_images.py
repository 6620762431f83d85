"""`ds convert --resolve-images`: every image of each output record fetched (S3) and decoded; a record
whose image fails is a located reject in --rejects-out, the others are written."""

from __future__ import annotations

import json

from tests.vision.shapes import colour_record, shape_png, write_jsonl

from tunekit_cli.ds import main


def test_convert_rejects_records_whose_images_fail(s3, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TUNEKIT_CACHE", str(tmp_path / "cache"))
    bucket = s3.bucket()
    s3.put(f"s3://{bucket}/ok.png", shape_png("red", "circle"))
    s3.put(f"s3://{bucket}/broken.png", b"not a png")
    records = [colour_record(f"s3://{bucket}/{name}.png", "red") for name in ("ok", "gone", "broken", "ok")]
    data = write_jsonl(tmp_path / "in.jsonl", records)
    out, rejects = tmp_path / "out.jsonl", tmp_path / "rejects.jsonl"
    argv = ["convert", str(data), "--to", "converse", "-o", str(out), "--rejects-out", str(rejects),
            "--resolve-images", "--max-rejects-percent", "100", "--workers", "1"]  # fmt: skip
    assert main(argv) == 0
    assert len(out.read_text().splitlines()) == 2
    got = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [(r["line"], r["rule"], r["field"]) for r in got] == [
        (2, "media-missing", "messages[0].content[0].image"),
        (3, "media-undecodable", "messages[0].content[0].image"),
    ]
    assert all(r["record"] == records[r["line"] - 1] for r in got)
    assert (tmp_path / "cache" / "media" / "objects").is_dir()
