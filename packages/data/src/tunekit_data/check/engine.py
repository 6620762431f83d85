"""`ds check`: stream sources in blocks through the block checker on all cores, then dataset rules.

Memory is bounded by (workers x 2) blocks in flight plus the first ``SAMPLE`` problems: every
problem is streamed to a spool file (and to ``--errors-out``) as it is found, and ``--valid-out`` /
``--rejects-out`` receive each block's lines as soon as its verdicts are in, in input order. With
``--check-media`` a block's verdicts include the HEAD lookups of its media (``mediacheck``).

Inputs and outputs may be local paths or ``s3://`` URIs (``storage``). An S3 dataset's bucket is
the bucket its media must share (M11), unless ``--dataset-uri`` names another.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import NamedTuple

import orjson
import pyarrow as pa

from tunekit_data.check.blockcheck import BlockResult, BlockStats, check_block, check_table
from tunekit_data.check.mediacheck import check_media
from tunekit_data.check.profiles import PLATFORMS, get_profile
from tunekit_data.check.rules import RULES, Problem
from tunekit_data.check.schema import FORMATS
from tunekit_data.cores import available_cores
from tunekit_data.errors import InputError, UsageError, at_least, between
from tunekit_data.formats import CHECK_SUITES, Options, guess_check_format
from tunekit_data.io import (
    JSONL_SUFFIXES,
    S3_PREFIX_URI,
    AtomicOutput,
    Block,
    S3Path,
    Source,
    expand_paths,
    is_blank,
    is_s3,
    iter_blocks,
    open_output,
    parse_line,
    split_lines,
)
from tunekit_data.parallel import ordered_map

FORMAT_CHOICES = ("auto", *FORMATS)
SAMPLE = 20
_FILE_NAME = re.compile(r"^[A-Za-z0-9_./-]+$")
_DATASET_URI = re.compile(S3_PREFIX_URI)
DPO_MIN_PAIRS = 1000
# Blocks of 6 MB rather than the reader's default 8: the same MB per CPU-second, ~25 MB less peak
# memory with 2 workers (measured on the 4 GB SFT + image file: 259 MB against 283 MB).
CHECK_BLOCK_SIZE = 6 << 20


RecordCheck = Callable[[str, list[tuple[int, object]]], list[tuple[int, Problem]]]
"""A check of decoded records that the block checker cannot do (F12 token counts, which need a
tokenizer: ``tunekit_tokenize.LengthCheck``): called with the detected format and each block's valid
``(line, record)`` pairs, it returns ``(line, problem)`` findings. Errors make their lines invalid."""


@dataclass(frozen=True)
class CheckConfig:
    """What to check and how; built from the CLI options (or by `ds convert` / `train run`)."""

    fmt: str = "auto"
    profile: str = "nova-lite-1"
    platform: str = "sagemaker"
    dataset_uri: str | None = None
    max_invalid_percent: float = 0.0
    workers: int | None = None
    block_size: int = CHECK_BLOCK_SIZE
    check_media: bool = False
    record_check: RecordCheck | None = None

    def validate(self) -> None:
        """Raise UsageError naming the option and the allowed values."""
        get_profile(self.profile)
        if self.fmt not in FORMAT_CHOICES:
            msg = f"--format must be one of {', '.join(FORMAT_CHOICES)}, got {self.fmt!r}"
            raise UsageError(msg)
        if self.platform not in PLATFORMS:
            msg = f"--platform must be one of {', '.join(PLATFORMS)}, got {self.platform!r}"
            raise UsageError(msg)
        between("--max-invalid-percent", self.max_invalid_percent, 0, 100)
        if self.dataset_uri is not None and not _DATASET_URI.match(self.dataset_uri):
            msg = f"--dataset-uri must look like s3://bucket/prefix, got {self.dataset_uri!r}"
            raise UsageError(msg)
        if self.workers is not None:
            at_least("--workers", self.workers, 1)


@dataclass
class DatasetProblem:
    """A file- or dataset-level finding (no line)."""

    rule: str
    severity: str
    message: str
    file: str | None = None

    @classmethod
    def make(cls, rule: str, message: str, file: str | None = None) -> DatasetProblem:
        """A finding of a rule of the table, at that rule's severity (as `Problem.make`)."""
        return cls(rule, RULES[rule].severity, message, file)

    def to_dict(self) -> dict:
        """JSON shape of ``dataset_errors`` entries."""
        d = {"rule": self.rule, "severity": self.severity, "message": self.message}
        if self.file is not None:
            d["file"] = self.file
        return d


@dataclass
class CheckSummary:
    """Totals of a check run; the full problem list is in ``spool`` (JSONL, one problem a line; a line holding a number N says that the problems after it count their lines from N lines into their file: read it with ``iter_problems``)."""

    files: list[str]
    format: str
    detected: bool
    profile: str
    platform: str
    records: int = 0
    valid: int = 0
    invalid: int = 0
    blank: int = 0
    warnings: int = 0
    errors: int = 0
    by_rule: Counter = field(default_factory=Counter)
    sample: list[dict] = field(default_factory=list)
    dataset_errors: list[DatasetProblem] = field(default_factory=list)
    max_invalid_percent: float = 0.0
    spool: Path | None = None
    tokens: dict[str, int] | None = None  # token figures of ``--tokenizer`` (F12), set by the caller

    @property
    def invalid_percent(self) -> float:
        """Share of invalid records, in percent."""
        return 100.0 * self.invalid / self.records if self.records else 0.0

    @property
    def ok(self) -> bool:
        """Valid within the allowed invalid share, and no dataset-level error."""
        dataset_ok = not any(p.severity == "error" for p in self.dataset_errors)
        return dataset_ok and self.invalid_percent <= self.max_invalid_percent

    def close(self) -> None:
        """Delete the spool file."""
        if self.spool is not None:
            self.spool.unlink(missing_ok=True)
            self.spool = None


def detect_check_format(values: Iterable[object]) -> str | None:
    """The ``--format`` most of the decoded records look like (``formats.registry``); None if none does.

    Used only to choose which rule set to run for the whole input: it is reported, and every
    record is then checked against that one format.
    """
    votes = Counter(fmt for v in values if (fmt := guess_check_format(v)) is not None)
    return votes.most_common(1)[0][0] if votes else None


def _sniff(block: Block | None, limit: int = 200) -> list[object]:
    if block is None:
        return []
    from tunekit_data.io import json_lines
    out = []
    # a table block's first rows only: its lines are made from its rows on demand
    data = block.data if block.table is None else json_lines(block.table.slice(0, limit * 2))
    for raw in split_lines(data)[: limit * 2]:
        if is_blank(raw):
            continue
        value, problem = parse_line(raw)
        if problem is None:
            out.append(value)
        if len(out) >= limit:
            break
    return out


def _detect(sources: list[Source], streams: list[Iterator[Block]]) -> str:
    """The format of the first records, peeking at each input's first block until one holds records.

    Inputs without records are skipped (rule F11 reports them); with no record anywhere there is
    nothing to tell the formats apart, and ``sft`` is reported. Raises UsageError when records exist
    but none is recognised.
    """
    for k, stream in enumerate(streams):
        first = next(stream, None)
        if first is None:
            continue
        streams[k] = chain([first], stream)
        fmt = detect_check_format(_sniff(first))
        if fmt:
            return fmt
        if not all(is_blank(raw) for raw in split_lines(first.data)):
            msg = f"{sources[k].name}: cannot detect the format from the first records; pass --format ({', '.join(FORMATS)})"
            raise UsageError(msg)
    return "sft"


def _file_rules(source: Source) -> list[DatasetProblem]:
    if source.is_stdin:
        return []
    out = []
    name = source.name
    if source.kind == "jsonl" and not name.endswith(JSONL_SUFFIXES):
        out.append(DatasetProblem.make("F1", "dataset files must end in .jsonl (or .jsonl.gz / .jsonl.zst)", name))
    if not _FILE_NAME.match(Path(name).name):
        out.append(DatasetProblem.make("F2", "file name should use only A-Z a-z 0-9 _ . / - (S3 object names)", name))
    return out


class CheckWriters:
    """The optional outputs, files or S3 objects, each appearing under its name only when complete.

    Public for the Ray engine (``tunekit_data.distributed.check``), whose tasks write their parts
    of ``--valid-out`` and ``--rejects-out`` as the local checker writes the whole.
    """

    def __init__(self, valid_out: str | None, rejects_out: str | None, errors_out: str | None) -> None:
        self.files: dict[str, AtomicOutput] = {}
        try:
            for key, uri in (("valid", valid_out), ("rejects", rejects_out), ("errors", errors_out)):
                if uri:
                    self.files[key] = open_output(uri)
        except BaseException:
            self.abort()
            raise

    def write_lines(self, block: Block, result: BlockResult) -> None:
        """Write each non-blank line of ``block`` to the valid or the rejects output, as ``result`` judged it."""
        valid, rejects = self.files.get("valid"), self.files.get("rejects")
        if valid is None and rejects is None:
            return
        # Raw line bytes with their own terminators, so the split re-joins byte for byte.
        lines = block.data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        for i, raw in enumerate(lines):
            if result.blank[i]:
                continue
            out = rejects if result.invalid[i] else valid
            if out is not None:
                # A last line without a terminator gets one, so outputs of several files concatenate.
                out.write(raw + b"\n")

    def write_error(self, record: dict) -> None:
        """Append one problem ``record`` to the errors output, if there is one."""
        errors = self.files.get("errors")
        if errors is not None:
            errors.write(orjson.dumps(record) + b"\n")

    def commit(self) -> None:
        """Publish every output under its name."""
        for f in self.files.values():
            f.commit()

    def abort(self) -> None:
        """Drop every output unpublished."""
        for f in self.files.values():
            f.abort()


class _NoPandas:
    """A meta path finder answering "not installed" for pandas (see ``worker_init``).

    Not an ``importlib.abc.MetaPathFinder`` subclass: ``sys.meta_path`` needs only ``find_spec``,
    and importing ``importlib.abc`` costs ~4 ms of start-up.
    """

    def find_spec(self, name, path, target=None):
        if name == "pandas" or name.startswith("pandas."):
            msg = "pandas is not used by tunekit's data commands"
            raise ImportError(msg)
        return None


def worker_init() -> None:
    """Prepare a `ds` process: keep pyarrow from importing pandas (1.2 s, never used), and have Arrow allocate through jemalloc.

    pyarrow probes for pandas on its first conversion of a Python value (``pa.scalar``,
    ``pa.array``) and imports it if installed (``datasets`` installs it); `ds` processes never
    convert to pandas, so the probe is answered "absent".

    jemalloc returns the freed memory of parsed blocks to the system sooner than pyarrow's default
    mimalloc, which keeps it cached per thread: measured on the 1 GB SFT file with 2 workers,
    ~50 MB less peak RSS (187 MB against 237) at the same MB per CPU-second. Where pyarrow lacks
    jemalloc, or ``ARROW_DEFAULT_MEMORY_POOL`` chooses a pool, the default stays.
    """
    if "pandas" not in sys.modules and not any(isinstance(f, _NoPandas) for f in sys.meta_path):
        sys.meta_path.insert(0, _NoPandas())
    if "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:
        with contextlib.suppress(NotImplementedError):  # pa.ArrowNotImplementedError: a build without it
            pa.set_memory_pool(pa.jemalloc_memory_pool())


class Verdict(NamedTuple):
    """One checked block as the run loop takes it, in input order.

    ``block`` holds its lines when this process writes the split outputs, and is None where an engine's tasks
    wrote them. An engine's task may sum up its blocks itself (``Tally``): the run loop then does O(1) work
    for them.
    """

    result: BlockResult | Tally
    nbytes: int
    bom: bool
    block: Block | None


def _count_problem(into: CheckSummary | Tally, problem: Problem, record: dict) -> None:
    """Count one problem into a report or a task's tally: by rule, by severity, and among the first ``SAMPLE`` kept whole."""
    into.by_rule[problem.rule] += 1
    if problem.severity == "warning":
        into.warnings += 1
    else:
        into.errors += 1
    if len(into.sample) < SAMPLE:
        into.sample.append(record)


def problem_record(source: Source, line: int, problem: Problem) -> dict:
    """A problem as the spool, ``--errors-out`` and ``--json`` hold it."""
    record = {"file": source.name, "line": line, **problem.to_dict()}
    if source.kind != "jsonl":
        record["unit"] = "row"  # a table's line is its row
    return record


@dataclass
class Tally:
    """Blocks checked and summed up where they were checked (a Ray task): the counts, the first ``SAMPLE`` problems, and every problem as spool lines (``problem_record``, JSON), all with line numbers counted from the blocks' own first line.

    ``shift`` renumbers them when the driver knows how many lines come before.
    """

    records: int = 0
    valid: int = 0
    blank: int = 0
    warnings: int = 0
    errors: int = 0
    by_rule: Counter = field(default_factory=Counter)
    sample: list[dict] = field(default_factory=list)
    problems: bytearray = field(default_factory=bytearray)
    stats: BlockStats = field(default_factory=BlockStats)
    lines: int = 0  # added to every line number (``shift``)

    def add(self, source: Source, result: BlockResult) -> None:
        """Sum up one more block's verdicts."""
        self.records += result.stats.records
        self.valid += result.stats.valid
        self.blank += int(result.blank.sum())
        for line, problem in result.problems:
            record = problem_record(source, line, problem)
            self.problems += orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
            _count_problem(self, problem, record)
        self.stats.merge(result.stats)

    def shift(self, lines: int) -> Tally:
        """This tally for blocks that start ``lines`` lines into their file."""
        self.lines += lines
        self.stats.buckets = {b: line + lines for b, line in self.stats.buckets.items()}
        return self

    def records_shifted(self) -> Iterator[dict]:
        """Every problem record, renumbered."""
        for raw in self.problems.splitlines():
            record = orjson.loads(raw)
            record["line"] += self.lines
            yield record


Verdicts = Callable[[Source, Iterator[Block]], Iterator[Verdict]]
Engine = Callable[[list[Source], Options, "CheckConfig"], Verdicts]
"""Given the sources, the resolved options and the config, the function that checks one source
(its block stream, whose first block detection may have read) into verdicts, in order."""


def _local_engine(sources: list[Source], options: Options, config: CheckConfig) -> Verdicts:
    """Blocks checked on this machine's threads (``_ordered``)."""
    workers = config.workers or available_cores()  # the affinity mask: containers narrow it
    if sum(s.size() or 0 for s in sources) < 2 * config.block_size:
        workers = 1  # starting worker threads costs more than checking a small input

    def verdicts(source: Source, stream: Iterator[Block]) -> Iterator[Verdict]:
        for block, result in _ordered(stream, options, workers):
            finish_block(block, result, options.fmt, config)
            yield Verdict(result, block.nbytes, block.bom, block)

    return verdicts


def finish_block(block: Block, result: BlockResult, fmt: str, config: CheckConfig) -> None:
    """The checks of a block beyond the block checker: media lookups (M12) and ``record_check``."""
    if config.check_media:
        check_media(result)
    if config.record_check is not None:
        _run_record_check(config.record_check, fmt, block, result)


def check_input_block(block: Block, options: Options) -> BlockResult:
    """The block checker's verdicts on one block: lines of JSONL, or a table input's rows."""
    if block.table is not None:
        return check_table(block.table, block.first_line, options)
    return check_block(block.data, block.first_line, options, block.newlines)


def _ordered(blocks: Iterator[Block], options: Options, workers: int) -> Iterator[tuple[Block, BlockResult]]:
    """Check blocks on ``workers`` threads (``tunekit_data.parallel`` says why threads), in input order."""
    return ordered_map(check_input_block, blocks, workers=workers, kind="thread", send=lambda block: (block, options))


def run_check(
    paths: list[str],
    config: CheckConfig,
    *,
    valid_out: str | None = None,
    rejects_out: str | None = None,
    errors_out: str | None = None,
    on_progress: Callable[[int], None] | None = None,
    engine: Engine | None = None,
) -> CheckSummary:
    """Check every line of ``paths``; see the module docstring. Raises UsageError / InputError.

    ``engine`` checks the blocks (default: threads of this process); the Ray engine
    (``tunekit_data.distributed.check``) runs them as tasks of a cluster and writes ``--valid-out``
    / ``--rejects-out`` itself, so it is called without them.
    """
    config.validate()
    sources = expand_paths(paths)
    streams = [iter_blocks(s, block_size=config.block_size) for s in sources]
    fmt, detected = config.fmt, False
    if fmt == "auto":
        fmt, detected = _detect(sources, streams), True
    profile = get_profile(config.profile)
    bucket = _DATASET_URI.match(config.dataset_uri).group(1) if config.dataset_uri else _s3_bucket(sources)
    options = Options(profile, fmt, config.platform, bucket, collect_media=config.check_media)  # type: ignore[arg-type]
    summary = CheckSummary([s.name for s in sources], fmt, detected, config.profile, config.platform,
                           max_invalid_percent=config.max_invalid_percent)
    fd, spool = tempfile.mkstemp(prefix="tunekit-check-", suffix=".jsonl")
    summary.spool = Path(spool)
    verdicts = (engine or _local_engine)(sources, options, config)
    writers = CheckWriters(valid_out, rejects_out, errors_out)
    stats = BlockStats()
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as spool_file:
            for source, stream in zip(sources, streams, strict=True):
                summary.dataset_errors.extend(_file_rules(source))
                before = summary.records
                for verdict in verdicts(source, stream):
                    if verdict.bom:
                        summary.dataset_errors.append(DatasetProblem.make("F4", "UTF-8 byte order mark at the start of the file was stripped", source.name))
                    _absorb(summary, source, verdict, spool_file, writers)
                    stats.merge(verdict.result.stats)
                    if on_progress:
                        on_progress(verdict.nbytes)
                if summary.records == before:
                    summary.dataset_errors.append(DatasetProblem.make("F11", "file holds no records", source.name))
        summary.dataset_errors.extend(_dataset_rules(stats, options, config))
        writers.commit()
    except BaseException:
        writers.abort()
        summary.close()
        raise
    return summary


def _run_record_check(check: RecordCheck, fmt: str, block: Block, result: BlockResult) -> None:
    """Decode the block's valid lines for ``check`` and merge its findings into ``result``."""
    records = [
        (result.first_line + i, orjson.loads(raw))
        for i, raw in enumerate(split_lines(block.data))
        if not (result.invalid[i] or result.blank[i])
    ]
    found = check(fmt, records) if records else []
    if not found:
        return
    for line, problem in found:
        if problem.severity == "error":
            result.invalid[line - result.first_line] = True
    result.problems = sorted(result.problems + found, key=lambda hit: hit[0])
    result.stats.valid = int(result.stats.records - result.invalid.sum())


def _s3_bucket(sources: list[Source]) -> str | None:
    """The bucket of a dataset that lies wholly in one S3 bucket, else None."""
    buckets = {S3Path.parse(s.name).bucket if is_s3(s.name) else None for s in sources}
    return buckets.pop() if len(buckets) == 1 else None


def _absorb(summary: CheckSummary, source: Source, verdict: Verdict, spool, writers: CheckWriters) -> None:
    result = verdict.result
    if isinstance(result, Tally):
        _absorb_tally(summary, result, spool, writers)
        return
    summary.blank += int(result.blank.sum())
    summary.records += result.stats.records
    summary.valid += result.stats.valid
    summary.invalid += result.stats.records - result.stats.valid
    for line, problem in result.problems:
        record = problem_record(source, line, problem)
        spool.write(orjson.dumps(record) + b"\n")
        writers.write_error(record)
        _count_problem(summary, problem, record)
    if verdict.block is not None:
        writers.write_lines(verdict.block, result)


def _absorb_tally(summary: CheckSummary, tally: Tally, spool, writers: CheckWriters) -> None:
    """O(1) in the tally's problems: their spool lines are copied whole, after the line count ``iter_problems`` adds to their line numbers; only ``--errors-out`` reads them one by one."""
    summary.blank += tally.blank
    summary.records += tally.records
    summary.valid += tally.valid
    summary.invalid += tally.records - tally.valid
    summary.warnings += tally.warnings
    summary.errors += tally.errors
    summary.by_rule.update(tally.by_rule)
    for record in tally.sample[: SAMPLE - len(summary.sample)]:
        summary.sample.append({**record, "line": record["line"] + tally.lines})
    if tally.problems:
        spool.write(b"%d\n" % tally.lines)
        spool.write(tally.problems)
        spool.write(b"0\n")
        if "errors" in writers.files:
            for record in tally.records_shifted():
                writers.write_error(record)


def _dataset_rules(stats: BlockStats, o: Options, config: CheckConfig) -> list[DatasetProblem]:
    out: list[DatasetProblem] = []
    p = o.profile
    if CHECK_SUITES[o.fmt].converse and config.platform == "bedrock":
        n = stats.records
        if not p.bedrock_sft_min <= n <= p.bedrock_max:
            out.append(DatasetProblem.make("F10", f"{p.label} on Bedrock takes {p.bedrock_sft_min:,} to {p.bedrock_max:,} records (source {p.min_source}), got {n:,}"))
    kinds = [k for k, n in stats.with_media.items() if n]
    if len(kinds) > 1:
        detail = ", ".join(f"{stats.with_media[k]:,} with {k}s" for k in kinds)
        out.append(DatasetProblem.make("M10", f"a dataset cannot mix media modalities: {detail}"))
    if len(stats.buckets) > 1 and o.dataset_bucket is None:
        where = ", ".join(f"{b} (first at line {line})" for b, line in list(stats.buckets.items())[:5])
        out.append(DatasetProblem.make("M11", f"media must be in the dataset's single S3 bucket; found {len(stats.buckets)}: {where}"))
    if o.fmt == "dpo":
        if not p.dpo:
            out.append(DatasetProblem.make("D9", f"DPO is not available for {p.label}"))
        if stats.valid < DPO_MIN_PAIRS:
            out.append(DatasetProblem.make("D10", f"{stats.valid:,} valid preference pairs; at least {DPO_MIN_PAIRS:,} are recommended"))
    return out


def iter_problems(summary: CheckSummary) -> Iterator[dict]:
    """Every record-level problem of a finished run, in input order, read back from the spool."""
    if summary.spool is None:
        return
    lines = 0
    with summary.spool.open("rb") as f:
        for raw in f:
            record = orjson.loads(raw)
            if type(record) is int:  # the line count before the records that follow (``_absorb_tally``)
                lines = record
                continue
            if lines:
                record["line"] += lines
            yield record


def report_json(summary: CheckSummary, stream) -> None:
    """Write ``summary`` as the ``ds check --json`` object, streaming its problems from the spool (bounded memory)."""
    head = {
        "files": summary.files,
        "format": summary.format,
        "detected_format": summary.detected,
        "profile": summary.profile,
        "platform": summary.platform,
        "records": summary.records,
        "valid": summary.valid,
        "invalid": summary.invalid,
        "blank": summary.blank,
        "warnings": summary.warnings,
        "by_rule": dict(sorted(summary.by_rule.items())),
    }
    if summary.tokens is not None:
        head["tokens"] = summary.tokens
    stream.write(orjson.dumps(head)[:-1] + b', "errors": [')
    for i, problem in enumerate(iter_problems(summary)):
        stream.write((b", " if i else b"") + orjson.dumps(problem))
    tail = {"dataset_errors": [p.to_dict() for p in summary.dataset_errors], "ok": summary.ok}
    stream.write(b"], " + orjson.dumps(tail)[1:] + b"\n")
    stream.flush()


def validate_values(values: list[dict], *, fmt: str, profile: str = "nova-lite-1", platform: str = "sagemaker") -> list[list[Problem]]:
    """Check already-decoded records against ``fmt``'s rules; one problem list per record.

    Used by ``ds convert`` (to prove every written record is valid for its target) and by the
    trainer's loaders. Runs the same structural walk and vectorized checks as ``ds check``.
    """
    if fmt not in FORMATS:
        msg = f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}"
        raise InputError(msg)
    data = b"".join(orjson.dumps(v) + b"\n" for v in values)
    result = check_block(data, 1, Options(get_profile(profile), fmt, platform))  # type: ignore[arg-type]
    out: list[list[Problem]] = [[] for _ in values]
    for line, problem in result.problems:
        out[line - 1].append(problem)
    return out
