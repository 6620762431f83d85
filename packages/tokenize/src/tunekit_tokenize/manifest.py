"""The packed dataset directory: layout, manifest, and `read_manifest` for consumers such as `train run`.

Layout (format version 1)::

    OUT/manifest.json                     what was packed, how, and from what (below)
    OUT/stats.json                        counts, packing efficiency, length histogram
    OUT/data/train-00000-of-0000N.parquet one row per bin of at most max_length tokens

Columns (every list is one bin; segments are the packed sequences, in order)::

    input_ids     list<int32>  tokens of all segments, concatenated
    labels        list<int32>  input_ids where trained; -100 elsewhere and on each segment's first token
                               (labels are not shifted: the model shifts, so no token is predicted
                               across a segment boundary)
    position_ids  list<int32>  0, 1, ... restarting at each segment
    seq_lens      list<int32>  segment lengths; sum(seq_lens) == len(input_ids)
  dpo only, one value per segment (chosen and rejected of a pair are adjacent, chosen first):
    pair_ids      list<int64>  index of the input record the pair came from
    prompt_lens   list<int32>  tokens of the segment before its answer
    is_chosen     list<bool>   True for the chosen answer

  vision packs (``ds pack --processor``) only:
    image_bytes     list<large_binary>  the row's images as fetched (PNG, JPEG ...), in placeholder order
    image_grid_thw  list<int32>  (t, h, w) patch grid of each image, flattened
    seq_images      list<int32>  images per segment (a DPO pair's two answers each carry the prompt's)

``datasets.load_dataset("parquet", data_dir=OUT)`` loads it as a ``train`` split.

Manifest keys: ``format``/``format_version``, ``kind`` (sft|dpo|cpt), ``max_length``, ``tokenizer``
(path, sha256 of its files, vocab size, bos/eos/pad ids), ``template`` (name, sha256, mask source),
``loss_on`` (the effective policy: ``response`` for dpo, ``all`` for cpt), ``truncation``,
``window``, ``seed``, ``sources`` (path, bytes, sha256), ``reader`` options, ``counts``,
``columns``, ``shards`` and ``cache_key`` (hash of all inputs and options: equal key, equal output);
a vision pack adds ``vision`` (processor path and sha256, ``image_token_id``, the image processor settings).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path

from tunekit_data.errors import InputError
from tunekit_tokenize.chat_template import ChatTemplate
from tunekit_tokenize.encoder import Kind
from tunekit_tokenize.masks import LossOn
from tunekit_tokenize.tokenizer import TokenizerBundle
from tunekit_tokenize.truncation import Truncation

FORMAT = "tunekit-packed"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
STATS_FILE = "stats.json"
DATA_DIR = "data"
TOKEN_COLUMNS = ("input_ids", "labels", "position_ids")
"""The per-token columns: one value per token of the row (nearly all of a pack's bytes)."""
REQUIRED_COLUMNS = (*TOKEN_COLUMNS, "seq_lens")
"""The columns of every pack, whatever its kind."""
COLUMNS = {
    "sft": REQUIRED_COLUMNS,
    "cpt": REQUIRED_COLUMNS,
    "dpo": (*REQUIRED_COLUMNS, "pair_ids", "prompt_lens", "is_chosen"),
}
IMAGE_COLUMNS = ("image_bytes", "image_grid_thw")
"""A vision pack's per-image columns: the images and their patch grids."""
VIDEO_COLUMNS = ("video_bytes", "video_grid_thw")
"""A vision pack's per-video columns: the sampled frames and their patch grids."""
VISION_COLUMNS = (*IMAGE_COLUMNS, "seq_images")


DEFAULT_MAX_LENGTH = 32768
"""Tokens per packed row when the caller names none (`pack`; `LengthCheck`, which predicts a pack)."""
MIN_MAX_LENGTH = 2
"""The shortest row: a segment's first token is never trained (labels are not shifted), so one token trains nothing."""


def max_length_problem(max_length: int) -> str | None:
    """What is wrong with ``max_length`` as a row length, naming ``--max-length``; None when it is allowed."""
    if max_length < MIN_MAX_LENGTH:
        return f"--max-length must be at least {MIN_MAX_LENGTH}, got {max_length}"
    return None


@dataclass(frozen=True, slots=True)
class PackOptions:
    """The settings that decide a pack's contents (all recorded in the manifest and the cache key)."""

    max_length: int
    loss_on: LossOn
    truncation: Truncation
    window: int | None
    seed: int
    max_invalid_percent: float


@dataclass(frozen=True)
class PackedDataset:
    """A packed directory as read back: its ``manifest`` and ``stats`` dicts (see module docstring)."""

    path: Path
    manifest: dict
    stats: dict

    @property
    def kind(self) -> str:
        """``sft``, ``dpo`` or ``cpt``."""
        return self.manifest["kind"]

    @property
    def max_length(self) -> int:
        """Capacity of each row, in tokens."""
        return self.manifest["max_length"]

    @property
    def tokenizer_sha256(self) -> str:
        """Hash of the tokenizer files it was packed with (compare with `TokenizerBundle.sha256`)."""
        return self.manifest["tokenizer"]["sha256"]

    @property
    def shards(self) -> list[Path]:
        """The Parquet files, in order."""
        return [self.path / name for name in self.manifest["shards"]]


def read_manifest(path: str | Path) -> PackedDataset:
    """Read a packed directory's manifest and stats (the rows: ``tunekit_train.data.load_packed``).

    Raises:
        InputError: not a packed directory, a format version this tunekit cannot read, or missing shards.
    """
    root = Path(path)
    manifest = _read(root / MANIFEST_FILE, what="packed dataset (run `ds pack` first)")
    if manifest.get("format") != FORMAT:
        msg = f"{root / MANIFEST_FILE}: not a tunekit packed dataset"
        raise InputError(msg)
    if manifest.get("format_version") != FORMAT_VERSION:
        msg = (
            f"{root}: packed with format version {manifest.get('format_version')}, this tunekit reads "
            f"version {FORMAT_VERSION}; re-run `ds pack`"
        )
        raise InputError(msg)
    missing = [name for name in manifest["shards"] if not (root / name).is_file()]
    if missing:
        msg = f"{root}: missing shard {missing[0]} ({len(missing)} missing); re-run `ds pack`"
        raise InputError(msg)
    return PackedDataset(root, manifest, _read(root / STATS_FILE, what="packing stats"))


def is_packed_dir(path: Path) -> bool:
    """True when ``path`` holds a tunekit manifest (safe to replace with a new pack)."""
    try:
        return json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _read(path: Path, *, what: str) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        msg = f"{path}: not found; expected a {what}"
        raise InputError(msg) from exc
    except ValueError as exc:
        msg = f"{path}: not valid JSON: {exc}"
        raise InputError(msg) from exc


def build_manifest(
    *,
    kind: Kind,
    bundle: TokenizerBundle,
    template: ChatTemplate | None,
    options: PackOptions,
    counts: dict[str, int],
    shards: list[str],
    sources: list[dict[str, object]] | None,
    reader_options: dict[str, object],
    cache_key: str | None,
    vision: dict[str, object] | None = None,
) -> dict[str, object]:
    """The ``manifest.json`` payload (keys in the module docstring); no timestamps, so equal runs match."""
    template_info = None
    if template is not None and kind != "cpt":
        masks = "generation-markers" if template.has_generation_markers else "prefix-diff"
        template_info = {"name": template.name, "sha256": template.sha256, "masks": masks}
    settings = asdict(options)
    settings["loss_on"] = {"sft": options.loss_on, "dpo": "response", "cpt": "all"}[kind]
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_by": f"tunekit-tokenize {version('tunekit-tokenize')}",
        "kind": kind,
        "tokenizer": {
            "path": str(bundle.path),
            "sha256": bundle.sha256,
            "vocab_size": bundle.vocab_size,
            "bos_id": bundle.bos_id,
            "eos_id": bundle.eos_id,
            "pad_id": bundle.pad_id,
        },
        "template": template_info,
        **settings,
        "sources": sources,
        "reader": reader_options,
        "counts": counts,
        "columns": list(COLUMNS[kind]) + (list(VISION_COLUMNS) if vision else []),
        "shards": shards,
        "cache_key": cache_key,
        **({"vision": vision} if vision else {}),
    }
