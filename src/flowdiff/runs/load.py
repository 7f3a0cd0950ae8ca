"""`load`: a trained run back from its directory, as a velocity field ready to sample."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from flowdiff.data.info import DataInfo
from flowdiff.errors import InvalidInputError
from flowdiff.learning.devices import model_device, pick_device
from flowdiff.paths.gaussian_path import GaussianPath
from flowdiff.runs.checkpoints import latest_checkpoint, load_weights
from flowdiff.runs.layout import CHECKPOINTS_DIR, EMA_WEIGHTS, LATEST_FILE, MODEL_WEIGHTS, read_config


@dataclass
class LoadedRun:
    """What every loaded run holds: its network (EMA weights) as `model`, its path, config, data and step."""

    model: nn.Module
    path: object
    config: dict
    data_info: DataInfo
    directory: Path
    step: int
    network: nn.Module = field(repr=False, default=None)

    @property
    def num_classes(self) -> int | None:
        """Number of labels the model was conditioned on (None when unconditional)."""
        return self.data_info.num_classes

    @property
    def device(self) -> torch.device:
        """The device the network was loaded on."""
        return model_device(self.network)


@dataclass
class Run(LoadedRun):
    """A trained run loaded from its directory: `model` predicts the velocity u_t(x) with EMA weights."""

    path: GaussianPath
    decoder: nn.Module | None = field(repr=False, default=None)  # a latent run: codes -> images

    @property
    def state_shape(self) -> tuple[int, ...]:
        """The shape of one state X_t of the flow: the data's, or a latent run's code shape."""
        return tuple(getattr(self.network, "data_shape", None) or self.data_info.shape)

    def to_data(self, x: torch.Tensor) -> torch.Tensor:
        """Samples of the flow in the units of the data: unstandardised, or decoded to images for a latent run."""
        return self.decoder.unstandardize(x) if self.decoder is not None else self.data_info.unstandardize(x)

    def sample(self, n: int | None = None, unstandardize: bool = True, **kwargs) -> torch.Tensor:
        """Draw samples with `flowdiff.sample`, mapped back to the data's units."""
        from flowdiff.learning.sampling import sample

        if kwargs.get("return_trajectory"):
            raise InvalidInputError("Run.sample returns samples; for trajectories call "
                                    "flowdiff.sample(run.model, ...)")
        y, steps = kwargs.get("y"), kwargs.get("steps", 100)
        count = n if n is not None else (torch.as_tensor(y).numel() if y is not None else None)
        if isinstance(count, int) and isinstance(steps, int) and count > 0 and steps > 0:  # else sample says why
            self.check_fits(count, steps, kwargs.get("guidance", 1.0) != 1.0)
        out = sample(self.model, self.path, n=n, **kwargs)
        return self.to_data(out) if unstandardize else out

    def check_fits(self, n: int, steps: int, guided: bool = False, saved_states: int = 1) -> None:
        """Refuse up front, with the estimate, a draw of n samples in `steps` that cannot fit in memory (instead
        of an allocator's crash); `guided` when guidance doubles the network's batch."""
        from flowdiff.learning.training.memory import check_sampling_fits

        y = torch.zeros(1, dtype=torch.long, device=self.device) if self.num_classes is not None else None
        check_sampling_fits(self.model, self.state_shape, n, steps, self.device, y, guided,
                            saved_states)


def check_finite(network: nn.Module, file: Path) -> None:
    """Refuse weights with NaN or inf (a diverged run): sampling them would only write NaN."""
    bad = [name for name, tensor in network.state_dict().items()
           if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if bad:
        raise InvalidInputError(f"the weights in {file} are not finite (NaN or inf in {', '.join(bad[:3])}"
                                f"{', ...' if len(bad) > 3 else ''}): the run diverged; train it again with a lower "
                                "learning rate")


def build_from_config(config: dict) -> tuple[nn.Module, GaussianPath]:
    """The (untrained) network and the probability path that a config.json describes."""
    from flowdiff.learning.models import build_model

    try:
        model = build_model(dict(config["model"]))
        path = GaussianPath(**dict(config["path"]))
    except (TypeError, KeyError, ValueError) as error:
        raise InvalidInputError(f"the configuration cannot be rebuilt: {error}") from None
    return model, path


def load(run_dir: str | Path, device: str | torch.device | None = None, weights: str = "ema") -> Run:
    """Load a trained run: its network (EMA weights, eval mode, predicting the velocity), path and config.

    A discrete run (method "discrete") comes back as a `flowdiff.runs.discrete.TokenRun`. A latent run also
    gets its autoencoder's decoder (checked against the recorded checksum), so that `Run.sample` returns images.

    `weights="model"` takes the raw (non-averaged) weights instead of the EMA ones.
    """
    from flowdiff.learning.predictions import as_velocity

    run_dir = Path(run_dir)
    config = read_config(run_dir)
    if config["model"].get("name") == "autoencoder":
        raise InvalidInputError(f"{run_dir} is an autoencoder run, not a flow; train a flow on its codes "
                                "(the latent setting) and load that run")
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise InvalidInputError(f"{run_dir} has no checkpoint yet ({CHECKPOINTS_DIR}/{LATEST_FILE} is "
                                "missing)")
    if weights not in ("ema", "model"):
        raise InvalidInputError(f"weights must be 'ema' or 'model', got {weights!r}")
    discrete = isinstance(config.get("path"), dict) and config["path"].get("name") == "mixture"
    network, path = build_from_config(config) if not discrete else (_token_network(config), None)
    file = checkpoint / EMA_WEIGHTS
    if weights == "model" or not file.is_file():
        file = checkpoint / MODEL_WEIGHTS
    load_weights(network, file)
    network = network.to(pick_device(device if device is not None else "cpu")).eval().requires_grad_(False)
    if discrete:  # a token run: its network predicts the data-token posterior on the mixture path
        from flowdiff.runs.discrete import build_token_run

        check_finite(network, file)
        return build_token_run(config, network, run_dir, int(checkpoint.name.removeprefix("step_")))
    model = as_velocity(network, path, config.get("prediction", "velocity"))
    if isinstance(model, nn.Module):
        model.eval()
    check_finite(network, file)
    step = int(checkpoint.name.removeprefix("step_"))
    decoder = None
    if config.get("latent") is not None:
        from flowdiff.runs.latent import latent_decoder

        decoder = latent_decoder(config["latent"], run_dir, device=model_device(network))
    return Run(model=model, path=path, config=config, data_info=DataInfo.from_dict(config["data"]),
               directory=run_dir, step=int(step), network=network, decoder=decoder)


def _token_network(config: dict) -> nn.Module:
    from flowdiff.learning.models import build_model

    try:
        return build_model(dict(config["model"]))
    except (TypeError, KeyError, ValueError) as error:
        raise InvalidInputError(f"the configuration cannot be rebuilt: {error}") from None
