"""Run directories and checkpoints: save atomically, resume exactly, `load` a trained model.

A run directory holds

    config.json                     the full resolved configuration (model, path, data, training)
    metrics.jsonl                   one JSON line of training metrics every `log_every` steps
    checkpoints/latest.json         {"step": k, "dir": "step_0000k"}: the newest complete checkpoint
    checkpoints/step_0000k/         model.safetensors, ema.safetensors, state.pt (optimizer, RNG, step)

A checkpoint is written into a temporary folder that is renamed into place, and only then
does `latest.json` (replaced with `os.replace`) point at it; a crash at any moment leaves
the previous checkpoint complete and pointed to. Older checkpoints are pruned afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from flowdiff.errors import IncompatibleError, InvalidInputError
from flowdiff.paths.gaussian_path import GaussianPath

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS_DIR = "checkpoints"
LATEST_FILE = "latest.json"
MODEL_WEIGHTS = "model.safetensors"
EMA_WEIGHTS = "ema.safetensors"
TRAINING_STATE = "state.pt"


@dataclass
class DataInfo:
    """What a model was trained on: kind ("vectors"/"images"), shape of one sample, labels, scaling.

    For standardised vector data, the network saw (x - mean) / std; `unstandardize` maps its
    samples back to the units of the data. Images are in [-1, 1].
    """

    kind: str = "vectors"
    shape: tuple[int, ...] = (2,)
    num_classes: int | None = None
    class_names: list[str] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    source: str = ""
    name: str = ""
    size: int = 0

    def to_dict(self) -> dict:
        """A JSON-ready dictionary."""
        out = asdict(self)
        out["shape"] = list(self.shape)
        return out

    @classmethod
    def from_dict(cls, values: dict) -> DataInfo:
        """Rebuild from `to_dict` output (unknown keys are ignored)."""
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        if "shape" in known:
            known["shape"] = tuple(int(s) for s in known["shape"])
        return cls(**known)

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        """(x - mean) / std, or x unchanged when no standardisation was recorded."""
        if self.mean is None or self.std is None:
            return x
        mean = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device)
        std = torch.as_tensor(self.std, dtype=x.dtype, device=x.device)
        return (x - mean) / std

    def unstandardize(self, x: torch.Tensor) -> torch.Tensor:
        """mean + std * x: samples of the network back in the units of the data."""
        if self.mean is None or self.std is None:
            return x
        mean = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device)
        std = torch.as_tensor(self.std, dtype=x.dtype, device=x.device)
        return mean + std * x

    def label_index(self, label: str | int) -> int:
        """The class index of a label given by its name (first) or its index 0..K-1."""
        if self.num_classes is None:
            raise IncompatibleError("a label was given, but the model was trained without labels")
        names = self.class_names or [str(k) for k in range(self.num_classes)]
        text = str(label)
        if text in names:
            return names.index(text)
        try:
            index = int(text)
        except ValueError:
            index = -1
        if 0 <= index < self.num_classes:
            return index
        raise InvalidInputError(f"unknown label {label!r}; the model knows the labels {names}")


@dataclass
class Run:
    """A trained run loaded from its directory: `model` predicts the velocity u_t(x) with EMA weights."""

    model: nn.Module
    path: GaussianPath
    config: dict
    data_info: DataInfo
    directory: Path
    step: int
    network: nn.Module = field(repr=False, default=None)

    @property
    def num_classes(self) -> int | None:
        """Number of labels the model was conditioned on (None when unconditional)."""
        return self.data_info.num_classes

    def sample(self, n: int | None = None, unstandardize: bool = True, **kwargs) -> torch.Tensor:
        """Draw samples with `flowdiff.learning.sampling.sample`, mapped back to the data's units."""
        from flowdiff.learning.sampling import sample

        if kwargs.get("return_trajectory"):
            raise InvalidInputError("Run.sample returns samples; for trajectories call "
                                    "flowdiff.sample(run.model, ...)")
        out = sample(self.model, self.path, n=n, **kwargs)
        return self.data_info.unstandardize(out) if unstandardize else out


# ---------------------------------------------------------------------------------------------
# atomic writes


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` via a temporary file and os.replace (never half-written)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, value) -> None:
    """Write `value` as indented JSON to `path` atomically."""
    write_text_atomic(path, json.dumps(value, indent=2, sort_keys=False) + "\n")


def _tensors_for_safetensors(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: nn.Module,
    ema: nn.Module | None,
    state: dict,
    keep: int = 2,
) -> Path:
    """Write checkpoint `step` of a run atomically and point `latest.json` at it; keep the newest `keep`."""
    from safetensors.torch import save_file

    root = Path(run_dir) / CHECKPOINTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:08d}"
    final = root / name
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}."))
    try:
        save_file(_tensors_for_safetensors(model), str(tmp / MODEL_WEIGHTS))
        if ema is not None:
            save_file(_tensors_for_safetensors(ema), str(tmp / EMA_WEIGHTS))
        torch.save(state, tmp / TRAINING_STATE)
        for entry in tmp.iterdir():
            with open(entry, "rb") as handle:
                os.fsync(handle.fileno())
        if final.exists():  # the same step saved again (e.g. after a resume): move the old one aside
            stale = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}.old."))
            os.replace(final, stale / name)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_json_atomic(root / LATEST_FILE, {"step": int(step), "dir": name})
    _prune(root, keep=keep, current=name)
    return final


def _prune(root: Path, keep: int, current: str) -> None:
    """Remove checkpoints beyond the newest `keep` and leftovers of interrupted writes."""
    for entry in root.iterdir():
        if entry.is_dir() and entry.name.startswith("."):
            shutil.rmtree(entry, ignore_errors=True)
    steps = sorted(e for e in root.iterdir() if e.is_dir() and e.name.startswith("step_"))
    for entry in steps[: max(0, len(steps) - keep)]:
        if entry.name != current:
            shutil.rmtree(entry, ignore_errors=True)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The directory of the newest complete checkpoint of a run, or None when there is none."""
    pointer = Path(run_dir) / CHECKPOINTS_DIR / LATEST_FILE
    if not pointer.is_file():
        return None
    try:
        latest = json.loads(pointer.read_text())
        directory = Path(run_dir) / CHECKPOINTS_DIR / str(latest["dir"])
    except (ValueError, KeyError, TypeError) as error:
        raise InvalidInputError(f"{pointer} is unreadable ({error}); the run directory is damaged") from None
    if not (directory / MODEL_WEIGHTS).is_file():
        raise InvalidInputError(f"{pointer} points at {directory}, which has no {MODEL_WEIGHTS}")
    return directory


def read_weights(file: Path, device=None) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file."""
    from safetensors.torch import load_file

    try:
        return load_file(str(file), device=str(device or "cpu"))
    except Exception as error:  # safetensors raises its own error types for damaged files
        raise InvalidInputError(f"cannot read weights {file}: {error}") from None


def load_weights(module: nn.Module, file: Path, device=None) -> None:
    """Load a safetensors file into `module`, raising InvalidInputError when the shapes disagree."""
    tensors = read_weights(file, device)
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()
        detail = "; ".join(line.strip() for line in first[:3])
        raise InvalidInputError(f"weights in {file} do not fit the configured model: {detail}") from None


def read_training_state(checkpoint: Path) -> dict:
    """Optimizer, RNG and step state saved next to the weights."""
    file = Path(checkpoint) / TRAINING_STATE
    if not file.is_file():
        raise InvalidInputError(f"checkpoint {checkpoint} has no {TRAINING_STATE}; it cannot be resumed")
    return torch.load(file, map_location="cpu", weights_only=True)


def read_config(run_dir: Path) -> dict:
    """The config.json of a run directory, checked for the entries `load` needs."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise InvalidInputError(f"run directory {run_dir} does not exist")
    if not run_dir.is_dir():
        raise InvalidInputError(f"{run_dir} is a file, not a run directory")
    file = run_dir / CONFIG_FILE
    if not file.is_file():
        raise InvalidInputError(
            f"{run_dir} is not a flowdiff run directory: it has no {CONFIG_FILE} (make one with `flowdiff "
            "train`)"
        )
    try:
        config = json.loads(file.read_text())
    except ValueError as error:
        raise InvalidInputError(f"{file} is not valid JSON: {error}") from None
    missing = [key for key in ("model", "path", "data") if key not in config]
    if not isinstance(config, dict) or missing:
        raise InvalidInputError(f"{file} lacks the entries {missing}; it was not written by flowdiff train")
    return config


def pick_device(device: str | torch.device | None = "auto") -> torch.device:
    """"auto" picks cuda, then mps, then cpu; other values are checked and returned as torch.device."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise InvalidInputError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError("device cuda was asked for, but CUDA is not available here; use --device cpu")
    mps = getattr(torch.backends, "mps", None)
    if device.type == "mps" and not (mps is not None and mps.is_available()):
        raise InvalidInputError("device mps was asked for, but MPS is not available here; use --device cpu")
    return device


def build_from_config(config: dict) -> tuple[nn.Module, GaussianPath]:
    """The (untrained) network and the probability path that a config.json describes."""
    from flowdiff.learning.models import build_model

    try:
        model = build_model(dict(config["model"]))
        path = GaussianPath(**dict(config["path"]))
    except (TypeError, KeyError) as error:
        raise InvalidInputError(f"the configuration cannot be rebuilt: {error}") from None
    return model, path


def load(run_dir: str | Path, device: str | torch.device | None = None, weights: str = "ema") -> Run:
    """Load a trained run: its network (EMA weights, eval mode, predicting the velocity), path and config.

    `weights="model"` takes the raw (non-averaged) weights instead of the EMA ones.
    """
    from flowdiff.learning.predictions import as_velocity

    run_dir = Path(run_dir)
    config = read_config(run_dir)
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise InvalidInputError(f"{run_dir} has no checkpoint yet ({CHECKPOINTS_DIR}/{LATEST_FILE} is "
                                "missing)")
    if weights not in ("ema", "model"):
        raise InvalidInputError(f"weights must be 'ema' or 'model', got {weights!r}")
    network, path = build_from_config(config)
    file = checkpoint / EMA_WEIGHTS
    if weights == "model" or not file.is_file():
        file = checkpoint / MODEL_WEIGHTS
    load_weights(network, file)
    target = pick_device(device if device is not None else "cpu")
    network = network.to(target).eval().requires_grad_(False)
    prediction = config.get("prediction", "velocity")
    model = as_velocity(network, path, prediction)
    if isinstance(model, nn.Module):
        model.eval()
    info = DataInfo.from_dict(config["data"])
    state = json.loads((run_dir / CHECKPOINTS_DIR / LATEST_FILE).read_text())
    return Run(
        model=model,
        path=path,
        config=config,
        data_info=info,
        directory=run_dir,
        step=int(state["step"]),
        network=network,
    )
