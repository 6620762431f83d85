"""Multimodal checks: images, videos and documents as S3 references (rules M1-M9, M14; section 3).

Counts are per sample, not per message (spec section 8, item 3): AWS's validators count per
message, so 6 + 6 images in two user turns pass them and fail the service.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tunekit_data.check import Hit, Problem, hits, mask, present, strings
from tunekit_data.formats.view import MEDIA_KINDS, ConverseView, Options
from tunekit_data.io import S3_BUCKET_NAME, S3_OBJECT_URI, bucket_of

MAX_IMAGES = 10
MAX_VIDEOS = 1
BUCKET_OWNER = r"^[0-9]{12}$"
_EXT_HINT = {"jpg": "jpeg", "tif": None, "tiff": None, "bmp": None, "3gp": "three_gp is not a fine-tuning format"}


def _format_rule(kind: str) -> str:
    return {"image": "M2", "video": "M3", "document": "M14"}[kind]


def _allowed(kind: str, o: Options) -> frozenset[str]:
    if kind == "image":
        return o.profile.image_formats
    if kind == "video":
        return o.profile.video_formats
    return frozenset({"pdf"})


def check_placement(v: ConverseView, o: Options) -> Iterator[Hit]:
    """M1: media blocks only in user turns."""
    b = v.blocks
    user = mask(pc.equal(v.block_role, "user"))
    for kind in MEDIA_KINDS:
        wrong = v.member(kind) & ~user
        yield from hits(b.row, wrong, lambda i, kind=kind: Problem.make("M1", b.path(i, kind), f"{kind} blocks are allowed in user turns only"))


def check_media_fields(v: ConverseView, o: Options) -> Iterator[Hit]:
    """M2/M3 format, M4 s3Location present, M5 URI pattern, M6 bucketOwner pattern, M11 bucket."""
    if not o.profile.media:
        return  # S15 already rejects every media block
    b = v.blocks
    for kind in MEDIA_KINDS:
        if kind == "document" and not o.profile.nova2:
            continue  # M14 already rejects it
        has = v.member(kind)
        if not has.any():
            continue
        media = b.field(kind)
        yield from _check_format(b, kind, has, pc.struct_field(media, "format"), o)
        loc = pc.struct_field(pc.struct_field(media, "source"), "s3Location")
        no_loc = has & ~present(loc)
        yield from hits(
            b.row,
            no_loc,
            lambda i, kind=kind: Problem.make("M4", b.path(i, f"{kind}.source.s3Location"), "media must be an S3 reference: source.s3Location with a uri (inline bytes are not accepted for fine-tuning)"),
        )
        uri = pc.struct_field(loc, "uri")
        scope = has & ~no_loc
        no_uri = scope & ~present(uri)
        bad_uri = scope & ~no_uri & ~(mask(pc.match_substring_regex(uri, S3_OBJECT_URI)) & (pc.fill_null(pc.utf8_length(uri), 0).to_numpy(zero_copy_only=False) <= 1024))
        uri_path = f"{kind}.source.s3Location.uri"
        yield from hits(b.row, no_uri, lambda i, p=uri_path: Problem.make("M5", b.path(i, p), "uri is required"))
        yield from hits(
            b.row, bad_uri, lambda i, p=uri_path, uri=uri: Problem.make("M5", b.path(i, p), f"not a valid S3 URI: {_uri_reason(strings(uri, i))}")
        )
        owner = pc.struct_field(loc, "bucketOwner")
        bad_owner = scope & present(owner) & ~mask(pc.match_substring_regex(owner, BUCKET_OWNER))
        yield from hits(
            b.row,
            bad_owner,
            lambda i, kind=kind, owner=owner: Problem.make("M6", b.path(i, f"{kind}.source.s3Location.bucketOwner"), f"bucketOwner must be a 12-digit AWS account id, got {strings(owner, i)!r}"),
        )
        if o.dataset_bucket:
            ok_uri = scope & ~no_uri & ~bad_uri
            prefix = f"s3://{o.dataset_bucket}/"
            other = ok_uri & ~mask(pc.starts_with(uri, prefix))
            yield from hits(
                b.row,
                other,
                lambda i, p=uri_path, uri=uri: Problem.make("M11", b.path(i, p), f"media bucket {bucket_of(strings(uri, i))!r} is not the dataset's bucket {o.dataset_bucket!r}"),
            )


def _check_format(b, kind: str, has: np.ndarray, fmt, o: Options) -> Iterator[Hit]:
    rule = _format_rule(kind)
    allowed = _allowed(kind, o)
    allowed_list = ", ".join(sorted(allowed))
    exact = mask(pc.is_in(fmt, value_set=_pa_set(allowed)))
    lowered = mask(pc.is_in(pc.utf8_lower(fmt), value_set=_pa_set(allowed)))
    missing = has & ~present(fmt)
    yield from hits(b.row, missing, lambda i: Problem.make(rule, b.path(i, f"{kind}.format"), f"format is required ({allowed_list})"))
    upper = has & ~exact & lowered
    yield from hits(
        b.row,
        upper,
        lambda i: Problem.make(rule, b.path(i, f"{kind}.format"), f"format {strings(fmt, i)!r} should be lower-case ({strings(fmt, i).lower()!r})", severity="warning"),
    )

    def bad(i: int) -> Problem:
        got = strings(fmt, i)
        hint = _EXT_HINT.get(got.lower()) if isinstance(got, str) else None
        extra = f" (use {hint!r})" if hint == "jpeg" else f" ({hint})" if hint else ""
        return Problem.make(rule, b.path(i, f"{kind}.format"), f"{kind} format {got!r} is not supported by {o.profile.label}: use one of {allowed_list}{extra}")

    yield from hits(b.row, has & ~missing & ~lowered, bad)


def _pa_set(values: frozenset[str]) -> pa.Array:
    return pa.array(sorted(values), pa.string())


def _uri_reason(uri: str) -> str:
    if not uri.startswith("s3://"):
        return f"{uri!r} must start with s3://"
    if len(uri) > 1024:
        return f"longer than 1,024 characters ({len(uri)})"
    bucket, _, key = uri[5:].partition("/")
    if not re.fullmatch(S3_BUCKET_NAME, bucket):
        return f"bucket {bucket!r} must be 3-63 lower-case letters, digits, '.' or '-'"
    if not key:
        return f"{uri!r} names a bucket but no object key"
    return f"object key {key!r} may only use A-Z a-z 0-9 _ . / -"


def check_counts(v: ConverseView, o: Options) -> Iterator[Hit]:
    """M7 <= 10 images, M8 <= 1 video, M14 <= 1 document, M9 no mixing of kinds, per sample."""
    if not o.profile.media:
        return
    c = v.media_counts
    limits = (("image", MAX_IMAGES, "M7"), ("video", MAX_VIDEOS, "M8"), ("document", 1, "M14"))
    for kind, limit, rule in limits:
        over = c[kind] > limit
        yield from hits(v.rows, over, lambda i, kind=kind, limit=limit, rule=rule: Problem.make(rule, "messages", f"at most {limit} {kind}(s) per sample, got {c[kind][i]}"))
    kinds = sum((c[k] > 0).astype(int) for k in MEDIA_KINDS)
    yield from hits(
        v.rows,
        kinds > 1,
        lambda i: Problem.make("M9", "messages", f"a sample cannot mix {' and '.join(k + 's' for k in MEDIA_KINDS if c[k][i])}"),
    )


MEDIA_CHECKS = (check_placement, check_media_fields, check_counts)
