"""Errors tunekit raises for user mistakes: each prints as one clear line, never a traceback.

The CLI catches `TunekitError` in one place and prints `str(err)` with exit code 2 (usage / I/O)
or 1 (the data or config is invalid).
"""

from __future__ import annotations


class TunekitError(Exception):
    """Base class of every error meant for the user rather than for a developer."""


class UsageError(TunekitError):
    """A bad command-line option or argument.

    Example: ``--max-invalid-percent must be between 0 and 100, got 150``.
    """


def at_least(key: str, value: float, low: float) -> None:
    """Raise UsageError naming ``key`` when ``value`` is below ``low``: a config's lower bound."""
    if value < low:
        msg = f"{key} must be at least {low}, got {value}"
        raise UsageError(msg)


def between(key: str, value: float, low: float, high: float) -> None:
    """Raise UsageError naming ``key`` when ``value`` lies outside ``[low, high]``: a config's range."""
    if not low <= value <= high:
        msg = f"{key} must be between {low} and {high}, got {value}"
        raise UsageError(msg)


class InputError(TunekitError):
    """An input that cannot be read at all (missing file, unknown extension, unreadable archive).

    Example: ``data/train.json: F1: dataset files must end in .jsonl (or .jsonl.gz / .jsonl.zst)``.
    """


class DataError(TunekitError):
    """A record that cannot be used, located by file, line and field.

    Example: ``train.jsonl:12: messages[1].role: [S6] role must be "user" or "assistant", got "User"``.
    """

    def __init__(self, file: str, line: int, field: str, rule: str, message: str) -> None:
        self.file, self.line, self.field, self.rule, self.message = file, line, field, rule, message
        super().__init__(f"{file}:{line}: {field}: [{rule}] {message}")


class ConfigError(TunekitError):
    """A recipe or config with one or more bad keys; lists every problem at once.

    Example::

        recipe.yaml: 2 problems
          training_config.model.optim.lr: must be > 0, got -1
          training_config.trainre: unknown key (did you mean 'trainer'?)
    """

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source, self.problems = source, problems
        lines = "\n".join(f"  {p}" for p in problems)
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"{source}: {len(problems)} {noun}\n{lines}")
