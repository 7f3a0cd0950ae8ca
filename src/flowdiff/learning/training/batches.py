"""`InMemoryData`: training examples held in memory, checked once, drawn as minibatches by index."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from flowdiff.errors import IncompatibleError, InvalidInputError
from flowdiff.learning.training.distributed import current_shard


def as_tensor(data, name: str) -> torch.Tensor:
    """A torch tensor from a tensor or a numpy array (anything else is refused by name)."""
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(np.ascontiguousarray(data))
    if not isinstance(data, torch.Tensor):
        raise IncompatibleError(f"{name} must be a torch.Tensor or numpy array, got {type(data).__name__}")
    return data


def check_labels_for(model, labels: torch.Tensor, size: int) -> torch.Tensor:
    """Labels of shape (size,) as class indices 0..K-1 of the model's label embedding."""
    if labels.shape != (size,):
        raise InvalidInputError(f"labels must have shape ({size},) to match the data, got {tuple(labels.shape)}")
    if torch.is_floating_point(labels) and not bool((labels == labels.round()).all()):
        raise InvalidInputError("labels must be integers (class indices 0..K-1)")
    labels = labels.long()
    num_classes = getattr(model, "num_classes", None)
    if num_classes is None:
        raise IncompatibleError("labels were given, but the model has no label embedding; build it with "
                                "num_classes=K")
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise InvalidInputError(
            f"labels must lie in 0..{num_classes - 1} for a model with num_classes={num_classes}, "
            f"got values from {int(labels.min())} to {int(labels.max())}"
        )
    return labels


def data_source(data, labels, model, device: torch.device):
    """The trainer's data: a streaming source as it is (it has `seek`), else the arrays held in memory."""
    if hasattr(data, "seek") and hasattr(data, "batch"):
        if labels is not None:
            raise InvalidInputError("a streaming data source brings its own labels; give no separate labels")
        data.device = device
        return data
    return InMemoryData(data, labels, model, device)


class InMemoryData:
    """Data x (N, *shape) and labels (N,) or None on the training device; minibatches drawn with replacement."""

    def __init__(self, data, labels, model, device: torch.device) -> None:
        if data is None:
            raise InvalidInputError("training needs data: a tensor of shape (N, *shape)")
        x = as_tensor(data, "data")
        if x.ndim < 2 or x.shape[0] < 1:
            raise InvalidInputError(f"data must have shape (N, *shape) with N >= 1, got {tuple(x.shape)}")
        if not torch.is_floating_point(x) and not getattr(model, "discrete", False):  # tokens stay integers
            x = x.float()
        if not bool(torch.isfinite(x).all()):
            raise InvalidInputError("data contains NaN or inf values; clean or drop those rows first")
        y = None if labels is None else check_labels_for(model, as_tensor(labels, "labels"), x.shape[0])
        self.x = x.to(device)
        self.y = None if y is None else y.to(device)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def labelled(self) -> bool:
        """True when the data carries labels."""
        return self.y is not None

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one example."""
        return tuple(self.x.shape[1:])

    def examples(self, k: int = 2) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The first k examples and their labels (for the memory probe)."""
        return self.x[:k], None if self.y is None else self.y[:k]

    def batch(self, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A minibatch (x1, y) of `size` examples drawn uniformly with replacement by `generator`.

        Under a `Shard`, `size` is this rank's share: the global batch's indices are drawn and this
        rank's slice kept (the same examples as one process drawing the global batch).
        """
        shard = current_shard()
        world = 1 if shard is None else shard.world_size
        index = torch.randint(len(self), (size * world,), generator=generator, device=self.x.device)
        if shard is not None:
            index = shard.local(index, size)
        return self.x[index], None if self.y is None else self.y[index]

    def checksum(self) -> str:
        """A fingerprint of the data and labels, so that a run is resumed on the same data."""
        return fingerprint(self.x, self.y)


def fingerprint(x: torch.Tensor, y: torch.Tensor | None) -> str:
    """A checksum (BLAKE2b, 96 bits) of training data and labels, their shapes included."""
    digest = hashlib.blake2b(digest_size=12)
    for tensor in (x, y):
        if tensor is not None:
            array = np.ascontiguousarray(tensor.detach().cpu().numpy())
            digest.update(str(array.shape).encode())
            digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()
