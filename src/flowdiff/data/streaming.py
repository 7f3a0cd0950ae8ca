"""Streaming training data: image folders and memory-mapped `.npy` files read batch by batch, never whole.

A `torch.utils.data` pipeline: a data set that decodes one example at a time (`ImageFiles`:
PIL decode, optional random horizontal flip, to a tensor in [-1, 1] as the in-memory loader
scales it; `NpyRows`: rows of a memory-mapped array), a `GlobalBatchSampler` that walks seeded
epoch permutations in global batches and gives each rank its share of every global batch, and
`StreamingData`, the trainer's data source over a `DataLoader` with worker processes.

The position in the data is a function of the step alone — epoch e = step // batches_per_epoch
uses the permutation seeded by (seed, e), and a step reads the next global batch of it — so a
resumed run continues mid-epoch with exactly the examples (and flips) it would have read, on
any number of ranks with the same global batch. Small data keeps the in-memory path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from flowdiff.data.images import _pil_to_array, _read_image, folder_files, from_uint8, is_grey, resize_images
from flowdiff.errors import InvalidInputError
from flowdiff.learning.training import distributed


class ImageFiles(Dataset):
    """The images of a folder, decoded one by one: item (index, flip) is ((C, H, W) in [-1, 1], label or -1).

    Colour (3 channels) or grey (1) is decided by the first image; `size` resizes (center crop +
    antialiased bilinear, as the in-memory loader does); flip=True mirrors the image left-right.
    """

    def __init__(self, folder: str | Path, size: tuple[int, int] | None = None) -> None:
        self.files, labels, self.class_names = folder_files(folder)
        self.labels = None if labels is None else torch.as_tensor(labels, dtype=torch.long)
        self.size = size
        self.color = not is_grey(_read_image(self.files[0]))

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item: tuple[int, bool]) -> tuple[torch.Tensor, int]:
        index, flip = item
        image = from_uint8(_pil_to_array(_read_image(self.files[index]), self.color))
        if self.size is not None:
            image = resize_images(image[None], self.size)[0]
        if flip:
            image = image.flip(-1)
        return image, -1 if self.labels is None else int(self.labels[index])

    def fingerprint(self) -> str:
        """A checksum of the file names, sizes and modification times (not of the pixels: that would read them all)."""
        digest = hashlib.blake2b(digest_size=12)
        for file in self.files:
            stat = file.stat()
            digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
        return digest.hexdigest()


class NpyRows(Dataset):
    """The rows of a `.npy` array (N, *shape), memory-mapped: only rows that are read are loaded.

    uint8 arrays are images scaled from 0..255 to [-1, 1]; other numbers are taken as they are
    (float32). flip=True mirrors the last axis (images only). Labels: an optional (N,) array.
    """

    def __init__(self, file: str | Path, labels: np.ndarray | None = None) -> None:
        try:
            self.array = np.load(file, mmap_mode="r")
        except (OSError, ValueError) as error:
            raise InvalidInputError(f"cannot memory-map {file}: {error}") from None
        if self.array.ndim < 2 or self.array.shape[0] < 1:
            raise InvalidInputError(f"{file} must hold an array of shape (N, *shape), got {self.array.shape}")
        self.file = Path(file)
        self.labels = None if labels is None else torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self.class_names = None

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def __getitem__(self, item: tuple[int, bool]) -> tuple[torch.Tensor, int]:
        index, flip = item
        row = np.array(self.array[index])
        x = from_uint8(row) if row.dtype == np.uint8 else torch.from_numpy(row.astype(np.float32))
        if flip:
            x = x.flip(-1)
        return x, -1 if self.labels is None else int(self.labels[index])

    def fingerprint(self) -> str:
        """A checksum of the file's size, modification time and shape."""
        stat = self.file.stat()
        return hashlib.blake2b(f"{stat.st_size}:{stat.st_mtime_ns}:{self.array.shape}".encode(),
                               digest_size=12).hexdigest()


def epoch_order(size: int, seed: int, epoch: int, flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The permutation of epoch `epoch` and its flip bits, drawn by a generator seeded by (seed, epoch)."""
    generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    order = torch.randperm(size, generator=generator)
    flips = torch.rand(size, generator=generator) < 0.5 if flip else torch.zeros(size, dtype=torch.bool)
    return order, flips


class GlobalBatchSampler(Sampler):
    """(index, flip) of this rank's share of every global batch, from step `start` on, without end.

    Step k reads global batch k mod batches_per_epoch of epoch k // batches_per_epoch (the last
    incomplete batch of an epoch is dropped); rank r keeps its rows [r b, (r + 1) b), b =
    global_batch / world_size. One process (world_size 1) reads the whole global batch.
    """

    def __init__(self, size: int, global_batch: int, seed: int, rank: int = 0, world_size: int = 1,
                 start: int = 0, flip: bool = False) -> None:
        if global_batch > size:
            raise InvalidInputError(f"the batch of {global_batch} is larger than the {size} examples of the data")
        if global_batch % world_size:
            raise InvalidInputError(f"the global batch {global_batch} does not split evenly over {world_size} ranks")
        self.size, self.global_batch, self.seed, self.flip = size, global_batch, seed, flip
        self.rank, self.local_batch, self.start = rank, global_batch // world_size, start
        self.batches_per_epoch = size // global_batch

    def __iter__(self) -> Iterator[tuple[int, bool]]:
        step, epoch, order = self.start, None, None
        while True:
            if step // self.batches_per_epoch != epoch:
                epoch = step // self.batches_per_epoch
                order, flips = epoch_order(self.size, self.seed, epoch, self.flip)
            first = (step % self.batches_per_epoch) * self.global_batch + self.rank * self.local_batch
            for position in range(first, first + self.local_batch):
                yield int(order[position]), bool(flips[position])
            step += 1


class StreamingData:
    """A trainer's data source streaming from a data set (`ImageFiles`, `NpyRows`) with `workers` processes.

    `batch(size, generator)` returns the next local batch (the generator is not used: the order
    comes from (seed, epoch), the position from the step); the trainer calls `seek(step)` when a
    run starts or resumes.
    """

    def __init__(self, dataset: Dataset, global_batch: int, seed: int = 0, workers: int = 0, flip: bool = False,
                 device: torch.device | str = "cpu") -> None:
        self.dataset, self.global_batch, self.seed = dataset, int(global_batch), int(seed)
        self.workers, self.flip, self.device = int(workers), bool(flip), torch.device(device)
        self.labelled = getattr(dataset, "labels", None) is not None
        self._batches: Iterator | None = None
        self.shape = tuple(dataset[(0, False)][0].shape)

    def __len__(self) -> int:
        return len(self.dataset)

    def seek(self, step: int) -> None:
        """Read from global batch `step` on (this rank's share of it)."""
        sampler = GlobalBatchSampler(len(self.dataset), self.global_batch, self.seed, distributed.rank(),
                                     distributed.world_size(), start=step, flip=self.flip)
        loader = DataLoader(self.dataset, batch_size=sampler.local_batch, sampler=sampler, num_workers=self.workers,
                            persistent_workers=False, pin_memory=self.device.type == "cuda")
        self._batches = iter(loader)

    def batch(self, size: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The next (x1, y) of this rank; `size` must be this rank's share of the global batch."""
        if self._batches is None:
            self.seek(0)
        x, y = next(self._batches)
        if x.shape[0] != size:
            raise InvalidInputError(f"the stream reads batches of {x.shape[0]}, but {size} were asked for; build it "
                                    "with the run's global batch")
        return x.to(self.device, non_blocking=True), (y.to(self.device) if self.labelled else None)

    def examples(self, k: int = 2) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The first k examples (for the trainer's memory probe), without flips."""
        items = [self.dataset[(i, False)] for i in range(min(k, len(self.dataset)))]
        x = torch.stack([item[0] for item in items]).to(self.device)
        y = torch.tensor([item[1] for item in items], device=self.device) if self.labelled else None
        return x, y

    def checksum(self) -> str:
        """The data set's fingerprint (file names, sizes, times), so that a run is resumed on the same data."""
        return self.dataset.fingerprint()
