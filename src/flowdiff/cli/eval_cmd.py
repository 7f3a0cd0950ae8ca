"""`flowdiff eval RUN`: sample quality against the number of function evaluations, and likelihood.

For each solver and each NFE budget the run's model is sampled (a fixed-step solver with s
stages takes NFE // s steps; the adaptive dopri5 runs at each `--tol` and reports the NFE it
spent) and its samples are compared with reference data of the same size:

- vectors: W2, sliced W2, MMD^2 and energy distance (`flowdiff.learning.metrics`), read against
  the same metric between two independent reference samples (the baseline);
- labelled images: the classifier's conditional accuracy and feature Fréchet distance
  (`flowdiff.learning.classifier`); unlabelled images: W2 between flattened images.

The reference is a fresh draw (seed 10000 + --seed) for the toy sets, the data itself otherwise
(then not held out, and the output says so). For vectors, the negative log-likelihood of the
reference points (nats per point, in the units of the data) comes from `log_prob`.
Writes eval.json and eval.png (quality against NFE) to the run directory or --out.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import typer

from flowdiff.errors import IncompatibleError, InvalidInputError

HELD_OUT_SEED = 10_000
"""Toy reference data is drawn with seed HELD_OUT_SEED + --seed (the demo uses the same)."""


@dataclass
class Setting:
    """One sampler to evaluate: a solver with a step count (fixed-step) or a tolerance (adaptive)."""

    solver: str
    steps: int
    target_nfe: int | None = None
    tol: float | None = None


@dataclass
class Reference:
    """Reference data in the units of the data: `x` to compare with, `spare` for the baseline."""

    x: object
    spare: object
    y: object | None
    spare_y: object | None
    held_out: bool
    description: str


@dataclass
class Row:
    """The result of one setting: the NFE it spent and the value of each metric."""

    solver: str
    steps: int
    nfe: int
    tol: float | None
    seconds: float
    metrics: dict = field(default_factory=dict)


def parse_list(text: str, kind, option: str) -> list:
    """"1,2,4" -> [1, 2, 4] with each entry converted by `kind`."""
    parts = [p for p in str(text).replace(" ", "").split(",") if p]
    try:
        values = [kind(p) for p in parts]
    except ValueError:
        values = []
    if not values:
        raise InvalidInputError(f"{option} must be a comma-separated list of {kind.__name__}s, got {text!r}")
    return values


def check_options(solvers: list[str], nfes: list[int], tols: list[float], sigma: float, n: int,
                  nll: bool, nll_solver: str, nll_steps: int) -> None:
    """Raise on bad options before any work: NFE >= 1, known solvers of the right kind, n >= 4."""
    from flowdiff.dynamics.equations import ODE, SDE
    from flowdiff.dynamics.solvers import get_solver, solver_names

    if n < 4:
        raise InvalidInputError(f"--n must be at least 4 samples, got {n}")
    bad = [k for k in nfes if k < 1]
    if bad:
        raise InvalidInputError(f"--nfe values must be >= 1 (function evaluations per sample), got {bad}")
    if any(not (t > 0 and math.isfinite(t)) for t in tols):
        raise InvalidInputError(f"--tol values must be positive numbers, got {tols}")
    if not (math.isfinite(sigma) and sigma >= 0):
        raise InvalidInputError(f"--sigma must be a number >= 0, got {sigma}")
    want = SDE if sigma > 0 else ODE
    for name in solvers:
        solver = get_solver(name)
        if solver.equation_type is not want:
            kind = "an SDE (--sigma > 0)" if want is SDE else "the ODE (--sigma 0)"
            raise IncompatibleError(
                f"solver {name!r} cannot sample {kind}; choose from: {', '.join(solver_names(want))}"
            )
    if nll:
        if nll_steps < 1:
            raise InvalidInputError(f"--nll-steps must be >= 1, got {nll_steps}")
        if get_solver(nll_solver).equation_type is not ODE:
            raise IncompatibleError(
                f"the likelihood integrates an ODE; --nll-solver {nll_solver!r} is an SDE solver; "
                f"choose from: {', '.join(solver_names(ODE))}"
            )


def settings_for(solvers: list[str], nfes: list[int], tols: list[float], sigma: float) -> list[Setting]:
    """The (solver, steps) pairs that meet each NFE budget; adaptive solvers get one per tolerance."""
    from flowdiff.dynamics.solvers import FixedStepSolver, get_solver

    out: list[Setting] = []
    for name in solvers:
        solver = get_solver(name)
        if not isinstance(solver, FixedStepSolver):
            out.extend(Setting(name, 1, None, tol) for tol in tols)
            continue
        seen = set()
        for nfe in nfes:
            # the SDE sampler ends with one Euler step: NFE = stages * (steps - 1) + 1
            steps = nfe // solver.stages if sigma == 0 else (nfe - 1) // solver.stages + 1
            if steps >= (2 if sigma > 0 else 1) and steps not in seen:
                seen.add(steps)
                out.append(Setting(name, steps, nfe))
    return out


def load_reference(run, n: int, seed: int) -> Reference:
    """2n reference points of the run's data (fewer if the data is smaller), in the units of the data."""
    import torch

    from flowdiff.data.registry import load_dataset

    info = run.data_info
    cli = run.config.get("training", {})
    generator = torch.Generator().manual_seed(HELD_OUT_SEED + seed)
    if info.source == "toy":
        data = load_dataset(info.name, n=2 * n, generator=generator)
        held_out, description = True, f"a fresh draw of {info.name} (seed {HELD_OUT_SEED + seed})"
    elif info.source in ("file", "images"):
        if info.source == "file":
            data = load_dataset(info.name, label_column=cli.get("label_column"), standardize=False)
        else:
            data = load_dataset(info.name, image_size=cli.get("image_size"))
        order = torch.randperm(len(data), generator=generator)[: 2 * n]
        data = type(data)(data.x[order], None if data.y is None else data.y[order], data.num_classes,
                          data.kind, data.info)
        held_out, description = False, f"{info.name} (the training data: not held out)"
    else:
        raise InvalidInputError(
            f"cannot find the data of {run.directory} (source {info.source!r}); "
            "evaluate runs made by flowdiff train"
        )
    count = len(data) // 2
    if count < 2:
        raise InvalidInputError(f"the data of {run.directory} has too few points ({len(data)}) to evaluate")
    x = data.x
    y = data.y if run.num_classes is not None else None
    return Reference(
        x=x[:count], spare=x[count : 2 * count],
        y=None if y is None else y[:count], spare_y=None if y is None else y[count : 2 * count],
        held_out=held_out, description=description,
    )


class VectorMetrics:
    """W2, sliced W2, MMD^2 and energy distance to the reference vectors."""

    def __init__(self, reference: Reference, names: list[str], seed: int) -> None:
        from flowdiff.learning import metrics

        self.reference, self.seed = reference, seed
        self.functions = {name: metrics.get_metric(name) for name in names}
        self.primary = names[0]

    def __call__(self, x, y=None) -> dict:
        import torch

        out = {}
        for name, metric in self.functions.items():
            generator = torch.Generator().manual_seed(self.seed)
            out[name] = metric(x, self.reference.x, generator=generator)
        return out

    def baseline(self) -> dict:
        return self(self.reference.spare)


class ImageMetrics:
    """Conditional accuracy and feature Fréchet distance of a classifier trained on the run's images."""

    def __init__(self, run, reference: Reference, cache_dir: Path, seed: int) -> None:
        import torch

        from flowdiff.learning.classifier import load_or_train_classifier

        images = torch.cat([reference.x, reference.spare])
        labels = torch.cat([reference.y, reference.spare_y])
        trained = load_or_train_classifier(
            images, labels, run.num_classes, cache_dir, name=run.data_info.name,
            generator=torch.Generator().manual_seed(seed),
        )
        self.classifier, self.reference = trained.classifier, reference
        self.primary = "feature_fd"

    def __call__(self, x, y=None) -> dict:
        from flowdiff.learning.classifier import conditional_accuracy, feature_frechet_distance

        return {
            "feature_fd": feature_frechet_distance(self.classifier, self.reference.x, x),
            "accuracy": conditional_accuracy(self.classifier, x, y),
        }

    def baseline(self) -> dict:
        return self(self.reference.spare, self.reference.spare_y)


def make_counter(model):
    """Wrap the model so that every call (one batched evaluation of u_t) is counted."""
    from flowdiff.learning.predictions import FieldWrapper

    class Counted(FieldWrapper):
        """The model, counting its calls: `calls` is the number of function evaluations."""

        calls = 0

        def forward(self, x, t, **cond):
            self.calls += 1
            return self.model(x, t, **cond)

    return Counted(model)


def sample_setting(run, setting: Setting, n: int, y, sigma: float, grid: str, seed: int):
    """Samples (in the units of the data) of one setting, and the NFE they took."""
    import torch

    from flowdiff.dynamics.solvers import Dopri5
    from flowdiff.learning.sampling import sample

    counted = make_counter(run.model)
    solver = Dopri5(rtol=setting.tol, atol=setting.tol) if setting.tol is not None else setting.solver
    generator = torch.Generator().manual_seed(seed)
    x = sample(counted, run.path, n=n if y is None else None, steps=setting.steps, solver=solver, sigma=sigma,
               y=y, generator=generator, grid=grid if setting.tol is None else "uniform")
    return run.data_info.unstandardize(x).detach().cpu(), counted.calls


def negative_log_likelihood(run, reference: Reference, solver: str, steps: int, seed: int,
                            batch: int = 1000) -> dict:
    """Mean NLL (nats per point, units of the data) of the reference points with its standard error."""
    import torch

    from flowdiff.learning.likelihood import log_prob

    dims = int(reference.x[0].numel())
    divergence = "exact" if dims <= 16 else "hutchinson"
    generator = torch.Generator().manual_seed(seed)
    values = []
    for start in range(0, reference.x.shape[0], batch):
        y = None if reference.y is None else reference.y[start : start + batch]
        values.append(log_prob(run.model, run.path, reference.x[start : start + batch].float(), steps=steps,
                               solver=solver, divergence=divergence, generator=generator, y=y,
                               scale=run.data_info).cpu())
    nll = -torch.cat(values).double()
    return {
        "mean": float(nll.mean()),
        "standard_error": float(nll.std() / math.sqrt(nll.numel())),
        "n": int(nll.numel()),
        "solver": solver,
        "steps": steps,
        "divergence": divergence,
        "units": "nats per point, in the units of the data",
        "held_out": reference.held_out,
    }


def plot(rows: list[Row], baseline: dict, path: Path, title: str) -> Path:
    """Each metric against NFE (log-log), one line per solver, the data-vs-data baseline dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(baseline)
    columns = min(len(names), 2)
    lines = math.ceil(len(names) / columns)
    figure, axes = plt.subplots(lines, columns, figsize=(4.6 * columns, 3.4 * lines), squeeze=False)
    for ax in axes.flat[len(names) :]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        for solver in dict.fromkeys(r.solver for r in rows):
            mine = sorted((r for r in rows if r.solver == solver), key=lambda r: r.nfe)
            values = [(r.nfe, r.metrics[name]) for r in mine if r.metrics[name] > 0]
            if values:
                ax.plot(*zip(*values), marker="o", lw=1.5, label=solver)
        if baseline[name] > 0:  # unbiased MMD^2 / energy of data vs data are ~0 (maybe < 0): not drawn
            ax.axhline(baseline[name], color="grey", ls="--", lw=1, label="data vs data")
        ax.set_xscale("log", base=2)
        if all(r.metrics[name] > 0 for r in rows):
            ax.set_yscale("log")
        ax.set_xlabel("NFE (function evaluations per sample)")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp, dpi=110)
    plt.close(figure)
    tmp.replace(path)
    return path


def eval_command(
    run_dir: Path = typer.Argument(..., metavar="RUN", help="Run directory written by flowdiff train."),
    solvers: str = typer.Option("euler,heun,dopri5", "--solvers", help="Comma-separated solvers to compare."),
    nfe: str = typer.Option("1,2,4,8,16,32,100", "--nfe", help="Function-evaluation budgets per sample "
                            "(a solver with s stages takes NFE // s steps)."),
    n: int = typer.Option(2000, "--n", help="Number of samples per setting (and of reference points)."),
    nll: bool = typer.Option(True, "--nll/--no-nll", help="Negative log-likelihood of the reference "
                             "(vector data)."),
    nll_solver: str = typer.Option("rk4", "--nll-solver", help="ODE solver of the likelihood."),
    nll_steps: int = typer.Option(100, "--nll-steps", help="Steps of the likelihood's solver."),
    tol: str = typer.Option("1e-3,1e-5", "--tol", help="Tolerances (rtol = atol) of adaptive solvers."),
    metrics: str = typer.Option("w2,sliced_w2,mmd,energy", "--metrics", help="Vector metrics: w2, sliced_w2, "
                                "mmd, energy."),
    sigma: float = typer.Option(0.0, "--sigma", help="Noise level of the SDE sampler; 0 samples the ODE."),
    grid: str = typer.Option("uniform", "--grid", help="Time grid of fixed-step solvers: uniform, shifted, "
                             "rho."),
    seed: int = typer.Option(0, "--seed", help="Seed of the noise and of the reference data."),
    out: Path = typer.Option(None, "--out", help="Directory for eval.json and eval.png (default: the run "
                             "directory)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, mps or auto."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Sample quality against NFE for several solvers, and the NLL of held-out data; writes eval.json/png."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from flowdiff.atomic import write_json as write_json_atomic
    from flowdiff.learning.metrics import METRICS
    from flowdiff.learning.sampling.builders import GRIDS
    from flowdiff.runs.load import load

    solver_list = parse_list(solvers, str, "--solvers")
    nfe_list = parse_list(nfe, int, "--nfe")
    tol_list = parse_list(tol, float, "--tol")
    metric_list = parse_list(metrics, str, "--metrics")
    unknown = [m for m in metric_list if m not in METRICS]
    if unknown:
        raise InvalidInputError(f"unknown metrics {unknown}; choose from: {', '.join(METRICS)}")
    if grid not in GRIDS:
        raise InvalidInputError(f"unknown grid {grid!r}; choose one of: {', '.join(GRIDS)}")
    check_options(solver_list, nfe_list, tol_list, sigma, n, nll, nll_solver, nll_steps)
    run = load(run_dir, device=device)
    out_dir = Path(out) if out is not None else Path(run_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidInputError(f"--out {out_dir} is a file; give a directory")
    out_dir.mkdir(parents=True, exist_ok=True)

    reference = load_reference(run, n, seed)
    count = int(reference.x.shape[0])
    images = run.data_info.kind == "images"
    if images and run.num_classes is not None:
        scorer = ImageMetrics(run, reference, out_dir / "classifier", seed)
    else:
        scorer = VectorMetrics(reference, ["w2"] if images else metric_list, seed)
    settings = settings_for(solver_list, nfe_list, tol_list, sigma)
    if not settings:
        raise InvalidInputError(
            f"no NFE budget in {nfe_list} is reachable by {', '.join(solver_list)}"
            + (" (the SDE sampler needs at least two steps)" if sigma > 0 else "")
            + "; give larger --nfe values"
        )
    console = Console(stderr=True)
    rows: list[Row] = []
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=True, disable=quiet) as progress:
        task = progress.add_task("baseline", total=len(settings) + 1)
        baseline = scorer.baseline()
        progress.advance(task)
        for setting in settings:
            label = f"tol {setting.tol:g}" if setting.tol is not None else f"{setting.steps} steps"
            progress.update(task, description=f"{setting.solver}, {label}")
            started = time.perf_counter()
            y = None if reference.y is None else reference.y.to(next(run.network.parameters()).device)
            x, calls = sample_setting(run, setting, count, y, sigma, grid, seed)
            values = scorer(x.reshape(reference.x.shape) if not images else x, reference.y)
            seconds = time.perf_counter() - started
            rows.append(Row(setting.solver, setting.steps, calls, setting.tol, seconds, values))
            progress.advance(task)

    likelihood = None
    if nll and not images:
        status = console.status("log-likelihood of the reference data") if not quiet else nullcontext()
        with status:
            likelihood = negative_log_likelihood(run, reference, nll_solver, nll_steps, seed)

    result = {
        "run": str(run_dir),
        "step": run.step,
        "n": count,
        "seed": seed,
        "sigma": sigma,
        "grid": grid,
        "reference": reference.description,
        "held_out": reference.held_out,
        "primary_metric": scorer.primary,
        "baseline": baseline,
        "rows": [asdict(r) for r in rows],
        "nll": likelihood,
        "notes": _notes(images, run, nll),
    }
    json_file = out_dir / "eval.json"
    write_json_atomic(json_file, result)
    title = f"{run_dir}: {count} samples vs {reference.description}"
    png_file = plot(rows, baseline, out_dir / "eval.png", title)

    table = Table(title=f"sample quality vs NFE ({count} samples; reference: {reference.description})")
    for column in ("solver", "steps", "NFE", *baseline, "s"):
        table.add_column(column, justify="left" if column == "solver" else "right", no_wrap=True)
    for r in rows:
        solver_text = f"{r.solver} tol={r.tol:g}" if r.tol is not None else r.solver
        steps_text = "adaptive" if r.tol is not None else str(r.steps)
        table.add_row(solver_text, steps_text, str(r.nfe), *(f"{r.metrics[k]:.4g}" for k in baseline),
                      f"{r.seconds:.1f}")
    table.add_row("data vs data", "", "", *(f"{baseline[k]:.4g}" for k in baseline), "", style="dim")
    printer = Console()
    if not printer.is_terminal:  # piped or captured: do not squeeze the table into 80 columns
        printer = Console(width=120)
    printer.print(table)
    if likelihood is not None:
        where = "held-out" if reference.held_out else "training"
        mean, error = likelihood["mean"], likelihood["standard_error"]
        print(f"NLL of {likelihood['n']} {where} points: {mean:.4f} ± {error:.4f} nats "
              f"({nll_solver}, {nll_steps} steps, {likelihood['divergence']} divergence)")
    print(f"wrote {json_file} and {png_file}")


def _notes(images: bool, run, nll: bool) -> list[str]:
    notes = ["NFE counts batched evaluations of the network per sample path (dopri5: its own count)."]
    if images and run.num_classes is None:
        notes.append("unlabelled images: W2 between flattened images (no classifier without labels)")
    if images and nll:
        notes.append("NLL skipped for images: see flowdiff.log_prob(divergence='hutchinson'), bits_per_dim")
    return notes


def register(app: typer.Typer) -> None:
    """Add `flowdiff eval` to the command line."""
    app.command("eval")(eval_command)
