"""The `flowdiff` command line: subcommands live in their own modules and register here.

Errors of the library (`FlowdiffError`) and of the command line become one line on
stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import importlib
import sys

import typer

from flowdiff.errors import FlowdiffError

app = typer.Typer(
    name="flowdiff",
    help="Flow and diffusion generative models: simulate, train, sample, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

COMMAND_MODULES = [
    "flowdiff.cli.simulate_cmd",
    "flowdiff.cli.train_cmd",
    "flowdiff.cli.sample_cmd",
    "flowdiff.cli.demo_cmd",
    "flowdiff.cli.eval_cmd",
    "flowdiff.cli.report_cmd",
]
"""Modules that each define `register(app)` adding their subcommands."""

for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


def fail(message: str) -> None:
    """Print `error: message` on stderr and exit with status 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> None:
    """Run the command line; library errors become one line and exit status 2.

    Usage errors (unknown option, bad value) are reported by typer itself with status 2.
    """
    try:
        app(args=argv, prog_name="flowdiff")
    except (FlowdiffError, FileNotFoundError, IsADirectoryError, PermissionError) as error:
        fail(str(error))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
