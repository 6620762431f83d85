"""Turn examples into token sequences with a trained-token mask, many at a time.

* Chat and preference examples are rendered with the chat template, then the rendered text is
  tokenized with ``add_special_tokens=False``: the template already writes BOS when the model wants
  it, so this never doubles it (a sequence that still starts with two BOS is refused).
* Text examples (continued pretraining) get BOS when the tokenizer's post-processor would add it,
  and always end with EOS, so packed documents are separated by EOS.

Texts are tokenized together with ``Tokenizer.encode_batch`` (Rust, parallel across cores unless
the caller runs one encoder per process). Text examples, which need no offsets, use
``encode_batch_fast``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from tokenizers import Encoding

from tunekit_data.errors import TunekitError, UsageError
from tunekit_data.examples import ChatExample, Example, Message, PreferenceExample, TextExample
from tunekit_tokenize.chat_template import ChatTemplate, TemplateRenderError, resolve_template
from tunekit_tokenize.masks import LossOn, MaskError, Span, chat_spans, response_span
from tunekit_tokenize.tokenizer import TokenizerBundle
from tunekit_tokenize.vision import MediaInputs, MediaRef

Kind = Literal["sft", "dpo", "cpt"]
IGNORE_INDEX = -100


def sequences_per_item(kind: Kind) -> int:
    """Sequences per packing item: a DPO pair is one item, so chosen and rejected share a row."""
    return 2 if kind == "dpo" else 1


def example_kind(example: Example) -> Kind:
    """``sft`` for chats, ``dpo`` for preference pairs, ``cpt`` for plain text."""
    if isinstance(example, ChatExample):
        return "sft"
    if isinstance(example, PreferenceExample):
        return "dpo"
    return "cpt"


@dataclass(frozen=True, slots=True)
class Reject:
    """Why an example cannot be used: ``code`` is short and stable (counted in stats), ``message`` explains."""

    code: str
    message: str
    field: str = ""
    """The record's field at fault (``messages[0].content[1].image``), when known."""


class ExampleRejected(TunekitError):
    """`encode_example` could not encode the example; ``reject`` says why.

    Example: ``[media] message 1 has 1 image/video part(s); a text tokenizer cannot encode media``.
    """

    def __init__(self, reject: Reject) -> None:
        self.reject = reject
        super().__init__(f"[{reject.code}] {reject.message}")


@dataclass(frozen=True, slots=True)
class TokenSequence:
    """One token sequence: ``input_ids`` (int32) and ``trained`` (bool, the loss policy's tokens).

    ``prompt_len`` (preference answers only) is the index of the first answer token. ``images`` are the
    sequence's images and videos in the order of their (expanded) placeholder tokens.
    """

    input_ids: np.ndarray
    trained: np.ndarray
    prompt_len: int = 0
    images: tuple[MediaRef, ...] = ()

    @property
    def labels(self) -> np.ndarray:
        """Labels aligned with ``input_ids``: the id where trained, -100 elsewhere and at position 0.

        Position 0 is never a target: in a packed row it would be predicted from the previous segment.
        """
        labels = np.where(self.trained, self.input_ids, IGNORE_INDEX).astype(np.int32)
        labels[:1] = IGNORE_INDEX
        return labels

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True, slots=True)
class Encoded:
    """An encoded example: one sequence (sft, cpt) or chosen then rejected (dpo), and their texts."""

    kind: Kind
    sequences: tuple[TokenSequence, ...]
    texts: tuple[str, ...] = field(repr=False)


@dataclass(frozen=True, slots=True)
class _Plan:
    """A rendered example waiting for tokenization: texts and the trained character spans of each."""

    kind: Kind
    texts: tuple[str, ...]
    spans: tuple[tuple[Span, ...], ...]
    images: tuple[MediaRef, ...] = ()


class Encoder:
    """Renders and tokenizes examples for one tokenizer, chat template and loss policy.

    ``template`` may be None for text-only data; chat examples then raise UsageError. With ``images``
    (a vision-language processor), image and video parts are fetched, decoded and expanded into their
    tokens (`tunekit_tokenize.vision`); without, a record with media is rejected.
    """

    def __init__(
        self, bundle: TokenizerBundle, template: ChatTemplate | None, loss_on: LossOn, images: MediaInputs | None = None
    ) -> None:
        self.bundle = bundle
        self.template = template
        self.loss_on = loss_on
        self.images = images
        # Special token strings: whitespace after one of these ends an answer (see masks.py).
        self._end_tokens = frozenset(
            t.content for t in bundle.tokenizer.get_added_tokens_decoder().values() if t.special
        )

    def encode_batch(self, examples: Sequence[Example]) -> list[Encoded | Reject]:
        """Encode ``examples``; each result is an `Encoded` or the `Reject` saying why not."""
        plans = [self._plan(example) for example in examples]
        chat = [(i, p) for i, p in enumerate(plans) if isinstance(p, _Plan) and p.kind != "cpt"]
        text = [(i, p) for i, p in enumerate(plans) if isinstance(p, _Plan) and p.kind == "cpt"]
        results: list[Encoded | Reject | _Plan] = list(plans)
        tokenizer = self.bundle.tokenizer
        chat_texts = [t for _, p in chat for t in p.texts]
        encodings = iter(tokenizer.encode_batch(chat_texts, add_special_tokens=False) if chat_texts else [])
        for i, plan in chat:
            results[i] = self._finish_chat(plan, [next(encodings) for _ in plan.texts])
        docs = tokenizer.encode_batch_fast([p.texts[0] for _, p in text], add_special_tokens=False)
        for (i, plan), encoding in zip(text, docs, strict=True):
            results[i] = self._finish_text(plan, encoding)
        return results  # every _Plan has been replaced by its Encoded or Reject

    def _plan(self, example: Example) -> _Plan | Reject:
        if isinstance(example, TextExample):
            return _Plan("cpt", (example.text,), ())
        messages = example.messages if isinstance(example, ChatExample) else example.prompt
        images: tuple[MediaRef, ...] = ()
        if self.images is None:
            if reject := _media_reject(messages):
                return reject
            dicts = _as_dicts(messages)
        else:
            resolved = self.images.resolve(messages)
            if resolved.problem is not None:
                field, problem = resolved.problem
                return Reject(f"media-{problem.kind}", f"[{problem.kind}] {problem.message}", field)
            dicts, images = resolved.messages, resolved.media
        template = self._require_template()
        special = self.bundle.special_tokens
        try:
            if isinstance(example, ChatExample):
                text, spans = chat_spans(
                    template,
                    dicts,
                    loss_on=self.loss_on,
                    special_tokens=special,
                    end_tokens=self._end_tokens,
                )
                return _Plan("sft", (text,), (tuple(spans),), images)
            prompt = dicts
            answers = [
                response_span(template, prompt, answer, special_tokens=special, end_tokens=self._end_tokens)
                for answer in (example.chosen, example.rejected)
            ]
            return _Plan("dpo", tuple(t for t, _ in answers), tuple((s,) for _, s in answers), images)
        except MaskError as exc:
            return Reject(exc.code, str(exc))
        except TemplateRenderError as exc:
            return Reject("template-error", f"the chat template refused this record: {exc}")

    def _require_template(self) -> ChatTemplate:
        if self.template is None:
            msg = (
                f"the tokenizer in {self.bundle.path} has no chat_template; "
                "pass --template chatml|llama3|PATH.jinja"
            )
            raise UsageError(msg)
        return self.template

    def _finish_chat(self, plan: _Plan, encodings: list[Encoding]) -> Encoded | Reject:
        sequences = []
        bos = self.bundle.bos_id
        for encoding, spans in zip(encodings, plan.spans, strict=True):
            ids = np.array(encoding.ids, dtype=np.int32)
            if bos is not None and len(ids) > 1 and ids[0] == bos and ids[1] == bos:
                return Reject("double-bos", "the rendered text starts with two BOS tokens")
            trained = _token_mask(encoding, len(ids), spans)
            if self.images is not None:
                expanded = self._expand_images(ids, trained, plan.images)
                if isinstance(expanded, Reject):
                    return expanded
                ids, trained = expanded
            if not trained.any():
                what = "answer" if plan.kind == "dpo" else "conversation"
                return Reject("no-trained-tokens", f"the {what} has no tokens to train under the loss policy")
            prompt_len = int(np.argmax(trained)) if plan.kind == "dpo" else 0
            sequences.append(TokenSequence(ids, trained, prompt_len, plan.images))
        return Encoded(plan.kind, tuple(sequences), plan.texts)

    def _expand_images(self, ids: np.ndarray, trained: np.ndarray, media: tuple[MediaRef, ...]) -> tuple[np.ndarray, np.ndarray] | Reject:
        """Each image (video) placeholder token repeated as many times as the image (video) has tokens.

        Never trained.
        """
        assert self.images is not None
        processor = self.images.processor
        vision_ids = [i for i in (processor.image_token_id, processor.video_token_id) if i is not None]
        is_vision = np.isin(ids, vision_ids)
        expected = [processor.token_id(ref.kind) for ref in media]
        if ids[is_vision].tolist() != expected:
            msg = (
                f"the rendered text has {int(is_vision.sum())} image/video placeholder tokens for {len(media)} image(s) and video(s)"
                f" (does the text contain {processor.placeholder('image')!r} or {processor.placeholder('video')!r}?)"
            )
            return Reject("placeholder-mismatch", msg)
        counts = np.ones(len(ids), dtype=np.int64)
        counts[is_vision] = [processor.tokens(ref.grid) for ref in media]
        ids = np.repeat(ids, counts)
        return ids, np.repeat(trained, counts) & ~np.isin(ids, vision_ids)

    def _finish_text(self, plan: _Plan, encoding: Encoding) -> Encoded | Reject:
        eos = self.bundle.eos_id
        if eos is None:
            msg = f"the tokenizer in {self.bundle.path} has no eos_token, needed to separate text documents"
            raise UsageError(msg)
        body = encoding.ids
        if not body:
            return Reject("empty-text", "the text is empty")
        head = [self.bundle.bos_id] if self.bundle.adds_bos else []
        ids = np.array([*head, *body, eos], dtype=np.int32)
        return Encoded("cpt", (TokenSequence(ids, np.ones(len(ids), dtype=bool)),), plan.texts)


def encode_example(
    bundle: TokenizerBundle,
    example: Example,
    *,
    template: str | ChatTemplate = "auto",
    loss_on: LossOn = "assistant",
) -> Encoded:
    """Encode one example (see `Encoder`); ``template`` is a name, a ``.jinja`` path or a ChatTemplate.

    Raises:
        ExampleRejected: the example cannot be encoded (media, no trained tokens, template refused it).
        UsageError: a chat example and no chat template.
    """
    resolved = template if isinstance(template, ChatTemplate) else resolve_template(bundle, template)
    result = Encoder(bundle, resolved, loss_on).encode_batch([example])[0]
    if isinstance(result, Reject):
        raise ExampleRejected(result)
    return result


def _token_mask(encoding: Encoding, length: int, spans: tuple[Span, ...]) -> np.ndarray:
    """Tokens overlapping each character span (a token that straddles a span edge counts, as in HF)."""
    mask = np.zeros(length, dtype=bool)
    for start, end in spans:
        first = next((t for c in range(start, end) if (t := encoding.char_to_token(c)) is not None), None)
        last = next((t for c in range(end - 1, start - 1, -1) if (t := encoding.char_to_token(c)) is not None), None)
        if first is not None and last is not None:
            mask[first : last + 1] = True
    return mask


def _media_reject(messages: tuple[Message, ...]) -> Reject | None:
    for i, message in enumerate(messages):
        if message.media:
            msg = f"message {i} has {len(message.media)} image/video part(s); a text tokenizer cannot encode media"
            return Reject("media", msg)
    return None


def _as_dicts(messages: tuple[Message, ...]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]
