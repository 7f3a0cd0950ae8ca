"""Figures of a trained 2-D model: loss curve, data vs samples, trajectories, the vector field at several t.

Each function draws with matplotlib's Agg backend (no display needed), writes a PNG and
returns its path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

POINT_STYLE = {"s": 2.0, "alpha": 0.5, "linewidths": 0}


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: str | Path) -> Path:
    from flowdiff.atomic import save_figure

    figure.tight_layout()
    return save_figure(figure, path, dpi=figure.dpi)


def _numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def plot_limits(*point_sets, margin: float = 0.1, quantile: float = 0.995) -> tuple[float, ...]:
    """Square-ish bounds (xmin, xmax, ymin, ymax) holding the central `quantile` of the given 2-D points."""
    points = np.concatenate([_numpy(p)[:, :2] for p in point_sets])
    low = np.quantile(points, 1 - quantile, axis=0)
    high = np.quantile(points, quantile, axis=0)
    pad = margin * (high - low).max()
    return float(low[0] - pad), float(high[0] + pad), float(low[1] - pad), float(high[1] + pad)


def loss_curve(history: Sequence[dict], path: str | Path, title: str = "training loss") -> Path:
    """Loss (log scale) against training step, from the records of metrics.jsonl."""
    figure = _figure(5.5, 3.4)
    axes = figure.add_subplot()
    steps = [r["step"] for r in history]
    losses = [r["loss"] for r in history]
    axes.plot(steps, losses, color="tab:blue", lw=1.5)
    if losses and min(losses) > 0:
        axes.set_yscale("log")
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    return _save(figure, path)


def scatter_panels(panels: dict[str, object], path: str | Path, labels: dict[str, object] | None = None,
                   limits=None) -> Path:
    """Side-by-side scatter plots of 2-D point sets (e.g. data, ODE samples, SDE samples), same axes."""
    labels = labels or {}
    names = list(panels)
    limits = limits or plot_limits(*panels.values())
    figure = _figure(3.3 * len(names), 3.4)
    for k, name in enumerate(names):
        axes = figure.add_subplot(1, len(names), k + 1)
        x = _numpy(panels[name])
        colour = labels.get(name)
        if colour is not None:
            axes.scatter(x[:, 0], x[:, 1], c=_numpy(colour), cmap="tab10", vmin=0, vmax=9, **POINT_STYLE)
        else:
            axes.scatter(x[:, 0], x[:, 1], color="tab:blue", **POINT_STYLE)
        axes.set_xlim(limits[0], limits[1])
        axes.set_ylim(limits[2], limits[3])
        axes.set_aspect("equal", adjustable="box")
        axes.set_title(f"{name} (n={len(x)})", fontsize=10)
    return _save(figure, path)


def trajectories(states, path: str | Path, data=None, max_paths: int = 300, title: str | None = None) -> Path:
    """Paths X_t from noise (t=0, grey) to samples (t=1, red) over the data (light blue)."""
    states = _numpy(states)[:, :max_paths, :2]  # (times, paths, 2)
    figure = _figure(4.6, 4.4)
    axes = figure.add_subplot()
    if data is not None:
        d = _numpy(data)
        axes.scatter(d[:, 0], d[:, 1], color="tab:blue", s=2, alpha=0.15, linewidths=0)
    for k in range(states.shape[1]):
        axes.plot(states[:, k, 0], states[:, k, 1], color="black", lw=0.4, alpha=0.35)
    axes.scatter(states[0, :, 0], states[0, :, 1], color="grey", s=5, label="X_0 (noise)")
    axes.scatter(states[-1, :, 0], states[-1, :, 1], color="tab:red", s=5, label="X_1 (sample)")
    limits = plot_limits(states.reshape(-1, 2), *( [] if data is None else [data]))
    axes.set_xlim(limits[0], limits[1])
    axes.set_ylim(limits[2], limits[3])
    axes.set_aspect("equal", adjustable="box")
    axes.legend(loc="upper right", fontsize=8, markerscale=2)
    axes.set_title(title or "trajectories from noise to data", fontsize=10)
    return _save(figure, path)


def vector_field(field: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], path: str | Path,
                 times: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0), limits=None, grid: int = 17,
                 samples: Sequence | None = None) -> Path:
    """Arrows of u_t(x) on a grid of x at several t (one panel per t), over samples of X_t when given.

    `field(x, t)` takes x (m, 2) and a 0-d t; `samples[k]` (optional) are points of X_{times[k]}.
    """
    limits = limits or (-3.0, 3.0, -3.0, 3.0)
    xs = np.linspace(limits[0], limits[1], grid)
    ys = np.linspace(limits[2], limits[3], grid)
    gx, gy = np.meshgrid(xs, ys)
    points = torch.tensor(np.stack([gx.ravel(), gy.ravel()], axis=1), dtype=torch.float32)
    figure = _figure(3.0 * len(times), 3.2)
    for k, t in enumerate(times):
        axes = figure.add_subplot(1, len(times), k + 1)
        if samples is not None:
            s = _numpy(samples[k])
            axes.scatter(s[:, 0], s[:, 1], color="tab:red", s=3, alpha=0.35, linewidths=0)
        with torch.no_grad():
            u = _numpy(field(points, torch.tensor(float(t))))
        speed = np.linalg.norm(u, axis=1)
        axes.quiver(gx.ravel(), gy.ravel(), u[:, 0], u[:, 1], speed, cmap="viridis", angles="xy",
                    pivot="mid", width=0.006)
        axes.set_xlim(limits[0], limits[1])
        axes.set_ylim(limits[2], limits[3])
        axes.set_aspect("equal", adjustable="box")
        axes.set_title(f"u_t(x) at t = {t:g}", fontsize=10)
        axes.set_xticks([])
        axes.set_yticks([])
    return _save(figure, path)


def quality_curve(steps: Sequence[int], curves: dict[str, Sequence[float]], baseline: float | None,
                  path: str | Path, metric: str = "distance") -> Path:
    """Sample distance to held-out data against the number of steps, one line per sampler."""
    figure = _figure(5.0, 3.4)
    axes = figure.add_subplot()
    for name, values in curves.items():
        axes.plot(steps, values, marker="o", lw=1.5, label=name)
    if baseline is not None:
        axes.axhline(baseline, color="grey", ls="--", lw=1, label="two data samples")
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xlabel("number of steps")
    axes.set_ylabel(metric)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, path)
