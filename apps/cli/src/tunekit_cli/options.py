"""Options as a command passes them on: only those given, so that the library's defaults apply.

An option whose default the library owns is declared ``None`` ("not given") in its command; its
help states the library's default (tests/cli/test_json_shapes.py holds them equal).
"""

from __future__ import annotations


def given(**options: object) -> dict[str, object]:
    """``options`` less those not given on the command line (None)."""
    return {name: value for name, value in options.items() if value is not None}
