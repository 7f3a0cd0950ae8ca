"""Errors that flowdiff raises for bad input: each message says what was wrong and what is right."""

from __future__ import annotations


class FlowdiffError(Exception):
    """Base class of the errors that the CLI reports in one line with exit status 2."""


class InvalidInputError(FlowdiffError, ValueError):
    """A value is out of range or malformed (a NaN, a negative sigma, a non-monotone grid)."""


class IncompatibleError(FlowdiffError, TypeError):
    """Two things cannot work together (an ODE solver given an SDE, a missing label)."""

