"""`pack`: encode examples in parallel batches, spool them to disk, pack globally, write shards.

Stages: encode (`workers`: render, tokenize and fit on a process pool, results spooled to disk as
they arrive), pack (`packer`: best-fit decreasing over lengths only), write (`writer`: one shard at a
time). Memory stays bounded by a few batches, one shard and ~25 bytes of metadata per sequence.

Re-running with the same source files (by content hash), tokenizer, template and options returns
the existing output (``PackResult.cached``); the output directory appears only when complete.

An ``s3://bucket/prefix/`` output is built in a local temporary folder and uploaded file by file
(``storage.upload_dir``), ``manifest.json`` last: a reader that finds the manifest finds every shard
it lists. The prefix must be empty (overwriting an older pack in place would leave a window where
its manifest names new shards), and the content-hash cache is not used for S3 outputs or inputs
(hashing S3 inputs would read them twice; re-packing is the simple, always-correct answer).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Protocol

from tunekit_data.convert import Rejection, discover, read_examples
from tunekit_data.cores import available_cores
from tunekit_data.errors import DataError, InputError, UsageError
from tunekit_data.examples import Example, SourceRecord
from tunekit_data.formats import FORMAT_ALIASES
from tunekit_data.io import is_s3, publish_dir, storage
from tunekit_data.media import MAX_PIXELS, MediaCache, VideoSampling, default_cache_dir
from tunekit_tokenize.cache import cache_key, cached_pack, describe_source
from tunekit_tokenize.chat_template import resolve_template
from tunekit_tokenize.encoder import Encoder, Kind, example_kind, sequences_per_item
from tunekit_tokenize.manifest import (
    DEFAULT_MAX_LENGTH,
    MANIFEST_FILE,
    STATS_FILE,
    PackOptions,
    build_manifest,
    max_length_problem,
)
from tunekit_tokenize.masks import LOSS_POLICIES, LossOn
from tunekit_tokenize.packer import Bins, pack_bins
from tunekit_tokenize.spool import SequenceStore, Spool
from tunekit_tokenize.stats import Tally, summarize
from tunekit_tokenize.tokenizer import TokenizerBundle, load_tokenizer
from tunekit_tokenize.truncation import TRUNCATION_POLICIES, Truncation
from tunekit_tokenize.vision import MediaInputs, VisionProcessor, load_processor
from tunekit_tokenize.workers import BATCH_SIZE, Batch, BatchResult, EncodeJob, encode_batches
from tunekit_tokenize.writer import MediaColumns, check_output_dir, write_json, write_shards

Progress = Callable[[str, int, int | None], None]
"""Progress callback: ``(stage, done, total)``; stages ``hash`` (bytes), ``tokenize`` (records),
``pack`` (items) and ``write`` (bins). ``total`` is None when unknown."""
PackInput = tuple[SourceRecord, Example | Rejection]


@dataclass(frozen=True)
class PackResult:
    """What `pack` did: the output directory (an ``s3://`` URI for S3), whether it was reused, its manifest and stats."""

    out_dir: Path | str
    cached: bool
    manifest: dict
    stats: dict
    seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        """The ``ds pack --json`` object."""
        return {
            "out_dir": str(self.out_dir),
            "cached": self.cached,
            "kind": self.manifest["kind"],
            "shards": len(self.manifest["shards"]),
            "stats": self.stats,
            "seconds": self.seconds,
        }


@dataclass(frozen=True, slots=True)
class _Provenance:
    """Where a pack's records came from, for the manifest: source files, reader options, cache key."""

    sources: list[dict[str, object]] | None
    reader_options: dict[str, object]
    cache_key: str | None


@dataclass(frozen=True)
class _PackRun:
    """A local pack build but for its output folder: the records, how to encode and pack them, where they came from, whom to tell."""

    examples: Iterable[PackInput]
    job: EncodeJob  # its encoder holds the tokenizer and chat template
    options: PackOptions
    engine: PackEngine
    provenance: _Provenance
    notify: Progress
    rejects: storage.AtomicOutput | None


def pack(
    examples: Iterable[PackInput], *, tokenizer: str | Path | TokenizerBundle, max_length: int = DEFAULT_MAX_LENGTH, out_dir: str | Path,
    template: str = "auto", loss_on: LossOn = "assistant", truncation: Truncation = "drop", window: int | None = None, seed: int = 0,
    workers: int | None = None, max_invalid_percent: float = 0.0, sources: Sequence[str | Path] | None = None,
    reader_options: Mapping[str, object] | None = None, progress: Progress | None = None, engine: PackEngine | None = None,
    processor: str | Path | None = None, media_cache: str | Path | None = None, max_image_pixels: int = MAX_PIXELS, video: VideoSampling | None = None,
    rejects_out: str | None = None,
) -> PackResult:  # fmt: skip
    """Tokenize ``examples`` and pack them into ``out_dir`` (layout: `tunekit_tokenize.manifest`).

    Args:
        examples: ``(SourceRecord, Example | Rejection)`` per record, as `read_examples` yields them.
        tokenizer: a local tokenizer directory or a loaded bundle.
        max_length: tokens per packed row (at least ``MIN_MAX_LENGTH``).
        out_dir: output directory, replaced if it holds an older pack, refused if anything else; or an empty ``s3://bucket/prefix/``.
        template: ``auto`` (the tokenizer's), ``chatml``, ``llama3`` or a ``.jinja`` path.
        loss_on: ``assistant`` (every answer), ``last-turn`` or ``all`` (chat data only).
        truncation: ``drop``, ``right`` (keep the start) or ``left`` (keep the end) for long examples.
        window: pack groups of this many sequences (DPO: pairs) separately; None packs globally.
        seed: orders equal-length items and shuffles the output rows.
        workers: encoding processes (default: the cores this process may use; 1 encodes here); more
            than one starts a ``spawn`` pool, so a calling script must guard ``if __name__ == "__main__":``.
        max_invalid_percent: fail if more than this share of records (reader rejections included) is rejected.
        sources: the input files; their content hashes make the run cacheable and go in the manifest.
        reader_options: options the reader was given (``{"format": ...}``), part of the cache key.
        progress: called as work advances (see `Progress`).
        engine: where records are encoded and rows written (default: `LocalEngine`, this machine's
            processes; ``tunekit_tokenize.ray_pack`` runs both as Ray tasks, reading its own inputs).
        processor: a vision-language model directory: images and videos are fetched, decoded and expanded
            into their tokens and rows (`tunekit_tokenize.vision`), a record whose media fails is rejected;
            local engine and ``truncation="drop"`` only, never reused from the cache (media is not hashed).
        media_cache: the media cache directory (default `tunekit_data.media.default_cache_dir`).
        max_image_pixels: images (video frames) with more pixels are rejected before decoding.
        video: how videos are sampled (default `VideoSampling`: 2 frames a second, at most 128).
        rejects_out: write every rejected record here (JSONL: file, line, field, reason, rule, record).

    Raises:
        UsageError: bad options, or the data needs a chat template the tokenizer lacks.
        DataError: more records were rejected than ``max_invalid_percent`` allows.
    """
    options = PackOptions(max_length, loss_on, truncation, window, seed, max_invalid_percent)
    _validate(options, workers)
    bundle = tokenizer if isinstance(tokenizer, TokenizerBundle) else load_tokenizer(tokenizer)
    chat_template = resolve_template(bundle, template)
    images = None if processor is None else _media_inputs(load_processor(processor, bundle), media_cache, truncation, engine, max_image_pixels, video or VideoSampling())
    remote = str(out_dir) if is_s3(str(out_dir)) else None
    if remote is not None:
        _check_s3_output(remote)
    if images is not None or remote is not None:
        sources = None  # no content-hash cache: media is not hashed, and not for S3 outputs (module docstring)
    started = time.perf_counter()

    def build(local: Path, rejects: storage.AtomicOutput | None) -> PackResult:
        stages = engine or LocalEngine(workers or available_cores(), images)
        job = EncodeJob(Encoder(bundle, chat_template, options.loss_on, images), options.max_length, options.truncation)
        provenance = _Provenance(None, dict(reader_options or {}), None)
        run = _PackRun(examples, job, options, stages, provenance, progress or _quiet, rejects)
        return _pack_local(run, local, sources, started)

    return _build_at(out_dir, remote, rejects_out, build)


def _build_at(
    out_dir: str | Path, remote: str | None, rejects_out: str | None, build: Callable[[Path, storage.AtomicOutput | None], PackResult]
) -> PackResult:
    """``build(local_dir, rejects)`` for ``out_dir``, with the rejects file open while it runs.

    An S3 pack (``remote``) is built in a local temporary folder (on $TMPDIR) and uploaded when
    complete. The rejects file is committed when the pack is, or when too many records were rejected.
    """
    local = Path(tempfile.mkdtemp(prefix="tunekit-pack-")) / "pack" if remote is not None else Path(out_dir)
    rejects = storage.open_output(rejects_out) if rejects_out is not None else None
    try:
        result = build(local, rejects)
        if remote is not None:
            storage.upload_dir(local, remote, last=(MANIFEST_FILE,))
            result = replace(result, out_dir=remote)
    except DataError:
        if rejects is not None:  # too many rejects: the file listing them is complete, and the reason to read it
            rejects.commit()
        raise
    except BaseException:
        if rejects is not None:
            rejects.abort()
        raise
    finally:
        if remote is not None:
            shutil.rmtree(local.parent, ignore_errors=True)
    if rejects is not None:
        rejects.commit()
    return result


def _media_inputs(
    processor: VisionProcessor, cache: str | Path | None, truncation: Truncation, engine: PackEngine | None, max_pixels: int, video: VideoSampling
) -> MediaInputs:
    problems = video.problems("--video-fps", "--video-max-frames")
    if truncation != "drop":
        problems.append(f"--truncation {truncation} would cut images apart; vision packs drop long examples (--truncation drop)")
    if engine is not None:
        problems.append("--processor packs on this machine only (--engine local)")
    if max_pixels < 1:
        problems.append(f"--max-image-pixels must be at least 1, got {max_pixels}")
    if problems:
        raise UsageError("; ".join(problems))
    return MediaInputs(processor, Path(cache) if cache is not None else default_cache_dir(), max_pixels, video)


def _check_s3_output(uri: str) -> None:
    """Fail before any work when the S3 output cannot be written: a missing bucket, or a prefix in use."""
    if storage.list_names(uri):
        msg = f"{uri}: already holds objects; write S3 packs to a new, empty prefix"
        raise UsageError(msg)
    storage.check_writable(uri)


def _pack_local(run: _PackRun, out: Path, sources: Sequence[str | Path] | None, started: float) -> PackResult:
    """`pack` into the local directory ``out``: reuse it when the cache key matches, else build it."""
    if sources is not None:
        described = [describe_source(Path(p), lambda done, total: run.notify("hash", done, total)) for p in sources]
        reader_options, template = run.provenance.reader_options, run.job.encoder.template
        key = cache_key(
            sources=described,
            tokenizer_sha256=run.job.encoder.bundle.sha256,
            template_sha256=template.sha256 if template else None,
            options=asdict(run.options),
            reader_options=reader_options,
        )
        if reused := cached_pack(out, key):
            return PackResult(out, cached=True, manifest=reused.manifest, stats=reused.stats, seconds={"hash": round(time.perf_counter() - started, 3)})
        run = replace(run, provenance=_Provenance(described, reader_options, key))
    check_output_dir(out)
    with publish_dir(out) as staging:
        return _build(run, out, staging)


def pack_files(paths: Sequence[str], *, fmt: str = "auto", **options: object) -> PackResult:
    """`pack` the records of ``paths`` (any input `ds convert` reads, ``s3://`` too), decoded with `read_examples`.

    ``fmt`` is ``auto``, ``sft``, ``dpo``, ``cpt`` or a ``ds convert --from`` format name; ``options``
    are `pack`'s keyword arguments. Local inputs are hashed, so an identical re-run reuses the
    previous output (not standard input nor S3 objects: they would be read twice).
    """
    reader = read_examples(list(paths), fmt=FORMAT_ALIASES.get(fmt, fmt))
    files = [f.path for f in discover(paths)]
    # A Delta table is a folder: its log and data files together say which version was packed.
    files = [str(p) for f in files for p in (sorted(q for q in Path(f).rglob("*") if q.is_file()) if Path(f).is_dir() else [f])]
    sources = None if any(f == "-" or is_s3(f) for f in files) else files
    return pack(reader, sources=sources, reader_options={"format": reader.detection.fmt}, **options)  # type: ignore[arg-type]


class PackEngine(Protocol):
    """The two stages of a pack that can run elsewhere.

    Packing itself (global BFD over the lengths) always runs in the calling process.
    """

    def encode(self, examples: Iterable[PackInput], job: EncodeJob, staging: Path, notify: Progress, tally: Tally) -> SequenceStore:
        """Encode every record, counting into ``tally``; return the sequences (their metadata in this process)."""

    def write(self, staging: Path, spool: SequenceStore, bins: Bins, *, kind: Kind, max_length: int, on_rows: Callable[[int], None]) -> list[str]:
        """Write ``bins`` as shards under ``staging``; the shard paths relative to it."""


@dataclass(frozen=True)
class LocalEngine:
    """Encoding on this machine's process pool (``workers``), spooled to disk; shards written here."""

    workers: int
    images: MediaInputs | None = None
    """A vision pack's media inputs: the rows get their images' (videos' frames) bytes from this media cache."""

    def encode(self, examples: Iterable[PackInput], job: EncodeJob, staging: Path, notify: Progress, tally: Tally) -> SequenceStore:
        """See `PackEngine.encode`."""
        spool = Spool(staging / "_spool")
        for batch, result in encode_batches(job, batches(examples, tally), self.workers):
            absorb_batch(tally, batch, result)
            spool.append(result.spool)
            notify("tokenize", tally.records, None)
        spool.close()
        return spool

    def write(self, staging: Path, spool: SequenceStore, bins: Bins, *, kind: Kind, max_length: int, on_rows: Callable[[int], None]) -> list[str]:
        """See `PackEngine.write`."""
        media = None
        if self.images is not None and isinstance(spool, Spool):
            media = MediaColumns(spool.images, MediaCache(self.images.cache_root))
        shards = write_shards(staging, spool, bins, kind=kind, max_length=max_length, on_rows=on_rows, images=media)
        shutil.rmtree(staging / "_spool")
        return shards


def absorb_batch(tally: Tally, batch: Batch, result: BatchResult) -> None:
    """Count one encoded batch (its rejects located by file and line) into ``tally``."""
    for position, reject in result.rejects:
        file, line = batch.locations[position]
        tally.reject(file, line, reject.code, reject.message, field=reject.field, record=batch.values[position])
    tally.used += result.used
    tally.trained_tokens += result.trained_tokens
    tally.fit.add(result.fit)


def _build(run: _PackRun, out: Path, staging: Path) -> PackResult:
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    options, engine, notify, provenance = run.options, run.engine, run.notify, run.provenance
    bundle, images = run.job.encoder.bundle, run.job.encoder.images
    tally = Tally(rejects_out=run.rejects)
    spool = engine.encode(run.examples, run.job, staging, notify, tally)
    seconds["tokenize"] = time.perf_counter() - clock
    _check_usable(tally, options)
    pack_kind = tally.kind
    assert pack_kind is not None, "_check_usable saw usable examples, so their kind is known"

    clock = time.perf_counter()
    item_lengths = spool.item_lengths(sequences_per_item(pack_kind))
    notify("pack", 0, len(item_lengths))
    bins = pack_bins(item_lengths, options.max_length, window=options.window, seed=options.seed)
    notify("pack", len(item_lengths), len(item_lengths))
    seconds["pack"] = time.perf_counter() - clock

    clock = time.perf_counter()
    rows_written = 0

    def on_rows(rows: int) -> None:
        nonlocal rows_written
        rows_written += rows
        notify("write", rows_written, len(bins))

    shards = engine.write(staging, spool, bins, kind=pack_kind, max_length=options.max_length, on_rows=on_rows)
    media = None
    if isinstance(spool, Spool) and images is not None:
        kinds = [ref.kind for refs in spool.images for ref in refs]
        media = {"images": kinds.count("image"), "videos": kinds.count("video")}
    stats = summarize(tally, spool, bins, kind=pack_kind, max_length=options.max_length, media=media)
    manifest = build_manifest(
        kind=pack_kind,
        bundle=bundle,
        template=run.job.encoder.template,
        options=options,
        counts={k: stats[k] for k in ("records", "examples", "rejected", "sequences", "tokens", "bins")},
        shards=shards,
        sources=provenance.sources,
        reader_options=provenance.reader_options,
        cache_key=provenance.cache_key,
        vision=images.describe() if images is not None else None,
    )
    write_json(staging / STATS_FILE, stats)
    write_json(staging / MANIFEST_FILE, manifest)
    seconds["write"] = time.perf_counter() - clock
    return PackResult(out, cached=False, manifest=manifest, stats=stats, seconds={k: round(v, 3) for k, v in seconds.items()})


def batches(examples: Iterable[PackInput], tally: Tally) -> Iterator[Batch]:
    """Group usable examples into batches; count reader rejections and examples of another kind.

    The first usable example decides the pack's kind (``tally.kind``).
    """
    batch = Batch()
    for index, (record, example) in enumerate(examples):
        tally.records += 1
        if isinstance(example, Rejection):
            tally.reject(example.file, example.line, example.rule or "invalid-record", example.reason, field=example.field, record=record.value)
            continue
        kind = example_kind(example)
        if tally.kind is None:
            tally.kind = kind
        elif kind != tally.kind:
            msg = f"this is a {kind} example but the pack is {tally.kind} (earlier records); pack kinds separately"
            tally.reject(record.file, record.line, "mixed-kinds", msg, record=record.value)
            continue
        batch.indices.append(index)
        batch.examples.append(example)
        batch.locations.append((record.file, record.line))
        batch.values.append(record.value)
        if len(batch.indices) == BATCH_SIZE:
            yield batch
            batch = Batch()
    if batch.indices:
        yield batch


def _validate(options: PackOptions, workers: int | None) -> None:
    problems = []
    if problem := max_length_problem(options.max_length):
        problems.append(problem)
    if options.loss_on not in LOSS_POLICIES:
        problems.append(f"--loss-on must be one of {', '.join(LOSS_POLICIES)}, got {options.loss_on!r}")
    if options.truncation not in TRUNCATION_POLICIES:
        problems.append(f"--truncation must be one of {', '.join(TRUNCATION_POLICIES)}, got {options.truncation!r}")
    if options.window is not None and options.window < 1:
        problems.append(f"--window must be at least 1, got {options.window}")
    if workers is not None and workers < 1:
        problems.append(f"--workers must be at least 1, got {workers}")
    if not 0 <= options.max_invalid_percent <= 100:
        problems.append(f"--max-invalid-percent must be between 0 and 100, got {options.max_invalid_percent}")
    if problems:
        raise UsageError("; ".join(problems))


def _check_usable(tally: Tally, options: PackOptions) -> None:
    """Fail when too many records were rejected, or when nothing is left to pack."""
    rejected = tally.rejected_total
    if rejected * 100 > options.max_invalid_percent * tally.records or (rejected and rejected == tally.records):
        first = tally.reject_samples[0]
        summary = ", ".join(f"{code} {n}" for code, n in tally.rejected.most_common())
        msg = (
            f"{first['message']} ({rejected} of {tally.records} records rejected: {summary}; "
            f"--max-invalid-percent is {options.max_invalid_percent:g})"
        )
        raise DataError(str(first["file"]), int(first["line"]), "record", str(first["reason"]), msg)
    if not tally.records:
        msg = "no records to pack"
        raise InputError(msg)
    if not tally.used:
        msg = (
            f"no example fits in --max-length {options.max_length} with --truncation {options.truncation} "
            f"({tally.fit.dropped_too_long + tally.fit.dropped_untrained} dropped)"
        )
        raise UsageError(msg)


def _quiet(stage: str, done: int, total: int | None) -> None:
    """The default progress callback: report nothing."""

