"""`DataInfo`: a description of a data set — its kind, shape, labels and the scaling the network saw."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from flowdiff.errors import IncompatibleError, InvalidInputError


@dataclass
class DataInfo:
    """What a model was trained on: kind ("vectors"/"images"/"tokens"), shape of one sample, labels, scaling.

    Token data (integer sequences of shape (L,)) carry their vocabulary size, and for text the characters
    of the vocabulary (token k is vocabulary[k]).

    For standardised vector data, the network saw (x - mean) / std; `unstandardize` maps its
    samples back to the units of the data. Images are in [-1, 1].
    """

    kind: str = "vectors"
    shape: tuple[int, ...] = (2,)
    num_classes: int | None = None
    class_names: list[str] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    source: str = ""
    name: str = ""
    size: int = 0
    vocab_size: int | None = None
    vocabulary: list[str] | None = None

    def to_dict(self) -> dict:
        """A JSON-ready dictionary."""
        out = asdict(self)
        out["shape"] = list(self.shape)
        return out

    @classmethod
    def from_dict(cls, values: dict) -> DataInfo:
        """Rebuild from `to_dict` output (unknown keys are ignored)."""
        if not isinstance(values, dict):
            raise InvalidInputError(f"a data description must be a table of fields, got {type(values).__name__}")
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        try:
            if "shape" in known:
                known["shape"] = tuple(int(s) for s in known["shape"])
            if known.get("num_classes") is not None:
                known["num_classes"] = int(known["num_classes"])
            for key in ("mean", "std"):
                if known.get(key) is not None:
                    known[key] = [float(v) for v in known[key]]
        except (TypeError, ValueError) as error:
            raise InvalidInputError(f"the data description is malformed ({error}): {values}") from None
        kind = known.get("kind", "vectors")
        if not all(s >= 1 for s in known.get("shape", (1,))) or kind not in ("vectors", "images", "tokens"):
            raise InvalidInputError(f"the data description is malformed (kind or shape): {values}")
        return cls(**known)

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        """(x - mean) / std, or x unchanged when no standardisation was recorded."""
        if self.mean is None or self.std is None:
            return x
        mean = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device)
        std = torch.as_tensor(self.std, dtype=x.dtype, device=x.device)
        return (x - mean) / std

    def unstandardize(self, x: torch.Tensor) -> torch.Tensor:
        """mean + std * x: samples of the network back in the units of the data."""
        if self.mean is None or self.std is None:
            return x
        mean = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device)
        std = torch.as_tensor(self.std, dtype=x.dtype, device=x.device)
        return mean + std * x

    def label_index(self, label: str | int) -> int:
        """The class index of a label given by its name (first) or its index 0..K-1."""
        if self.num_classes is None:
            raise IncompatibleError("a label was given, but the model was trained without labels")
        names = self.class_names or [str(k) for k in range(self.num_classes)]
        text = str(label)
        if text in names:
            return names.index(text)
        try:
            index = int(text)
        except ValueError:
            index = -1
        if 0 <= index < self.num_classes:
            return index
        raise InvalidInputError(f"unknown label {label!r}; the model knows the labels {names}")
