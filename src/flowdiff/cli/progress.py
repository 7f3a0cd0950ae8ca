"""Progress on the terminal (rich): one bar factory for every command, and the training-progress hook."""

from __future__ import annotations

from flowdiff.learning.training.hooks import Hook


def progress_bar(*fields: str, transient: bool = True, disable: bool = False):
    """A rich `Progress` on stderr: description, bar, done/total, the given `{task.fields[...]}` texts, time.

    A transient bar is shown on a terminal only (elsewhere it would leave nothing but a stray newline).
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               *(TextColumn(text) for text in fields), TimeElapsedColumn()]
    return Progress(*columns, console=console, transient=transient,
                    disable=disable or (transient and not console.is_terminal))


class TrainingProgress(Hook):
    """A progress bar of the training steps with the last logged loss and speed."""

    main_only = True  # one bar, from rank 0, under torchrun

    def __init__(self) -> None:
        self.bar = self.task = None

    def on_start(self, trainer, until: int) -> None:
        self.bar = progress_bar("loss {task.fields[loss]:.4f}", "{task.fields[rate]:.0f} steps/s", transient=False)
        self.task = self.bar.add_task("training", total=trainer.steps, completed=trainer.step, loss=float("nan"),
                                      rate=0.0)
        self.bar.start()

    def on_step(self, trainer) -> None:
        if trainer.step % 10 == 0:
            self.bar.update(self.task, completed=trainer.step)

    def on_log(self, trainer, record: dict) -> None:
        self.bar.update(self.task, completed=record["step"], loss=record["loss"], rate=record["steps_per_s"])

    def on_end(self, trainer, error: BaseException | None) -> None:
        if self.bar is not None:
            self.bar.stop()
