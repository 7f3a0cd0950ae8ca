"""Streaming data: the same tensors as the in-memory loader, world-size-independent order, exact mid-epoch resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import flowdiff as fd
from flowdiff.data.images import load_images
from flowdiff.data.streaming import GlobalBatchSampler, ImageFiles, NpyRows, StreamingData
from flowdiff.errors import InvalidInputError
from flowdiff.learning.models import MLP
from flowdiff.learning.training.trainer import Trainer
from flowdiff.runs.train import run_hooks


@pytest.fixture
def folder(tmp_path):
    """Two class folders of 10x12 RGB PNGs (7 and 5 images)."""
    rng = np.random.default_rng(0)
    for name, count in (("cat", 7), ("dog", 5)):
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(tmp_path / "images" / name /
                                                                                    f"{i}.png")
    return tmp_path / "images"


@pytest.mark.parametrize("size", [None, (8, 8)])
def test_image_files_decode_the_in_memory_tensors(folder, size):
    memory = load_images(folder, size=size)
    stream = ImageFiles(folder, size=size)
    assert len(stream) == len(memory) == 12 and stream.class_names == memory.class_names
    for i in range(len(stream)):
        image, label = stream[(i, False)]
        assert torch.equal(image, memory.images[i]) and label == int(memory.labels[i])
        flipped, _ = stream[(i, True)]
        assert torch.equal(flipped, image.flip(-1))


def test_npy_rows_are_memory_mapped_rows(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (9, 1, 4, 4), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    rows = NpyRows(tmp_path / "images.npy", labels=np.arange(9) % 3)
    assert isinstance(rows.array, np.memmap)
    x, y = rows[(4, False)]
    assert torch.equal(x, torch.from_numpy(images[4]).float() / 127.5 - 1.0) and y == 1
    with pytest.raises(InvalidInputError, match="shape \\(N, \\*shape\\)"):
        np.save(tmp_path / "flat.npy", np.zeros(3))
        NpyRows(tmp_path / "flat.npy")


def _read(sampler: GlobalBatchSampler, steps: int) -> list[list[tuple[int, bool]]]:
    items = iter(sampler)
    return [[next(items) for _ in range(sampler.local_batch)] for _ in range(steps)]


def test_two_ranks_read_the_single_process_global_batches_and_resume_mid_epoch():
    size, batch, steps = 23, 6, 9  # 3 batches per epoch (5 examples dropped each epoch): 3 epochs
    one = _read(GlobalBatchSampler(size, batch, seed=4, flip=True), steps)
    ranks = [_read(GlobalBatchSampler(size, batch, seed=4, rank=r, world_size=2, flip=True), steps) for r in (0, 1)]
    assert [a + b for a, b in zip(*ranks)] == one
    for epoch in range(3):  # each epoch reads distinct examples
        seen = [index for batch_ in one[3 * epoch:3 * epoch + 3] for index, _ in batch_]
        assert len(set(seen)) == 18
    assert [index for index, _ in one[0]] != [index for index, _ in one[3]]  # a new permutation per epoch
    assert {flip for batch_ in one for _, flip in batch_} == {False, True}
    assert _read(GlobalBatchSampler(size, batch, seed=4, start=4, flip=True), steps - 4) == one[4:]


def _trainer(folder, out, resume=False, workers=0):
    torch.manual_seed(0)
    stream = StreamingData(ImageFiles(folder, size=(4, 4)), global_batch=4, seed=1, workers=workers, flip=True)
    model = MLP(48, hidden=(16,), num_classes=2, time_dim=4)
    flat = _Flat(model)
    return Trainer(flat, fd.GaussianPath(), stream, steps=7, batch_size=4, warmup=1, lr=1e-2, log_every=1,
                   checkpoint_every=100, device="cpu", seed=2, hooks=run_hooks(out, resume=resume))


class _Flat(torch.nn.Module):
    """An MLP on flattened 3x4x4 images, conditioned on the label."""

    def __init__(self, mlp: torch.nn.Module) -> None:
        super().__init__()
        self.mlp, self.num_classes = mlp, mlp.num_classes

    def forward(self, x, t, **cond):
        return self.mlp(x.flatten(1), t, **cond).view_as(x)

    def config(self) -> dict:
        return {"name": "flat"}


def test_a_streamed_run_resumed_mid_epoch_is_bitwise_the_uninterrupted_one(folder, tmp_path):
    straight = _trainer(folder, tmp_path / "a").fit()
    first = _trainer(folder, tmp_path / "b")
    first.fit(until=4)  # 3 batches per epoch: stops in the second epoch
    resumed = _trainer(folder, tmp_path / "b", resume=True, workers=1)  # a worker process reads the same batches
    assert resumed.step == 4
    result = resumed.fit()
    for name, want in straight.model.state_dict().items():
        assert torch.equal(result.model.state_dict()[name], want), name
    assert [r["loss"] for r in result.history] == [r["loss"] for r in straight.history]
