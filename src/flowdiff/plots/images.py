"""Image grids and trajectory strips as PNG files (PIL), for images in [-1, 1].

`save_image_grid` tiles a batch; `save_image_strip` shows trajectories X_t from noise (t = 0)
to data (t = 1) as rows of frames; `save_labelled_rows` puts one labelled row per class or per
guidance scale, for reports.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from flowdiff.atomic import write_with
from flowdiff.data.images import to_uint8
from flowdiff.errors import InvalidInputError


def _as_images(images, name: str = "images") -> np.ndarray:
    """(N, C, H, W) uint8 from a tensor/array in [-1, 1]; (N, H, W) is read as one channel."""
    if isinstance(images, torch.Tensor):
        images = images.detach().float().cpu().numpy()
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or images.shape[1] not in (1, 3, 4):
        raise InvalidInputError(f"{name} must have shape (N, C, H, W) with C in 1, 3, 4, got {images.shape}")
    if images.shape[0] == 0:
        raise InvalidInputError(f"{name} is empty: nothing to draw")
    return to_uint8(images[:, :3])


def _auto_scale(height: int, width: int, target: int = 48) -> int:
    """An integer zoom so that tiny images (8x8) are drawn at least `target` pixels across."""
    return max(1, target // max(height, width))


def image_grid(images, nrow: int | None = None, padding: int = 2, scale: int | None = None) -> np.ndarray:
    """Tile images (N, C, H, W) in [-1, 1] into one (rows * H, nrow * W, C) uint8 array, nrow per row."""
    tiles = _as_images(images)
    count, channels, height, width = tiles.shape
    nrow = nrow or math.ceil(math.sqrt(count))
    if nrow < 1:
        raise InvalidInputError(f"nrow must be >= 1, got {nrow}")
    scale = scale or _auto_scale(height, width)
    if scale > 1:
        tiles = tiles.repeat(scale, axis=2).repeat(scale, axis=3)
        height, width = height * scale, width * scale
    rows = math.ceil(count / nrow)
    grid = np.full(
        (rows * (height + padding) + padding, nrow * (width + padding) + padding, channels), 255, np.uint8
    )
    for k in range(count):
        r, c = divmod(k, nrow)
        top, left = padding + r * (height + padding), padding + c * (width + padding)
        grid[top : top + height, left : left + width] = tiles[k].transpose(1, 2, 0)
    return grid


def _save_array(grid: np.ndarray, path: str | Path) -> Path:
    from PIL import Image

    picture = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    return write_with(path, lambda tmp: picture.save(tmp, format="PNG"))


def save_image_grid(images, path: str | Path, nrow: int | None = None, padding: int = 2,
                    scale: int | None = None) -> Path:
    """Save images (N, C, H, W) in [-1, 1] as one PNG grid with nrow images per row; returns the path."""
    return _save_array(image_grid(images, nrow, padding, scale), path)


def save_image_strip(states, path: str | Path, frames: int = 8, max_samples: int = 8,
                     scale: int | None = None) -> Path:
    """Save trajectories states (T, B, C, H, W) as strips: one row per sample, frames from noise to data.

    `frames` evenly spaced times are shown, always including the first (noise) and the last (data);
    values outside [-1, 1] (the noise) are clipped for display.
    """
    if isinstance(states, torch.Tensor):
        states = states.detach().float().cpu().numpy()
    states = np.asarray(states)
    if states.ndim != 5:
        raise InvalidInputError(f"states must have shape (T, B, C, H, W), got {states.shape}")
    steps = states.shape[0]
    if steps < 1 or frames < 1:
        raise InvalidInputError(f"need at least one time and one frame, got T={steps}, frames={frames}")
    index = np.unique(np.round(np.linspace(0, steps - 1, min(frames, steps))).astype(int))
    chosen = states[index, :max_samples]  # (frames, B, C, H, W)
    tiles = chosen.transpose(1, 0, 2, 3, 4).reshape(-1, *states.shape[2:])
    return save_image_grid(np.clip(tiles, -1.0, 1.0), path, nrow=len(index), scale=scale)


def save_labelled_rows(rows: Sequence, path: str | Path, row_labels: Sequence[str] | None = None,
                       title: str | None = None, scale: int | None = None, padding: int = 2) -> Path:
    """Save one row of images per entry of `rows` (each (n, C, H, W)), with a text label left of each row.

    For reports: one row per class ("3"), or per guidance scale ("w = 3").
    """
    from PIL import Image, ImageDraw

    if not rows:
        raise InvalidInputError("rows is empty: give at least one (n, C, H, W) batch")
    if row_labels is not None and len(row_labels) != len(rows):
        raise InvalidInputError(f"{len(row_labels)} row labels were given for {len(rows)} rows")
    arrays = [_as_images(r, "each row") for r in rows]
    channels = max(a.shape[1] for a in arrays)
    height, width = arrays[0].shape[2:]
    if any(a.shape[2:] != (height, width) for a in arrays):
        raise InvalidInputError("all rows must hold images of the same height and width")
    scale = scale or _auto_scale(height, width)
    strips = []
    for array in arrays:
        if array.shape[1] != channels:
            array = np.repeat(array, channels, axis=1)
        strips.append(image_grid(array.astype(np.float32) / 127.5 - 1.0, nrow=len(array),
                                 padding=padding, scale=scale))
    cell_h = height * scale + padding
    label_w = 0 if row_labels is None else 8 + 7 * max(len(str(s)) for s in row_labels)
    title_h = 0 if title is None else 16
    total_w = label_w + max(s.shape[1] for s in strips)
    canvas = Image.new("RGB", (total_w, title_h + sum(s.shape[0] - padding for s in strips) + padding),
                       "white")
    draw = ImageDraw.Draw(canvas)
    if title is not None:
        draw.text((4, 2), title, fill="black")
    top = title_h
    for k, strip in enumerate(strips):
        tile = Image.fromarray(strip[..., 0] if strip.shape[-1] == 1 else strip).convert("RGB")
        canvas.paste(tile, (label_w, top))
        if row_labels is not None:
            draw.text((4, top + max(0, cell_h // 2 - 6)), str(row_labels[k]), fill="black")
        top += strip.shape[0] - padding
    return write_with(path, lambda tmp: canvas.save(tmp, format="PNG"))
