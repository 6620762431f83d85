"""S3 for ``train run``: ``s3://`` training data fetched into the run directory, outputs published to S3.

Training reads and writes local files (torch, safetensors, the packer), so S3 stays at the edges and
the run directory stays the one place a run lives:

- data: `fetch_data` copies a recipe's ``s3://`` ``data_s3_path`` / ``validation_data_s3_path`` (a
  JSONL object, a prefix of data files, or a ``ds pack`` prefix with its ``manifest.json``) into
  ``RUN_DIR/data/<split>-s3/``, streamed (never a whole object in memory). Objects already there with
  their size are kept, so a resumed run does not fetch them again. `sources.open_rows` then reads the
  copy like any local path (packing raw data into ``RUN_DIR/data/<split>`` as usual).
- outputs: with ``run.output_s3_path: s3://bucket/prefix``, the run directory is a local staging area
  (``exp_dir`` / ``--output-dir`` / ``runs/<name>``) and `Publisher` uploads each checkpoint once saved
  (``prefix/checkpoints/step-NNNNNN/``), the final model (``prefix/final/``) and, when the run ends,
  its record (``state.json``, ``events.jsonl``, ``metrics.csv``, ``recipe.yaml``). Every file appears
  atomically, and the file a reader opens first (a checkpoint's trainer state, a model's config) is
  uploaded last, so a folder that has it is complete. Checkpoints pruned locally by ``save_top_k``
  stay on S3.

Uploads run on rank 0 only (the caller passes ``enabled``), between training steps: a checkpoint
upload pauses training for its duration, which keeps the order of events simple and exact.
"""

from __future__ import annotations

from pathlib import Path

from tunekit_data.io import is_s3, storage
from tunekit_train.checkpoint import STATE_FILE

# Uploaded last within their folder: their presence means the folder is complete.
_LAST = (STATE_FILE, "config.json", "adapter_config.json")
_RUN_FILES = ("recipe.yaml", "metrics.csv", "events.jsonl", "state.json")


def fetch_data(uri: str, folder: Path) -> Path:
    """The local copy of the ``s3://`` object or prefix ``uri``, fetched into ``folder``.

    An object comes back as ``folder/<name>``; a prefix as ``folder`` itself (a packed dataset if it
    holds ``manifest.json``, else a folder of data files for ``ds pack``). InputError, naming the
    bucket and key, if it cannot be read.
    """
    files = storage.download_dir(uri, folder)
    single = len(files) == 1 and not uri.endswith("/") and files[0] == folder / uri.rpartition("/")[2]
    return files[0] if single else folder


class Publisher:
    """Uploads a run's outputs to ``output_s3_path`` (see the module docstring).

    Does nothing when the path is not ``s3://`` or ``enabled`` is False (ranks other than 0).
    """

    def __init__(self, output: str | None, run_dir: Path, *, enabled: bool = True) -> None:
        self.uri = output.rstrip("/") if output is not None and is_s3(output) and enabled else None
        self.run_dir = run_dir
        if self.uri is not None:
            storage.check_writable(self.uri)  # a wrong bucket fails now, not after the first checkpoint

    def checkpoint(self, directory: Path) -> str | None:
        """Upload the checkpoint folder ``directory``; its URI, or None when not publishing."""
        return self._folder(directory, f"checkpoints/{directory.name}")

    def final(self, directory: Path) -> str | None:
        """Upload the final model folder; its URI, or None when not publishing."""
        return self._folder(directory, "final")

    def run_files(self) -> None:
        """Upload the run's record (state, events, metrics, recipe) as it is now."""
        if self.uri is None:
            return
        for name in _RUN_FILES:
            path = self.run_dir / name
            if path.is_file():
                storage.upload(path, f"{self.uri}/{name}")

    def _folder(self, directory: Path, name: str) -> str | None:
        if self.uri is None:
            return None
        target = f"{self.uri}/{name}/"
        storage.upload_dir(directory, target, last=_LAST)
        return target
