"""`StopOnInterrupt`: the first Ctrl-C finishes the step, checkpoints and stops; a second one stops at once."""

from __future__ import annotations

import signal
import threading

from flowdiff.learning.training.hooks import Hook


class StopOnInterrupt(Hook):
    """While `fit` runs, SIGINT asks the trainer to stop after the current step (the previous handler
    comes back at once, so a second Ctrl-C interrupts immediately, and for good when `fit` ends)."""

    def __init__(self) -> None:
        self._previous = None

    def on_start(self, trainer, until: int) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be installed from the main thread
        self._previous = previous = signal.getsignal(signal.SIGINT)

        def handler(signum, frame):
            trainer.stop_requested = True
            signal.signal(signal.SIGINT, previous)

        signal.signal(signal.SIGINT, handler)

    def on_end(self, trainer, error: BaseException | None) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
