"""One way to turn a name (or a config dict) into an object: solvers, schedules, couplings, models."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from flowdiff.errors import InvalidInputError


def lookup(registry: Mapping[str, Callable], name, kind: str) -> Callable:
    """The entry registered under `name`, or an error listing the names of this `kind`."""
    if not isinstance(name, str) or name not in registry:
        raise InvalidInputError(f"unknown {kind} {name!r}; choose one of: {', '.join(registry)}")
    return registry[name]


def build(registry: Mapping[str, Callable], spec, kind: str, base: type | None = None, **kwargs):
    """An object from itself (an instance of `base`), its registered name, or its config dict.

    A config dict is {"name": <registered name>, **keyword arguments}; extra `kwargs` override it.
    """
    if base is not None and isinstance(spec, base):
        return spec
    if isinstance(spec, dict):
        kwargs = {k: v for k, v in spec.items() if k != "name"} | kwargs
        spec = spec.get("name")
    factory = lookup(registry, spec, kind)
    try:
        return factory(**kwargs)
    except TypeError as error:
        raise InvalidInputError(f"bad arguments for {kind} {spec!r}: {error}") from None


def parse_list(text: str, kind: type, what: str) -> list:
    """"1,2,4" -> [1, 2, 4], each entry converted by `kind`; an error names `what` when malformed."""
    parts = [part for part in str(text).replace(" ", "").split(",") if part]
    try:
        values = [kind(part) for part in parts]
    except ValueError:
        values = []
    if not values:
        raise InvalidInputError(f"{what} must be a comma-separated list of {kind.__name__}s, got {text!r}")
    return values
