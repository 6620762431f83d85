"""Render chat templates exactly as Hugging Face does, and report where `{% generation %}` output lies.

The environment matches ``transformers.utils.chat_template_utils`` (5.x): a sandboxed, immutable Jinja
environment with ``trim_blocks`` and ``lstrip_blocks``, the ``loopcontrols`` extension, a ``tojson``
that does not escape HTML, and the globals ``raise_exception``, ``strftime_now``, ``dict`` and
``namespace``. The template sees ``messages``, ``add_generation_prompt``, ``tools``/``documents``
(None) and the tokenizer's special tokens (``bos_token``, ``eos_token``, ...).

``{% generation %}...{% endgeneration %}`` blocks render their body unchanged; to locate it we wrap
the body in two private-use characters and strip them after rendering. Transformers instead tracks
offsets in state shared by every render of a template, which is not safe across threads; sentinels
make a render a pure function of its inputs.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from importlib import resources
from pathlib import Path

import jinja2
import jinja2.ext
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tunekit_data.errors import InputError, UsageError
from tunekit_tokenize.tokenizer import TokenizerBundle

# Supplementary private-use code points: never produced by tokenizers' vocabularies or by real text.
_GEN_OPEN, _GEN_CLOSE = "\U000f0000", "\U000f0001"
_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")
_COMMENT = re.compile(r"\{#.*?#\}", re.DOTALL)

# Built-in templates (package data `templates/<name>.jinja`) and the tokens each needs as single ids.
BUILTIN_TEMPLATES: dict[str, tuple[str, ...]] = {
    "chatml": ("<|im_start|>", "<|im_end|>"),
    "llama3": ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
}
# Built-ins that render `bos_token`, so the tokenizer must define one.
_NEEDS_BOS = frozenset({"llama3"})


class TemplateRenderError(ValueError):
    """A template refused a conversation (``raise_exception``) or failed while rendering it."""


@dataclass(frozen=True, slots=True)
class Rendered:
    """A rendered conversation and the ``[start, end)`` character spans of its generation blocks."""

    text: str
    generation_spans: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class ChatTemplate:
    """A chat template: ``name`` is a built-in name, ``tokenizer`` (the directory's own) or a file path."""

    name: str
    source: str

    @property
    def sha256(self) -> str:
        """Hash of the template source."""
        return hashlib.sha256(self.source.encode()).hexdigest()

    @property
    def has_generation_markers(self) -> bool:
        """True when the template marks assistant output with ``{% generation %}`` (HF convention)."""
        return bool(_GENERATION_TAG.search(_COMMENT.sub("", self.source)))

    def render(
        self,
        messages: list[dict[str, str]],
        *,
        special_tokens: dict[str, str],
        add_generation_prompt: bool = False,
    ) -> Rendered:
        """Render ``messages`` (``{"role", "content"}`` dicts).

        Raises:
            TemplateRenderError: the template raised (for example "roles must alternate") or a message
                contains one of the two reserved private-use characters U+F0000/U+F0001.
        """
        for message in messages:
            content = message["content"]
            if _GEN_OPEN in content or _GEN_CLOSE in content:
                msg = "message contains reserved character U+F0000 or U+F0001"
                raise TemplateRenderError(msg)
        try:
            raw = _compile(self.source).render(
                messages=messages,
                tools=None,
                documents=None,
                add_generation_prompt=add_generation_prompt,
                **special_tokens,
            )
        except jinja2.TemplateError as exc:
            raise TemplateRenderError(str(exc)) from exc
        return _strip_markers(raw)


def resolve_template(bundle: TokenizerBundle, name: str = "auto") -> ChatTemplate | None:
    """The template to render with, named by ``template``.

    ``auto`` (the tokenizer's own, None if it has none), a built-in name (``chatml``, ``llama3``) or
    the path of a ``.jinja`` file.

    Raises:
        UsageError: unknown name, a built-in whose special tokens the tokenizer lacks, or a template
            that does not compile.
        InputError: a template file that cannot be read.
    """
    if name == "auto":
        template = None if bundle.chat_template is None else ChatTemplate("tokenizer", bundle.chat_template)
    elif name in BUILTIN_TEMPLATES:
        source = resources.files("tunekit_tokenize").joinpath("templates", f"{name}.jinja").read_text("utf-8")
        template = ChatTemplate(name, source)
        _check_builtin_tokens(bundle, name)
    elif name.endswith(".jinja"):
        try:
            template = ChatTemplate(name, Path(name).read_text(encoding="utf-8"))
        except OSError as exc:
            msg = f"{name}: cannot read chat template: {exc.strerror}"
            raise InputError(msg) from exc
    else:
        choices = ", ".join(["auto", *BUILTIN_TEMPLATES, "PATH.jinja"])
        msg = f"--template must be one of {choices}, got {name!r}"
        raise UsageError(msg)
    if template is not None:
        try:
            _compile(template.source)
        except jinja2.TemplateSyntaxError as exc:
            msg = f"chat template {template.name}: line {exc.lineno}: {exc.message}"
            raise UsageError(msg) from exc
    return template


def _check_builtin_tokens(bundle: TokenizerBundle, name: str) -> None:
    missing = [token for token in BUILTIN_TEMPLATES[name] if bundle.token_id(token) is None]
    if name in _NEEDS_BOS and bundle.bos_id is None:
        missing.append("bos_token")
    if missing:
        msg = f"--template {name} needs {', '.join(missing)}, which the tokenizer in {bundle.path} lacks"
        raise UsageError(msg)


def _strip_markers(raw: str) -> Rendered:
    if _GEN_OPEN not in raw:
        return Rendered(raw, ())
    parts: list[str] = []
    spans: list[tuple[int, int]] = []
    length = 0
    start = None
    # Split keeps the sentinels as separate items, so offsets are counted on the cleaned text.
    for piece in re.split(f"({_GEN_OPEN}|{_GEN_CLOSE})", raw):
        if piece == _GEN_OPEN:
            start = length
        elif piece == _GEN_CLOSE:
            if start is not None and length > start:
                spans.append((start, length))
            start = None
        else:
            parts.append(piece)
            length += len(piece)
    return Rendered("".join(parts), tuple(spans))


class _GenerationBlocks(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}``: render the body between two sentinels."""

    tags = frozenset({"generation"})

    def parse(self, parser: jinja2.parser.Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_mark"), [], [], body).set_lineno(lineno)

    def _mark(self, caller: jinja2.runtime.Macro) -> str:
        return f"{_GEN_OPEN}{caller()}{_GEN_CLOSE}"


class _TemplateNamespace(jinja2.utils.Namespace):
    """``namespace()`` that refuses underscore attributes, as transformers' does (sandbox hardening)."""

    def __init__(*args: object, **kwargs: object) -> None:  # Jinja's signature trick: `self` may be a key
        self, rest = args[0], args[1:]
        attrs = dict(*rest, **kwargs)
        for key in attrs:
            _TemplateNamespace._check(key)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, key: str, value: object) -> None:
        _TemplateNamespace._check(key)
        jinja2.utils.Namespace.__setitem__(self, key, value)

    @staticmethod
    def _check(key: object) -> None:
        if isinstance(key, str) and key.startswith("_"):
            msg = f"chat templates cannot store underscore attributes on a namespace, got {key!r}"
            raise jinja2.exceptions.SecurityError(msg)


class _TemplateDict:
    """``dict(...)`` for templates, without handing them the ``dict`` type itself (as transformers)."""

    def __call__(self, *args: object, **kwargs: object) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: object, **kwargs: object) -> dict:
        return dict.fromkeys(*args, **kwargs)


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


# Jinja filter arguments are positional or keyword as a template writes them (Hugging Face's
# ``tojson`` signature): ``x | tojson(false, 2)`` must keep working.
def _tojson(
    value: object,
    ensure_ascii: bool = False,  # noqa: FBT001, FBT002
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,  # noqa: FBT001, FBT002
) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)  # local time, as transformers gives templates


@lru_cache(maxsize=16)
def _compile(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationBlocks, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals.update(
        raise_exception=_raise_exception,
        strftime_now=_strftime_now,
        dict=_TemplateDict(),
        namespace=_TemplateNamespace,
    )
    return env.from_string(source)
