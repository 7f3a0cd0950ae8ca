"""`flowdiff eval RUN`: sample quality against the number of function evaluations, and likelihood.

The command parses its options, calls `flowdiff.runs.evaluation.evaluate_run` (the computation
is `flowdiff.learning.evaluation`) and `flowdiff.plots.evaluation.write_evaluation`, and prints a table.
Writes eval.json and eval.png to the run directory or --out.
"""

from __future__ import annotations

from pathlib import Path

import typer

from flowdiff.cli.options import choice, choice_list, names, number_list
from flowdiff.cli.sample_cmd import SAMPLE_GRIDS, SAMPLE_SOLVERS
from flowdiff.dynamics.equations import ODE
from flowdiff.dynamics.solvers import solver_names
from flowdiff.learning.metrics import METRICS

ODE_SOLVERS = solver_names(ODE)
"""The solvers that can integrate the likelihood's ODE."""


def eval_command(
    run_dir: Path = typer.Argument(..., metavar="RUN", help="Run directory written by flowdiff train."),
    solvers: str = typer.Option("euler,heun,dopri5", "--solvers",
                                parser=choice_list(SAMPLE_SOLVERS, "solver", "solvers"),
                                help=f"Comma-separated solvers to compare: {names(SAMPLE_SOLVERS)}."),
    nfe: str = typer.Option("1,2,4,8,16,32,100", "--nfe", parser=number_list(int, 1, "NFE budgets"),
                            help="Function-evaluation budgets per sample (a solver with s stages takes NFE // s "
                            "steps)."),
    n: int = typer.Option(2000, "--n", min=4, help="Number of samples per setting (and of reference points)."),
    nll: bool = typer.Option(True, "--nll/--no-nll", help="Negative log-likelihood of the reference (vector data)."),
    nll_solver: str = typer.Option("rk4", "--nll-solver", parser=choice(ODE_SOLVERS, "ODE solver"),
                                   help=f"ODE solver of the likelihood: {names(ODE_SOLVERS)}."),
    nll_steps: int = typer.Option(100, "--nll-steps", min=1, help="Steps of the likelihood's solver."),
    tol: str = typer.Option("1e-3,1e-5", "--tol", parser=number_list(float, None, "tolerances"),
                            help="Tolerances (rtol = atol, > 0) of adaptive solvers."),
    metrics: str = typer.Option("w2,sliced_w2,mmd,energy", "--metrics",
                                parser=choice_list(METRICS, "metric", "metrics"),
                                help=f"Vector metrics: {names(METRICS)}."),
    sigma: float = typer.Option(0.0, "--sigma", min=0.0, help="Noise level of the SDE sampler; 0 samples the ODE."),
    grid: str = typer.Option("uniform", "--grid", parser=choice_list(SAMPLE_GRIDS, "grid", "grids"),
                             help=f"Comma-separated time grids of fixed-step and multistep solvers: "
                             f"{names(SAMPLE_GRIDS)} (learned: fitted once per solver and step count, stored in "
                             "RUN/grids.json)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the noise and of the reference data."),
    out: Path = typer.Option(None, "--out", help="Directory for eval.json and eval.png (default: the run "
                             "directory)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, mps or auto."),
    threads: int = typer.Option(None, "--threads", min=1, help="CPU threads (default: 1 for vectors, torch's "
                                "for images; as for train)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing eval.json and eval.png."),
    heldout: Path = typer.Option(None, "--heldout", metavar="FILE",
                                 help="Discrete runs: held-out sequences (a token .npy/.npz or a text file like the "
                                 "training data) whose ELBO is reported beside the training one."),
) -> None:
    """Sample quality against NFE for several solvers, and the NLL of held-out data; writes eval.json/png."""
    from flowdiff.cli.options import refuse_overwrite
    from flowdiff.cli.progress import progress_bar
    from flowdiff.learning.devices import configure_threads
    from flowdiff.plots.evaluation import write_evaluation
    from flowdiff.runs.evaluation import EVAL_JSON, EVAL_PNG, evaluate_run, output_directory

    out_dir = output_directory(run_dir, out)
    kind = _data_kind(run_dir)
    configure_threads(threads, device, kind)
    if kind == "tokens":
        from flowdiff.cli.discrete_runs import eval_token_run
        from flowdiff.runs.load import load

        return eval_token_run(load(run_dir, device=device), nfe, n, seed, out_dir, force, heldout=heldout)
    if heldout is not None:
        from flowdiff.errors import IncompatibleError

        raise IncompatibleError(f"--heldout takes held-out token sequences of a discrete run; {run_dir} is not one "
                                "(the NLL of a vector run is computed on reference data of its set)")
    refuse_overwrite([out_dir / EVAL_JSON, out_dir / EVAL_PNG], force)
    with progress_bar(disable=quiet) as bar:
        task = bar.add_task("evaluating", total=None)

        def show(info: dict) -> None:
            bar.update(task, description=info["task"], completed=info["done"], total=info["total"])

        result = evaluate_run(run_dir, solvers=solvers, nfes=nfe, tols=tol, metrics=metrics, n=n, sigma=sigma,
                              grid=grid, seed=seed, nll=nll, nll_solver=nll_solver, nll_steps=nll_steps,
                              cache_dir=out_dir / "classifier", device=device, callback=show)
    written = write_evaluation(result, out_dir)
    print_result(result)
    print(f"wrote {written[0]} and {written[1]}")


def _data_kind(run_dir: Path) -> str:
    """The run's kind of data: "vectors", "images" or "tokens" (a discrete run: ELBO and distance to a known law
    instead of ODE solvers, --nfe counting its Euler steps)."""
    from flowdiff.runs.layout import read_config

    return read_config(run_dir)["data"].get("kind", "vectors")


def print_result(result: dict) -> None:
    """The table of sample quality against NFE (and the NLL line) on stdout."""
    from rich.console import Console
    from rich.table import Table

    baseline = result["baseline"]
    table = Table(title=f"sample quality vs NFE ({result['n']} samples; reference: {result['reference']})")
    for column in ("solver", "steps", "NFE", *baseline, "s"):
        table.add_column(column, justify="left" if column == "solver" else "right", no_wrap=True)
    for row in result["rows"]:
        adaptive = row["tol"] is not None
        grid = row.get("grid", "uniform")
        name = row["solver"] if grid == "uniform" else f"{row['solver']} ({grid})"
        table.add_row(f"{row['solver']} tol={row['tol']:g}" if adaptive else name,
                      "adaptive" if adaptive else str(row["steps"]), str(row["nfe"]),
                      *(f"{row['metrics'][k]:.4g}" for k in baseline), f"{row['seconds']:.1f}")
    table.add_row("data vs data", "", "", *(f"{baseline[k]:.4g}" for k in baseline), "", style="dim")
    printer = Console()
    if not printer.is_terminal:  # piped or captured: do not squeeze the table into 80 columns
        printer = Console(width=120)
    printer.print(table)
    likelihood = result["nll"]
    if likelihood is not None:
        where = "held-out" if likelihood["held_out"] else "training"
        print(f"NLL of {likelihood['n']} {where} points: {likelihood['mean']:.4f} ± {likelihood['standard_error']:.4f}"
              f" nats ({likelihood['solver']}, {likelihood['steps']} steps, {likelihood['divergence']} divergence)")


def register(app: typer.Typer) -> None:
    """Add `flowdiff eval` to the command line."""
    app.command("eval")(eval_command)
