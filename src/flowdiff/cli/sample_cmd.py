"""`flowdiff sample RUN`: draw samples from a trained run with the ODE (sigma = 0) or the SDE (sigma > 0).

Writes the samples (in the units of the data) to an .npz file ("x", and "y" when labelled)
and a picture next to it: a scatter plot for 2-D vectors, an image grid for images
(`flowdiff.plots.samples`).
"""

from __future__ import annotations

from pathlib import Path

import typer

from flowdiff.cli.options import choice, names, refuse_overwrite
from flowdiff.dynamics.solvers import SOLVERS
from flowdiff.errors import IncompatibleError, InvalidInputError
from flowdiff.learning.sampling import GRIDS
from flowdiff.learning.sampling.multistep import MULTISTEP_SOLVERS

SAMPLE_SOLVERS = [*SOLVERS, *MULTISTEP_SOLVERS]
"""The solvers `flowdiff sample` takes: the registered ones and the multistep solvers of the path."""
SAMPLE_GRIDS = [*GRIDS, "learned"]
"""Named grids, and "learned": the run's grid learned for its solver and steps (learned and stored on first use)."""


def check_label_options(run, label: str | None, guidance: float) -> None:
    """--label and --guidance need a label-conditioned model, and --guidance a class to guide towards."""
    if run.num_classes is None and (label is not None or guidance != 1.0):
        what = "--guidance" if guidance != 1.0 else "--label"
        raise IncompatibleError(f"{what} needs a label-conditioned model, but {run.directory} was trained without "
                                "labels (train on labelled data, e.g. flowdiff train --data FILE --labels)")
    if label is None and guidance != 1.0:
        raise InvalidInputError(f"--guidance {guidance} needs a class to guide towards: add --label K (or all)")


def sample_command(
    run_dir: Path = typer.Argument(..., metavar="RUN", help="Run directory written by flowdiff train."),
    n: int = typer.Option(1000, "--n", min=1, help="Number of samples (per class with --label all)."),
    steps: int = typer.Option(100, "--steps", min=1, help="Number of solver steps (a flow map's jumps: 1, 2, ...)."),
    solver: str = typer.Option(None, "--solver", parser=choice(SAMPLE_SOLVERS, "solver"),
                               help=f"{names(SAMPLE_SOLVERS)} (default: heun for the ODE, euler_maruyama for the "
                               "SDE)."),
    sigma: float = typer.Option(0.0, "--sigma", min=0.0, help="Noise level sigma_t of the SDE; 0 integrates the "
                                "ODE."),
    guidance: float = typer.Option(1.0, "--guidance", help="Classifier-free guidance scale w (needs --label)."),
    label: str = typer.Option(None, "--label", help="Class to sample (its name or index), or 'all'."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the noise."),
    out: Path = typer.Option(None, "--out", help="Output .npz (default: RUN/samples.npz); a PNG is written "
                             "next to it."),
    grid: str = typer.Option("uniform", "--grid", parser=choice(SAMPLE_GRIDS, "grid"),
                             help=f"Time grid: {names(SAMPLE_GRIDS)} (learned: fitted to a dopri5 solve for this "
                             "solver and --steps, stored in RUN/grids.json on first use)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, mps or auto."),
    compile_steps: bool = typer.Option(False, "--compile", help="Run each step of a fixed-step ODE solver as one "
                                       "torch.compile graph (compiling takes seconds to minutes; docs/sampling.md)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output file."),
    ctmc: str = typer.Option("euler", "--ctmc", parser=choice(["euler", "first_hitting"], "CTMC sampler"),
                             help="Sampler of a discrete (token) run: euler (--steps steps) or first_hitting (mask "
                             "source: one network call per unmasked token)."),
    categorical: str = typer.Option("float64", "--categorical", parser=choice(["float64", "float32"], "precision"),
                                    help="Precision of the categorical draws of a token run (float32 undersamples "
                                    "rare tokens)."),
) -> None:
    """Sample from a trained run; writes samples.npz and a picture (scatter or image grid).

    Under torchrun each process integrates its share of the same noise and rank 0 writes them all
    (the SDE's Brownian increments are drawn by rank 0 alone): the samples of one process.
    """
    from flowdiff.learning.training.distributed import process_group

    with process_group(device):
        _sample(run_dir, n, steps, solver, sigma, guidance, label, seed, out, grid, device, force, compile_steps,
                ctmc, categorical)


def _sample(run_dir: Path, n: int, steps: int, solver: str | None, sigma: float, guidance: float, label: str | None,
            seed: int, out: Path | None, grid: str, device: str, force: bool, compile_steps: bool, ctmc: str,
            categorical: str) -> None:
    import torch

    from flowdiff.learning.devices import configure_threads, pick_device
    from flowdiff.learning.sampling.builders import noise
    from flowdiff.learning.sampling.few_step import uses_jumps
    from flowdiff.learning.training import distributed
    from flowdiff.plots.samples import labels_for, sample_files, write_samples
    from flowdiff.runs.load import load

    run = load(run_dir, device=distributed.training_device(pick_device(device)))
    configure_threads(None, device, run.data_info.kind)
    check_label_options(run, label, guidance)
    if run.data_info.kind != "tokens":
        out = Path(out) if out is not None else Path(run_dir) / "samples.npz"
        refuse_overwrite(sample_files(run, out), force)
    y = labels_for(run, label, n)
    if run.data_info.kind == "tokens":
        from flowdiff.cli.discrete_runs import sample_token_run

        if distributed.is_main():  # a token run is sampled by one process
            sample_token_run(run, n, steps, ctmc, y, guidance, seed, out, force, categorical)
        return
    run.check_fits(n if y is None else len(y), steps, guided=guidance != 1.0)  # before any noise is drawn
    generator = torch.Generator(device=run.device).manual_seed(seed)
    if grid == "learned":
        grid = distributed.run_on_main(lambda: learned_grid(run, solver, steps, sigma, seed))  # one writer
    options = dict(steps=steps, solver=solver, sigma=sigma, guidance=guidance, grid=grid, compile=compile_steps)
    if sigma > 0:  # the SDE draws as it goes: one process draws it all
        x = distributed.run_on_main(lambda: run.sample(n=n if y is None else len(y), y=y, generator=generator,
                                                       **options))
    else:
        x0 = noise(n if y is None else len(y), run.state_shape, generator, run.device)
        x = distributed.split_rows(run.sample, x0, None if y is None else y.to(run.device), **options)
    if not distributed.is_main():
        return
    written = write_samples(run, x, y, out, per_row=n if label == "all" else None)
    what = "images" if run.data_info.kind == "images" else "points"
    how = f"the {'SDE' if sigma > 0 else 'ODE'} in {steps} steps"
    if uses_jumps(run.network, solver, sigma > 0, "velocity"):
        how = f"the flow map in {steps} jump{'s' if steps > 1 else ''} (NFE {steps})"
    print(f"sampled {len(x)} {what} with {how}; wrote {' and '.join(map(str, written))}")


def learned_grid(run, solver: str | None, steps: int, sigma: float, seed: int):
    """The run's learned grid for the ODE solver and steps (learned and stored first if missing) as a tensor."""
    from flowdiff.runs.learned_grids import learned_grid_for

    if sigma > 0:
        raise IncompatibleError("--grid learned is fitted to the ODE; sample it with --sigma 0")
    grid, learned = learned_grid_for(run, solver or "heun", steps, seed)
    if learned:
        print(f"learned a {steps}-step grid for {grid.solver}: mean squared error to dopri5 {grid.loss:.3g} "
              f"(uniform grid: {grid.uniform_loss:.3g}); stored in {run.directory}")
    return grid.tensor()


def register(app: typer.Typer) -> None:
    """Add `flowdiff sample` to the command line."""
    app.command("sample")(sample_command)
