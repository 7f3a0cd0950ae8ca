"""Build a whole training run from a `TrainConfig`: the data set, the network, the path and the hooks.

This is what `flowdiff train` and `flowdiff demo` do between parsing their options and calling
`Trainer.fit`; Python users can call it too: `build_trainer(TrainConfig(data="moons"), out="runs/m")`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from flowdiff.data.info import DataInfo
from flowdiff.data.registry import Dataset, load_dataset
from flowdiff.errors import InvalidInputError
from flowdiff.learning.training.config import TrainConfig
from flowdiff.learning.training.hooks import Hook
from flowdiff.learning.training.trainer import Trainer

if TYPE_CHECKING:
    from flowdiff.data.streaming import StreamingData
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


def load_stream(config: TrainConfig) -> tuple[StreamingData, DataInfo]:
    """The config's data as a stream (an image folder, or a .npy of uint8 images (N, C, H, W)) and its description."""
    from flowdiff.data.streaming import ImageFiles, NpyRows, StreamingData

    spec = Path(str(config.data)).expanduser()
    if config.n_data is not None:
        raise InvalidInputError("n_data takes a subset of data held in memory; a stream reads all of its data")
    if spec.is_dir():
        size = None if config.image_size is None else (config.image_size, config.image_size)
        dataset = ImageFiles(spec, size=size)
    elif spec.suffix.lower() == ".npy" and spec.is_file():
        dataset = NpyRows(spec)
        if dataset.array.dtype != np.uint8 or dataset.array.ndim != 4 or config.image_size is not None:
            raise InvalidInputError(f"{spec}: a streamed .npy must hold uint8 images (N, C, H, W) at their size, got "
                                    f"{dataset.array.dtype} {dataset.array.shape}; vectors train in memory")
    else:
        raise InvalidInputError(f"{spec}: only a folder of images or a .npy file of images can be streamed")
    if config.labels and dataset.labels is None:
        raise InvalidInputError(f"labels were asked for, but {spec} has no labels (class sub-folders)")
    if config.labels is False:
        dataset.labels = dataset.class_names = None
    stream = StreamingData(dataset, config.batch_size, seed=config.seed, workers=config.workers, flip=config.flip)
    names = dataset.class_names
    info = DataInfo(kind="images", shape=stream.shape, num_classes=None if names is None else len(names),
                    class_names=names, source="images", name=str(spec), size=len(dataset))
    return stream, info


def build_network(config: TrainConfig, dataset: Dataset | DataInfo) -> nn.Module:
    """The network the config names for this data (seeded by config.seed): an MLP, a U-Net or a DiT;
    a flow map u(x, r, t) (flow_map=True) when the loss trains one (meanflow, shortcut)."""
    from flowdiff.learning.models import MLP, build_model, default_image_model

    info = dataset if isinstance(dataset, DataInfo) else dataset.info
    images = info.kind == "images"
    if images and config.model == "mlp":
        raise InvalidInputError("the mlp model takes vectors; for images use the unet or dit model")
    if not images and config.model not in ("default", "mlp"):
        raise InvalidInputError(f"the {config.model} model is for images; vector data uses the mlp model")
    flow_map = config.flow_map
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        if not images:
            return MLP(info.shape[0], hidden=config.hidden, num_classes=info.num_classes, flow_map=flow_map)
        if config.model == "default":
            network = default_image_model(info.shape, info.num_classes)
            return build_model({**network.config(), "flow_map": True}) if flow_map else network
        channels, height, width = info.shape
        return build_model({"name": config.model, "channels": channels, "image_size": [height, width],
                            "num_classes": info.num_classes, **({"flow_map": True} if flow_map else {})})


def build_trainer(config: TrainConfig, out: str | Path | None = None, resume: bool = False, force: bool = False,
                  hooks: Sequence[Hook] = ()) -> Trainer:
    """Load the data, build the network and path, and return a `Trainer` recorded in `out` (if given)."""
    from flowdiff.runs.train import run_hooks

    if config.method == "discrete":
        from flowdiff.runs.discrete import build_discrete_trainer

        return build_discrete_trainer(config, out, resume, force, hooks)
    if config.latent is not None:  # a flow on the codes of an autoencoder run
        from flowdiff.runs.latent import latent_trainer

        return latent_trainer(config, out, resume, force, hooks)
    if config.stream:
        data, info = load_stream(config)
        labels = None
    else:
        dataset = load_training_data(config)
        data, labels, info = dataset.x, dataset.y, dataset.info
    model = build_network(config, info)
    return Trainer(model, GaussianPath(config.schedule), data, labels=labels, config=config,
                   hooks=[*run_hooks(out, info, resume, force), *hooks])


def data_changed(data, directory, why: str = "its checksum differs") -> InvalidInputError:
    """The one error for training data that is no longer what a run was trained on."""
    return InvalidInputError(f"the data {data} changed since {directory} was trained on it ({why}); evaluate against "
                             "the data the run was trained on, or train again")


def check_data_unchanged(config: dict, directory: str | Path) -> None:
    """Refuse when the data a run was trained on (a file or an image set) no longer has its recorded checksum."""
    from flowdiff.learning.training.batches import fingerprint

    stored, training = config.get("resolved", {}).get("data_checksum"), config.get("training", {})
    if isinstance(config.get("latent"), dict):  # a latent run: its images' checksum (the other is of the codes)
        stored = config["latent"].get("images_checksum")
    if stored is None or not isinstance(training, dict) or training.get("data") is None:
        return  # not recorded (a run of the Python API): nothing to compare with
    if training.get("stream"):
        if load_stream(TrainConfig.from_dict(training, source=f"{directory}/config.json"))[0].checksum() != stored:
            raise data_changed(training["data"], directory, "its files' names, sizes or times differ")
        return
    dataset = load_training_data(TrainConfig.from_dict(training, source=f"{directory}/config.json"))
    labels = None if dataset.y is None else dataset.y.long()
    if fingerprint(dataset.x.float(), labels) != stored:
        raise data_changed(training["data"], directory)
