"""`flowdiff demo`: train a flow on a 2-D toy set, sample it as an ODE and as an SDE, and write a report.

The report (report.html in the run directory, with PNG figures under figures/) shows the
loss curve, data vs samples, trajectories from noise to data, the learned vector field at
several t, and the distance of samples to held-out data against the number of steps, next
to the distance between two samples of the data itself.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import typer

from flowdiff.errors import InvalidInputError

FIELD_TIMES = (0.0, 0.25, 0.5, 0.75, 1.0)
"""Times at which the report draws the learned vector field."""


def free_directory(base: Path) -> Path:
    """`base` if it does not exist yet, else the first of base-2, base-3, ... that does not."""
    if not base.exists():
        return base
    k = 2
    while Path(f"{base}-{k}").exists():
        k += 1
    return Path(f"{base}-{k}")


def parse_steps(text: str) -> list[int]:
    """"2,4,8" -> [2, 4, 8]."""
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        values = []
    if not values or values[0] < 1:
        raise InvalidInputError(f"--quality-steps must be comma-separated positive integers, got {text!r}")
    return values


def demo_command(
    out: Path = typer.Option(None, "--out", help="Run directory (default: runs/demo, or runs/demo-2, ...)."),
    data: str = typer.Option("moons", "--data", help="Toy 2-D set: moons, circles, checkerboard, "
                             "eight_gaussians, spirals, gmm."),
    steps: int = typer.Option(4000, "--steps", help="Training steps."),
    batch: int = typer.Option(512, "--batch", help="Minibatch size."),
    lr: float = typer.Option(3e-3, "--lr", help="Peak learning rate."),
    hidden: str = typer.Option("128,128,128", "--hidden", help="MLP layer widths."),
    coupling: str = typer.Option("independent", "--coupling", help="independent, ot or sinkhorn."),
    sigma: float = typer.Option(1.0, "--sigma", help="Noise level of the SDE sampler."),
    n: int = typer.Option(2000, "--n", help="Samples drawn for the figures."),
    n_eval: int = typer.Option(1000, "--n-eval", help="Samples per entry of the quality table."),
    quality_steps: str = typer.Option("1,2,4,8,16,32,64", "--quality-steps", help="Step counts of the "
                                                                                  "table."),
    seed: int = typer.Option(0, "--seed", help="Seed of every random draw."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or mps."),
    force: bool = typer.Option(False, "--force", help="Replace an existing run in --out."),
    threads: int = typer.Option(None, "--threads", help="CPU threads (default: 1, fastest for a small MLP)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Train on a 2-D toy set, sample with the ODE and the SDE, and write report.html."""
    from flowdiff.cli.train_cmd import TrainOptions, build_trainer
    from flowdiff.data.toy2d import TOY_DATASETS

    if data not in TOY_DATASETS:
        raise InvalidInputError("the demo runs on a 2-D toy set; choose --data from "
                                f"{', '.join(TOY_DATASETS)}")
    if n < 8 or n_eval < 8:
        raise InvalidInputError(f"--n and --n-eval must be at least 8, got {n} and {n_eval}")
    table_steps = parse_steps(quality_steps)
    if not (math.isfinite(sigma) and sigma > 0):
        raise InvalidInputError(f"--sigma is the SDE's noise level and must be > 0, got {sigma}")
    out = Path(out) if out is not None else free_directory(Path("runs") / "demo")
    options = TrainOptions(data=data, steps=steps, batch=batch, lr=lr, hidden=hidden, coupling=coupling,
                           seed=seed, n_data=20_000, warmup=min(100, steps // 10),
                           checkpoint_every=max(500, steps), log_every=max(1, min(50, steps // 20)))
    started = time.perf_counter()
    trainer = build_trainer(options, out, device=device, force=force, progress=not quiet, threads=threads)
    result = trainer.fit()
    train_seconds = time.perf_counter() - started
    report_path = write_demo_report(out, options, result.history, n, n_eval, table_steps, sigma, seed,
                                    train_seconds)
    print(f"trained {options.steps} steps on {data} in {train_seconds:.0f} s ({trainer.device})")
    print(f"report: {report_path}")


def write_demo_report(out: Path, options, history: list[dict], n: int, n_eval: int, table_steps: list[int],
                      sigma: float, seed: int, train_seconds: float) -> Path:
    """Sample the trained run in `out`, draw the figures and write out/report.html."""
    import torch

    from flowdiff.data.toy2d import sample_toy
    from flowdiff.learning.metrics import baseline, wasserstein2
    from flowdiff.learning.sampling import sample
    from flowdiff.learning.training.checkpoint import load, write_json_atomic
    from flowdiff.plots import figures
    from flowdiff.plots.report import Report

    run = load(out)
    model, path = run.model, run.path
    figures_dir = out / "figures"
    held_out = sample_toy(options.data, max(n, 2 * n_eval), torch.Generator().manual_seed(seed + 10_000)).x

    def draw(count: int, steps: int, solver: str, noise: float, offset: int, trajectory: bool = False):
        generator = torch.Generator().manual_seed(seed + offset)
        return sample(model, path, n=count, steps=steps, solver=solver, sigma=noise, generator=generator,
                      return_trajectory=trajectory)

    ode_steps, sde_steps = 32, 128
    ode = draw(n, ode_steps, "heun", 0.0, 1)
    sde = draw(n, sde_steps, "euler_maruyama", sigma, 2)
    limits = figures.plot_limits(held_out, ode)
    samplers = {
        "ODE, Euler": ("euler", 0.0),
        "ODE, Heun": ("heun", 0.0),
        f"SDE (sigma={sigma:g}), Euler-Maruyama": ("euler_maruyama", sigma),
    }
    metric_generator = torch.Generator().manual_seed(seed + 20_000)
    reference = held_out[:n_eval]
    floor = baseline(wasserstein2, held_out[: 2 * n_eval], generator=metric_generator, max_samples=None)
    rows, curves = [], {name: [] for name in samplers}
    for steps in table_steps:
        row = [steps]
        for name, (solver, noise) in samplers.items():
            x = draw(n_eval, steps, solver, noise, 3 + steps)
            value = wasserstein2(x, reference, max_samples=None)
            curves[name].append(value)
            nfe = steps * (2 if solver == "heun" else 1)
            row.append(f"{value:.3f} ({nfe})")
        rows.append(row)
    write_json_atomic(out / "quality.json", {
        "metric": "wasserstein2", "n": n_eval, "steps": table_steps, "baseline": floor, "curves": curves,
    })

    trajectory = draw(400, ode_steps, "heun", 0.0, 4, trajectory=True)
    at = [round(t * ode_steps) for t in FIELD_TIMES]
    field_samples = [trajectory.states[k] for k in at]

    def field(x, t):
        return model(x, t)

    loss_png = figures.loss_curve(history, figures_dir / "loss.png")
    scatter_png = figures.scatter_panels(
        {"held-out data": held_out[:n], f"ODE samples (Heun, {ode_steps} steps)": ode,
         f"SDE samples (sigma={sigma:g}, {sde_steps} steps)": sde},
        figures_dir / "samples.png", limits=limits,
    )
    trajectory_png = figures.trajectories(trajectory.states, figures_dir / "trajectories.png",
                                          data=held_out[:n])
    field_png = figures.vector_field(field, figures_dir / "vector_field.png", times=FIELD_TIMES,
                                     limits=figures.plot_limits(held_out, trajectory.states[0]),
                                     samples=field_samples)
    quality_png = figures.quality_curve(table_steps, curves, floor, figures_dir / "quality.png",
                                        metric="W2 to held-out data")

    config = run.config
    report = Report(f"flowdiff demo: flow matching on {options.data}")
    report.text(
        f"The network ({config['model']['name'].upper()}, hidden widths {config['model']['hidden']}) was "
        f"trained by conditional flow matching ({config['training']['coupling']} coupling) on "
        f"{config['data']['size']} points of '{options.data}' for {run.step} steps (batch {options.batch}) "
        f"in {train_seconds:.0f} s on {config['training']['device']}. Samples start at X_0 ~ N(0, I) and "
        "follow the learned field u_t(x) "
        "from t = 0 to t = 1: as an ODE dX = u_t(X) dt, or as an SDE dX = [u_t + sigma^2/2 grad log p_t] dt"
        " + sigma dW with the score taken from the learned velocity. Weights are the EMA weights."
    )
    report.heading("Training loss")
    report.figure(loss_png, "Flow matching loss (mean over each logging window) against the step.")
    report.heading("Data vs samples")
    report.figure(scatter_png, "Held-out data, ODE samples and SDE samples, on the same axes.")
    report.heading("Trajectories from noise to data")
    report.figure(trajectory_png, f"ODE paths X_t (Heun, {ode_steps} steps) from noise (grey) to samples "
                                  "(red),"
                  " over the data (blue).")
    report.heading("The learned vector field")
    report.figure(field_png, "Arrows u_t(x) (colour: speed) at several t, over the ODE's points X_t at t.")
    report.heading("Sample quality against the number of steps")
    report.text(
        f"Exact 2-Wasserstein distance (POT) between {n_eval} samples and {n_eval} held-out data points; in "
        f"brackets the number of network evaluations. Two independent samples of {n_eval} data points are at "
        f"W2 = {floor:.3f}: a sampler reaching this value is as close as the data is to itself."
    )
    report.table(["steps", *samplers], rows + [["two data samples", *[f"{floor:.3f}"] * len(samplers)]])
    report.figure(quality_png, "The same table as a plot; dashed: two samples of the data.")
    report.heading("Reproduce")
    report.code(
        f"flowdiff train --data {options.data} --steps {options.steps} --batch {options.batch} --lr "
        f"{options.lr} "
        f"--hidden {options.hidden} --coupling {options.coupling} --out {out}\n"
        f"flowdiff sample {out} --n 1000 --steps 32 --solver heun\n"
        f"flowdiff sample {out} --n 1000 --steps 128 --sigma {sigma:g}"
    )
    report.code(json.dumps(config["training"], indent=2))
    return report.write(out / "report.html")


def register(app: typer.Typer) -> None:
    """Add `flowdiff demo` to the command line."""
    app.command("demo")(demo_command)
