"""The evaluation classifier's cache: one safetensors file per data set, keyed by its content."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from flowdiff.atomic import write_with
from flowdiff.learning.classifier import ImageClassifier, TrainedClassifier, train_classifier


def data_key(images: torch.Tensor, labels: torch.Tensor, name: str | None = None) -> str:
    """A cache key for a data set: its name and a SHA-1 of its images and labels."""
    digest = hashlib.sha1()
    digest.update(np.ascontiguousarray(torch.as_tensor(images).float().cpu().numpy()).tobytes())
    digest.update(np.ascontiguousarray(torch.as_tensor(labels).long().cpu().numpy()).tobytes())
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in (name or "images"))
    return f"{safe}-{digest.hexdigest()[:12]}"


def load_or_train_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    cache_dir: str | Path,
    name: str | None = None,
    steps: int = 1500,
    generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
) -> TrainedClassifier:
    """The classifier of this data set from `cache_dir` (safetensors keyed by the data), trained if absent."""
    from safetensors.torch import load_file, save_file

    cache_dir = Path(cache_dir)
    file = cache_dir / f"classifier-{data_key(images, labels, name)}.safetensors"
    if file.is_file():
        try:
            from safetensors import safe_open

            with safe_open(str(file), framework="pt") as handle:
                metadata = handle.metadata() or {}
            config = json.loads(metadata["config"])
            classifier = ImageClassifier(**config)
            classifier.load_state_dict(load_file(str(file)))
            classifier.eval()
            if device is not None:
                classifier.to(device)
            return TrainedClassifier(classifier, float(metadata["test_accuracy"]), file, from_cache=True)
        except (KeyError, ValueError, OSError, RuntimeError, TypeError):
            pass  # a stale or damaged cache entry: train again and overwrite it
    trained = train_classifier(images, labels, num_classes, steps=steps, generator=generator, device=device)
    state = {k: v.detach().cpu().contiguous() for k, v in trained.classifier.state_dict().items()}
    metadata = {"config": json.dumps(trained.classifier.config()),
                "test_accuracy": str(trained.test_accuracy)}
    write_with(file, lambda tmp: save_file(state, str(tmp), metadata=metadata))
    trained.cache_file = file
    return trained
