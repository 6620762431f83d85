"""storage / s3: local and s3:// inputs, prefixes, atomic outputs, HEADs, retries and error messages.

Every S3 test runs against the moto server of the ``s3`` fixture (tests/conftest.py), over HTTP.
"""

from __future__ import annotations

import gzip
import os
import socket
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tunekit_data.errors import InputError, UsageError
from tunekit_data.io import JSONL_SUFFIXES, expand_paths, iter_blocks, iter_lines, storage

LINES = [b'{"text": "record %d"}' % i for i in range(2000)]
DATA = b"\n".join(LINES) + b"\n"


def _zstd(data: bytes) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as out:
        out.write(data)
    return sink.getvalue().to_pybytes()


def _unzstd(data: bytes) -> bytes:
    return pa.CompressedInputStream(pa.BufferReader(data), "zstd").read()


def _read_lines(uri: str) -> list[bytes]:
    [source] = expand_paths([uri])
    return [raw for _, raw in iter_lines(source)]


@pytest.mark.parametrize(("suffix", "encode"), [(".jsonl", bytes), (".jsonl.gz", gzip.compress), (".jsonl.zst", _zstd)])
def test_reads_s3_object_streaming_and_decompressed(s3, suffix, encode) -> None:
    uri = f"s3://{s3.bucket()}/data/train{suffix}"
    s3.put(uri, encode(DATA))
    [source] = expand_paths([uri])
    assert source.name == uri and source.size() == len(encode(DATA))
    # Small blocks: many ranged reads, and lines split across them are still whole.
    blocks = list(iter_blocks(source, block_size=4096))
    assert len(blocks) > 10
    assert b"".join(b.data for b in blocks) == DATA
    assert [b.first_line for b in blocks][:2] == [1, 1 + blocks[0].data.count(b"\n")]


def test_bom_and_blank_lines_on_s3(s3) -> None:
    uri = f"s3://{s3.bucket()}/bom.jsonl"
    s3.put(uri, b'\xef\xbb\xbf{"a": 1}\n\n{"b": 2}')
    [source] = expand_paths([uri])
    flags = [b.bom for b in iter_blocks(source, block_size=4)]
    assert flags[0] and len(flags) > 1 and not any(flags[1:])  # the first block only
    assert list(iter_lines(source)) == [(1, b'{"a": 1}'), (2, b""), (3, b'{"b": 2}')]


def test_prefix_lists_jsonl_objects_like_a_directory(s3) -> None:
    bucket = s3.bucket()
    for key in ("ds/b.jsonl.gz", "ds/a.jsonl", "ds/sub/c.jsonl.zst", "ds/notes.txt", "other/d.jsonl"):
        s3.put(f"s3://{bucket}/{key}", b"{}\n")
    expected = [f"s3://{bucket}/ds/{k}" for k in ("a.jsonl", "b.jsonl.gz", "sub/c.jsonl.zst")]
    assert storage.list_inputs(f"s3://{bucket}/ds/", JSONL_SUFFIXES) == expected
    assert storage.list_inputs(f"s3://{bucket}/ds", JSONL_SUFFIXES) == expected
    assert storage.list_inputs(f"s3://{bucket}/ds/notes.txt", JSONL_SUFFIXES) == [f"s3://{bucket}/ds/notes.txt"]
    with pytest.raises(InputError, match=r"other/: prefix holds no \.parquet objects"):
        storage.list_inputs(f"s3://{bucket}/other/", (".parquet",))


def test_file_uri_and_local_directory(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_bytes(DATA)
    (tmp_path / "skip.txt").write_text("x")
    assert storage.list_inputs(str(tmp_path), JSONL_SUFFIXES) == [str(tmp_path / "a.jsonl")]
    assert _read_lines(f"file://{tmp_path}/a.jsonl") == LINES
    with pytest.raises(InputError, match="no such file or directory"):
        storage.list_inputs(str(tmp_path / "missing"), JSONL_SUFFIXES)


def test_s3_output_appears_only_on_commit(s3) -> None:
    bucket = s3.bucket()
    uri = f"s3://{bucket}/out/valid.jsonl"
    with storage.open_output(uri) as out:
        for line in LINES:
            out.write(line + b"\n")
        assert "out/valid.jsonl" not in s3.keys(bucket)  # nothing under the final key while writing
    assert s3.get(uri) == DATA
    assert [k for k in s3.keys(bucket) if k.endswith(".tmp")] == []


def test_s3_output_compressed_by_suffix_round_trips(s3) -> None:
    uri = f"s3://{s3.bucket()}/out/valid.jsonl.gz"
    with storage.open_output(uri) as out:
        out.write(DATA)
    assert gzip.decompress(s3.get(uri)) == DATA
    assert _read_lines(uri) == LINES


def test_failed_s3_write_leaves_nothing_under_the_final_key(s3) -> None:
    bucket = s3.bucket()
    uri = f"s3://{bucket}/out/valid.jsonl"
    s3.put(f"s3://{bucket}/out/keep.jsonl", b"{}\n")
    with pytest.raises(RuntimeError, match="interrupted"), storage.open_output(uri) as out:
        out.write(DATA * 200)  # several MB: upload parts are in flight
        raise RuntimeError("interrupted")  # noqa: EM101
    # pyarrow keeps a zero-byte "out/" directory marker when it deletes the temporary key.
    assert [k for k in s3.keys(bucket) if not k.endswith("/")] == ["out/keep.jsonl"]
    assert s3.client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_failed_local_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), storage.open_output(str(tmp_path / "v.jsonl.zst")) as out:
        out.write(DATA)
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []
    with storage.open_output(str(tmp_path / "v.jsonl.zst")) as out:
        out.write(DATA)
    assert [p.name for p in tmp_path.iterdir()] == ["v.jsonl.zst"]
    assert _unzstd((tmp_path / "v.jsonl.zst").read_bytes()) == DATA
    with pytest.raises(UsageError, match="does not exist"):
        storage.open_output(str(tmp_path / "no" / "v.jsonl"))


def test_parquet_through_an_s3_output_and_random_access(s3) -> None:
    uri = f"s3://{s3.bucket()}/shards/part-0.parquet"
    table = pa.table({"ids": [[1, 2, 3], [4, 5]], "n": [3, 2]})
    with storage.open_output(uri) as out:
        writer = pq.ParquetWriter(out, table.schema)
        writer.write_table(table)
        writer.close()
    assert pq.ParquetFile(storage.open_random_access(uri)).read().equals(table)


def test_upload_dir_publishes_every_file_manifest_last(s3, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "shard-0.jsonl.gz").write_bytes(gzip.compress(b"{}\n"))
    (tmp_path / "manifest.json").write_text("{}")
    (tmp_path / "stats.json").write_text("{}")
    prefix = f"s3://{s3.bucket()}/packed/"
    written = storage.upload_dir(tmp_path, prefix, last=("manifest.json",))
    assert written == [f"{prefix}data/shard-0.jsonl.gz", f"{prefix}stats.json", f"{prefix}manifest.json"]
    assert s3.get(written[0]) == (tmp_path / "data" / "shard-0.jsonl.gz").read_bytes()  # not compressed twice


def test_head_many_reports_sizes_and_missing_objects(s3) -> None:
    bucket = s3.bucket()
    s3.put(f"s3://{bucket}/img/a.png", b"x" * 1234)
    uris = [f"s3://{bucket}/img/a.png", f"s3://{bucket}/img/missing.png", f"s3://{bucket}/img", "s3://tk-no-such-bucket/a.png"]
    heads = storage.head_many(uris, concurrency=4)
    assert [(h.uri, h.size) for h in heads] == [(u, 1234 if i == 0 else None) for i, u in enumerate(uris)]
    assert [h.missing for h in heads] == [None, "no such key", "no such key (only a prefix of other keys)", "no such bucket"]


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("s3://tk-no-such-bucket/train.jsonl", r"s3://tk-no-such-bucket/train.jsonl: cannot list: no such bucket"),
        ("s3://{bucket}/missing.jsonl", r"s3://{bucket}/missing.jsonl: cannot list: no such key"),
        ("s3://{bucket}/empty/", r"s3://{bucket}/empty/: cannot list: no such key"),
        ("s3://", r"not an S3 URI"),
    ],
)
def test_clear_errors_name_bucket_and_key(s3, uri, message) -> None:
    bucket = s3.bucket()
    with pytest.raises(InputError, match=message.format(bucket=bucket)):
        expand_paths([uri.format(bucket=bucket)])


def test_open_names_the_missing_bucket_or_key(s3) -> None:
    bucket = s3.bucket()
    with pytest.raises(InputError, match=r"s3://tk-no-such-bucket/x.jsonl: cannot open: no such bucket"):
        storage.open_input("s3://tk-no-such-bucket/x.jsonl")
    with pytest.raises(InputError, match=rf"s3://{bucket}/x.jsonl: cannot open: no such key"):
        storage.open_input(f"s3://{bucket}/x.jsonl")
    with pytest.raises(InputError, match=r"s3://tk-no-such-bucket/out.jsonl: cannot write: no such bucket"):
        storage.open_output("s3://tk-no-such-bucket/out.jsonl")


def test_access_denied_is_reported(s3) -> None:
    uri = f"s3://{s3.bucket()}/train.jsonl"
    s3.put(uri, DATA)
    s3.faults.fail_next(1, status=403, code="AccessDenied")
    with pytest.raises(InputError, match=r"train.jsonl: cannot open: access denied"):
        storage.open_input(uri)


def test_access_denied_without_any_credentials_says_so(s3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    uri = f"s3://{s3.bucket()}/train.jsonl"
    s3.put(uri, DATA)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.aws either
    s3.faults.fail_next(1, status=403, code="AccessDenied")  # what S3 answers unsigned requests
    with pytest.raises(InputError, match=r"train.jsonl: cannot open: access denied \(no credentials found: set AWS_ACCESS_KEY_ID"):
        storage.open_input(uri)


def test_unreachable_endpoint_is_a_clear_error(s3, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    with pytest.raises(InputError, match=rf"s3://b-x/t.jsonl: cannot open: cannot reach the S3 endpoint \(http://127.0.0.1:{port}\)"):
        storage.open_input("s3://b-x/t.jsonl")


def test_transient_5xx_and_dropped_connections_are_retried_without_loss(s3) -> None:
    uri = f"s3://{s3.bucket()}/train.jsonl"
    s3.put(uri, DATA)
    s3.faults.fail_next(2)  # the first two requests answer 500
    s3.faults.drop_next(1)  # then a GET loses their connection half-way through the body
    [source] = expand_paths([uri])
    blocks = list(iter_blocks(source, block_size=8192))
    assert b"".join(b.data for b in blocks) == DATA  # nothing lost, nothing read twice
    assert s3.faults.fail == 0 and s3.faults.truncate == 0


def test_throttling_on_write_is_retried(s3) -> None:
    bucket = s3.bucket()
    s3.faults.fail_next(2, status=503, code="SlowDown")
    with storage.open_output(f"s3://{bucket}/out.jsonl") as out:
        out.write(DATA)
    assert s3.get(f"s3://{bucket}/out.jsonl") == DATA


def test_permanent_failure_mid_read_stops_with_a_clear_error(s3, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"s3://{s3.bucket()}/train.jsonl"
    s3.put(uri, DATA * 100)  # 4.5 MB
    monkeypatch.setattr(storage, "MAX_GET", 256 << 10)  # many GETs, few of them ahead of the reader
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    [source] = expand_paths([uri])
    blocks = iter_blocks(source, block_size=1 << 20)
    next(blocks)
    s3.faults.fail_next(1000)  # the server now fails every request
    with pytest.raises(InputError, match=r"train.jsonl: cannot read at byte [0-9,]+: the server kept failing after retrying"):
        list(blocks)


def test_download_dir_copies_a_prefix_or_an_object_bytes_unchanged(s3, tmp_path: Path) -> None:
    bucket = s3.bucket()
    packed = gzip.compress(b'{"a": 1}\n')
    s3.put(f"s3://{bucket}/ds/part.jsonl.gz", packed)  # kept compressed: a copy, not a read
    s3.put(f"s3://{bucket}/ds/sub/manifest.json", b"{}")
    s3.put(f"s3://{bucket}/ds/.part.jsonl.gz.0123.tmp", b"half")  # an unfinished write
    files = storage.download_dir(f"s3://{bucket}/ds/", tmp_path / "ds")
    assert files == [tmp_path / "ds" / "part.jsonl.gz", tmp_path / "ds" / "sub" / "manifest.json"]
    assert files[0].read_bytes() == packed
    assert storage.download_dir(f"s3://{bucket}/ds/sub/manifest.json", tmp_path / "one") == [tmp_path / "one" / "manifest.json"]
    # A copy of the object's size is complete (copies are atomic): a second call does not fetch it again.
    files[0].write_bytes(b"x" * len(packed))
    assert storage.download_dir(f"s3://{bucket}/ds/", tmp_path / "ds") == files
    assert files[0].read_bytes() == b"x" * len(packed)


def test_list_names_and_check_writable(s3) -> None:
    bucket = s3.bucket()
    assert storage.list_names(f"s3://{bucket}/out/") == []
    s3.put(f"s3://{bucket}/out/a/b.jsonl", b"")
    assert storage.list_names(f"s3://{bucket}/out") == ["a/b.jsonl"]
    storage.check_writable(f"s3://{bucket}/new/")
    assert not [k for k in s3.keys(bucket) if k.startswith("new/") and not k.endswith("/")]
    with pytest.raises(InputError, match=r"tk-no-such-bucket.*no such bucket"):
        storage.check_writable("s3://tk-no-such-bucket/out/")


def test_local_output_gets_the_usual_file_mode(tmp_path: Path) -> None:
    mask = os.umask(0o022)
    os.umask(mask)
    with storage.open_output(str(tmp_path / "out.jsonl")) as out:
        out.write(b"{}\n")
    assert (tmp_path / "out.jsonl").stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's 0600
