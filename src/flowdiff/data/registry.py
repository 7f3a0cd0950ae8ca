"""`load_dataset(spec)`: one entry point from a data set's name or file to tensors in memory.

A spec is a built-in 2-D toy set ("moons", ...), an image set ("digits", "mnist", a folder
of images, an .npz with an "images" array), or a file of vectors (.npy, .npz, .csv).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from flowdiff.data.files import VECTOR_SUFFIXES, Standardization, load_vectors
from flowdiff.data.info import DataInfo
from flowdiff.errors import InvalidInputError

DEFAULT_TOY_SIZE = 50_000
"""Number of points drawn from a toy set when n is not given."""


@dataclass
class Dataset:
    """Data in memory: x (N, *shape) float32, labels y (N,) long or None, and its `DataInfo`.

    `kind` is "vectors" or "images"; for standardised vectors `x` is already standardised
    and `info` holds the mean and std that map samples back.
    """

    x: torch.Tensor
    y: torch.Tensor | None
    num_classes: int | None
    kind: str
    info: DataInfo

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def without_labels(self) -> Dataset:
        """The same data, unlabelled (for unconditional training)."""
        info = DataInfo.from_dict({**self.info.to_dict(), "num_classes": None, "class_names": None})
        return Dataset(self.x, None, None, self.kind, info)


def builtin_names() -> list[str]:
    """Names of the built-in data sets: the toy 2-D sets and the image sets."""
    from flowdiff.data.images import BUILTIN_IMAGE_SETS
    from flowdiff.data.toy2d import TOY_DATASETS

    return [*TOY_DATASETS, *BUILTIN_IMAGE_SETS]


def _subset(n: int | None, total: int, generator: torch.Generator | None) -> torch.Tensor | None:
    if n is None or n >= total:
        return None
    if n < 1:
        raise InvalidInputError(f"n must be a positive number of data points, got {n}")
    return torch.randperm(total, generator=generator)[:n]


def _toy(name: str, n: int | None, generator: torch.Generator | None) -> Dataset:
    from flowdiff.data.toy2d import sample_toy

    toy = sample_toy(name, DEFAULT_TOY_SIZE if n is None else n, generator)
    info = DataInfo(kind="vectors", shape=(2,), num_classes=toy.num_classes, source="toy", name=name,
                    size=int(toy.x.shape[0]))
    return Dataset(toy.x, toy.y, toy.num_classes, "vectors", info)


def _images(spec: str, n: int | None, generator: torch.Generator | None, image_size) -> Dataset:
    from flowdiff.data.images import load_images

    data = load_images(spec, size=image_size)
    images, labels = data.images, data.labels
    keep = _subset(n, len(data), generator)
    if keep is not None:
        images = images[keep]
        labels = labels[keep] if labels is not None else None
    info = DataInfo(kind="images", shape=tuple(int(s) for s in images.shape[1:]),
                    num_classes=data.num_classes, class_names=data.class_names, source="images",
                    name=str(spec), size=int(images.shape[0]))
    return Dataset(images.contiguous(), labels, data.num_classes, "images", info)


def _file(spec: str, n, generator, label_column, standardize) -> Dataset:
    data = load_vectors(spec, label_column=label_column)
    x, y = data.x, data.y
    keep = _subset(n, x.shape[0], generator)
    if keep is not None:
        x = x[keep.numpy()]
        y = y[keep.numpy()] if y is not None else None
    mean = std = None
    if standardize is None or standardize:
        scaling = Standardization.fit(x)
        x = scaling.apply(x)
        mean, std = scaling.mean.tolist(), scaling.std.tolist()
    info = DataInfo(kind="vectors", shape=(int(x.shape[1]),), num_classes=data.num_classes,
                    class_names=data.class_names, mean=mean, std=std, source="file",
                    name=str(Path(spec).expanduser().resolve()), size=int(x.shape[0]))
    tensor = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    labels = torch.from_numpy(y) if y is not None else None
    return Dataset(tensor, labels, data.num_classes, "vectors", info)


def load_dataset(
    spec: str | Path,
    n: int | None = None,
    generator: torch.Generator | None = None,
    label_column: str | None = None,
    standardize: bool | None = None,
    image_size: int | tuple[int, int] | None = None,
) -> Dataset:
    """Load a built-in toy set, an image set or a vector file as a `Dataset` (n points at most).

    `standardize` (files only; default True) maps every coordinate to mean 0, std 1 and records
    the mean and std so that samples can be mapped back. Toy sets draw n fresh points.
    """
    from flowdiff.data.images import is_image_spec
    from flowdiff.data.toy2d import TOY_DATASETS

    text = str(spec)
    if image_size is not None and not is_image_spec(text):
        raise InvalidInputError(f"an image size applies to image sets, and {text!r} is not one")
    if text in TOY_DATASETS:
        if standardize:
            raise InvalidInputError("standardize applies to data files; the toy sets are already scaled")
        if label_column is not None:
            raise InvalidInputError(f"a label column applies to data files; the toy set {text!r} brings its own labels")
        return _toy(text, n, generator)
    path = Path(text).expanduser()
    suffix = path.suffix.lower()
    if suffix in VECTOR_SUFFIXES and not path.exists():
        raise InvalidInputError(f"data file {path} does not exist")
    if is_image_spec(text):
        if label_column is not None or standardize:
            raise InvalidInputError("a label column and standardization apply to vector files, not image sets")
        return _images(text, n, generator, image_size)
    if suffix in VECTOR_SUFFIXES:
        return _file(text, n, generator, label_column, standardize)
    if path.exists():
        raise InvalidInputError(
            f"{path}: unsupported data file; use a vector file ({', '.join(VECTOR_SUFFIXES)}), "
            "an image folder or an .npz with an 'images' array"
        )
    raise InvalidInputError(
        f"unknown data set {text!r}: give a built-in name ({', '.join(builtin_names())}) "
        f"or a file ({', '.join(VECTOR_SUFFIXES)}, an image folder)"
    )
