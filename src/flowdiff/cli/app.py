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
    "flowdiff.cli.reflow_cmd",
    "flowdiff.cli.distill_cmd",
    "flowdiff.cli.autoencoder_cmd",
]
"""Modules that each define `register(app)` adding their subcommands."""

for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


def fail(message: str) -> None:
    """Print `error: message` on stderr and exit with status 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _usage_error(error: Exception) -> bool:
    """True for the command-line parser's own errors (unknown option, bad value, missing argument)."""
    return hasattr(error, "format_message") and getattr(error, "exit_code", None) == 2


def _out_of_memory(error: RuntimeError) -> bool:
    """True for PyTorch's allocation failures on the CPU or a GPU."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(error, getattr(torch, "OutOfMemoryError", ())):
        return True
    return "can't allocate memory" in str(error) or "out of memory" in str(error)


def main(argv: list[str] | None = None) -> None:
    """Run the command line: usage and library errors become one line `error: ...` and exit status 2."""
    if argv is None:
        argv = sys.argv[1:]
    if not argv:
        argv = ["--help"]
    try:
        status = app(args=argv, prog_name="flowdiff", standalone_mode=False)
    except FlowdiffError as error:
        fail(str(error))
    except OSError as error:  # a path that cannot be read or written: say which and why
        fail(f"{error.filename}: {error.strerror}" if error.filename else str(error))
    except MemoryError:
        fail("out of memory; use a smaller --n, --batch or image size")
    except RuntimeError as error:  # the allocator's own failure, past the up-front estimates
        if not _out_of_memory(error):
            raise
        fail(f"out of memory ({str(error).splitlines()[0][:160]}); use a smaller --n, --batch or image size")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as error:
        if not _usage_error(error):
            raise
        fail(f"{error.format_message()} (try --help)")
    if isinstance(status, int) and status:
        raise SystemExit(status)
