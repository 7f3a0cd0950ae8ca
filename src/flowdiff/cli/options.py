"""Declarative option checks for the commands: choices read from the registries, numbers in ranges.

A new solver, schedule, coupling or loss registered in the library shows up in `--help` and is
accepted on the command line without editing the CLI.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import typer


def names(registry: Mapping | Iterable[str]) -> str:
    """The registered names, comma-separated, for a help text."""
    return ", ".join(registry)


def choice(registry: Mapping | Iterable[str], kind: str) -> Callable[[str], str]:
    """A typer parser that accepts one of the registered names (an error lists them).

    A registry mapping is read when a value is parsed, so a name registered later is accepted too.
    """
    allowed = registry if isinstance(registry, Mapping) else list(registry)

    def parse(value: str) -> str:
        if value not in allowed:
            raise typer.BadParameter(f"unknown {kind} {value!r}; choose one of: {names(allowed)}")
        return value

    return parse


def _entries(value: str, kind: type, what: str) -> list:
    """`flowdiff.registry.parse_list` with its error as the parser's error."""
    from flowdiff.errors import InvalidInputError
    from flowdiff.registry import parse_list

    try:
        return parse_list(value, kind, what)
    except InvalidInputError as error:
        raise typer.BadParameter(str(error)) from None


def choice_list(registry: Mapping | Iterable[str], kind: str, what: str = "names") -> Callable[[str], list[str]]:
    """A typer parser of comma-separated registered names ("euler,heun"); an error lists the names."""
    one = choice(registry, kind)

    def parse(value: str) -> list[str]:
        return [one(name) for name in _entries(value, str, what)]

    return parse


def number_list(kind: type, low: float | None = None, what: str = "values") -> Callable[[str], list]:
    """A typer parser of comma-separated finite numbers ("1,2,4"), each >= `low` when given."""

    def parse(value: str) -> list:
        values = _entries(value, kind, what)
        if not all(math.isfinite(v) for v in values):
            raise typer.BadParameter(f"{what} must be finite numbers, got {value!r}")
        if low is not None and any(not (v >= low) for v in values):
            raise typer.BadParameter(f"{what} must each be >= {low}, got {value!r}")
        return values

    return parse


def refuse_overwrite(paths, force: bool) -> None:
    """The one overwrite rule of every command that writes: existing outputs are kept unless --force."""
    from pathlib import Path

    from flowdiff.errors import InvalidInputError

    existing = [str(p) for p in paths if Path(p).exists()]
    if existing and not force:
        raise InvalidInputError(f"{', '.join(existing)} already exists; pass --force to overwrite it, or choose "
                                "another --out")
