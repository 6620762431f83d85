"""``train serve``: trained models behind the Bedrock Converse API and the OpenAI chat API.

- `models`: which directories become which model ids, with the chat template each run trained with.
- `engine`: the engine interface, and the per-request completion logic (stops, token budget, deltas).
- `batching`: the transformers engine (batched decoding, LoRA adapters sharing a base); `vllm_engine`.
- `app`: the FastAPI server, the API-key and body-size gate; `bedrock`, `openai_api`: the two APIs;
  `eventstream`: the AWS event-stream framing; `errors`: each API's error shape.
"""

from __future__ import annotations

from tunekit_train.serve.app import ServeOptions, Server, ServeSettings, prepare, run
from tunekit_train.serve.models import pack_settings, trained_template

__all__ = ["ServeOptions", "ServeSettings", "Server", "pack_settings", "prepare", "run", "trained_template"]
