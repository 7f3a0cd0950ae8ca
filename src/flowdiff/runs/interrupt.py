"""`StopOnInterrupt`: a first Ctrl-C or SIGTERM finishes the step, checkpoints and stops; a second stops at once."""

from __future__ import annotations

import signal
import threading

from flowdiff.learning.training.hooks import Hook


class StopOnInterrupt(Hook):
    """While `fit` runs, SIGINT (Ctrl-C) and SIGTERM (what schedulers send) ask the trainer to stop after the
    current step; the previous handlers come back at once, so a second signal interrupts immediately."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self._previous: dict = {}

    def on_start(self, trainer, until: int) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be installed from the main thread
        self._previous = {number: signal.getsignal(number) for number in self.SIGNALS}

        def handler(signum, frame):
            trainer.stop_requested = True
            self._restore()

        for number in self.SIGNALS:
            signal.signal(number, handler)

    def _restore(self) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous = {}

    def on_end(self, trainer, error: BaseException | None) -> None:
        self._restore()
