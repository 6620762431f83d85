"""Where training rows come from: a `ds pack` directory as it is, or raw data packed on the fly.

Raw data (JSONL in any format ``ds convert`` reads, or a folder of .txt files for continued pretraining)
goes through the same code as ``ds check`` + ``ds convert`` + ``ds pack``, into ``RUN_DIR/data/<split>``.
The pack is cached: its manifest records a key over the inputs and settings, and an unchanged key reuses
the directory instead of tokenizing again (so ``--resume`` does not repack). ``s3://`` data is first
copied into ``RUN_DIR/data/<split>-s3/`` (`tunekit_train.remote.fetch_data`) and then read the same way.
"""

from __future__ import annotations

from pathlib import Path

from tunekit_data.errors import ConfigError, InputError
from tunekit_data.io import HUB_SCHEME, hub_cache, hub_dataset, is_s3
from tunekit_train.data import PackedRows, load_packed
from tunekit_train.dpo import check_pairs
from tunekit_train.recipe import TrainingConfig
from tunekit_train.remote import fetch_data

# What a pack's `kind` must be for each method (SFT also trains on CPT packs: same loss, all tokens).
_KINDS = {"sft": {"sft", "cpt"}, "cpt": {"cpt", "sft"}, "dpo": {"dpo"}}


def local_path(value: str) -> Path | None:
    """The local path a recipe ``*_s3_path`` names, or None for ``s3://``.

    ``file://`` URIs too; ``hf://datasets/OWNER/NAME``: that dataset's snapshot in the local hub cache.
    Data paths may name any input ``ds convert`` reads: JSONL, Parquet, Hugging Face datasets,
    Delta tables (``tunekit_data.io.tables``), all packed on the fly.
    """
    if is_s3(value):
        return None
    if value.startswith(HUB_SCHEME):
        try:
            return hub_dataset(value)
        except InputError:
            return hub_cache() / value.removeprefix(HUB_SCHEME)  # missing: reported as no such path
    return Path(value.removeprefix("file://"))


def is_packed(path: Path) -> bool:
    """Whether ``path`` is a packed dataset directory."""
    return (path / "manifest.json").is_file()


def open_rows(path: Path | str, *, config: TrainingConfig, tokenizer: Path | None, cache: Path) -> PackedRows:
    """The packed rows of ``path``, packing raw data into ``cache`` first when needed.

    An ``s3://`` ``path`` is fetched into ``<cache>-s3/`` first (only missing objects: see `remote`).

    Raises:
        ConfigError: the data was packed for another method, or raw data has no tokenizer to pack with.
        InputError, DataError: the data cannot be read, too many records are invalid, or DPO rows do not
            hold whole chosen/rejected pairs.
    """
    if isinstance(path, str):
        path = fetch_data(path, cache.with_name(f"{cache.name}-s3"))
    if not is_packed(path):
        path = _pack(path, config=config, tokenizer=tokenizer, out_dir=cache)
    rows = load_packed(path)
    kind = rows.manifest.get("kind", "sft")
    if kind not in _KINDS[config.method]:
        raise ConfigError(
            str(path), [f"kind: packed for {kind}, but the recipe trains {config.method} (training_config.task_type)"]
        )
    if config.method == "dpo":
        check_pairs(rows)
    return rows


def _pack(path: Path, *, config: TrainingConfig, tokenizer: Path | None, out_dir: Path) -> Path:
    if tokenizer is None:
        raise ConfigError(
            str(path),
            ["raw data is packed on the fly and needs a tokenizer: set run.tokenizer_name_or_path or add tokenizer files to the model directory"],
        )
    from tunekit_data.media import VideoSampling
    from tunekit_tokenize import pack_files
    from tunekit_tokenize.vision import PROCESSOR_FILE

    # A vision-language model's directory has its image processor: images and videos are packed with it.
    processor = tokenizer if (tokenizer / PROCESSOR_FILE).is_file() else None
    pack_files(
        [str(path)],
        fmt="cpt" if config.method == "cpt" else "auto",
        tokenizer=tokenizer,
        max_length=config.max_length,
        out_dir=out_dir,
        max_invalid_percent=config.allow_percentage_invalid_samples,
        seed=config.seed,
        processor=processor,
        video=VideoSampling(config.model.mm_cfg.video_fps, config.model.mm_cfg.video_max_frames),
    )
    return out_dir
