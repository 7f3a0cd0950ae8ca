"""Figures of Lecture 1: Brownian paths, Ornstein–Uhlenbeck paths beside their stationary law,
Langevin dynamics onto a Gaussian mixture, and the trajectories of an ODE flow over its field.

Plot code only draws: it takes simulated times and states (tensors or arrays, as returned by
`flowdiff.simulate(..., save="all")`) and returns a matplotlib `Figure` (Agg, no pyplot state).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from flowdiff import atomic

PATH_COLORS = "viridis"


def _numpy(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().double().numpy()
    return np.asarray(a, dtype=float)


def _one_dimensional(states) -> np.ndarray:
    """(T, n) or (T, n, 1) states of 1-D processes as a (T, n) array."""
    states = _numpy(states)
    return states.reshape(states.shape[0], states.shape[1])


def _normal_pdf(x: np.ndarray, variance: float) -> np.ndarray:
    return np.exp(-0.5 * x**2 / variance) / math.sqrt(2 * math.pi * variance)


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write `fig` as a PNG at `path` atomically (`flowdiff.atomic`)."""
    return atomic.save_figure(fig, path, dpi=dpi)


def brownian_figure(times, states, sigma: float = 1.0) -> Figure:
    """Paths of dX = sigma dW from 0 with the +-2 sigma sqrt(t) band, and X_T against N(0, sigma^2 T)."""
    t, paths = _numpy(times), _one_dimensional(states)
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax, hist = fig.subplots(1, 2, width_ratios=(3, 1), sharey=True)
    ax.plot(t, paths, lw=0.8, alpha=0.8)
    band = 2 * sigma * np.sqrt(np.abs(t - t[0]))
    ax.fill_between(t, -band, band, color="0.85", zorder=0, label=r"$\pm 2\sigma\sqrt{t}$")
    ax.set(xlabel="t", ylabel="$X_t$", title=rf"Brownian motion $dX_t = \sigma\, dW_t$, $\sigma={sigma:g}$")
    ax.legend(loc="upper left")
    final, span = paths[-1], t[-1] - t[0]
    hist.hist(final, bins=max(5, int(np.sqrt(final.size))), density=True, orientation="horizontal", alpha=0.6)
    hist.plot(np.zeros_like(final), final, "_", color="C3", ms=12)  # a rug of the final states
    if sigma > 0 and span > 0:
        y = np.linspace(*ax.get_ylim(), 200)
        hist.plot(_normal_pdf(y, sigma**2 * span), y, "k", label=r"$N(0, \sigma^2 T)$")
        hist.legend(loc="upper right")
    hist.set(xlabel="density", title=f"$X_T$, T={t[-1]:g}")
    return fig


def ou_figure(times, runs: Sequence[tuple[float, object]], theta: float) -> Figure:
    """For each (sigma, states): OU paths from several starts, beside the stationary N(0, sigma^2/(2 theta)).

    The histogram beside the paths pools the states of the second half of the time grid.
    """
    t = _numpy(times)
    fig = Figure(figsize=(10, 3.2 * len(runs)), layout="constrained")
    axes = fig.subplots(len(runs), 2, width_ratios=(3, 1), sharey="row", squeeze=False)
    for (sigma, states), (ax, side) in zip(runs, axes):
        paths = _one_dimensional(states)
        colors = _path_colors(paths[0])
        for i in range(paths.shape[1]):
            ax.plot(t, paths[:, i], lw=0.8, color=colors[i])
        ax.set(xlabel="t", ylabel="$X_t$")
        ax.set_title(
            rf"Ornstein–Uhlenbeck $dX = -\theta X dt + \sigma dW$, $\theta={theta:g}$, $\sigma={sigma:g}$"
        )
        late = paths[len(t) // 2 :].ravel()  # the second half of every path: near-stationary states
        side.hist(late, bins=40, density=True, orientation="horizontal", alpha=0.5,
                  label=rf"$X_t$, $t \geq {t[len(t) // 2]:.3g}$")
        if theta > 0 and sigma > 0:
            y = np.linspace(*ax.get_ylim(), 300)
            variance = sigma**2 / (2 * theta)
            side.plot(_normal_pdf(y, variance), y, "k", label=rf"$N(0, \sigma^2/2\theta = {variance:.3g})$")
        side.set(xlabel="density")
        side.legend(loc="upper right", fontsize="small")
    return fig


def _path_colors(starts: np.ndarray) -> list:
    from matplotlib import colormaps

    cmap = colormaps[PATH_COLORS]
    span = np.ptp(starts) if starts.size > 1 else 0.0
    scaled = (starts - starts.min()) / span if span > 0 else np.zeros_like(starts)
    return [cmap(0.05 + 0.85 * s) for s in scaled]


def _density_grid(density, limit: float, resolution: int = 120):
    """The density p(x) of a `GaussianMixture` on a square grid [-limit, limit]^2."""
    axis = np.linspace(-limit, limit, resolution)
    xx, yy = np.meshgrid(axis, axis)
    points = torch.as_tensor(np.stack([xx.ravel(), yy.ravel()], 1), dtype=density.means.dtype)
    with torch.no_grad():
        p = density.log_prob(points).exp().reshape(resolution, resolution).double().numpy()
    return xx, yy, p


def snapshot_indices(num_times: int, count: int = 4) -> list[int]:
    """`count` indices of a grid of `num_times` times, 0 and the last among them, spaced in sqrt(time)."""
    fractions = np.linspace(0.0, 1.0, count) ** 2
    return sorted({int(round(f * (num_times - 1))) for f in fractions})


def langevin_figure(times, states, density, snapshots: int = 4, limit: float | None = None) -> Figure:
    """Langevin dynamics onto `density`: scatter (top) and 2-D histogram (bottom) at several times, and p."""
    t, x = _numpy(times), _numpy(states)
    if limit is None:
        limit = float(np.abs(_numpy(density.means)).max() + 4 * math.sqrt(_numpy(density.covs).max()))
    xx, yy, p = _density_grid(density, limit)
    picks = snapshot_indices(len(t), snapshots)
    fig = Figure(figsize=(3 * (len(picks) + 1), 6), layout="constrained")
    axes = fig.subplots(2, len(picks) + 1, sharex=True, sharey=True)
    bins = np.linspace(-limit, limit, 60)
    for col, i in enumerate(picks):
        top, bottom = axes[0, col], axes[1, col]
        top.contour(xx, yy, p, levels=6, colors="0.6", linewidths=0.6)
        top.scatter(x[i, :, 0], x[i, :, 1], s=3, alpha=0.5)
        top.set_title(f"t = {t[i]:.3g}")
        bottom.hist2d(x[i, :, 0], x[i, :, 1], bins=[bins, bins], density=True, cmap="magma")
    axes[0, -1].contourf(xx, yy, p, levels=20, cmap="magma")
    axes[0, -1].set_title("target p(x)")
    axes[1, -1].imshow(p, extent=(-limit, limit, -limit, limit), origin="lower", cmap="magma", aspect="auto")
    axes[1, -1].set_title("target density")
    axes[0, 0].set_ylabel("samples")
    axes[1, 0].set_ylabel("histogram")
    for ax in axes.ravel():
        ax.set_xlim(-limit, limit)
        ax.set_ylim(-limit, limit)
    fig.suptitle(r"Langevin dynamics $dX = \frac{\sigma^2}{2}\nabla\log p(X)\,dt + \sigma\, dW$")
    return fig


def flow_figure(times, states, drift: Callable | None = None, limit: float | None = None) -> Figure:
    """Trajectories of a 2-D ODE flow from several initial conditions over a quiver of its drift u(x, t0)."""
    t, x = _numpy(times), _numpy(states)
    if limit is None:
        limit = 1.15 * float(np.abs(x).max())
    fig = Figure(figsize=(6, 6), layout="constrained")
    ax = fig.subplots()
    if drift is not None:
        axis = np.linspace(-limit, limit, 21)
        xx, yy = np.meshgrid(axis, axis)
        points = torch.as_tensor(np.stack([xx.ravel(), yy.ravel()], 1), dtype=torch.float32)
        with torch.no_grad():
            u = _numpy(drift(points, torch.tensor(float(t[0]))))
        ax.quiver(xx, yy, u[:, 0].reshape(xx.shape), u[:, 1].reshape(xx.shape), color="0.6", alpha=0.8)
    colors = _path_colors(np.arange(x.shape[1], dtype=float))
    for i in range(x.shape[1]):
        ax.plot(x[:, i, 0], x[:, i, 1], color=colors[i], lw=1.4)
        ax.plot(x[0, i, 0], x[0, i, 1], "o", color=colors[i], ms=5)
        ax.plot(x[-1, i, 0], x[-1, i, 1], "s", color="k", ms=3)
    ax.set(xlim=(-limit, limit), ylim=(-limit, limit), aspect="equal", xlabel="$x_1$", ylabel="$x_2$")
    ax.set_title(rf"ODE flow $dX_t = u_t(X_t)\,dt$, $t \in [{t[0]:g}, {t[-1]:g}]$ (o start, ■ end)")
    return fig


def save_animation(
    times, states, path: str | Path, density=None, frames: int = 40, fps: int = 12, limit: float | None = None
) -> Path:
    """Write a GIF of a simulation: growing paths for 1-D states (T, n[, 1]), moving points for (T, n, 2)."""
    from matplotlib.animation import FuncAnimation, PillowWriter

    t, x = _numpy(times), _numpy(states)
    picks = np.unique(np.linspace(0, len(t) - 1, max(2, frames)).round().astype(int))
    fig = Figure(figsize=(6, 4.5) if x.ndim < 3 or x.shape[2] == 1 else (5, 5), layout="constrained")
    ax = fig.subplots()
    if x.ndim < 3 or x.shape[2] == 1:
        paths = x.reshape(len(t), -1)
        lines = ax.plot(t[:1], paths[:1], lw=0.8)
        pad = 0.05 * (paths.max() - paths.min() + 1e-12)
        ax.set(xlim=(t.min(), t.max()), ylim=(paths.min() - pad, paths.max() + pad))
        ax.set(xlabel="t", ylabel="$X_t$")

        def update(k):
            i = picks[k]
            for line, column in zip(lines, paths.T):
                line.set_data(t[: i + 1], column[: i + 1])
            ax.set_title(f"t = {t[i]:.3g}")
            return lines
    else:
        if limit is None:
            limit = 1.1 * float(np.abs(x).max())
        if density is not None:
            xx, yy, p = _density_grid(density, limit)
            ax.contour(xx, yy, p, levels=6, colors="0.6", linewidths=0.6)
        points = ax.scatter(x[0, :, 0], x[0, :, 1], s=4, alpha=0.6)
        ax.set(xlim=(-limit, limit), ylim=(-limit, limit), aspect="equal")

        def update(k):
            i = picks[k]
            points.set_offsets(x[i, :, :2])
            ax.set_title(f"t = {t[i]:.3g}")
            return (points,)

    animation = FuncAnimation(fig, update, frames=len(picks), blit=False)
    return atomic.write_with(path, lambda tmp: animation.save(tmp, writer=PillowWriter(fps=fps), dpi=80),
                             suffix=".gif")
