"""Logging sinks beside metrics.jsonl (the record): TensorBoard, as a hook on the same log records."""

from __future__ import annotations

from pathlib import Path

from flowdiff.errors import InvalidInputError
from flowdiff.learning.training.hooks import Hook


class TensorBoard(Hook):
    """Write each numeric entry of every log record as a TensorBoard scalar under `log_dir`."""

    def __init__(self, log_dir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise InvalidInputError("logging to TensorBoard needs the tensorboard package: "
                                    "pip install 'flowdiff[tensorboard]'") from None
        self._writer_class, self.log_dir, self.writer = SummaryWriter, Path(log_dir), None

    def on_start(self, trainer, until: int) -> None:
        self.writer = self._writer_class(log_dir=str(self.log_dir), purge_step=trainer.step + 1)

    def on_log(self, trainer, record: dict) -> None:
        for name, value in record.items():
            if name != "step" and isinstance(value, int | float):
                self.writer.add_scalar(f"train/{name}", value, record["step"])

    def on_end(self, trainer, error: BaseException | None) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
