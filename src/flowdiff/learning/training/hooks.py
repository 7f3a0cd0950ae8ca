"""Hooks: what the edges attach to the training loop (run directories, progress bars, signals, sinks).

The loop calls each hook at fixed moments; a hook reads the trainer (its `state`, `config`,
`history`) and may ask it to stop by setting `trainer.stop_requested`. The loop itself knows
no files, terminals or signals.
"""

from __future__ import annotations


class Hook:
    """Base class: every method is a no-op; override the moments you need.

    In a process group every rank calls its hooks, except those with `main_only = True`
    (progress bars, sinks), which only rank 0 attaches.
    """

    main_only = False

    def attach(self, trainer) -> None:
        """Called once when the trainer is built (a run directory restores a checkpoint here)."""

    def on_start(self, trainer, until: int) -> None:
        """Called when `fit` starts, before the first step; training goes on up to step `until`."""

    def on_step(self, trainer) -> None:
        """Called after every optimisation step (`trainer.state.step` has been advanced)."""

    def on_log(self, trainer, record: dict) -> None:
        """Called with each metrics record (every `log_every` steps and at the last step)."""

    def on_end(self, trainer, error: BaseException | None) -> None:
        """Called when `fit` stops: at `until` or on a stop request (error None), or as cleanup on an error."""
