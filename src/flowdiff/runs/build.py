"""Build a whole training run from a `TrainConfig`: the data set, the network, the path and the hooks.

This is what `flowdiff train` and `flowdiff demo` do between parsing their options and calling
`Trainer.fit`; Python users can call it too: `build_trainer(TrainConfig(data="moons"), out="runs/m")`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from flowdiff.data.registry import Dataset, load_dataset
from flowdiff.errors import InvalidInputError
from flowdiff.learning.training.config import TrainConfig
from flowdiff.learning.training.hooks import Hook
from flowdiff.learning.training.trainer import Trainer
from flowdiff.paths.gaussian_path import GaussianPath


def load_training_data(config: TrainConfig) -> Dataset:
    """The data set the config names, labelled or not as it asks (default: labels of files and images)."""
    if config.data is None:
        raise InvalidInputError("the configuration names no data to train on (data = \"moons\", a file, ...)")
    dataset = load_dataset(config.data, n=config.n_data, generator=torch.Generator().manual_seed(config.seed),
                           label_column=config.label_column, standardize=config.standardize,
                           image_size=config.image_size)
    use_labels = config.labels if config.labels is not None else (
        dataset.y is not None and dataset.info.source != "toy"
    )
    if use_labels and dataset.y is None:
        raise InvalidInputError(f"labels were asked for, but the data {config.data!r} has no labels")
    return dataset if use_labels else dataset.without_labels()


def build_network(config: TrainConfig, dataset: Dataset) -> nn.Module:
    """The network the config names for this data (seeded by config.seed): an MLP, a U-Net or a DiT."""
    from flowdiff.learning.models import MLP, build_model, default_image_model

    images = dataset.kind == "images"
    if images and config.model == "mlp":
        raise InvalidInputError("the mlp model takes vectors; for images use the unet or dit model")
    if not images and config.model not in ("default", "mlp"):
        raise InvalidInputError(f"the {config.model} model is for images; vector data uses the mlp model")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        if not images:
            return MLP(dataset.info.shape[0], hidden=config.hidden, num_classes=dataset.num_classes)
        if config.model == "default":
            return default_image_model(dataset.info.shape, dataset.num_classes)
        channels, height, width = dataset.info.shape
        return build_model({"name": config.model, "channels": channels, "image_size": [height, width],
                            "num_classes": dataset.num_classes})


def build_trainer(config: TrainConfig, out: str | Path | None = None, resume: bool = False, force: bool = False,
                  hooks: Sequence[Hook] = ()) -> Trainer:
    """Load the data, build the network and path, and return a `Trainer` recorded in `out` (if given)."""
    from flowdiff.runs.train import run_hooks

    if config.latent is not None:  # a flow on the codes of an autoencoder run
        from flowdiff.runs.latent import latent_trainer

        return latent_trainer(config, out, resume, force, hooks)
    dataset = load_training_data(config)
    model = build_network(config, dataset)
    return Trainer(model, GaussianPath(config.schedule), dataset.x, labels=dataset.y, config=config,
                   hooks=[*run_hooks(out, dataset.info, resume, force), *hooks])


def check_data_unchanged(config: dict, directory: str | Path) -> None:
    """Refuse when the data a run was trained on (a file or an image set) no longer has its recorded checksum."""
    from flowdiff.learning.training.batches import fingerprint

    stored, training = config.get("resolved", {}).get("data_checksum"), config.get("training", {})
    if isinstance(config.get("latent"), dict):  # a latent run: its images' checksum (the other is of the codes)
        stored = config["latent"].get("images_checksum")
    if stored is None or not isinstance(training, dict) or training.get("data") is None:
        return  # not recorded (a run of the Python API): nothing to compare with
    dataset = load_training_data(TrainConfig.from_dict(training, source=f"{directory}/config.json"))
    labels = None if dataset.y is None else dataset.y.long()
    if fingerprint(dataset.x.float(), labels) != stored:
        raise InvalidInputError(f"the data {training['data']} changed since {directory} was trained on it (its "
                                "checksum differs); evaluate against the data the run was trained on, or train again")
