"""The Arrow schema of each ``--to`` target's Parquet output: the JSON shapes of ``convert.outputs`` as Arrow types.

The Converse and DPO schemas are also ``ds check``'s lean block schemas (``check.schema``): the
fields Nova 1 records normally hold, which pyarrow's JSON reader parses fastest.

A Converse content block is ``struct<text, image, video>`` with exactly one member set; Parquet
readers (``datasets``, polars) show the others as null. Chat, prompt-response and preference content
is a string, so those targets hold text only (images belong in converse / dpo).
"""

from __future__ import annotations

import pyarrow as pa


def _struct(**fields: pa.DataType) -> pa.StructType:
    return pa.struct(list(fields.items()))


_S = pa.string()
_MEDIA = _struct(format=_S, source=_struct(s3Location=_struct(uri=_S, bucketOwner=_S)))
_BLOCK = _struct(text=_S, image=_MEDIA, video=_MEDIA)
_TEXT_BLOCKS = pa.list_(_struct(text=_S))
_CHAT_TURNS = pa.list_(_struct(role=_S, content=_S))
_CANDIDATE = _struct(content=_TEXT_BLOCKS, preferenceLabel=_S)

ARROW_SCHEMAS: dict[str, pa.Schema] = {
    "converse": pa.schema(
        [
            ("schemaVersion", _S),
            ("system", _TEXT_BLOCKS),
            ("messages", pa.list_(_struct(role=_S, content=pa.list_(_BLOCK)))),
        ]
    ),
    "dpo": pa.schema(
        [
            ("schemaVersion", _S),
            ("system", _TEXT_BLOCKS),
            (
                "messages",
                pa.list_(_struct(role=_S, content=pa.list_(_BLOCK), candidates=pa.list_(_CANDIDATE))),
            ),
        ]
    ),
    "chat": pa.schema([("messages", _CHAT_TURNS)]),
    "prompt-response": pa.schema([("prompt", _S), ("response", _S)]),
    "preference": pa.schema([("prompt", _CHAT_TURNS), ("chosen", _CHAT_TURNS), ("rejected", _CHAT_TURNS)]),
    "text": pa.schema([("text", _S)]),
}
