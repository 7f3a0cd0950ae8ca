"""Samples of a run as files: the labels asked for, and an .npz ("x", "y", "class_names") with a picture beside it.

The picture is a scatter plot for 2-D vectors and an image grid for images (none for other data);
every file is written atomically (`flowdiff.atomic`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from flowdiff.errors import InvalidInputError

ALL_LABELS = "all"
"""The label that asks for every class in turn."""


def labels_for(run, label: str | int | None, n: int) -> torch.Tensor | None:
    """The labels to sample with: None, n copies of one class (by name or index), or each class n times ("all")."""
    if label is None:
        return None
    if str(label) == ALL_LABELS:
        if run.num_classes is None:
            raise InvalidInputError(f"{run.directory} was trained without labels; it has no classes to sample")
        return torch.arange(run.num_classes).repeat_interleave(n)
    return torch.full((n,), run.data_info.label_index(label), dtype=torch.long)


def sample_files(run, out: str | Path) -> list[Path]:
    """The files `write_samples` writes: the .npz `out` and, for images and 2-D vectors, a .png beside it."""
    out = Path(out)
    if out.suffix != ".npz":
        raise InvalidInputError(f"samples are written to an .npz file, got {out}")
    info = run.data_info
    return [out, out.with_suffix(".png")] if info.kind == "images" or tuple(info.shape) == (2,) else [out]


def write_samples(run, x: torch.Tensor, y: torch.Tensor | None, out: str | Path,
                  per_row: int | None = None) -> list[Path]:
    """Write samples x (units of the data) with their labels y to `out` (.npz) and draw them; return the files.

    `per_row` is the number of images per row of an image grid (default: a square-ish grid).
    """
    from flowdiff import atomic

    files = sample_files(run, out)
    x = x.detach().cpu()
    arrays = {"x": x.numpy()}
    if y is not None:
        arrays["y"] = y.cpu().numpy()
        if run.data_info.class_names:
            arrays["class_names"] = np.asarray(run.data_info.class_names)
    written = [atomic.save_npz(files[0], **arrays)]
    if len(files) > 1 and run.data_info.kind == "images":
        from flowdiff.plots.images import save_image_grid

        written.append(save_image_grid(x.clamp(-1, 1), files[1], nrow=per_row))
    elif len(files) > 1:
        from flowdiff.plots.figures import scatter_panels

        written.append(scatter_panels({"samples": x}, files[1], labels=None if y is None else {"samples": y}))
    return written
