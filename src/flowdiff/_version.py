"""The version of flowdiff (one place; the package face and run directories read it)."""

__version__ = "0.1.0"
