"""Latent flow matching: a flow trained on the codes of an autoencoder run, and decoded back to images.

The training images are encoded once, z = s * mu(x) with mu the autoencoder's posterior mean and
the latent scale factor s = 1 / std(mu) (over every entry of every code), so that the codes have
unit variance like the noise X_0 ~ N(0, I) the flow starts from. For the flow the codes are just
another image-shaped data set. A sample Z_1 is decoded as x = D(Z_1 / s).

The run directory keeps the codes in `latents.npz` (so a resumed run does not encode again) and
its config.json records, under "latent", the autoencoder run (absolute path), the checksum of its
weights and its step, the scale factor and the code shape. Loading a latent run checks that
checksum: a missing or changed autoencoder is refused in one line instead of decoding garbage.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from flowdiff.data.info import DataInfo
from flowdiff.data.registry import Dataset
from flowdiff.errors import IncompatibleError, InvalidInputError
from flowdiff.learning.devices import model_device
from flowdiff.learning.training.batches import fingerprint
from flowdiff.learning.training.config import TrainConfig
from flowdiff.learning.training.hooks import Hook
from flowdiff.learning.training.trainer import Trainer
from flowdiff.runs.autoencoder import AutoencoderRun, load_autoencoder
from flowdiff.runs.directory import RunDirectory

LATENT_CACHE = "latents.npz"
"""The file of a latent run that holds its training codes ("codes", "labels", "scale_factor", "checksum")."""


@torch.no_grad()
def encode_images(model, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """The posterior means mu(x) of `images`, encoded in batches on the model's device; returned on the CPU."""
    device = model_device(model)
    return torch.cat([model.encode(images[k : k + batch].to(device))[0].cpu() for k in range(0, len(images), batch)])


def scale_factor(codes: torch.Tensor) -> float:
    """s = 1 / std(codes) over all entries: the factor that gives the codes unit variance."""
    std = float(codes.double().std())
    if not std > 0:
        raise InvalidInputError("the autoencoder maps every image to the same code (std 0); train it longer")
    return 1.0 / std


class LatentDecoder(nn.Module):
    """Images x = D(z / s) from scaled codes z; `unstandardize` is the same map (a run's samples -> data units)."""

    def __init__(self, autoencoder: nn.Module, scale: float) -> None:
        super().__init__()
        self.autoencoder, self.scale = autoencoder, float(scale)

    @torch.no_grad()
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Decode scaled codes (batch, *code shape) into images (batch, C, H, W)."""
        return self.autoencoder.decode(z.to(model_device(self.autoencoder)) / self.scale)

    def unstandardize(self, z: torch.Tensor) -> torch.Tensor:
        """The images of codes z (the name the samplers and evaluations use for "back to the data's units")."""
        return self(z)


def check_autoencoder(entry: dict, where: str | Path, device="cpu") -> AutoencoderRun:
    """The autoencoder a latent run was trained with, refused when its directory is gone or its weights changed."""
    if not isinstance(entry, dict) or not isinstance(entry.get("autoencoder"), str):
        raise InvalidInputError(f"{where}: the latent entry of config.json is malformed ({entry!r})")
    directory = Path(entry["autoencoder"])
    if not directory.is_dir():
        raise InvalidInputError(f"the autoencoder run {directory} of the latent run {where} is missing; restore it "
                                "there (or train the flow again on another autoencoder)")
    autoencoder = load_autoencoder(directory, device=device)
    if entry.get("checksum") != autoencoder.checksum:
        raise IncompatibleError(f"the autoencoder run {directory} changed since the latent run {where} was trained "
                                "on its codes (the weights' checksum differs); restore that autoencoder or train "
                                "the flow again")
    return autoencoder


def latent_decoder(entry: dict, where: str | Path, device="cpu") -> LatentDecoder:
    """The decoder of a latent run's samples, from the "latent" entry of its config.json."""
    autoencoder = check_autoencoder(entry, where, device)
    return LatentDecoder(autoencoder.model, float(entry["scale_factor"])).eval()


class LatentRunDirectory(RunDirectory):
    """A run directory that also records the "latent" entry in config.json and the codes in latents.npz."""

    def __init__(self, out, data_info: DataInfo, entry: dict, codes: torch.Tensor, labels: torch.Tensor | None,
                 resume: bool = False, force: bool = False) -> None:
        super().__init__(out, data_info=data_info, resume=resume, force=force)
        self.entry, self.codes, self.labels = entry, codes, labels

    def config(self, trainer) -> dict:
        """The run's configuration with the autoencoder, its checksum and the scale factor under "latent"."""
        return {**super().config(trainer), "latent": dict(self.entry)}

    def _create(self, trainer) -> None:
        super()._create(trainer)
        write_cache(self.out, self.codes, self.labels, self.entry)


def write_cache(out: Path, codes: torch.Tensor, labels: torch.Tensor | None, entry: dict) -> Path:
    """Save the scaled training codes (and labels) of a latent run to out/latents.npz, atomically."""
    from flowdiff.atomic import save_npz

    arrays = {"codes": codes.numpy(), "scale_factor": np.float64(entry["scale_factor"]),
              "checksum": np.asarray(entry["checksum"])}
    if labels is not None:
        arrays["labels"] = labels.numpy()
    return save_npz(Path(out) / LATENT_CACHE, **arrays)


def read_cache(out: Path, entry: dict) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """The cached codes and labels of a latent run, or None when missing or made with another autoencoder."""
    file = Path(out) / LATENT_CACHE
    try:
        with np.load(file, allow_pickle=False) as archive:
            if str(archive["checksum"]) != entry.get("checksum"):
                return None
            codes = torch.from_numpy(np.array(archive["codes"], dtype=np.float32))
            labels = torch.from_numpy(np.array(archive["labels"])).long() if "labels" in archive.files else None
    except (OSError, KeyError, ValueError):
        return None
    return codes, labels


def encode_dataset(config: TrainConfig, autoencoder: AutoencoderRun) -> tuple[Dataset, dict]:
    """The image set of `config` encoded by the autoencoder: (its codes as a data set, the "latent" entry)."""
    from flowdiff.runs.build import load_training_data

    images = load_training_data(config)
    if images.kind != "images":
        raise InvalidInputError(f"a latent flow is trained on the codes of images; the data {config.data!r} holds "
                                f"vectors of shape {tuple(images.info.shape)}")
    if tuple(images.info.shape) != tuple(autoencoder.model.data_shape):
        raise IncompatibleError(f"the autoencoder {autoencoder.directory} encodes images of shape "
                                f"{tuple(autoencoder.model.data_shape)}, but {config.data} holds images of shape "
                                f"{tuple(images.info.shape)}; resize them to the autoencoder's size")
    means = encode_images(autoencoder.model, images.x)
    scale = scale_factor(means)
    entry = {"autoencoder": str(autoencoder.directory.resolve()), "checksum": autoencoder.checksum,
             "autoencoder_step": autoencoder.step, "scale_factor": scale,
             "code_shape": list(autoencoder.model.latent_shape), "encoding": "posterior mean, times scale_factor",
             "images_checksum": fingerprint(images.x, images.y), "cache": LATENT_CACHE}
    return _codes(means * scale, images.y, images.info), entry


def _codes(codes: torch.Tensor, labels: torch.Tensor | None, info: DataInfo) -> Dataset:
    """Codes as an image-shaped data set, labelled as the images were."""
    code_info = DataInfo.from_dict({**info.to_dict(), "shape": list(codes.shape[1:])})
    return Dataset(codes, labels, info.num_classes if labels is not None else None, "images", code_info)


def _resumed(out: Path, config: TrainConfig, device) -> tuple[Dataset, dict, DataInfo, AutoencoderRun]:
    """The codes, latent entry and image description of a latent run being resumed (codes from its cache)."""
    from flowdiff.runs.layout import read_config

    stored = read_config(out)
    entry = stored.get("latent")
    if entry is None:
        raise IncompatibleError(f"cannot resume {out} as a latent run: it was trained on the data itself")
    autoencoder = check_autoencoder(entry, out, device)
    info = DataInfo.from_dict(stored["data"])
    cached = read_cache(out, entry)
    if cached is None:
        dataset, entry = encode_dataset(config, autoencoder)
        return dataset, entry, info, autoencoder
    return _codes(*cached, info), entry, info, autoencoder


def latent_trainer(config: TrainConfig, out: str | Path | None = None, resume: bool = False, force: bool = False,
                   hooks: Sequence[Hook] = ()) -> Trainer:
    """A `Trainer` of a flow on the codes of the autoencoder run `config.latent` (recorded in `out` when given)."""
    from flowdiff.learning.devices import pick_device
    from flowdiff.paths.gaussian_path import GaussianPath
    from flowdiff.runs.build import build_network
    from flowdiff.runs.interrupt import StopOnInterrupt

    device = pick_device(config.device)
    if resume and out is not None:
        codes, entry, info, autoencoder = _resumed(Path(out), config, device)
    else:
        autoencoder = load_autoencoder(config.latent, device=device)
        codes, entry = encode_dataset(config, autoencoder)
        info = DataInfo.from_dict({**codes.info.to_dict(), "shape": list(autoencoder.model.data_shape)})
    if Path(entry["autoencoder"]) != Path(config.latent).resolve():
        raise IncompatibleError(f"{out} was trained on the codes of {entry['autoencoder']}, not {config.latent}")
    model = build_network(config, codes)
    run_hooks: list[Hook] = [StopOnInterrupt()]
    if out is not None:
        run_hooks.insert(0, LatentRunDirectory(out, info, entry, codes.x, codes.y, resume, force))
    return Trainer(model, GaussianPath(config.schedule), codes.x, labels=codes.y, config=config,
                   hooks=[*run_hooks, *hooks])
