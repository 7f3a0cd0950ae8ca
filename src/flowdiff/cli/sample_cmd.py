"""`flowdiff sample RUN`: draw samples from a trained run with the ODE (sigma = 0) or the SDE (sigma > 0).

Writes the samples (in the units of the data) to an .npz file ("x", and "y" when labelled)
and a picture next to it: a scatter plot for 2-D vectors, an image grid for images.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import typer

from flowdiff.errors import IncompatibleError, InvalidInputError


def save_npz_atomic(path: Path, **arrays) -> Path:
    """np.savez to a temporary file, then os.replace (a failure never leaves a half-written file)."""
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def resolve_labels(run, label: str | None, guidance: float, n: int):
    """The label tensor to sample with (None when unconditional) from --label and --guidance."""
    import torch

    conditional = run.num_classes is not None
    if not conditional and (label is not None or guidance != 1.0):
        what = "--guidance" if guidance != 1.0 else "--label"
        raise IncompatibleError(
            f"{what} needs a label-conditioned model, but {run.directory} was trained without labels "
            "(train on labelled data, e.g. flowdiff train --data FILE --labels)"
        )
    if label is None:
        if guidance != 1.0:
            raise InvalidInputError(f"--guidance {guidance} needs a class to guide towards: add --label K "
                                    "(or all)")
        return None
    if label == "all":
        return torch.arange(run.num_classes).repeat_interleave(n)
    return torch.full((n,), run.data_info.label_index(label), dtype=torch.long)


def sample_command(
    run_dir: Path = typer.Argument(..., metavar="RUN", help="Run directory written by flowdiff train."),
    n: int = typer.Option(1000, "--n", help="Number of samples (per class with --label all)."),
    steps: int = typer.Option(100, "--steps", help="Number of solver steps."),
    solver: str = typer.Option(None, "--solver", help="ODE: euler, midpoint, heun, rk4, dopri5; SDE: "
                               "euler_maruyama, stochastic_heun (default: heun / euler_maruyama)."),
    sigma: float = typer.Option(0.0, "--sigma", help="Noise level sigma_t of the SDE; 0 integrates the ODE."),
    guidance: float = typer.Option(1.0, "--guidance", help="Classifier-free guidance scale w (needs "
                                                           "--label)."),
    label: str = typer.Option(None, "--label", help="Class to sample (its name or index), or 'all'."),
    seed: int = typer.Option(0, "--seed", help="Seed of the noise."),
    out: Path = typer.Option(None, "--out", help="Output .npz (default: RUN/samples.npz); a PNG is written "
                             "next to it."),
    grid: str = typer.Option("uniform", "--grid", help="Time grid: uniform, shifted, rho."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, mps or auto."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output file."),
) -> None:
    """Sample from a trained run; writes samples.npz and a picture (scatter or image grid)."""
    import numpy as np
    import torch

    from flowdiff.learning.devices import configure_threads
    from flowdiff.runs.load import load

    if n < 1 or steps < 1:
        raise InvalidInputError(f"--n and --steps must be >= 1, got --n {n} --steps {steps}")
    run = load(run_dir, device=device)
    configure_threads(None, device, run.data_info.kind)
    out = Path(out) if out is not None else Path(run_dir) / "samples.npz"
    if out.suffix != ".npz":
        raise InvalidInputError(f"--out must name an .npz file, got {out}")
    picture = out.with_suffix(".png")
    info = run.data_info
    makes_picture = info.kind == "images" or info.shape == (2,)
    existing = [str(p) for p in (out, picture) if p.exists() and (p == out or makes_picture)]
    if existing and not force:
        raise InvalidInputError(f"{', '.join(existing)} already exists; pass --force to overwrite or "
                                "choose --out")
    y = resolve_labels(run, label, guidance, n)
    generator = torch.Generator(device=next(run.network.parameters()).device).manual_seed(seed)
    x = run.sample(n=n if y is None else len(y), steps=steps, solver=solver, sigma=sigma, y=y,
                   guidance=guidance, generator=generator, grid=grid)
    x = x.detach().cpu()
    arrays = {"x": x.numpy()}
    if y is not None:
        arrays["y"] = y.numpy()
        if info.class_names:
            arrays["class_names"] = np.asarray(info.class_names)
    save_npz_atomic(out, **arrays)
    wrote = [str(out)]
    if info.kind == "images":
        from flowdiff.plots.images import save_image_grid

        nrow = n if label == "all" else None
        wrote.append(str(save_image_grid(x.clamp(-1, 1), picture, nrow=nrow)))
    elif info.shape == (2,):
        from flowdiff.plots.figures import scatter_panels

        colours = {"samples": y} if y is not None else None
        wrote.append(str(scatter_panels({"samples": x}, picture, labels=colours)))
    kind = "SDE" if sigma > 0 else "ODE"
    what = "images" if info.kind == "images" else "points"
    print(f"sampled {len(x)} {what} with the {kind} in {steps} steps; wrote {' and '.join(wrote)}")


def register(app: typer.Typer) -> None:
    """Add `flowdiff sample` to the command line."""
    app.command("sample")(sample_command)
