"""Atomic file writes: every file flowdiff writes appears whole or not at all.

One policy for the edges (run directories, figures, reports, sample files): write to a hidden
temporary file in the same folder, flush it to disk, then `os.replace` it over the target. A
crash or an error at any moment leaves the previous file (if any) intact and no half-written
one; the temporary file is removed on failure.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on failure it is removed.

    `suffix` keeps the extension a writer needs to pick its format (".png", ".gif", ".npz").
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OSError(errno.ENOTDIR, "a file is in the way of its folder", str(path)) from None
    try:
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{suffix}")
    except OSError as error:
        raise OSError(error.errno, error.strerror, str(path)) from None
    os.close(handle)
    temporary = Path(name)
    os.chmod(temporary, 0o666 & ~current_umask())  # readable as any new file would be, not mkstemp's 0600
    try:
        yield temporary
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    except OSError as error:  # name the file the user asked for, not the temporary one
        temporary.unlink(missing_ok=True)
        raise OSError(error.errno, error.strerror, str(path)) from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def current_umask() -> int:
    """The process's file-mode creation mask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_with(path: str | Path, writer: Callable[[Path], object], suffix: str = "") -> Path:
    """Call `writer(temporary_path)` and move the result onto `path` atomically; return `path`."""
    with atomic_path(path, suffix) as temporary:
        writer(temporary)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    return write_with(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, value) -> Path:
    """Write `value` as indented JSON to `path` atomically."""
    return write_text(path, json.dumps(value, indent=2) + "\n")


def save_npz(path: str | Path, **arrays) -> Path:
    """`numpy.savez` of the arrays to `path` atomically."""
    import numpy as np

    def writer(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    return write_with(path, writer)


def save_figure(figure, path: str | Path, dpi: int = 110) -> Path:
    """A matplotlib figure as a PNG at `path`, atomically."""
    return write_with(path, lambda tmp: figure.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight"))
