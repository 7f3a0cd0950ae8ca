"""The run report's few-step section of a flow map u(x, r, t): 1 jump, 2 jumps and 100 Euler steps of its own
velocity u(x, t, t) side by side, from the same noise X_0 (and labels), with `few_step.json` naming what drew each
panel and the network evaluations (NFE) it took.

2-D runs: scatter plots beside a draw of the data. Image runs: a grid, one row per label for labelled runs (the
three samplers side by side in each row) or one row per sampler otherwise. Other runs get no section.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from flowdiff.atomic import write_json

MANIFEST = "few_step.json"
"""The file beside the figure that records each panel's sampler, steps and measured NFE."""

MANY_STEPS = 100
"""Euler steps of the map's own velocity u(x, t, t) in the many-step panel."""


@dataclass(frozen=True)
class Panel:
    """One way of sampling the flow map: a solver name ("flow_map": jumps) and its number of steps."""

    title: str
    solver: str
    steps: int


PANELS = (Panel("1 jump", "flow_map", 1), Panel("2 jumps", "flow_map", 2),
          Panel(f"{MANY_STEPS} Euler steps of u(x, t, t)", "euler", MANY_STEPS))
"""The panels, left to right."""


def _draw(run, x0: torch.Tensor, y: torch.Tensor | None) -> list[tuple[Panel, torch.Tensor, int]]:
    """Each panel's samples from x0 (in the data's units) and the NFE its trajectory counted."""
    from flowdiff.learning.sampling import sample

    drawn = []
    for panel in PANELS:
        trajectory = sample(run.model, run.path, x0=x0, y=y, steps=panel.steps, solver=panel.solver,
                            return_trajectory=True)
        drawn.append((panel, run.to_data(trajectory.final).cpu(), int(trajectory.nfe)))
    return drawn


def _planar_figure(run, drawn, y, figures_dir: Path, n: int, seed: int) -> tuple[Path, str]:
    from flowdiff.errors import InvalidInputError
    from flowdiff.plots import figures
    from flowdiff.runs.evaluation import load_reference

    panels, colours = {}, {}
    try:
        reference = load_reference(run, n, seed)
        panels["data"], colours["data"] = reference.x, reference.y
        data_note = f"the data ({reference.description}) beside "
    except InvalidInputError as error:
        data_note = f"(no data panel: {error}) "
    for panel, x, nfe in drawn:
        name = f"{panel.title}, NFE {nfe}"
        panels[name], colours[name] = x, y
    png = figures.scatter_panels(panels, figures_dir / "few_step.png",
                                 labels={k: v for k, v in colours.items() if v is not None})
    coloured = "" if y is None else ", coloured by label (the labels cycle through the classes)"
    return png, f"{data_note}the flow map's samples from one noise X_0{coloured}."


def _image_figure(run, drawn, y, figures_dir: Path, n: int) -> tuple[Path, str]:
    from flowdiff.plots.images import save_labelled_rows

    samples = [x.clamp(-1, 1) for _, x, _ in drawn]
    titles = [f"{panel.title} (NFE {nfe})" for panel, _, nfe in drawn]
    path = figures_dir / "few_step.png"
    if y is None:
        return (save_labelled_rows(samples, path, row_labels=[panel.title for panel, _, _ in drawn]),
                f"One row per sampler ({'; '.join(titles)}), the same {n} noise draws X_0 in every row.")
    gap = torch.ones_like(samples[0][:1])  # a white image between the samplers
    names = list(run.data_info.class_names or [str(k) for k in range(run.num_classes)])
    rows, labels = [], []
    for k in range(len(y) // n):
        chunk = slice(k * n, (k + 1) * n)
        rows.append(torch.cat([part for x in samples for part in (x[chunk], gap)][:-1]))
        labels.append(names[int(y[k * n])])
    return (save_labelled_rows(rows, path, row_labels=labels),
            f"One row per label (w = 1); left to right, {n} samples each: {'; '.join(titles)}, from the same noise "
            "X_0 in each row.")


def few_step_section(report, run, figures_dir: Path, n: int, seed: int, images: bool,
                     max_classes: int) -> Path | None:
    """Add the flow map's side-by-side figure to `report` and write its manifest; return the manifest (None when the
    run is not a flow map, or neither 2-D nor images)."""
    from flowdiff.learning.flowmaps import is_flow_map
    from flowdiff.learning.sampling import noise

    if not is_flow_map(run.model) or not (images or tuple(run.data_info.shape) == (2,)):
        return None
    if images and run.num_classes is not None:
        y = torch.arange(min(run.num_classes, max_classes)).repeat_interleave(n)
    else:
        y = None if run.num_classes is None else torch.arange(n) % run.num_classes
    count = n if y is None else len(y)
    generator = torch.Generator(device=run.device).manual_seed(seed + 3)
    x0 = noise(count, run.state_shape, generator, run.device)
    drawn = _draw(run, x0, None if y is None else y.to(run.device))
    if images:
        png, caption = _image_figure(run, drawn, y, figures_dir, n)
    else:
        png, caption = _planar_figure(run, drawn, y, figures_dir, n, seed)
    report.heading("Few-step samples of the flow map")
    report.figure(png, f"1 and 2 flow-map jumps x_r = x_t + (r - t) u(x_t, r, t) beside {MANY_STEPS} Euler steps of "
                       f"the map's own velocity u(x, t, t): {caption}")
    manifest = {"figure": png.name, "samples": count, "seed": seed,
                "panels": [{"title": panel.title, "solver": panel.solver, "steps": panel.steps, "nfe": nfe}
                           for panel, _, nfe in drawn]}
    return write_json(figures_dir / MANIFEST, manifest)
