"""Process settings that must be in place before torch loads; torch-using commands call them first."""

from __future__ import annotations

import os
import warnings


def before_torch() -> None:
    """Set OpenMP's wait policy and hide a warning users cannot act on; call before importing torch."""
    # OpenMP threads spin while waiting for work; on a busy machine (a shared 2-core box, a laptop with
    # other jobs) that made a tiny model's steps ~10x slower. Passive waiting costs little otherwise.
    # It must be set before torch loads OpenMP, so the commands call this before importing torch.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # peft calls a transformers API that warns of its rename at every LoRA run; users can do nothing about it.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
