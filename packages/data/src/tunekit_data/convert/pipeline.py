"""``ds convert`` end to end, and ``read_examples`` for the packer and the trainer.

Both start the same way (``open_input``): find the input files, pick the decoder (``--from``, or
detection from the leading records, reported), and stream units. ``read_examples`` then decodes in
this process and yields ``(SourceRecord, Example | Rejection)`` for every record; ``convert_dataset``
fans units out to worker processes (``engine.convert_unit``), writes their results in input order,
and counts every record as written (per split) or rejected, so ``records == written + rejected``.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from functools import partial

from tunekit_data.check import PLATFORMS, get_profile, worker_init
from tunekit_data.convert.detect import SAMPLE, Detection, detect_input_format
from tunekit_data.convert.engine import ConvertPlan, UnitResult, convert_unit
from tunekit_data.convert.inputs import INPUT_FORMATS, InputPlan
from tunekit_data.convert.media import MediaOptions
from tunekit_data.convert.outputs import OUTPUT_FORMATS
from tunekit_data.convert.rejection import ConversionError, Rejection
from tunekit_data.convert.sources import (
    DEFAULT_BLOCK_SIZE,
    InputFile,
    Unit,
    discover,
    find_template,
    input_size,
    iter_units,
    unit_records,
)
from tunekit_data.convert.template import load_template
from tunekit_data.convert.writer import (
    DEFAULT_SHARD_SIZE,
    TRAIN,
    JsonlSink,
    Sink,
    Split,
    open_outputs,
    output_kind,
)
from tunekit_data.cores import available_cores
from tunekit_data.errors import UsageError, at_least, between
from tunekit_data.examples import Example, SourceRecord
from tunekit_data.media import default_cache_dir
from tunekit_data.parallel import ordered_map

FIRST_REJECTS = 20
# What a worker process needs (the converter, the ds check rules): the fork server imports these
# once, and not the ds CLI around them.
_WORKER_MODULES = ("tunekit_data.convert.engine", "tunekit_data.check.engine", "tunekit_data.check.blockcheck")


@dataclass(slots=True)
class OpenInput:
    """Inputs ready to stream: the files, how they are decoded (and why), and their units."""

    files: list[InputFile]
    detection: Detection
    plan: InputPlan
    units: Iterator[Unit]


def open_input(
    paths: Sequence[str],
    *,
    fmt: str = "auto",
    template: str | None = None,
    system: str | None = None,
    media_prefix: str | None = None,
    bucket_owner: str | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> OpenInput:
    """Resolve ``paths`` and choose the decoder; raises UsageError / InputError for bad options or inputs."""
    if fmt != "auto" and fmt not in INPUT_FORMATS:
        msg = f"--from must be auto or one of {', '.join(INPUT_FORMATS)}, got {fmt!r}"
        raise UsageError(msg)
    if template is not None and fmt not in ("auto", "jumpstart"):
        msg = f"--template is for JumpStart input; it cannot be used with --from {fmt}"
        raise UsageError(msg)
    media = MediaOptions(media_prefix, bucket_owner)
    files = discover(paths)
    if not files:
        msg = "no input paths given"
        raise UsageError(msg)
    template_path = template or (
        str(found) if fmt in ("auto", "jumpstart") and (found := find_template(paths)) else None
    )
    loaded = load_template(template_path) if template_path else None
    units = iter_units(files, block_size=block_size)
    if fmt != "auto":
        detection = Detection(fmt, "given", loaded.source if loaded else "")
    else:
        sample, units = _sample(units)
        detection = detect_input_format(
            sample,
            files_are_text=all(f.kind == "txt" for f in files),
            template=loaded.source if loaded else None,
        )
    return OpenInput(files, detection, InputPlan(detection.fmt, media, loaded, system), units)


def _sample(units: Iterator[Unit]) -> tuple[list[object], Iterator[Unit]]:
    """The first ``SAMPLE`` JSON-object records, and the units again from the start (read units are kept and replayed, so standard input works too)."""
    head: list[Unit] = []
    sample: list[object] = []
    for unit in units:
        head.append(unit)
        records = (r.record.value for r in unit_records(unit) if not (r.blank or r.problem))
        sample.extend(itertools.islice(records, SAMPLE - len(sample)))
        if len(sample) == SAMPLE:
            break
    return sample, itertools.chain(head, units)


class ExampleReader:
    """Iterator of ``(SourceRecord, Example | Rejection)``, one pair per non-blank record, in order.

    ``detection`` says which format the records are decoded as and how it was chosen.
    """

    def __init__(self, opened: OpenInput) -> None:
        self.detection = opened.detection
        self._pairs = self._iter(opened)

    def __iter__(self) -> ExampleReader:
        return self

    def __next__(self) -> tuple[SourceRecord, Example | Rejection]:
        return next(self._pairs)

    @staticmethod
    def _iter(opened: OpenInput) -> Iterator[tuple[SourceRecord, Example | Rejection]]:
        for unit in opened.units:
            for item in unit_records(unit):
                src = item.record
                if item.blank:
                    continue
                if item.problem is not None:
                    yield src, Rejection.from_problem(src.file, src.line, item.problem)
                    continue
                try:
                    yield src, opened.plan.to_example(src.value)
                except ConversionError as err:
                    yield src, Rejection.from_error(src.file, src.line, err)


def read_examples(paths: Sequence[str], *, fmt: str = "auto", **opts: str | None) -> ExampleReader:
    """Stream ``paths`` as neutral Examples: ``(SourceRecord, Example | Rejection)`` per record.

    ``fmt`` is an input format name (``INPUT_FORMATS``) or ``auto``; ``opts`` are ``open_input``'s
    (``template``, ``system``, ``media_prefix``, ``bucket_owner``). Decoding only: no target, so no
    ``ds check`` rules run. Options and detection are resolved now (UsageError / InputError raised
    here); records are read lazily, in this process.

    >>> for src, ex in read_examples(["train.jsonl"]):  # doctest: +SKIP
    ...     if isinstance(ex, Rejection):
    ...         print(ex)  # train.jsonl:7: messages[1].role: role must be system, user or assistant, got 'bot'
    """
    return ExampleReader(open_input(paths, fmt=fmt, **opts))  # type: ignore[arg-type]


# --- ds convert ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvertOptions:
    """Everything ``ds convert`` takes besides the inputs; checked on creation (UsageError)."""

    to: str
    out: str
    fmt: str = "auto"
    template: str | None = None
    system: str | None = None
    media_prefix: str | None = None
    bucket_owner: str | None = None
    split: str | None = None
    seed: int = 0
    max_samples: int | None = None
    rejects_out: str | None = None
    profile: str = "nova-lite-1"
    platform: str = "sagemaker"
    workers: int | None = None
    shard_size: int = DEFAULT_SHARD_SIZE
    max_rejects_percent: float = 0.0
    block_size: int = DEFAULT_BLOCK_SIZE
    resolve_images: bool = False
    """Fetch and decode every output image (media cache: ``media_cache``, else the default); reject a
    record whose image is missing, undecodable or too large."""
    media_cache: str | None = None

    def __post_init__(self) -> None:
        if self.to not in OUTPUT_FORMATS:
            msg = f"--to must be one of {', '.join(OUTPUT_FORMATS)}, got {self.to!r}"
            raise UsageError(msg)
        get_profile(self.profile)
        if self.platform not in PLATFORMS:
            msg = f"--platform must be one of {', '.join(PLATFORMS)}, got {self.platform!r}"
            raise UsageError(msg)
        if self.max_samples is not None and self.max_samples < 1 and self.max_samples != -1:
            msg = (
                f"--max-samples must be a positive number of records (or -1 for all), got {self.max_samples}"
            )
            raise UsageError(msg)
        at_least("--shard-size", self.shard_size, 1)
        between("--max-rejects-percent", self.max_rejects_percent, 0, 100)
        if self.workers is not None:
            at_least("--workers", self.workers, 1)
        output_kind(self.out)

    @property
    def limit(self) -> int | None:
        """The training-record limit (``--max-samples``; -1, like JumpStart's, means none)."""
        return None if self.max_samples in (None, -1) else self.max_samples


@dataclass
class ConvertSummary:
    """What a run did: counts by outcome, where records went, and the first rejections."""

    inputs: list[str]
    detection: Detection
    to: str
    max_rejects_percent: float = 0.0
    records: int = 0
    blank: int = 0
    written: Counter[str] = field(default_factory=Counter)
    rejected: int = 0
    by_rule: Counter[str] = field(default_factory=Counter)
    warnings: Counter[str] = field(default_factory=Counter)
    first_rejects: list[Rejection] = field(default_factory=list)
    outputs: list[dict[str, object]] = field(default_factory=list)
    rejects_out: str | None = None
    stopped_at: tuple[str, int] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the rejected share is within ``--max-rejects-percent`` (0 by default)."""
        return self.rejected <= self.records * self.max_rejects_percent / 100

    def absorb(self, result: UnitResult) -> None:
        """Count one unit's outcome."""
        self.records += result.records
        self.blank += len(result.blanks)
        for name, chunk in result.chunks.items():
            self.written[name] += len(chunk)
        self.rejected += len(result.rejections)
        self.by_rule.update(r.rule or "convert" for r in result.rejections)
        self.warnings.update(result.warnings)
        room = FIRST_REJECTS - len(self.first_rejects)
        self.first_rejects.extend(result.rejections[: max(room, 0)])

    def to_dict(self) -> dict[str, object]:
        """The ``--json`` object (a stable contract: scripts read it)."""
        return {
            "inputs": self.inputs,
            "format": self.detection.fmt,
            "format_source": self.detection.how,
            "format_evidence": self.detection.evidence,
            "to": self.to,
            "records": self.records,
            "blank": self.blank,
            "written": dict(self.written),
            "rejected": self.rejected,
            "by_rule": dict(self.by_rule),
            "warnings": dict(self.warnings),
            "first_rejects": [r.to_dict() for r in self.first_rejects],
            "outputs": self.outputs,
            "rejects_out": self.rejects_out,
            "stopped_at": {"file": self.stopped_at[0], "line": self.stopped_at[1]}
            if self.stopped_at
            else None,
            "notes": self.notes,
            "ok": self.ok,
        }


@dataclass(slots=True)
class PreparedConvert:
    """A ``ds convert`` run ready to stream: the inputs, what every unit is converted with, the output names (``train`` first) and the summary to count into."""

    opened: OpenInput
    plan: ConvertPlan
    splits: list[str]
    summary: ConvertSummary


def prepare_convert(paths: Sequence[str], options: ConvertOptions) -> PreparedConvert:
    """Open the inputs, detect their format and build the plan (shared by the local and Ray engines)."""
    opened = open_input(
        paths,
        fmt=options.fmt,
        template=options.template,
        system=options.system,
        media_prefix=options.media_prefix,
        bucket_owner=options.bucket_owner,
        block_size=options.block_size,
    )
    target = OUTPUT_FORMATS[options.to]
    kind = opened.plan.format.kind
    if kind not in target.accepts:
        msg = f"--to {options.to} needs {' or '.join(target.accepts)} input; the input is {opened.detection.describe()}"
        raise UsageError(msg)
    split = Split.parse(options.split, options.seed) if options.split else None
    plan = ConvertPlan(
        opened.plan,
        options.to,
        parquet=output_kind(options.out) == "parquet",
        split=split,
        profile=options.profile,
        platform=options.platform,
        keep_refs=options.limit is not None,
        media_cache=(options.media_cache or str(default_cache_dir())) if options.resolve_images else None,
    )
    summary = ConvertSummary(
        [f.path for f in opened.files], opened.detection, options.to, options.max_rejects_percent
    )
    if kind == "preference" and target.name not in ("dpo", "preference"):
        summary.notes.append(
            f"preference input written as {target.name} keeps the chosen answer of each pair"
        )
    return PreparedConvert(opened, plan, [TRAIN, split.name] if split else [TRAIN], summary)


def convert_dataset(
    paths: Sequence[str], options: ConvertOptions, *, on_progress: Callable[[int], None] | None = None
) -> ConvertSummary:
    """Convert ``paths`` as ``options`` say; see the module docstring. ``on_progress`` gets input bytes done."""
    prepared = prepare_convert(paths, options)
    opened, plan, splits, summary = prepared.opened, prepared.plan, prepared.splits, prepared.summary
    target = OUTPUT_FORMATS[options.to]
    sinks = open_outputs(options.out, splits=splits, schema=target.schema, shard_size=options.shard_size)
    opened_sinks: list[Sink] = list(sinks.values())
    workers = _workers(options, opened.files, options.block_size)
    try:
        rejects = JsonlSink(options.rejects_out) if options.rejects_out else None
        if rejects is not None:
            opened_sinks.append(rejects)
        convert = partial(convert_unit, plan=plan)
        # closing(): stopping early (--max-samples) or failing cancels the units still in flight.
        mapped = ordered_map(
            convert, opened.units, workers=workers, initializer=worker_init, preload=_WORKER_MODULES
        )
        with closing(mapped) as results:
            for _unit, result in results:
                stop = _cut_at_limit(result, options.limit, summary)
                for name, chunk in result.chunks.items():
                    sinks[name].write(chunk)
                if rejects is not None:
                    rejects.write(result.rejects)
                summary.absorb(result)
                if on_progress is not None:
                    on_progress(result.nbytes)
                if stop:
                    break
        for name, sink in sinks.items():
            summary.outputs.extend({"split": name, "path": p, "records": n} for p, n in sink.commit())
        if rejects is not None:
            rejects.commit()
            summary.rejects_out = options.rejects_out
    except BaseException:
        for sink in opened_sinks:
            sink.abort()
        raise
    return summary


def _workers(options: ConvertOptions, files: list[InputFile], block_size: int) -> int:
    """Worker processes: as asked, else all cores; one (in-process) for inputs of a block or two, where starting processes costs more than it saves."""
    if options.workers is not None:
        return options.workers
    size = input_size(files)
    if size is not None and size < 2 * block_size:
        return 1
    return available_cores()


def _cut_at_limit(result: UnitResult, limit: int | None, summary: ConvertSummary) -> bool:
    """Apply ``--max-samples`` to one unit: keep it up to the record that fills the training output.

    Returns True when the run should stop; ``summary.stopped_at`` then names that record.
    """
    train = result.chunks.get(TRAIN)
    if limit is None or train is None:
        return False
    room = limit - summary.written[TRAIN]
    if len(train) < room:
        return False
    last = train.seq[room - 1]
    for name, chunk in result.chunks.items():
        result.chunks[name] = chunk.upto(last)
    keep = result.rejects.upto(last)
    result.rejections = result.rejections[: len(keep)]
    result.rejects = keep
    result.blanks = [b for b in result.blanks if b <= last]
    result.records = last + 1
    summary.stopped_at = result.refs[last]
    return True
