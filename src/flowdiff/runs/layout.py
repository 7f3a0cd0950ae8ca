"""The layout of a run directory, reading its config, and what replacing a run may remove.

    config.json        the full resolved configuration (model, path, data, training settings)
    metrics.jsonl      one JSON line of training metrics every `log_every` steps
    checkpoints/       see `flowdiff.runs.checkpoints`
    samples.npz, eval.json, report.html, figures/, ...   what the commands derive from the run
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from flowdiff.data.info import DataInfo
from flowdiff.errors import InvalidInputError

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS_DIR = "checkpoints"
LATEST_FILE = "latest.json"
MODEL_WEIGHTS = "model.safetensors"
EMA_WEIGHTS = "ema.safetensors"
TRAINING_STATE = "state.pt"

DERIVED_FILES = (
    "samples.npz", "samples.png", "eval.json", "eval.png", "report.html", "run_report.html", "quality.json",
    "grids.json", "autoencoder_report.html", "latents.npz",
)
"""Files that the commands derive from a run; replacing the run removes them with it."""

DERIVED_FOLDERS = (CHECKPOINTS_DIR, "figures", "classifier")
"""Folders of a run (and derived from it) that replacing the run removes."""


def read_config(run_dir: str | Path) -> dict:
    """The config.json of a run directory, checked for the entries that rebuild the model."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise InvalidInputError(f"run directory {run_dir} does not exist")
    if not run_dir.is_dir():
        raise InvalidInputError(f"{run_dir} is a file, not a run directory")
    file = run_dir / CONFIG_FILE
    if not file.is_file():
        raise InvalidInputError(f"{run_dir} is not a flowdiff run directory: it has no {CONFIG_FILE}")
    try:
        config = json.loads(file.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidInputError(f"{file} is not valid JSON: {error}") from None
    if not isinstance(config, dict):
        raise InvalidInputError(f"{file} holds a {type(config).__name__}, not a run configuration")
    missing = [key for key in ("model", "path", "data") if not isinstance(config.get(key), dict)]
    if missing:
        raise InvalidInputError(f"{file} lacks the entries {missing}; it was not written by flowdiff")
    try:
        DataInfo.from_dict(config["data"])
    except InvalidInputError as error:
        raise InvalidInputError(f"{file}: {error}") from None
    return config


def is_run(directory: Path) -> bool:
    """True when `directory` holds a config.json that flowdiff wrote (marked by its "flowdiff_version").

    A folder that merely has a file named config.json is not a run: replacing a run never touches it.
    """
    try:
        config = json.loads((Path(directory) / CONFIG_FILE).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(config, dict) and "flowdiff_version" in config


def clear_run(directory: Path) -> None:
    """Remove a run and what the commands derived from it — and nothing else in the folder."""
    for folder in DERIVED_FOLDERS:
        shutil.rmtree(directory / folder, ignore_errors=True)
    for name in (METRICS_FILE, CONFIG_FILE, *DERIVED_FILES):
        (directory / name).unlink(missing_ok=True)
