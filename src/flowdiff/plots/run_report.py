"""The report of any trained run: `<run>/run_report.html`, figures under `<run>/figures/run_report/`.

Every run shows its training loss (from metrics.jsonl) and a summary. Then, by the kind of data:

- images with labels: one row of samples per class (w = 1); one row per guidance scale w for a
  few fixed labels, every row starting from the same noise X_0, so that only w changes; and
  trajectories X_t as strips of frames from noise (t = 0) to data (t = 1), one row per label;
- images without labels: a plain grid of samples and the trajectory strips;
- 2-D vectors: samples, trajectories and the learned vector field u_t(x), drawn without the data;
- other vectors: per-coordinate statistics of the samples.

Samples are drawn with the ODE dX = u_t(X | y) dt (Heun) from the run's EMA weights. A flow map u(x, r, t)
(MeanFlow, shortcut, distilled runs) also gets its 1-jump, 2-jump and many-step samples side by side
(`flowdiff.plots.flow_map_report`); a flow's report is unchanged.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch

from flowdiff.errors import InvalidInputError

DEFAULT_GUIDANCE = (0.0, 1.0, 3.0)
"""Guidance scales w of the per-guidance grid: unconditional, conditional, sharpened."""

FIELD_TIMES = (0.0, 0.25, 0.5, 0.75, 1.0)
"""Times at which a 2-D report draws the learned vector field."""

MAX_CLASS_ROWS = 20
"""At most this many classes get a row in the per-class grid (the first ones)."""

TRAJECTORY_ROWS = 8
"""Trajectories drawn as image strips (one per label, up to this many)."""

TRAJECTORY_FRAMES = 8
"""Frames per strip, evenly spaced in the time grid, the first (noise) and the last (data) included."""

STATISTICS_COORDINATES = 16
"""At most this many coordinates appear in the sample-statistics table of vector runs."""


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of `<run>/metrics.jsonl` that hold a step and a loss (unreadable lines are skipped)."""
    file = Path(run_dir) / "metrics.jsonl"
    if not file.is_file():
        return []
    records = []
    for line in file.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "step" in record and "loss" in record:
            records.append(record)
    return records


def check_guidance_scales(scales: Sequence[float]) -> tuple[float, ...]:
    """The guidance scales as a tuple of finite floats (at least one)."""
    try:
        values = tuple(float(w) for w in scales)
    except (TypeError, ValueError):
        values = ()
    if not values or not all(math.isfinite(w) for w in values):
        raise InvalidInputError(f"guidance scales must be one or more finite numbers like 0, 1, 3, got "
                                f"{scales!r}")
    return values


def _positive(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
    return value


class _Sampler:
    """ODE samples of one run from given noise X_0 (so that rows of a figure can share their noise)."""

    def __init__(self, run, steps: int, seed: int) -> None:
        self.run = run
        self.steps = steps
        self.seed = seed
        self.device = run.device

    def noise(self, count: int, offset: int) -> torch.Tensor:
        """count draws of X_0 ~ N(0, I), from the generator seeded with seed + offset."""
        from flowdiff.learning.sampling import noise

        generator = torch.Generator(device=self.device).manual_seed(self.seed + offset)
        return noise(count, self.run.state_shape, generator, self.device)

    def __call__(self, x0: torch.Tensor, y: torch.Tensor | None = None, guidance: float = 1.0,
                 trajectory: bool = False):
        from flowdiff.learning.sampling import sample

        y = None if y is None else y.to(self.device)
        out = sample(self.run.model, self.run.path, steps=self.steps, solver="heun", x0=x0, y=y,
                     guidance=guidance, return_trajectory=trajectory)
        decoder = self.run.decoder  # a latent run: show the decoded images (of every state of a trajectory)
        if decoder is None:
            return out
        if trajectory:
            return type(out)(out.times, torch.stack([decoder.unstandardize(s) for s in out.states]), out.nfe)
        return decoder.unstandardize(out)


def _frame_index(times: torch.Tensor, frames: int) -> list[int]:
    """Indices of `frames` evenly spaced states of a trajectory, the first and the last included."""
    last = len(times) - 1
    count = min(frames, last + 1)
    return sorted({round(k * last / max(count - 1, 1)) for k in range(count)})


def _class_names(info) -> list[str]:
    return list(info.class_names or [str(k) for k in range(info.num_classes)])


def _image_sections(report, sampler: _Sampler, figures_dir: Path, n: int, scales: tuple[float, ...]) -> None:
    from flowdiff.plots.images import save_image_grid, save_image_strip, save_labelled_rows

    run = sampler.run
    info = run.data_info
    steps = sampler.steps
    if run.num_classes is None:
        x = sampler(sampler.noise(n * n, 0)).clamp(-1, 1).cpu()
        grid = save_image_grid(x, figures_dir / "samples.png", nrow=n)
        report.heading("Samples")
        report.figure(grid, f"{n * n} samples (ODE, Heun, {steps} steps); the model has no labels.")
        count = min(n, TRAJECTORY_ROWS)
        traj = sampler(sampler.noise(count, 2), trajectory=True)
        index = _frame_index(traj.times, TRAJECTORY_FRAMES)
        strip = save_image_strip(traj.states[index].cpu(), figures_dir / "trajectories.png",
                                 frames=len(index), max_samples=count)
        times = ", ".join(f"{float(traj.times[k]):.2f}" for k in index)
        report.heading("Trajectories from noise to data")
        report.figure(strip, f"One row per sample: X_t at t = {times} (noise on the left, clipped to "
                             "[-1, 1] for display; the sample on the right).")
        return

    names = _class_names(info)
    classes = list(range(min(run.num_classes, MAX_CLASS_ROWS)))
    y = torch.tensor(classes).repeat_interleave(n)
    x = sampler(sampler.noise(len(y), 0), y).clamp(-1, 1).cpu()
    per_class = save_labelled_rows(list(x.split(n)), figures_dir / "samples_per_class.png",
                                   row_labels=[names[k] for k in classes])
    report.heading("Samples per class")
    shown = "" if len(classes) == run.num_classes else f" (the first {len(classes)} of {run.num_classes})"
    report.figure(per_class, f"One row per class{shown}, {n} samples each (guidance w = 1, ODE, Heun, "
                             f"{steps} steps).")

    labels = torch.arange(n) % run.num_classes
    x0 = sampler.noise(n, 1)
    rows = [sampler(x0, labels, guidance=w).clamp(-1, 1).cpu() for w in scales]
    per_scale = save_labelled_rows(rows, figures_dir / "samples_per_guidance.png",
                                   row_labels=[f"w = {w:g}" for w in scales])
    report.heading("Samples per guidance scale")
    report.figure(per_scale, "One row per guidance scale w, u^w = (1 - w) u(x | null) + w u(x | y); "
                             f"columns have the labels {', '.join(names[int(k)] for k in labels)} and "
                             "the same noise X_0 in every row (w = 0: unconditional, 1: conditional).")

    count = min(run.num_classes, TRAJECTORY_ROWS)
    traj = sampler(sampler.noise(count, 2), torch.arange(count), trajectory=True)
    index = _frame_index(traj.times, TRAJECTORY_FRAMES)
    frames = traj.states[index].clamp(-1, 1).cpu()  # (frames, count, C, H, W)
    strips = save_labelled_rows([frames[:, b] for b in range(count)], figures_dir / "trajectories.png",
                                row_labels=[names[b] for b in range(count)])
    times = ", ".join(f"{float(traj.times[k]):.2f}" for k in index)
    report.heading("Trajectories from noise to data")
    report.figure(strips, f"One row per label (w = 1): X_t at t = {times}, from noise (left, clipped to "
                          "[-1, 1] for display) to the sample (right).")


def _vector_samples(sampler: _Sampler, n: int):
    """Labels (cycling through the classes, or None), the trajectory and its states in the data's units."""
    run = sampler.run
    y = None if run.num_classes is None else torch.arange(n) % run.num_classes
    traj = sampler(sampler.noise(n, 0), y, trajectory=True)
    states = run.data_info.unstandardize(traj.states).cpu()
    return y, traj, states


def _planar_sections(report, sampler: _Sampler, figures_dir: Path, y, traj, states,
                     scales: tuple[float, ...]) -> None:
    from flowdiff.plots import figures

    run = sampler.run
    steps = sampler.steps
    samples = states[-1]
    colours = None if y is None else {"samples X_1": y}
    scatter = figures.scatter_panels({"noise X_0": states[0], "samples X_1": samples},
                                     figures_dir / "samples.png", labels=colours)
    report.heading("Samples")
    labelled = "" if y is None else ", coloured by their label (the labels cycle through the classes)"
    report.figure(scatter, f"The noise X_0 ~ N(0, I) and the samples X_1 it flows to (ODE, Heun, {steps} "
                           f"steps){labelled}, on the same axes.")
    if y is not None:
        x0 = traj.states[0]
        panels = {f"w = {w:g}": run.data_info.unstandardize(sampler(x0, y, guidance=w)).cpu() for w in scales}
        guided = figures.scatter_panels(panels, figures_dir / "samples_per_guidance.png",
                                        labels={name: y for name in panels})
        report.heading("Samples per guidance scale")
        report.figure(guided, "The same noise X_0 and labels at each guidance scale w (w = 0: "
                              "unconditional, 1: conditional).")
    paths = figures.trajectories(states, figures_dir / "trajectories.png")
    report.heading("Trajectories from noise to data")
    report.figure(paths, f"ODE paths X_t (Heun, {steps} steps) from noise (grey) to samples (red).")

    def field(x, t):
        return run.model(x.to(sampler.device), t.to(sampler.device)).cpu()

    at = [int(torch.argmin((traj.times - t).abs())) for t in FIELD_TIMES]
    network_states = traj.states.cpu()
    field_png = figures.vector_field(
        field, figures_dir / "vector_field.png", times=FIELD_TIMES,
        limits=figures.plot_limits(network_states[0], network_states[-1]),
        samples=[network_states[k] for k in at],
    )
    report.heading("The learned vector field")
    scaled = " in the network's standardised coordinates" if run.data_info.mean is not None else ""
    unconditional = " (the null label: the unconditional field)" if y is not None else ""
    report.figure(field_png, f"Arrows u_t(x){unconditional}{scaled} (colour: speed) at several t, over "
                             "the ODE's points X_t at t.")


def _statistics_table(report, samples: torch.Tensor, info) -> None:
    x = samples.double()
    coordinates = min(x.shape[1], STATISTICS_COORDINATES)
    quantiles = torch.quantile(x[:, :coordinates], torch.tensor([0.05, 0.5, 0.95], dtype=x.dtype), dim=0)
    header = ["coordinate", "mean", "std", "5%", "median", "95%"]
    if info.mean is not None and info.std is not None:
        header += ["data mean", "data std"]
    rows = []
    for k in range(coordinates):
        row = [k, float(x[:, k].mean()), float(x[:, k].std()), *(float(q) for q in quantiles[:, k])]
        if info.mean is not None and info.std is not None:
            row += [float(info.mean[k]), float(info.std[k])]
        rows.append(row)
    report.heading("Sample statistics")
    more = "" if coordinates == x.shape[1] else f" (the first {coordinates} of {x.shape[1]} coordinates)"
    report.table(header, rows, caption=f"{len(x)} samples in the units of the data{more}")


def write_run_report(run_dir: str | Path, n: int | None = None, steps: int = 20,
                     guidance_scales: Sequence[float] = DEFAULT_GUIDANCE, seed: int = 0,
                     device: str | torch.device | None = "cpu") -> Path:
    """Sample a trained run with the ODE; write `<run>/run_report.html` and `<run>/figures/run_report/`.

    `n` is the number of samples per row for images (default 8; an unlabelled grid is n x n)
    and the number of points for vectors (default 1000); `steps` Heun steps per sample;
    `guidance_scales` the rows of the per-guidance picture (labelled runs). Returns the page's path.
    """
    from flowdiff.plots import figures
    from flowdiff.plots.flow_map_report import few_step_section
    from flowdiff.plots.report import Report
    from flowdiff.runs.load import load

    scales = check_guidance_scales(guidance_scales)
    _positive(steps, "steps")
    run_dir = Path(run_dir)
    run = load(run_dir, device=device)
    info = run.data_info
    images = info.kind == "images"
    n = _positive(n if n is not None else (8 if images else 1000), "n")
    run.check_fits(n * (run.num_classes or n) if images else n, steps, guided=any(w != 1.0 for w in scales),
                   saved_states=steps + 1)  # the report keeps whole trajectories
    figures_dir = run_dir / "figures" / "run_report"
    sampler = _Sampler(run, steps, seed)

    report = Report(f"flowdiff run: {info.name or run_dir.name}")
    model_config = run.config.get("model", {})
    parameters = sum(p.numel() for p in run.network.parameters())
    history = read_metrics(run_dir)
    labels = "none" if run.num_classes is None else f"{run.num_classes} classes"
    report.table(["", "value"], [
        ["run directory", str(run_dir)],
        ["data", f"{info.name or info.source} ({info.kind} of shape {tuple(info.shape)}, {info.size} items)"],
        ["labels", labels],
        ["network", f"{model_config.get('name', '?')} ({parameters:,} parameters)"],
        ["trained steps", run.step],
        ["final loss", f"{history[-1]['loss']:.4g}" if history else "not recorded"],
    ])
    report.heading("Training loss")
    if history:
        loss_png = figures.loss_curve(history, figures_dir / "loss.png")
        report.figure(loss_png, "Training loss (mean over each logging window) against the step, from "
                                "metrics.jsonl.")
    else:
        report.text("metrics.jsonl holds no loss records yet.")

    if images:
        _image_sections(report, sampler, figures_dir, n, scales)
    else:
        y, traj, states = _vector_samples(sampler, n)
        if tuple(info.shape) == (2,):
            _planar_sections(report, sampler, figures_dir, y, traj, states, scales)
        _statistics_table(report, states[-1].reshape(n, -1), info)
    few_step_section(report, run, figures_dir, n, seed, images, MAX_CLASS_ROWS)

    guidance = ",".join(f"{w:g}" for w in scales)
    report.heading("Reproduce")
    guidance_option = f" --guidance {guidance}" if run.num_classes is not None else ""
    report.code(f"flowdiff report {run_dir} --n {n} --steps {steps}{guidance_option} --seed {seed}\n"
                f"flowdiff sample {run_dir} --steps {steps} "
                + ("--n 64" if run.num_classes is None else "--n 8 --label all --guidance 3"))
    return report.write(run_dir / "run_report.html")
