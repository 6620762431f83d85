"""tunekit_tokenize: chat-template tokenization with exact loss masks, and global best-fit packing.

Torch-free by design (``tokenizers`` + ``jinja2`` + ``pyarrow`` + ``numpy``), so ``ds pack`` and
``ds check --tokenizer`` start instantly; ``train run`` reads the output with ``tunekit_train.data.load_packed``::

    bundle = load_tokenizer("examples/tiny/tokenizer")
    encoded = encode_example(bundle, ChatExample((Message("user", "Hi"), Message("assistant", "Hello."))))
    encoded.sequences[0].labels  # -100 except on "Hello." and <|im_end|>
    result = pack(records, tokenizer=bundle, max_length=8192, out_dir="packed/")  # (SourceRecord, Example)s
    result.stats["packing_efficiency"]

The packed directory format is documented in `tunekit_tokenize.manifest`.
"""

from tunekit_tokenize.chat_template import BUILTIN_TEMPLATES, ChatTemplate, resolve_template
from tunekit_tokenize.encoder import (
    IGNORE_INDEX,
    Encoded,
    Encoder,
    ExampleRejected,
    Reject,
    TokenSequence,
    encode_example,
)
from tunekit_tokenize.explain import ExplainedRecord, ExplainedToken, explain_example, explain_record
from tunekit_tokenize.lengths import LengthCheck
from tunekit_tokenize.manifest import (
    COLUMNS,
    DEFAULT_MAX_LENGTH,
    IMAGE_COLUMNS,
    MIN_MAX_LENGTH,
    REQUIRED_COLUMNS,
    TOKEN_COLUMNS,
    VIDEO_COLUMNS,
    VISION_COLUMNS,
    PackedDataset,
    read_manifest,
)
from tunekit_tokenize.masks import LOSS_POLICIES, LossOn
from tunekit_tokenize.pipeline import FORMAT_ALIASES, PackResult, Progress, pack, pack_files
from tunekit_tokenize.tokenizer import TokenizerBundle, load_tokenizer
from tunekit_tokenize.truncation import TRUNCATION_POLICIES, Truncation

__all__ = [
    "BUILTIN_TEMPLATES",
    "COLUMNS",
    "DEFAULT_MAX_LENGTH",
    "FORMAT_ALIASES",
    "IGNORE_INDEX",
    "IMAGE_COLUMNS",
    "LOSS_POLICIES",
    "MIN_MAX_LENGTH",
    "REQUIRED_COLUMNS",
    "TOKEN_COLUMNS",
    "TRUNCATION_POLICIES",
    "VIDEO_COLUMNS",
    "VISION_COLUMNS",
    "ChatTemplate",
    "Encoded",
    "Encoder",
    "ExampleRejected",
    "ExplainedRecord",
    "ExplainedToken",
    "LengthCheck",
    "LossOn",
    "PackResult",
    "PackedDataset",
    "Progress",
    "Reject",
    "TokenSequence",
    "TokenizerBundle",
    "Truncation",
    "encode_example",
    "explain_example",
    "explain_record",
    "load_tokenizer",
    "pack",
    "pack_files",
    "read_manifest",
    "resolve_template",
]
