"""Sample quality against the number of function evaluations (NFE), and the likelihood of reference data.

For each solver and each NFE budget the model is sampled (a fixed-step solver with s stages takes
NFE // s steps; the adaptive dopri5 runs at each tolerance and reports the NFE it spent) and its
samples are compared with reference data of the same size:

- vectors: W2, sliced W2, MMD^2 and energy distance (`flowdiff.learning.metrics`), read against
  the same metric between two independent reference samples (the baseline);
- labelled images: the classifier's conditional accuracy and feature Fréchet distance
  (`flowdiff.learning.classifier`); unlabelled images: W2 between flattened images.

The NFE of a setting is the sampler's own count of network calls (reported through its callback).
For vectors, the negative log-likelihood of the reference points comes from `log_prob`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch

from flowdiff.dynamics.equations import ODE, SDE
from flowdiff.dynamics.solvers import Dopri5, FixedStepSolver, solver_names
from flowdiff.errors import IncompatibleError, InvalidInputError
from flowdiff.learning.sampling.multistep import MultistepSolver, sampling_solver


@dataclass
class Setting:
    """One sampler to evaluate: a solver with a step count (fixed-step) or a tolerance (adaptive)."""

    solver: str
    steps: int
    target_nfe: int | None = None
    tol: float | None = None
    grid: str = "uniform"

    @property
    def label(self) -> str:
        """A short description for progress messages: "heun, 4 steps", "unipc (rho), 8 steps" or "dopri5, tol 0.001"."""
        if self.tol is not None:
            return f"{self.solver}, tol {self.tol:g}"
        return f"{self.solver}{'' if self.grid == 'uniform' else f' ({self.grid})'}, {self.steps} steps"


@dataclass
class Reference:
    """Reference data in the units of the data: `x` to compare with, `spare` (same size) for the baseline."""

    x: torch.Tensor
    spare: torch.Tensor
    y: torch.Tensor | None
    spare_y: torch.Tensor | None
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
    grid: str = "uniform"


def check_solvers(solvers: Sequence[str], sigma: float) -> None:
    """Raise unless every solver is registered and integrates the equation sampled: the ODE (sigma = 0) or
    the SDE (sigma > 0)."""
    if not (math.isfinite(sigma) and sigma >= 0):
        raise InvalidInputError(f"sigma must be a number >= 0, got {sigma}")
    want = SDE if sigma > 0 else ODE
    for name in solvers:
        if sampling_solver(name).equation_type is not want:
            kind = "an SDE (sigma > 0)" if want is SDE else "the ODE (sigma = 0)"
            raise IncompatibleError(f"solver {name!r} cannot sample {kind}; choose from: "
                                    f"{', '.join(solver_names(want))}")


def settings_for(solvers: Sequence[str], nfes: Sequence[int], tols: Sequence[float], sigma: float,
                 grids: Sequence[str] = ("uniform",), flow_map: bool = False) -> list[Setting]:
    """The (solver, grid, steps) settings that meet each NFE budget; adaptive solvers get one per tolerance.

    Multistep solvers take one evaluation a step; a "learned" grid is learned through fixed-step solvers only.
    A flow map (`flow_map`, sigma = 0) also gets its jumps, one per NFE ("flow_map", k steps = k evaluations).
    """
    if any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in nfes):
        raise InvalidInputError(f"NFE budgets must be integers >= 1 (function evaluations per sample), got {nfes}")
    if any(not (t > 0 and math.isfinite(t)) for t in tols):
        raise InvalidInputError(f"tolerances must be positive numbers, got {list(tols)}")
    check_solvers(solvers, sigma)
    from flowdiff.learning.sampling.few_step import FLOW_MAP

    out: list[Setting] = [Setting(FLOW_MAP, k, k) for k in dict.fromkeys(nfes)] if flow_map and sigma == 0 else []
    for grid in grids:
        for name in solvers:
            out.extend(_settings_of(name, grid, nfes, tols, sigma, first_grid=grid == grids[0]))
    if not out:
        raise InvalidInputError(f"no NFE budget in {list(nfes)} is reachable by {', '.join(solvers)}"
                                + (" (the SDE sampler needs at least two steps)" if sigma > 0 else "")
                                + "; give larger budgets")
    return out


def _settings_of(name: str, grid: str, nfes: Sequence[int], tols: Sequence[float], sigma: float,
                 first_grid: bool) -> list[Setting]:
    """The settings of one solver on one grid (an adaptive solver's only once, on no grid)."""
    solver = sampling_solver(name)
    multistep = isinstance(solver, MultistepSolver)
    if not multistep and not isinstance(solver, FixedStepSolver):
        return [Setting(name, 1, None, tol) for tol in tols] if first_grid else []
    if grid == "learned" and multistep:
        return []
    stages = solver.stages
    out, seen = [], set()
    for nfe in nfes:
        # the SDE sampler ends with one Euler step: NFE = stages * (steps - 1) + 1
        steps = nfe // stages if sigma == 0 else (nfe - 1) // stages + 1
        if steps >= (2 if sigma > 0 else 1) and steps not in seen:
            seen.add(steps)
            out.append(Setting(name, steps, nfe, grid=grid))
    return out


class VectorMetrics:
    """W2, sliced W2, MMD^2 and energy distance of samples to the reference vectors."""

    def __init__(self, reference: Reference, names: Sequence[str], seed: int = 0) -> None:
        from flowdiff.learning import metrics

        self.reference, self.seed = reference, seed
        self.functions = {name: metrics.get_metric(name) for name in names}
        self.primary = next(iter(self.functions))

    def __call__(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, float]:
        """Each metric between x and the reference (the same seed for every call)."""
        return {name: metric(x, self.reference.x, generator=torch.Generator().manual_seed(self.seed))
                for name, metric in self.functions.items()}

    def baseline(self) -> dict[str, float]:
        """The metrics between the spare reference sample and the reference: data against data."""
        return self(self.reference.spare)


class ImageMetrics:
    """Conditional accuracy and feature Fréchet distance under a classifier trained on the reference images."""

    primary = "feature_fd"

    def __init__(self, classifier, reference: Reference) -> None:
        self.classifier, self.reference = classifier, reference

    def __call__(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, float]:
        """Feature Fréchet distance of x to the reference and the accuracy of the classifier on (x, y)."""
        from flowdiff.learning.classifier import conditional_accuracy, feature_frechet_distance

        return {"feature_fd": feature_frechet_distance(self.classifier, self.reference.x, x),
                "accuracy": conditional_accuracy(self.classifier, x, y)}

    def baseline(self) -> dict[str, float]:
        """The metrics of the spare reference images: data against data."""
        return self(self.reference.spare, self.reference.spare_y)


def sample_setting(model, path, setting: Setting, n: int, y: torch.Tensor | None = None, sigma: float = 0.0,
                   grid: str | Callable[[Setting], torch.Tensor] | None = None, seed: int = 0,
                   scale=None) -> tuple[torch.Tensor, int]:
    """Samples of one setting (mapped back by `scale.unstandardize`, on the CPU) and the NFE the sampler counted.

    The grid is the setting's, unless `grid` names another or is a function of the setting returning the times
    (a run's learned grid).
    """
    from flowdiff.learning.sampling import sample

    spent = [0]

    def count(info: dict) -> None:
        spent[0] = int(info["nfe"])

    solver = Dopri5(rtol=setting.tol, atol=setting.tol) if setting.tol is not None else setting.solver
    times = grid(setting) if callable(grid) else (grid or setting.grid)
    x = sample(model, path, n=n if y is None else None, steps=setting.steps, solver=solver, sigma=sigma, y=y,
               generator=torch.Generator().manual_seed(seed), grid=times if setting.tol is None else "uniform",
               callback=count)
    if scale is not None:
        x = scale.unstandardize(x)
    return x.detach().cpu(), spent[0]


def negative_log_likelihood(model, path, reference: Reference, solver: str = "rk4", steps: int = 100, seed: int = 0,
                            scale=None, batch: int = 1000) -> dict:
    """Mean NLL (nats per point, units of the data) of the reference points with its standard error."""
    from flowdiff.learning.likelihood import log_prob

    dims = int(reference.x[0].numel())
    divergence = "exact" if dims <= 16 else "hutchinson"
    generator = torch.Generator().manual_seed(seed)
    values = []
    for start in range(0, reference.x.shape[0], batch):
        y = None if reference.y is None else reference.y[start : start + batch]
        values.append(log_prob(model, path, reference.x[start : start + batch].float(), steps=steps, solver=solver,
                               divergence=divergence, generator=generator, y=y, scale=scale).cpu())
    nll = -torch.cat(values).double()
    return {"mean": float(nll.mean()), "standard_error": float(nll.std() / math.sqrt(nll.numel())),
            "n": int(nll.numel()), "solver": solver, "steps": steps, "divergence": divergence,
            "units": "nats per point, in the units of the data", "held_out": reference.held_out}


def evaluate(model, path, reference: Reference, scorer: VectorMetrics | ImageMetrics, settings: Sequence[Setting],
             sigma: float = 0.0, grid: str | Callable | None = None, seed: int = 0, scale=None, nll: bool = True,
             nll_solver: str = "rk4", nll_steps: int = 100,
             callback: Callable[[dict], None] | None = None) -> dict:
    """Score every setting's samples against the reference (and the reference's NLL); a JSON-ready result.

    Each setting samples on its own grid, unless `grid` (a name, or a function of the setting giving the
    times) overrides it. `scale` maps the network's samples to the units of the data (a run's DataInfo). `callback`
    receives {"task", "done", "total"} before each piece of work and once at the end.
    """
    tasks = ["baseline", *(s.label for s in settings)] + (["log-likelihood of the reference data"] if nll else [])
    report = callback or (lambda info: None)
    report({"task": tasks[0], "done": 0, "total": len(tasks)})
    baseline = scorer.baseline()
    count = int(reference.x.shape[0])
    rows = []
    for done, setting in enumerate(settings, start=1):
        report({"task": tasks[done], "done": done, "total": len(tasks)})
        started = time.perf_counter()
        x, nfe = sample_setting(model, path, setting, count, reference.y, sigma, grid, seed, scale)
        values = scorer(x.reshape(reference.x.shape), reference.y)
        rows.append(Row(setting.solver, setting.steps, nfe, setting.tol, time.perf_counter() - started, values,
                        setting.grid))
    likelihood = None
    if nll:
        report({"task": tasks[-1], "done": len(tasks) - 1, "total": len(tasks)})
        likelihood = negative_log_likelihood(model, path, reference, nll_solver, nll_steps, seed, scale)
    report({"task": "done", "done": len(tasks), "total": len(tasks)})
    grids = list(dict.fromkeys(s.grid for s in settings if s.tol is None)) or ["uniform"]
    return {"n": count, "seed": seed, "sigma": sigma, "grid": ",".join(grids), "reference": reference.description,
            "held_out": reference.held_out, "primary_metric": scorer.primary, "baseline": baseline,
            "rows": [asdict(row) for row in rows], "nll": likelihood}
