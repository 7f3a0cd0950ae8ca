"""`RunLock`: one writer per run directory, recorded in `<run>/.lock` with the owner's pid and host.

The lock file is created exclusively (`O_CREAT | O_EXCL`), so of two processes starting at once
exactly one gets it. A second writer is refused with the owner's pid, host and start time. A lock
left by a process that is gone (same host, pid no longer running) is taken over, with a message.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

from flowdiff.errors import InvalidInputError

LOCK_FILE = ".lock"


class RunLockedError(InvalidInputError):
    """The run directory is being written by another live process."""


_HELD: set[Path] = set()
"""Run directories whose lock this process holds (a second writer in the same process is refused too)."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


class RunLock:
    """The write lock of one run directory: `acquire()` before writing, `release()` when done."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory).resolve()
        self.file = self.directory / LOCK_FILE
        self.held = False

    def acquire(self) -> None:
        """Take the lock, taking over a stale one; raise RunLockedError if a live writer holds it."""
        if self.held:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        for _ in range(2):  # at most one stale lock to take over
            try:
                handle = os.open(self.file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._refuse_or_take_over()
                continue
            with os.fdopen(handle, "w") as out:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}, out)
            self.held = True
            _HELD.add(self.directory)
            return
        raise RunLockedError(f"{self.directory} is locked by another writer that keeps re-creating {self.file}")

    def _refuse_or_take_over(self) -> None:
        owner = self.owner()
        pid, host = owner.get("pid"), owner.get("host")
        mine = pid == os.getpid() and host == socket.gethostname()
        if isinstance(pid, int) and host == socket.gethostname() and not mine and not _alive(pid):
            logging.getLogger("flowdiff").warning("taking over the lock of %s from process %d, which is gone",
                                                  self.directory, pid)
        elif mine and self.directory not in _HELD:
            pass  # left by this very process (a lock never released): ours to take
        elif not owner and time.time() - self._age_reference() < 10:
            raise RunLockedError(f"run directory {self.directory} is being locked by another writer right now "
                                 f"({self.file} is not written yet); try again in a moment")
        elif owner:
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("started", 0)))
            raise RunLockedError(f"run directory {self.directory} is being written by process {pid} on {host} "
                                 f"(since {since}); wait for it to finish, or delete {self.file} if that process "
                                 "is gone")
        self.file.unlink(missing_ok=True)

    def _age_reference(self) -> float:
        try:
            return self.file.stat().st_mtime
        except OSError:
            return 0.0

    def owner(self) -> dict:
        """The pid, host and start time recorded in the lock file ({} when unreadable)."""
        try:
            owner = json.loads(self.file.read_text())
        except (OSError, ValueError, UnicodeDecodeError):
            return {}
        return owner if isinstance(owner, dict) else {}

    def release(self) -> None:
        """Give the lock back (a no-op when not held)."""
        if self.held:
            self.file.unlink(missing_ok=True)
            _HELD.discard(self.directory)
            self.held = False
