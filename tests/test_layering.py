"""Layering: each subpackage's ``__init__`` is its public API, and siblings import only that (issue 17).

A module under a subpackage folder (``tunekit_data/convert/sources.py``) may be imported only by
modules in the same folder; everyone else imports ``tunekit_data.convert``. Names with a leading
underscore are private to their folder. The flat modules at a distribution's top level
(``tunekit_data.errors``, ``tunekit_train.plan``) are each a public module of their own. The walk
reads the source with ``ast``, so it sees imports inside functions (the lazy ones) as well.
"""

from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE_ROOTS = sorted([*ROOT.glob("packages/*/src"), *ROOT.glob("apps/*/src")])
# Modules that their package's __init__ declares public as namespaces, imported as
# ``from tunekit_data.io import storage`` (``storage.open_input(...)``) rather than name by name.
NAMESPACES = frozenset({"tunekit_data.io.storage", "tunekit_data.io.s3", "tunekit_data.io.tables"})


@dataclass(frozen=True)
class Module:
    """One source module: its dotted name, whether it is a package ``__init__``, and its file."""

    name: str
    is_package: bool
    path: Path


def discover(roots: list[Path]) -> dict[str, Module]:
    """Every module under ``roots``, by dotted name."""
    modules = {}
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            name = ".".join(parts)
            modules[name] = Module(name, is_package, path)
    return modules


def folder_of(name: str, modules: dict[str, Module]) -> str:
    """The top-level subpackage folder that holds module ``name`` (``tunekit_data.convert``), else its distribution."""
    parts = name.split(".")
    head = ".".join(parts[:2])
    if len(parts) >= 2 and head in modules and modules[head].is_package:
        return head
    return parts[0]


def imported(tree: ast.AST, module: Module, modules: dict[str, Module]) -> list[tuple[int, str, str | None, bool]]:
    """``(line, module, name, via_package)`` for every import in ``tree``.

    ``name`` is None for a whole module; ``via_package`` is True for ``from pkg import module``.
    """
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, None, False) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.name.split(".")
                if not module.is_package:
                    package.pop()
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            for alias in node.names:
                # ``from pkg import mod`` imports the module pkg.mod, not a name of pkg's __init__.
                sub = f"{base}.{alias.name}"
                if sub in modules:
                    found.append((node.lineno, sub, None, True))
                else:
                    found.append((node.lineno, base, alias.name, False))
    return found


def violations(modules: dict[str, Module], root: Path = ROOT, namespaces: frozenset[str] = NAMESPACES) -> list[str]:
    """Each import that reaches past another folder's ``__init__``, as ``file:line: what`` (relative to ``root``)."""
    ours = {name.split(".")[0] for name in modules}
    problems = []
    for module in modules.values():
        home = folder_of(module.name, modules)
        tree = ast.parse(module.path.read_text(encoding="utf-8"), filename=str(module.path))
        for line, target, name, via_package in imported(tree, module, modules):
            if target.split(".")[0] not in ours or (via_package and target in namespaces):
                continue
            where = f"{module.path.relative_to(root)}:{line}"
            owner = folder_of(target, modules)
            if owner == home:
                continue
            if target != owner and owner != target.split(".")[0]:
                problems.append(f"{where}: imports {target}, inside {owner}/; import from {owner}")
            elif any(part.startswith("_") for part in target.split(".")):
                problems.append(f"{where}: imports private module {target}")
            elif name is not None and name.startswith("_") and not name.startswith("__"):
                problems.append(f"{where}: imports private name {name} from {target}")
    # One line per import statement, however many names it takes.
    return list(dict.fromkeys(problems))


def test_source_roots_are_found():
    assert {root.parent.name for root in SOURCE_ROOTS} >= {"data", "tokenize", "train", "cli"}


def test_siblings_import_only_public_apis():
    problems = violations(discover(SOURCE_ROOTS))
    assert not problems, "\n".join(problems)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A small two-distribution source tree to run the rule against."""
    files = {
        "pkg/__init__.py": "",
        "pkg/errors.py": "",
        "pkg/sub/__init__.py": "from pkg.sub.impl import thing\n",
        "pkg/sub/impl.py": "from pkg.sub import helper\nfrom . import helper as again\n",
        "pkg/sub/helper.py": "_private = 1\n",
        "pkg/other.py": "",
        "app/__init__.py": "",
        "app/main.py": "",
    }
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return tmp_path


def _problems(tree: Path, importer: str, source: str) -> list[str]:
    (tree / importer).write_text(source, encoding="utf-8")
    return violations(discover([tree]), tree)


@pytest.mark.parametrize(
    "source",
    [
        "from pkg.sub import thing\n",
        "import pkg.sub\n",
        "from pkg import sub\n",
        "from pkg.errors import X\n",
        "import pkg\n",
        "def f():\n    from pkg.sub import thing\n",
        "import json\n",
    ],
)
def test_public_imports_pass(tree: Path, source: str):
    assert _problems(tree, "app/main.py", source) == []


@pytest.mark.parametrize(
    ("importer", "source", "expected"),
    [
        ("app/main.py", "from pkg.sub.impl import thing\n", "app/main.py:1: imports pkg.sub.impl, inside pkg.sub/"),
        ("app/main.py", "from pkg.sub.impl import thing, other\n", "app/main.py:1: imports pkg.sub.impl, inside pkg.sub/"),
        ("app/main.py", "from pkg.sub import impl\n", "app/main.py:1: imports pkg.sub.impl, inside pkg.sub/"),
        ("pkg/other.py", "import pkg.sub.helper\n", "pkg/other.py:1: imports pkg.sub.helper, inside pkg.sub/"),
        ("app/main.py", "def f():\n    from pkg.sub.helper import x\n", "app/main.py:2: imports pkg.sub.helper"),
        ("app/main.py", "from pkg.sub import _secret\n", "app/main.py:1: imports private name _secret from pkg.sub"),
    ],
)
def test_reaching_past_an_init_fails(tree: Path, importer: str, source: str, expected: str):
    problems = _problems(tree, importer, source)
    assert len(problems) == 1
    assert problems[0].startswith(expected)


def test_imports_inside_the_folder_pass(tree: Path):
    assert _problems(tree, "pkg/sub/impl.py", "from pkg.sub.helper import _private\nfrom .helper import _private\n") == []


def test_relative_imports_resolve_to_their_package(tree: Path):
    problems = _problems(tree, "pkg/other.py", "from .sub.impl import thing\n")
    assert problems == ["pkg/other.py:1: imports pkg.sub.impl, inside pkg.sub/; import from pkg.sub"]


def test_declared_namespaces_pass_only_through_their_package(tree: Path):
    (tree / "app/main.py").write_text("from pkg.sub import helper\nimport pkg.sub.helper\n", encoding="utf-8")
    problems = violations(discover([tree]), tree, frozenset({"pkg.sub.helper"}))
    assert problems == ["app/main.py:2: imports pkg.sub.helper, inside pkg.sub/; import from pkg.sub"]


def test_the_declared_namespaces_exist():
    assert discover(SOURCE_ROOTS).keys() >= NAMESPACES


PUBLIC_APIS = sorted(
    name for name, module in discover(SOURCE_ROOTS).items() if module.is_package and name.count(".") == 1
)


@pytest.mark.parametrize("package", PUBLIC_APIS)
def test_every_exported_name_resolves(package: str):
    # A name in __all__ whose lazy entry points at the wrong module fails only when first read.
    module = importlib.import_module(package)
    missing = [name for name in getattr(module, "__all__", ()) if not hasattr(module, name)]
    assert missing == []


# The training stack: `ds` must start without it, and the data layer must install without it.
HEAVY = frozenset({"torch", "transformers", "peft", "trl", "accelerate"})


def test_data_and_tokenize_never_import_the_training_stack():
    modules = discover(SOURCE_ROOTS)
    found = []
    for module in modules.values():
        if module.name.split(".")[0] not in ("tunekit_data", "tunekit_tokenize"):
            continue
        tree = ast.parse(module.path.read_text(encoding="utf-8"), filename=str(module.path))
        found += [
            f"{module.path.relative_to(ROOT)}:{line}: imports {target}"
            for line, target, _, _ in imported(tree, module, modules)
            if target.split(".")[0] in HEAVY
        ]
    assert found == []
