"""``ds check --check-media``: look up every referenced S3 image, video and document (rule M12).

Design: the lookups happen per block, between the block checker's verdicts and the writing of that
block's lines. ``--valid-out`` / ``--rejects-out`` are written block by block in input order, and a
line whose media are missing or too large must land in rejects; looking the objects up at the end of
the pass would come too late for the split, and a second pass would read the dataset twice. Per
block, every verdict is final when it is written, the run still streams, and memory stays bounded
by the blocks in flight: the block checker hands over a compact list of the block's references
(``BlockResult.media``: line, field path, kind, uri), each distinct URI is looked up once with
``CONCURRENCY`` HEAD requests at a time, and the worker processes go on checking the next blocks
meanwhile. Retries with backoff for throttling, 5xx and dropped connections are the S3 layer's
(``tunekit_data.io.s3``); an object that is missing or not readable is an M12 error on each line that
references it, and a store that cannot be reached at all stops the run (``InputError``, exit 2).

Limits (spec M12): images and PDF documents at most 10 MB, videos at most 50 MB, MB read as 10^6
bytes (the stricter reading of the AWS documentation). A video's duration needs its contents and is
not checked.
"""

from __future__ import annotations

from tunekit_data.check.blockcheck import BlockResult
from tunekit_data.check.rules import Problem
from tunekit_data.io import Head, head_many

MB = 1_000_000
LIMITS = {"image": 10 * MB, "video": 50 * MB, "document": 10 * MB}
CONCURRENCY = 16


def check_media(result: BlockResult, *, concurrency: int = CONCURRENCY) -> None:
    """HEAD the objects ``result``'s block references; add an M12 problem per failing reference.

    Lines with a problem become invalid, and ``result.stats.valid`` follows.
    """
    if not result.media:
        return
    uris = sorted({uri for *_, uri in result.media})
    heads = dict(zip(uris, head_many(uris, concurrency=concurrency), strict=True))
    found: list[tuple[int, Problem]] = []
    for i, path, kind, uri in result.media:
        problem = _problem(heads[uri], path, kind)
        if problem is not None:
            found.append((result.first_line + i, problem))
            result.invalid[i] = True
    if found:
        result.problems = sorted(result.problems + found, key=lambda hit: hit[0])
        result.stats.valid = int(result.stats.records - result.invalid.sum())


def _problem(head: Head, path: str, kind: str) -> Problem | None:
    if head.missing is not None:
        return Problem.make("M12", path, f"{kind} {head.uri} cannot be used: {head.missing}")
    limit = LIMITS[kind]
    if head.size is not None and head.size > limit:
        return Problem.make("M12", path, f"{kind} {head.uri} is {head.size / MB:,.1f} MB ({head.size:,} bytes); the limit is {limit // MB} MB")
    return None
