"""Where datasets live: local paths, ``file://`` URIs and ``s3://bucket/key`` behind one small API.

Every command reads and writes through here, so that any of them takes ``s3://`` exactly where it
takes a path:

- ``open_input(uri)``: a binary stream, ``.gz`` / ``.zst`` decompressed on the fly. S3 objects are
  streamed as ranged GETs of up to ``MAX_GET`` bytes, never downloaded whole.
- ``open_random_access(uri)``: a seekable file, for Parquet and Arrow IPC.
- ``list_inputs(uri, suffixes)``: a file, or every matching file under a directory or an
  ``s3://bucket/prefix/``, sorted.
- ``stat(uri)``: the size in bytes. ``head_many(uris)``: sizes of many S3 objects, ``concurrency``
  HEAD requests at a time (``ds check --check-media``).
- ``open_output(uri)``: an ``AtomicOutput``, compressed by suffix like inputs. ``upload_dir``
  publishes a local folder (a checkpoint, a packed dataset) file by file, ``upload`` one file;
  ``download`` / ``download_dir`` fetch an object / a prefix into a local folder (training data),
  streamed. ``check_writable`` fails early on an S3 folder that cannot be written.

Outputs are atomic: readers never see a partial one, and an interrupted write leaves nothing under
the final name. A local file is written to a temporary name beside it and renamed. An S3 object is
uploaded to a temporary key beside it, copied to its key by the server (one ``CopyObject``) and the
temporary key deleted: pyarrow cannot abandon a multipart upload (its stream completes the upload
when closed or garbage-collected), so writing the final key directly could publish half an object.
``CopyObject`` takes at most 5 GiB, which bounds one S3 output (shard larger ones); the writer stops
with a clear error as soon as an output passes it. Deleting the temporary key leaves a zero-byte
``dir/`` marker object, as pyarrow keeps S3 "directories" alive.

The temporary names, renames and S3 copies are ``tunekit_data.io.publish``'s; S3 access itself
(credentials, endpoint, retries, error messages) is in ``tunekit_data.io.s3``.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

import pyarrow as pa

from tunekit_data.errors import InputError, UsageError
from tunekit_data.io import publish, s3
from tunekit_data.io.s3 import S3Path, is_s3

# pyarrow.fs (which loads ssl, ~15 ms) is imported by the functions that talk to S3: a check of a
# local file never needs it.

FIRST_GET, MAX_GET, READ_AHEAD = 64 << 10, 8 << 20, 4  # how S3 objects are read, see _S3Reader
BUFFER = 1 << 20  # Python-side write buffer: line-sized writes stay out of the SDK
COPY_LIMIT = 5 << 30  # S3 CopyObject's maximum object size
# Upload parts go out on background threads; waiting for them every so often bounds the memory
# held by parts that are written faster than the network takes them.
_FLUSH_EVERY = 64 << 20
_CODECS = {".gz": "gzip", ".zst": "zstd"}


def local_path(uri: str) -> str:
    """The local path a ``file://`` URI or plain path names."""
    if uri.startswith("file://"):
        return unquote(urlsplit(uri).path)
    return uri


def _codec(uri: str) -> str | None:
    return _CODECS.get(uri[uri.rfind(".") :]) if "." in uri else None


# --- reading -------------------------------------------------------------------------------------------


def open_input(uri: str, *, decompress: bool = True) -> BinaryIO:
    """Open a file or S3 object for binary reading, decompressing ``.gz`` / ``.zst`` unless ``decompress`` is False (a copy keeps the bytes as they are).

    InputError if it cannot.
    """
    if is_s3(uri):
        return _open_s3_input(S3Path.parse(uri), decompress=decompress)
    path = local_path(uri)
    codec = _codec(path) if decompress else None
    try:
        if codec:
            return pa.CompressedInputStream(pa.OSFile(path), codec)  # type: ignore[return-value]
        return Path(path).open("rb")
    except OSError as exc:
        msg = f"{uri}: cannot open: {exc.strerror or exc}"
        raise InputError(msg) from exc


def _open_s3_input(path: S3Path, *, decompress: bool = True) -> BinaryIO:
    try:
        file = s3.filesystem(path.bucket).open_input_file(path.arrow)
    except OSError as exc:
        raise s3.error(path, exc, "open") from exc
    reader = _S3Reader(path, file)
    codec = _codec(path.key) if decompress else None
    if codec:
        return pa.CompressedInputStream(reader, codec)  # type: ignore[return-value]
    return io.BufferedReader(reader, FIRST_GET)  # type: ignore[return-value]


class _S3Reader(io.RawIOBase):
    """One S3 object read front to back as ranged GETs, several in flight while the caller works.

    The first GET is ``FIRST_GET`` bytes, so a peek at the head of an object (the BOM check, format
    sniffing) costs one small request. Once the caller reads past it, it is a scan: GETs of
    ``MAX_GET`` bytes, ``READ_AHEAD`` of them in flight (32 MiB held at most), so the store's latency
    overlaps the caller's work and throughput does not hang on one connection. Each GET is retried
    whole by the SDK, so a retry never skips or repeats bytes; a GET that still fails is an
    InputError naming the object and the offset.
    """

    def __init__(self, path: S3Path, file: pa.NativeFile) -> None:
        self._path, self._file, self._size = path, file, file.size()
        self._chunk = memoryview(b"")
        self._served = 0  # bytes handed to the caller
        self._fetched = 0  # end of the last GET issued
        self._pending: deque[Future[bytes]] = deque()
        self._pool = ThreadPoolExecutor(max_workers=READ_AHEAD, thread_name_prefix="tunekit-s3-read")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        if not self._chunk:
            if self._served:
                while len(self._pending) < READ_AHEAD and self._fetched < self._size:
                    self._submit(MAX_GET)
            elif not self._pending:
                self._submit(FIRST_GET)
            if not self._pending:
                return 0
            try:
                self._chunk = memoryview(self._pending.popleft().result())
            except OSError as exc:
                raise s3.error(self._path, exc, f"read at byte {self._served:,}") from exc
        n = min(len(buffer), len(self._chunk))
        buffer[:n] = self._chunk[:n]
        self._chunk = self._chunk[n:]
        self._served += n
        return n

    def _submit(self, size: int) -> None:
        n = min(size, self._size - self._fetched)
        if n > 0:
            self._pending.append(self._pool.submit(self._file.read_at, n, self._fetched))
            self._fetched += n

    def close(self) -> None:
        if not self.closed:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._file.close()
        super().close()


def open_random_access(uri: str) -> pa.NativeFile:
    """A seekable file for formats read out of order (Parquet, Arrow IPC): ``pq.ParquetFile(f)``.

    On S3 each read is one ranged GET (retried like all requests); errors while reading are
    pyarrow's ``OSError``, naming the bucket and key.
    """
    if is_s3(uri):
        path = S3Path.parse(uri)
        try:
            return s3.filesystem(path.bucket).open_input_file(path.arrow)
        except OSError as exc:
            raise s3.error(path, exc, "open") from exc
    try:
        return pa.OSFile(local_path(uri))
    except OSError as exc:
        msg = f"{uri}: cannot open: {exc.strerror or exc}"
        raise InputError(msg) from exc


def list_inputs(uri: str, suffixes: tuple[str, ...]) -> list[str]:
    """``uri`` itself if it is a file or object, else every ``suffixes`` file below it, sorted.

    A directory or S3 prefix without such files, or a name that does not exist, is an InputError.
    Suffixes are not enforced on a file named directly (rule F1 reports it, so it is still read).
    """
    if is_s3(uri):
        return _list_s3(S3Path.parse(uri), suffixes)
    path = Path(local_path(uri))
    if path.is_file():
        return [str(path)]
    if not path.is_dir():
        msg = f"{uri}: no such file or directory"
        raise InputError(msg)
    found = sorted(str(f) for f in path.rglob("*") if f.is_file() and f.name.endswith(suffixes))
    if not found:
        msg = f"{uri}: directory holds no {', '.join(suffixes)} files"
        raise InputError(msg)
    return found


def _list_s3(path: S3Path, suffixes: tuple[str, ...]) -> list[str]:
    from pyarrow import fs

    filesystem = s3.filesystem(path.bucket)
    try:
        if path.key and not path.key.endswith("/"):
            info = filesystem.get_file_info(path.arrow)
            if info.type == fs.FileType.File:
                return [path.uri]
            if info.type == fs.FileType.NotFound:
                raise FileNotFoundError(path.arrow)
        infos = filesystem.get_file_info(fs.FileSelector(path.arrow, recursive=True))
    except OSError as exc:
        raise s3.error(path, exc, "list") from exc
    found = sorted(
        f"s3://{i.path}" for i in infos if i.type == fs.FileType.File and i.base_name.endswith(suffixes)
    )
    if not found:
        msg = f"{path.uri}: prefix holds no {', '.join(suffixes)} objects"
        raise InputError(msg)
    return found


def list_names(uri: str) -> list[str]:
    """Names, relative to it, of the files under the folder or prefix ``uri``; [] if there is none.

    For checks before writing into a folder (``ds convert`` refuses to mix its shards with older
    ones). A bucket that does not exist or cannot be listed is an InputError.
    """
    if not is_s3(uri):
        root = Path(local_path(uri))
        return (
            sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
            if root.is_dir()
            else []
        )
    from pyarrow import fs

    path = S3Path.parse(uri)
    prefix = path.arrow + "/"
    try:
        infos = s3.filesystem(path.bucket).get_file_info(
            fs.FileSelector(path.arrow, recursive=True, allow_not_found=True)
        )
    except OSError as exc:
        raise s3.error(path, exc, "list") from exc
    return sorted(i.path.removeprefix(prefix) for i in infos if i.type == fs.FileType.File)


def stat(uri: str) -> int:
    """Size in bytes (the compressed size for archives)."""
    if not is_s3(uri):
        return Path(local_path(uri)).stat().st_size
    from pyarrow import fs

    path = S3Path.parse(uri)
    try:
        info = s3.filesystem(path.bucket).get_file_info(path.arrow)
    except OSError as exc:
        raise s3.error(path, exc, "stat") from exc
    if info.type != fs.FileType.File:
        raise s3.error(path, FileNotFoundError(path.arrow), "stat")
    return info.size


@dataclass(frozen=True, slots=True)
class Head:
    """What a HEAD request said about one object: its size, or why there is none."""

    uri: str
    size: int | None = None
    missing: str | None = None  # "no such key", "access denied" ...: the object cannot be used


def head_many(uris: Iterable[str], *, concurrency: int = 16) -> list[Head]:
    """HEAD every ``s3://`` URI, ``concurrency`` at a time; one Head per URI, in order.

    An object that is missing or unreadable is reported in its Head. A failure that says nothing
    about the object (endpoint unreachable, 5xx after the retries) raises InputError: the check
    cannot go on without the store.
    """
    paths = [S3Path.parse(u) for u in uris]
    if not paths:
        return []
    # One HEAD per bucket first: objects in a missing bucket need no request of their own, and
    # their lines then say which name is wrong.
    missing_buckets = {b for b in {p.bucket for p in paths} if not s3.bucket_exists(b)}
    with ThreadPoolExecutor(max_workers=min(concurrency, len(paths))) as pool:
        return list(
            pool.map(
                lambda p: Head(p.uri, missing="no such bucket") if p.bucket in missing_buckets else _head(p),
                paths,
            )
        )


def _head(path: S3Path) -> Head:
    from pyarrow import fs

    try:
        info = s3.filesystem(path.bucket).get_file_info(path.arrow)
    except OSError as exc:
        if not s3.about_object(exc):
            raise s3.error(path, exc, "HEAD") from exc
        return Head(path.uri, missing=s3.describe(exc))
    if info.type == fs.FileType.File:
        return Head(path.uri, size=info.size)
    if info.type == fs.FileType.Directory:
        return Head(path.uri, missing="no such key (only a prefix of other keys)")
    return Head(path.uri, missing="no such key")


# --- writing -------------------------------------------------------------------------------------------


class AtomicOutput:
    """A file or S3 object that appears under its name only on ``commit()``; ``abort()`` leaves nothing.

    Use it as a context manager (commit on success, abort on error) or call the two yourself. It is
    file-like enough for writers that take a sink (``write``, ``tell``, ``flush``, ``closed``), e.g.
    ``pq.ParquetWriter(out, schema)``, which leaves closing (here: committing) to its caller.
    """

    def __init__(
        self, uri: str, stream: BinaryIO, publish: Callable[[], None], discard: Callable[[], None]
    ) -> None:
        self.uri = uri
        self._stream, self._publish, self._discard = stream, publish, discard
        self._done = False

    def write(self, data: bytes) -> int:
        """Append ``data``."""
        return self._stream.write(data)

    def tell(self) -> int:
        """Bytes written so far (before compression)."""
        return self._stream.tell()

    def flush(self) -> None:
        """Push buffered bytes on; they still appear only on ``commit()``."""
        self._stream.flush()

    @property
    def closed(self) -> bool:
        """True once committed or aborted."""
        return self._done

    def commit(self) -> None:
        """Finish the output and publish it under its name."""
        if self._done:
            return
        self._done = True
        try:
            self._stream.close()
            self._publish()
        except BaseException:
            self._discard()
            raise

    def abort(self) -> None:
        """Drop everything written; nothing appears under the name."""
        if self._done:
            return
        self._done = True
        try:
            with contextlib.suppress(OSError, InputError):  # the write is being abandoned anyway
                self._stream.close()
        finally:
            self._discard()

    def __enter__(self) -> AtomicOutput:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def open_output(uri: str, *, compress: bool = True) -> AtomicOutput:
    """Start writing ``uri`` (a path, ``file://`` or ``s3://``); see the module docstring.

    Bytes are compressed by the name's suffix (``.gz``, ``.zst``) unless ``compress`` is False (they
    already are). A missing local directory is a UsageError; an S3 bucket that does not exist or
    cannot be written is an InputError, raised here before any work is done.
    """
    codec = _codec(uri) if compress else None
    if is_s3(uri):
        return _open_s3_output(S3Path.parse(uri), codec)
    return _open_local_output(local_path(uri), codec)


def upload_dir(local: str | Path, uri: str, *, last: tuple[str, ...] = ()) -> list[str]:
    """Copy every file under the local folder ``local`` to the same relative names under ``uri``.

    For outputs built in a local folder (a checkpoint, an exported model, ``ds pack`` shards) and
    published to ``s3://bucket/prefix/`` (or another folder). Each file appears atomically; files
    whose name is in ``last`` (a manifest, say) are written after all the others, so a reader that
    sees them sees a complete folder. Returns the URIs written, in order.
    """
    root = Path(local)
    files = sorted((p for p in root.rglob("*") if p.is_file()), key=lambda p: (p.name in last, str(p)))
    base = uri.rstrip("/")
    written = []
    for file in files:
        written.append(upload(file, f"{base}/{file.relative_to(root).as_posix()}"))
    return written


def upload(local: str | Path, uri: str) -> str:
    """Copy the local file ``local`` to ``uri`` (an ``s3://`` key or a path), streamed, bytes unchanged, appearing atomically; returns ``uri``."""
    if not is_s3(uri):
        Path(local_path(uri)).parent.mkdir(parents=True, exist_ok=True)
    with open_output(uri, compress=False) as out, Path(local).open("rb") as src:
        while chunk := src.read(MAX_GET):
            out.write(chunk)
    return uri


def delete(uri: str) -> None:
    """Remove the file or S3 object ``uri`` (nothing if it is not there)."""
    if not is_s3(uri):
        Path(local_path(uri)).unlink(missing_ok=True)
        return
    path = S3Path.parse(uri)
    try:
        s3.filesystem(path.bucket).delete_file(path.arrow)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise s3.error(path, exc, "delete") from exc


def check_writable(uri: str) -> None:
    """For an ``s3://`` folder ``uri``: InputError now, before long work, if nothing can be written under it (no such bucket, access denied, no credentials).

    Local folders are created when written.
    """
    if is_s3(uri):
        # The temporary key is created (allow_delayed_open=False) and deleted: nothing stays under the prefix.
        open_output(f"{uri.rstrip('/')}/.tunekit-write-check").abort()


def download(uri: str, local: str | Path) -> Path:
    """Copy the file or object ``uri`` to the local file ``local``, streamed, bytes unchanged.

    The copy is atomic like every output (a temporary name, then a rename), so an existing ``local``
    is always a complete copy: callers may skip objects already fetched.
    """
    target = Path(local)
    target.parent.mkdir(parents=True, exist_ok=True)
    with (
        open_output(str(target), compress=False) as out,
        contextlib.closing(open_input(uri, decompress=False)) as src,
    ):
        while chunk := src.read(MAX_GET):
            out.write(chunk)
    return target


def download_dir(uri: str, local: str | Path) -> list[Path]:
    """Copy the object ``uri``, or every object under the prefix ``uri``, into the folder ``local``.

    The mirror of ``upload_dir``: an object lands as ``local/<its name>``, a prefix's objects under
    their names relative to it. Files already there with the object's size are kept (``download``
    is atomic, so they are complete): a resumed run does not fetch its data again. Hidden names
    (temporary keys of unfinished writes) are skipped. Returns the local files, in order.
    """
    root = Path(local)
    uris = list_inputs(uri, ("",))  # "" matches every name: a file is itself, a prefix all below it
    base = uri.rstrip("/") + "/"
    written = []
    for name in uris:
        relative = name.removeprefix(base) if name.startswith(base) else name.rpartition("/")[2]
        if any(part.startswith(".") for part in relative.split("/")):
            continue
        target = root / relative
        if not (target.is_file() and target.stat().st_size == stat(name)):
            download(name, target)
        written.append(target)
    return written


def _open_local_output(path: str, codec: str | None) -> AtomicOutput:
    final = Path(path)
    parent = final.resolve().parent
    if not parent.is_dir():
        msg = f"{path}: directory {parent} does not exist"
        raise UsageError(msg)
    tmp, fd = publish.create_temp(final)
    stream: BinaryIO = os.fdopen(fd, "wb", buffering=BUFFER)
    if codec:
        stream = pa.CompressedOutputStream(stream, codec)  # type: ignore[assignment]
    return AtomicOutput(path, stream, lambda: tmp.replace(final), lambda: tmp.unlink(missing_ok=True))


def _open_s3_output(path: S3Path, codec: str | None) -> AtomicOutput:
    filesystem = s3.filesystem(path.bucket)
    temp = publish.temp_object(path)
    try:
        upload = filesystem.open_output_stream(temp.arrow, compression=None)
    except OSError as exc:
        raise s3.error(path, exc, "write") from exc
    writer = _S3Writer(path, upload)
    stream = io.BufferedWriter(writer, BUFFER)
    if codec:
        stream = pa.CompressedOutputStream(stream, codec)  # type: ignore[assignment]
    return AtomicOutput(
        path.uri,
        stream,
        lambda: publish.publish_object(filesystem, temp, path),
        lambda: publish.discard_object(filesystem, temp),
    )


class _S3Writer(io.RawIOBase):
    """The upload of one temporary key: S3 errors become InputErrors, and the size stays copyable."""

    def __init__(self, path: S3Path, upload: pa.NativeFile) -> None:
        self._path, self._upload = path, upload
        self._written = self._flushed = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._written

    def write(self, data) -> int:  # type: ignore[override]
        n = len(data)
        if self._written + n > COPY_LIMIT:
            msg = f"{self._path.uri}: cannot write more than 5 GiB to one S3 output (S3 copies at most 5 GiB at once); write it locally or in shards"
            raise InputError(msg)
        try:
            self._upload.write(data)
            self._written += n
            if self._written - self._flushed >= _FLUSH_EVERY:
                self._upload.flush()
                self._flushed = self._written
        except OSError as exc:
            raise s3.error(self._path, exc, "write") from exc
        return n

    def close(self) -> None:
        if self.closed:
            return
        try:
            self._upload.close()
        except OSError as exc:
            raise s3.error(self._path, exc, "write") from exc
        finally:
            super().close()
