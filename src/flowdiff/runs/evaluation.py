"""Evaluating a trained run: its reference data, its scorer, and the result that eval.json records.

The reference is a fresh draw (seed HELD_OUT_OFFSET + seed) for the toy sets, the data itself
otherwise (then not held out, and the result says so). The computation is
`flowdiff.learning.evaluation.evaluate`; `flowdiff.plots.evaluation.write_evaluation` writes the files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from flowdiff.errors import InvalidInputError
from flowdiff.learning.evaluation import ImageMetrics, Reference, VectorMetrics, evaluate, settings_for

HELD_OUT_OFFSET = 10_000
"""Toy reference data is drawn with seed HELD_OUT_OFFSET + seed (the demo report uses the same offset)."""

EVAL_JSON, EVAL_PNG = "eval.json", "eval.png"
"""The files an evaluation writes."""


def load_reference(run, n: int, seed: int = 0) -> Reference:
    """2n reference points of the run's data (fewer if the data is smaller), in the units of the data."""
    from flowdiff.data.registry import load_dataset

    info, training = run.data_info, run.config.get("training", {})
    generator = torch.Generator().manual_seed(HELD_OUT_OFFSET + seed)
    if info.source == "toy":
        data = load_dataset(info.name, n=2 * n, generator=generator)
        held_out, description = True, f"a fresh draw of {info.name} (seed {HELD_OUT_OFFSET + seed})"
    elif info.source in ("file", "images"):
        from flowdiff.runs.build import check_data_unchanged

        check_data_unchanged(run.config, run.directory)
        if info.source == "file":
            data = load_dataset(info.name, label_column=training.get("label_column"), standardize=False)
        else:
            data = load_dataset(info.name, image_size=training.get("image_size"))
        order = torch.randperm(len(data), generator=generator)[: 2 * n]
        data = type(data)(data.x[order], None if data.y is None else data.y[order], data.num_classes, data.kind,
                          data.info)
        held_out, description = False, f"{info.name} (the training data: not held out)"
    else:
        raise InvalidInputError(f"cannot find the data of {run.directory} (source {info.source!r}); "
                                "evaluate runs made by flowdiff train")
    count = len(data) // 2
    if count < 2:
        raise InvalidInputError(f"the data of {run.directory} has too few points ({len(data)}) to evaluate")
    y = data.y if run.num_classes is not None else None
    return Reference(x=data.x[:count], spare=data.x[count : 2 * count],
                     y=None if y is None else y[:count], spare_y=None if y is None else y[count : 2 * count],
                     held_out=held_out, description=description)


def scorer_for(run, reference: Reference, metrics: Sequence[str], cache_dir: Path,
               seed: int = 0) -> VectorMetrics | ImageMetrics:
    """The scorer of a run: a classifier's metrics for labelled images (trained once, cached in `cache_dir`),
    W2 for unlabelled images, the given vector metrics otherwise."""
    if run.data_info.kind != "images":
        return VectorMetrics(reference, metrics, seed)
    if run.num_classes is None:
        return VectorMetrics(reference, ["w2"], seed)
    from flowdiff.runs.classifier_cache import load_or_train_classifier

    trained = load_or_train_classifier(torch.cat([reference.x, reference.spare]),
                                       torch.cat([reference.y, reference.spare_y]), run.num_classes, cache_dir,
                                       name=run.data_info.name, generator=torch.Generator().manual_seed(seed))
    return ImageMetrics(trained.classifier, reference)


def notes(run, nll: bool) -> list[str]:
    """What a reader of eval.json should know about how the numbers were made."""
    images = run.data_info.kind == "images"
    out = ["NFE counts batched evaluations of the network per sample path (dopri5: its own count)."]
    if images and run.num_classes is None:
        out.append("unlabelled images: W2 between flattened images (no classifier without labels)")
    if images and nll:
        out.append("NLL skipped for images: see flowdiff.log_prob(divergence='hutchinson'), bits_per_dim")
    return out


def output_directory(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Where eval.json and eval.png go: `out`, or the run directory; refused when it is a file."""
    out_dir = Path(out) if out is not None else Path(run_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidInputError(f"{out_dir} is a file; give a directory for {EVAL_JSON} and {EVAL_PNG}")
    return out_dir


def check_options(n: int, metrics: Sequence[str], grid: str | Sequence[str], nll_solver: str | None) -> None:
    """Refuse bad settings before a run is loaded: n >= 4, registered metrics and grids, an ODE solver for the NLL."""
    from flowdiff.learning.likelihood import check_solver
    from flowdiff.learning.metrics import get_metric
    from flowdiff.learning.sampling import GRIDS
    from flowdiff.registry import lookup

    if isinstance(n, bool) or not isinstance(n, int) or n < 4:
        raise InvalidInputError(f"the number of samples must be at least 4, got {n!r}")
    for name in metrics:
        get_metric(name)
    for name in [grid] if isinstance(grid, str) else grid:
        lookup({**GRIDS, "learned": None}, name, "grid")
    if nll_solver is not None:
        check_solver(nll_solver)


def _learned_grids(run, seed: int):
    """The grid of a setting: its name, or for "learned" the run's learned grid (learned and stored if missing)."""
    from flowdiff.runs.learned_grids import learned_grid_for

    def grid_of(setting):
        if setting.grid != "learned":
            return setting.grid
        return learned_grid_for(run, setting.solver, setting.steps, seed)[0].tensor()

    return grid_of


def evaluate_run(run_dir: str | Path, solvers: Sequence[str] = ("euler", "heun", "dopri5"),
                 nfes: Sequence[int] = (1, 2, 4, 8, 16, 32, 100), tols: Sequence[float] = (1e-3, 1e-5),
                 metrics: Sequence[str] = ("w2", "sliced_w2", "mmd", "energy"), n: int = 2000, sigma: float = 0.0,
                 grid: str | Sequence[str] = "uniform", seed: int = 0, nll: bool = True, nll_solver: str = "rk4",
                 nll_steps: int = 100, cache_dir: str | Path | None = None, device: str = "cpu",
                 callback: Callable[[dict], None] | None = None) -> dict:
    """Evaluate a trained run (see `flowdiff.learning.evaluation`): a JSON-ready result with the run's step.

    A classifier for labelled images is trained once and cached in `cache_dir` (default:
    RUN/classifier); `flowdiff.plots.evaluation.write_evaluation` writes the result.
    """
    from flowdiff.runs.load import load

    check_options(n, metrics, grid, nll_solver if nll else None)
    from flowdiff.learning.flowmaps import is_flow_map

    grids = [grid] if isinstance(grid, str) else list(grid)
    if "learned" in grids and sigma > 0:
        raise InvalidInputError("a learned grid is fitted to the ODE; evaluate it with sigma = 0")
    settings = settings_for(solvers, nfes, tols, sigma, grids)  # checked before the run is loaded
    run = load(run_dir, device=device)
    run.check_fits(n, max(nfes))
    if is_flow_map(run.network):  # its jumps too: x_r = x_t + (r - t) u(x_t, r, t), NFE = steps
        settings = settings_for(solvers, nfes, tols, sigma, grids, flow_map=True)
    reference = load_reference(run, n, seed)
    cache_dir = Path(cache_dir) if cache_dir is not None else Path(run_dir) / "classifier"
    scorer = scorer_for(run, reference, metrics, cache_dir, seed)
    result = evaluate(run.model, run.path, reference, scorer, settings, sigma=sigma, grid=_learned_grids(run, seed),
                      seed=seed, scale=run.decoder or run.data_info, nll=nll and run.data_info.kind != "images",
                      nll_solver=nll_solver, nll_steps=nll_steps, callback=callback)
    return {"run": str(run_dir), "step": run.step, **result, "notes": notes(run, nll)}
