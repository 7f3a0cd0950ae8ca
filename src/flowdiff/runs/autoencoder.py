"""Autoencoder runs: train `fd.models.Autoencoder` with the same `Trainer`, run directory and resume, and load it.

An autoencoder run is an ordinary run directory (config.json, metrics.jsonl, checkpoints/) whose
model is the autoencoder and whose loss is the beta-VAE loss (recorded under resolved.loss). A
latent flow run refers to it by path and by the checksum of its weights (`AutoencoderRun.checksum`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from flowdiff.data.info import DataInfo
from flowdiff.errors import IncompatibleError, InvalidInputError
from flowdiff.learning.models.autoencoder import Autoencoder, AutoencoderLoss
from flowdiff.learning.training.config import TrainConfig
from flowdiff.learning.training.hooks import Hook
from flowdiff.learning.training.trainer import Trainer
from flowdiff.runs.checkpoints import latest_checkpoint, load_weights
from flowdiff.runs.layout import EMA_WEIGHTS, MODEL_WEIGHTS, read_config

ARCHITECTURE = ("latent_channels", "base_channels", "downsamples")
"""Keyword arguments of the autoencoder that a user may choose (the image shape comes from the data)."""


@dataclass
class AutoencoderRun:
    """A trained autoencoder loaded from its run directory (EMA weights, eval mode, no gradients)."""

    model: Autoencoder
    config: dict
    data_info: DataInfo
    directory: Path
    step: int
    checksum: str = field(repr=False, default="")

    @property
    def beta(self) -> float | None:
        """The KL weight it was trained with (None when not recorded)."""
        return (self.config.get("resolved", {}).get("loss") or {}).get("beta")


def weights_checksum(file: Path, model_config: dict) -> str:
    """BLAKE2b (96 bits) of a weights file and the model config that reads it."""
    digest = hashlib.blake2b(digest_size=12)
    digest.update(json.dumps(model_config, sort_keys=True).encode())
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_autoencoder_config(config: dict) -> bool:
    """True when a run's config.json describes an autoencoder run."""
    return isinstance(config.get("model"), dict) and config["model"].get("name") == "autoencoder"


def load_autoencoder(run_dir: str | Path, device: str | torch.device = "cpu") -> AutoencoderRun:
    """Load the autoencoder of a run made by `autoencoder_trainer` (its EMA weights when kept)."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise InvalidInputError(f"the autoencoder run {run_dir} does not exist")
    config = read_config(run_dir)
    if not is_autoencoder_config(config):
        raise IncompatibleError(f"{run_dir} is not an autoencoder run (its model is "
                                f"{config['model'].get('name')!r}); give a run trained as an autoencoder")
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise InvalidInputError(f"the autoencoder run {run_dir} has no checkpoint yet; train it first")
    kwargs = {k: v for k, v in config["model"].items() if k != "name"}
    try:
        model = Autoencoder(**kwargs)
    except TypeError as error:
        raise InvalidInputError(f"{run_dir}/config.json cannot rebuild the autoencoder: {error}") from None
    file = checkpoint / EMA_WEIGHTS
    file = file if file.is_file() else checkpoint / MODEL_WEIGHTS
    load_weights(model, file)
    model = model.to(device).eval().requires_grad_(False)
    return AutoencoderRun(model=model, config=config, data_info=DataInfo.from_dict(config["data"]),
                          directory=run_dir, step=int(checkpoint.name.removeprefix("step_")),
                          checksum=weights_checksum(file, config["model"]))


def stored_architecture(run_dir: Path) -> tuple[dict, float | None]:
    """The architecture keywords and beta recorded by an autoencoder run (what a resumed run keeps)."""
    config = read_config(run_dir)
    if not is_autoencoder_config(config):
        raise IncompatibleError(f"{run_dir} holds a run of another model ({config['model'].get('name')!r}), not an "
                                "autoencoder run; it cannot be continued as one")
    beta = (config.get("resolved", {}).get("loss") or {}).get("beta")
    return {k: config["model"][k] for k in ARCHITECTURE if k in config["model"]}, beta


def autoencoder_trainer(config: TrainConfig, out: str | Path | None = None, beta: float | None = None,
                        architecture: dict | None = None, resume: bool = False, force: bool = False,
                        hooks: Sequence[Hook] = ()) -> Trainer:
    """A `Trainer` of a beta-VAE on the image set `config.data` (labels unused), recorded in `out` when given.

    `architecture` holds `latent_channels`, `base_channels`, `downsamples` (defaults of `Autoencoder`);
    `beta` the KL weight (default of `AutoencoderLoss`). A resumed run keeps the recorded ones.
    """
    from flowdiff.runs.build import load_training_data
    from flowdiff.runs.train import run_hooks

    architecture = dict(architecture or {})
    unknown = sorted(set(architecture) - set(ARCHITECTURE))
    if unknown:
        raise InvalidInputError(f"unknown autoencoder settings {unknown}; known: {', '.join(ARCHITECTURE)}")
    if resume and out is not None:
        stored, stored_beta = stored_architecture(Path(out))
        architecture = {**stored, **{k: v for k, v in architecture.items() if v is not None}}
        beta = stored_beta if beta is None else beta
    dataset = load_training_data(config.updated(labels=False))
    if dataset.kind != "images":
        raise InvalidInputError(f"an autoencoder is trained on images; {config.data} holds vectors")
    channels, height, width = dataset.info.shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = Autoencoder(channels, [height, width], **{k: v for k, v in architecture.items() if v is not None})
    loss = AutoencoderLoss() if beta is None else AutoencoderLoss(beta)
    return Trainer(model, None, dataset.x, config=config.updated(labels=False), loss=loss,
                   hooks=[*run_hooks(out, dataset.info, resume, force), *hooks])
