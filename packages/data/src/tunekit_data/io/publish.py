"""Outputs that appear under their name only once complete: write beside, then rename into place.

Every file, directory and S3 object that tunekit writes for others to read is built under a hidden
temporary name next to its final one (same directory, same filesystem, so a rename moves it) and
then published in one step. A reader, or a crash, never sees a half-written output under the final
name; an interrupted write leaves at most a hidden leftover (``.NAME.<hex>.tmp``) that readers of
folders and prefixes skip.

- ``publish_file(final)``: a context manager yielding a binary file to write; on success it replaces
  ``final``, on error the temporary file is removed and an existing ``final`` stays as it was.
- ``publish_dir(final)``: the same for a directory; ``stage_dir`` and ``replace_dir`` are its two
  halves, for callers whose staging outlives one ``with`` block (a checkpoint written by many ranks).
- ``create_temp`` and ``temp_name``: the pieces ``storage.open_output`` builds on for its local files
  and S3 objects; ``publish_object`` / ``discard_object`` end an S3 object's temporary key.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from tunekit_data.io import s3

if TYPE_CHECKING:
    from pyarrow import fs

    from tunekit_data.io.s3 import S3Path


def temp_name(name: str) -> str:
    """A fresh hidden name to build ``name`` under: ``.NAME.<12 hex digits>.tmp``.

    Hidden, so that listings of a folder or prefix skip it; random, so that concurrent writers of the
    same output (data-parallel ranks, two runs) never share a temporary.
    """
    return f".{name}.{uuid.uuid4().hex[:12]}.tmp"


def create_temp(final: str | Path) -> tuple[Path, int]:
    """Create a new empty temporary file beside ``final``; returns its path and a descriptor open for writing.

    The file gets the mode any new file would (``0o666`` less the umask), not ``mkstemp``'s 0600:
    once renamed it is the output, and others may need to read it.

    Raises:
        OSError: the directory of ``final`` does not exist or cannot be written.
    """
    target = Path(final)
    while True:
        tmp = target.with_name(temp_name(target.name))
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileExistsError:  # 48 random bits collided: draw again
            continue


@contextlib.contextmanager
def publish_file(final: str | Path, *, fsync: bool = False) -> Iterator[BinaryIO]:
    """Write ``final`` atomically: yields a binary file, renamed over ``final`` when the block ends.

    An existing ``final`` is replaced. On an exception the temporary file is removed and ``final``
    is left untouched. With ``fsync`` the bytes reach the disk before the rename, so that even a
    power loss leaves the old or the new content.

    Raises:
        OSError: the directory of ``final`` does not exist or cannot be written.
    """
    target = Path(final)
    tmp, fd = create_temp(target)
    try:
        with os.fdopen(fd, "wb") as file:
            yield file
            if fsync:
                file.flush()
                os.fsync(file.fileno())
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def stage_dir(final: str | Path, *, name: str | None = None) -> Path:
    """Create an empty directory beside ``final`` to build it in (its parents too), for `replace_dir`.

    ``name`` fixes the staging name, for writers in several processes that must agree on it (a
    leftover of that name from an interrupted write is removed first); by default it is a fresh
    `temp_name`.
    """
    target = Path(final)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(name or temp_name(target.name))
    if name is not None:
        shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    return staging


def replace_dir(staging: str | Path, final: str | Path) -> None:
    """Put the completed directory ``staging`` in the place of ``final``, replacing any ``final`` there.

    Readers see either the old complete directory or the new one: the old one is first renamed
    aside, then the new one renamed into place, and only then is the old one deleted.
    """
    target = Path(final)
    aside = None
    if target.exists():
        aside = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:12]}")
        target.rename(aside)
    Path(staging).rename(target)
    if aside is not None:
        shutil.rmtree(aside)


@contextlib.contextmanager
def publish_dir(final: str | Path, *, name: str | None = None) -> Iterator[Path]:
    """Build the directory ``final`` atomically: yields an empty staging directory, put in its place when the block ends.

    An existing ``final`` is replaced (see `replace_dir`); on an exception the staging directory is
    removed and ``final`` is left untouched. ``name`` is as for `stage_dir`.
    """
    staging = stage_dir(final, name=name)
    try:
        yield staging
        replace_dir(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def temp_object(path: S3Path) -> S3Path:
    """The temporary key beside ``path`` that an S3 output is uploaded to before `publish_object`."""
    return path.sibling(temp_name(path.key.rpartition("/")[2]))


def publish_object(filesystem: fs.S3FileSystem, temp: S3Path, path: S3Path) -> None:
    """Publish the uploaded temporary key ``temp`` as ``path``: one server-side copy, then ``temp`` deleted.

    A copy, not an upload to ``path`` itself: pyarrow cannot abandon a multipart upload, so writing
    the final key directly could publish half an object.

    Raises:
        InputError: the copy failed (``s3://b/k: cannot publish: ...``).
    """
    try:
        filesystem.copy_file(temp.arrow, path.arrow)
    except OSError as exc:
        raise s3.error(path, exc, "publish") from exc
    discard_object(filesystem, temp)


def discard_object(filesystem: fs.S3FileSystem, temp: S3Path) -> None:
    """Delete the temporary key ``temp``, best effort: a leftover is hidden, and never under the final name."""
    with contextlib.suppress(OSError):
        filesystem.delete_file(temp.arrow)
