"""The demo's report: a trained 2-D run sampled as an ODE and an SDE, drawn, and measured against steps.

report.html (figures under figures/) shows the loss curve, data vs samples, trajectories from
noise to data, the learned vector field at several t, and the W2 distance of samples to held-out
data against the number of steps, next to the distance between two samples of the data itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from flowdiff.atomic import write_json
from flowdiff.plots import figures
from flowdiff.plots.report import Report
from flowdiff.runs.evaluation import HELD_OUT_OFFSET

FIELD_TIMES = (0.0, 0.25, 0.5, 0.75, 1.0)
"""Times at which the report draws the learned vector field."""

ODE_STEPS, SDE_STEPS = 32, 128
"""Steps of the samples drawn for the figures."""


@dataclass
class DemoSettings:
    """What the demo report draws: sample counts, the step counts of the table, the SDE's sigma, the seed."""

    n: int = 2000
    n_eval: int = 1000
    table_steps: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    sigma: float = 1.0
    seed: int = 0


class _Draw:
    """Samples of the run's model with a seed offset per use (so each figure has its own noise)."""

    def __init__(self, run, seed: int) -> None:
        self.run, self.seed = run, seed

    def __call__(self, count: int, steps: int, solver: str, sigma: float, offset: int, trajectory: bool = False):
        from flowdiff.learning.sampling import sample

        return sample(self.run.model, self.run.path, n=count, steps=steps, solver=solver, sigma=sigma,
                      generator=torch.Generator().manual_seed(self.seed + offset), return_trajectory=trajectory)


def quality_table(draw: _Draw, held_out: torch.Tensor, settings: DemoSettings) -> tuple[dict, list, float]:
    """W2 to held-out data for each sampler and step count: (curves per sampler, table rows, data-vs-data W2)."""
    from flowdiff.learning.metrics import baseline, wasserstein2

    samplers = {"ODE, Euler": ("euler", 0.0), "ODE, Heun": ("heun", 0.0),
                f"SDE (sigma={settings.sigma:g}), Euler-Maruyama": ("euler_maruyama", settings.sigma)}
    reference = held_out[: settings.n_eval]
    floor = baseline(wasserstein2, held_out[: 2 * settings.n_eval],
                     generator=torch.Generator().manual_seed(settings.seed + 20_000), max_samples=None)
    rows, curves = [], {name: [] for name in samplers}
    for steps in settings.table_steps:
        row = [steps]
        for name, (solver, sigma) in samplers.items():
            trajectory = draw(settings.n_eval, steps, solver, sigma, 3 + steps, trajectory=True)
            value = wasserstein2(trajectory.final, reference, max_samples=None)
            curves[name].append(value)
            row.append(f"{value:.3f} ({trajectory.nfe})")
        rows.append(row)
    return curves, rows, floor


def draw_figures(run, draw: _Draw, history: list[dict], held_out: torch.Tensor, settings: DemoSettings,
                 folder: Path) -> dict[str, Path]:
    """The loss curve, data vs samples, trajectories and vector-field figures of the report."""
    n, sigma = settings.n, settings.sigma
    ode = draw(n, ODE_STEPS, "heun", 0.0, 1)
    sde = draw(n, SDE_STEPS, "euler_maruyama", sigma, 2)
    trajectory = draw(400, ODE_STEPS, "heun", 0.0, 4, trajectory=True)
    at = [round(t * ODE_STEPS) for t in FIELD_TIMES]
    return {
        "loss": figures.loss_curve(history, folder / "loss.png"),
        "samples": figures.scatter_panels(
            {"held-out data": held_out[:n], f"ODE samples (Heun, {ODE_STEPS} steps)": ode,
             f"SDE samples (sigma={sigma:g}, {SDE_STEPS} steps)": sde},
            folder / "samples.png", limits=figures.plot_limits(held_out, ode)),
        "trajectories": figures.trajectories(trajectory.states, folder / "trajectories.png", data=held_out[:n]),
        "field": figures.vector_field(lambda x, t: run.model(x, t), folder / "vector_field.png", times=FIELD_TIMES,
                                      limits=figures.plot_limits(held_out, trajectory.states[0]),
                                      samples=[trajectory.states[k] for k in at]),
    }


def write_demo_report(out: Path, history: list[dict], settings: DemoSettings, train_seconds: float) -> Path:
    """Sample the trained run in `out`, draw the figures, measure quality and write out/report.html."""
    from flowdiff.data.toy2d import sample_toy
    from flowdiff.runs.load import load

    run = load(out)
    data = run.config["training"]["data"]
    held_out = sample_toy(data, max(settings.n, 2 * settings.n_eval),
                          torch.Generator().manual_seed(settings.seed + HELD_OUT_OFFSET)).x
    draw = _Draw(run, settings.seed)
    curves, rows, floor = quality_table(draw, held_out, settings)
    write_json(out / "quality.json", {"metric": "wasserstein2", "n": settings.n_eval,
                                      "steps": list(settings.table_steps), "baseline": floor, "curves": curves})
    pictures = draw_figures(run, draw, history, held_out, settings, out / "figures")
    pictures["quality"] = figures.quality_curve(list(settings.table_steps), curves, floor,
                                                out / "figures" / "quality.png", metric="W2 to held-out data")
    return _page(run, out, pictures, rows, floor, settings, train_seconds).write(out / "report.html")


def _page(run, out: Path, pictures: dict, rows: list, floor: float, settings: DemoSettings,
          train_seconds: float) -> Report:
    config, training = run.config, run.config["training"]
    sigma, n_eval = settings.sigma, settings.n_eval
    report = Report(f"flowdiff demo: flow matching on {training['data']}")
    report.text(
        f"The network ({config['model']['name'].upper()}, hidden widths {config['model']['hidden']}) was trained by "
        f"conditional flow matching ({training['coupling']} coupling) on {config['data']['size']} points of "
        f"'{training['data']}' for {run.step} steps (batch {training['batch_size']}) in {train_seconds:.0f} s on "
        f"{config['resolved']['device']}. Samples start at X_0 ~ N(0, I) and follow the learned field u_t(x) from "
        "t = 0 to t = 1: as an ODE dX = u_t(X) dt, or as an SDE dX = [u_t + sigma^2/2 grad log p_t] dt + sigma dW "
        "with the score taken from the learned velocity. Weights are the EMA weights.")
    for heading, key, caption in [
        ("Training loss", "loss", "Flow matching loss (mean over each logging window) against the step."),
        ("Data vs samples", "samples", "Held-out data, ODE samples and SDE samples, on the same axes."),
        ("Trajectories from noise to data", "trajectories", f"ODE paths X_t (Heun, {ODE_STEPS} steps) from noise "
         "(grey) to samples (red), over the data (blue)."),
        ("The learned vector field", "field", "Arrows u_t(x) (colour: speed) at several t, over the ODE's points "
         "X_t at t."),
    ]:
        report.heading(heading)
        report.figure(pictures[key], caption)
    report.heading("Sample quality against the number of steps")
    report.text(f"Exact 2-Wasserstein distance (POT) between {n_eval} samples and {n_eval} held-out data points; in "
                f"brackets the number of network evaluations. Two independent samples of {n_eval} data points are "
                f"at W2 = {floor:.3f}: a sampler reaching this value is as close as the data is to itself.")
    columns = len(rows[0]) - 1
    report.table(["steps", "ODE, Euler", "ODE, Heun", f"SDE (sigma={sigma:g}), Euler-Maruyama"],
                 rows + [["two data samples", *[f"{floor:.3f}"] * columns]])
    report.figure(pictures["quality"], "The same table as a plot; dashed: two samples of the data.")
    report.heading("Reproduce")
    hidden = ",".join(str(w) for w in training["hidden"])
    report.code(f"flowdiff train --data {training['data']} --steps {training['steps']} --batch "
                f"{training['batch_size']} --lr {training['lr']} --hidden {hidden} --coupling {training['coupling']} "
                f"--out {out}\n"
                f"flowdiff sample {out} --n 1000 --steps {ODE_STEPS} --solver heun\n"
                f"flowdiff sample {out} --n 1000 --steps {SDE_STEPS} --sigma {sigma:g}")
    report.code(json.dumps(training, indent=2))
    return report
