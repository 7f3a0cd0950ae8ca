"""The report of an autoencoder run: `<run>/autoencoder_report.html`, figures under `<run>/figures/autoencoder/`.

It shows the training loss, the reconstruction error over the whole data set (mean squared error in
[-1, 1] units and PSNR), the size of the codes, and inputs beside their reconstructions D(mu(x)).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from flowdiff.errors import InvalidInputError
from flowdiff.learning.devices import model_device

REPORT_FILE = "autoencoder_report.html"
"""The page an autoencoder report is written to, inside the run directory."""


@torch.no_grad()
def reconstruction_error(model, images: torch.Tensor, batch: int = 500) -> dict:
    """Mean squared error of D(mu(x)) over `images` (in [-1, 1]), its standard error, and the PSNR in dB."""
    device = model_device(model)
    errors = []
    for start in range(0, len(images), batch):
        x = images[start : start + batch].to(device)
        errors.append((model(x).clamp(-1, 1) - x).pow(2).flatten(1).mean(1).double().cpu())
    per_image = torch.cat(errors)
    mse = float(per_image.mean())
    return {"mse": mse, "standard_error": float(per_image.std() / math.sqrt(len(per_image))) if len(per_image) > 1
            else 0.0, "psnr_db": 10 * math.log10(4.0 / max(mse, 1e-12)), "n": len(per_image)}


def write_autoencoder_report(run_dir: str | Path, n: int = 16, device: str | torch.device = "cpu") -> Path:
    """Write the report of an autoencoder run (n inputs beside their reconstructions); returns the page's path."""
    from flowdiff.learning.training.config import TrainConfig
    from flowdiff.plots import figures
    from flowdiff.plots.images import save_labelled_rows
    from flowdiff.plots.report import Report
    from flowdiff.plots.run_report import read_metrics
    from flowdiff.runs.autoencoder import load_autoencoder
    from flowdiff.runs.build import load_training_data

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidInputError(f"n must be a positive integer, got {n!r}")
    run_dir = Path(run_dir)
    run = load_autoencoder(run_dir, device=device)
    training = TrainConfig.from_dict(run.config["training"], source=f"{run_dir}/config.json")
    images = load_training_data(training).x
    error = reconstruction_error(run.model, images)
    figures_dir = run_dir / "figures" / "autoencoder"
    shown = images[:n]
    with torch.no_grad():
        rebuilt = run.model(shown.to(model_device(run.model))).clamp(-1, 1).cpu()
    pairs = save_labelled_rows([shown, rebuilt], figures_dir / "reconstructions.png",
                               row_labels=["input", "decoded"])
    pixels, codes = math.prod(run.model.data_shape), math.prod(run.model.latent_shape)
    report = Report(f"flowdiff autoencoder: {run.data_info.name or run_dir.name}")
    report.table(["", "value"], [
        ["run directory", str(run_dir)],
        ["data", f"{run.data_info.name} ({len(images)} images of shape {tuple(run.model.data_shape)})"],
        ["code shape", f"{tuple(run.model.latent_shape)} ({codes} numbers, {pixels / codes:.3g}x fewer than pixels)"],
        ["beta (KL weight)", run.beta if run.beta is not None else "not recorded"],
        ["trained steps", run.step],
        ["reconstruction MSE", f"{error['mse']:.4g} +- {error['standard_error']:.2g} (images in [-1, 1])"],
        ["PSNR", f"{error['psnr_db']:.2f} dB"],
    ])
    history = read_metrics(run_dir)
    if history:
        report.heading("Training loss")
        report.figure(figures.loss_curve(history, figures_dir / "loss.png"),
                      "Reconstruction error + beta KL per pixel, mean over each logging window.")
    report.heading("Inputs and their reconstructions")
    report.figure(pairs, f"The first {len(shown)} images of the data (top) and D(mu(x)) (bottom), EMA weights.")
    return report.write(run_dir / REPORT_FILE)
