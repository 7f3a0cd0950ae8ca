"""Declarative option checks for the commands: choices read from the registries, numbers in ranges.

A new solver, schedule, coupling or loss registered in the library shows up in `--help` and is
accepted on the command line without editing the CLI.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import typer


def names(registry: Mapping | Iterable[str]) -> str:
    """The registered names, comma-separated, for a help text."""
    return ", ".join(registry)


def choice(registry: Mapping | Iterable[str], kind: str) -> Callable[[str], str]:
    """A typer parser that accepts one of the registered names (an error lists them)."""
    allowed = list(registry)

    def parse(value: str) -> str:
        if value not in allowed:
            raise typer.BadParameter(f"unknown {kind} {value!r}; choose one of: {names(allowed)}")
        return value

    return parse


def number_list(kind: type, low: float | None = None, what: str = "values") -> Callable[[str], list]:
    """A typer parser of comma-separated numbers ("1,2,4"), each >= `low` when given."""
    from flowdiff.errors import InvalidInputError
    from flowdiff.registry import parse_list

    def parse(value: str) -> list:
        try:
            values = parse_list(value, kind, what)
        except InvalidInputError as error:
            raise typer.BadParameter(str(error)) from None
        if low is not None and any(not (v >= low) for v in values):
            raise typer.BadParameter(f"{what} must each be >= {low}, got {value!r}")
        return values

    return parse
