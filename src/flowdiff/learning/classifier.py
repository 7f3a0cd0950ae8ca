"""A small CNN classifier that measures generated images without downloads.

Two numbers come from a classifier trained on the same data set as the generative model:

- conditional accuracy: the fraction of samples generated for label y that the classifier
  assigns to y;
- feature Fréchet distance: ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2)) between
  Gaussian fits (mean mu, covariance S) of the classifier's penultimate-layer features of
  real and generated images.

Both are data-set-specific measures: they depend on this classifier and this data set and
are comparable only between models of the same data set measured with the same classifier.
The Fréchet distance here is NOT the Inception FID of the literature and its values cannot
be compared with published FID numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flowdiff.errors import InvalidInputError
from flowdiff.learning.devices import model_device


class ImageClassifier(nn.Module):
    """CNN: [conv3x3-SiLU-conv3x3-SiLU-pool] stages -> global average -> Linear-SiLU (features) -> logits."""

    def __init__(self, channels: int, image_size: int | tuple[int, int], num_classes: int,
                 width: int = 32, feature_dim: int = 128) -> None:
        super().__init__()
        height, wide = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if num_classes < 2:
            raise InvalidInputError(f"a classifier needs at least 2 classes, got {num_classes}")
        self.data_shape = (int(channels), int(height), int(wide))
        self.num_classes = int(num_classes)
        self._kwargs = {"channels": int(channels), "image_size": [int(height), int(wide)],
                        "num_classes": self.num_classes, "width": int(width), "feature_dim": int(feature_dim)}
        layers: list[nn.Module] = []
        current, size, stage = channels, min(height, wide), 0
        while True:
            out = width * 2**stage
            layers += [nn.Conv2d(current, out, 3, padding=1), nn.SiLU(),
                       nn.Conv2d(out, out, 3, padding=1), nn.SiLU()]
            current = out
            if size <= 4 or stage == 3:
                break
            layers.append(nn.AvgPool2d(2, ceil_mode=True))
            size, stage = math.ceil(size / 2), stage + 1
        self.body = nn.Sequential(*layers)
        self.feature_head = nn.Sequential(nn.Linear(current, feature_dim), nn.SiLU())
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(feature_dim, num_classes)
        self._initialize()

    def _initialize(self) -> None:
        """He-normal weights (fan in, ReLU gain), zero biases: the signal keeps its scale through every stage.

        With torch's default (variance 1/(3 fan_in)) it shrinks about threefold per layer, so the eight
        convolutions of a 28x28 classifier start with nearly constant features: training sits at the
        chance loss log(10) for a seed-dependent while and can end in dead features (MNIST, issue 13).
        """
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def config(self) -> dict:
        """JSON-ready keyword arguments that rebuild this classifier."""
        return dict(self._kwargs)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features (batch, feature_dim) of images x (batch, C, H, W) in [-1, 1]."""
        return self.feature_head(self.body(x).mean(dim=(-2, -1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (batch, num_classes)."""
        return self.head(self.dropout(self.features(x)))


@dataclass
class TrainedClassifier:
    """A classifier with its accuracy on held-out real images (and where a cache kept it, if one did)."""

    classifier: ImageClassifier
    test_accuracy: float
    cache_file: Path | None = None
    from_cache: bool = False


def _check_images(images: torch.Tensor, shape: tuple[int, ...], name: str) -> torch.Tensor:
    images = torch.as_tensor(images)
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(shape):
        raise InvalidInputError(
            f"{name} must have shape (N, {', '.join(map(str, shape))}) like the classifier's data, "
            f"got {tuple(images.shape)}"
        )
    return images


@torch.no_grad()
def _apply(classifier: ImageClassifier, images: torch.Tensor, what: str, batch_size: int = 1024):
    images = _check_images(images, classifier.data_shape, "images")
    was_training = classifier.training
    classifier.eval()
    device = model_device(classifier)
    outputs = []
    for start in range(0, images.shape[0], batch_size):
        chunk = images[start : start + batch_size].to(device, torch.float32)
        outputs.append((classifier.features(chunk) if what == "features" else classifier(chunk)).float())
    classifier.train(was_training)
    return torch.cat(outputs).cpu()


def predict(classifier: ImageClassifier, images: torch.Tensor) -> torch.Tensor:
    """The predicted class argmax_k logits_k for each image, shape (N,)."""
    return _apply(classifier, images, "logits").argmax(dim=-1)


def conditional_accuracy(classifier: ImageClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    """The fraction of images whose predicted class is their intended label y: mean[argmax f(x) == y]."""
    labels = torch.as_tensor(labels).long().reshape(-1).cpu()
    if labels.shape[0] != len(images):
        raise InvalidInputError(f"{len(images)} images but {labels.shape[0]} labels: give one per image")
    if labels.numel() == 0:
        raise InvalidInputError("no images to classify")
    return float((predict(classifier, images) == labels).float().mean())


def frechet_distance(mean1: np.ndarray, cov1: np.ndarray, mean2: np.ndarray, cov2: np.ndarray) -> float:
    """Fréchet distance between N(m1, S1) and N(m2, S2): ||m1 - m2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))."""
    from scipy.linalg import sqrtm

    diff = np.asarray(mean1, np.float64) - np.asarray(mean2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    root = sqrtm(cov1 @ cov2)
    if not np.isfinite(root).all():  # nearly singular product: regularize both covariances
        eps = 1e-6 * np.eye(cov1.shape[0])
        root = sqrtm((cov1 + eps) @ (cov2 + eps))
    root = np.real(root)
    value = float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * np.trace(root))
    return max(value, 0.0)


def feature_frechet_distance(classifier: ImageClassifier, real: torch.Tensor, fake: torch.Tensor) -> float:
    """Fréchet distance between Gaussian fits of the classifier's penultimate features of real and fake.

    A data-set-specific measure (this classifier, this data set), not the Inception FID.
    """
    feats = []
    for name, images in (("real", real), ("fake", fake)):
        images = _check_images(images, classifier.data_shape, f"{name} images")
        if images.shape[0] < 2:
            raise InvalidInputError(f"need >= 2 {name} images to fit a covariance, got {images.shape[0]}")
        feats.append(_apply(classifier, images, "features").double().numpy())
    (real_f, fake_f) = feats
    return frechet_distance(real_f.mean(0), np.cov(real_f, rowvar=False),
                            fake_f.mean(0), np.cov(fake_f, rowvar=False))


def _shift_augment(x: torch.Tensor, generator: torch.Generator | None, max_shift: int = 1) -> torch.Tensor:
    """Random translations by up to max_shift pixels (zero-padded at -1, the background)."""
    if max_shift == 0:
        return x
    height, width = x.shape[-2:]
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    shifts = torch.randint(0, 2 * max_shift + 1, (2,), generator=generator)
    top, left = int(shifts[0]), int(shifts[1])
    return padded[..., top : top + height, left : left + width]


def _fit(classifier: ImageClassifier, train_x: torch.Tensor, train_y: torch.Tensor, steps: int, batch_size: int,
         lr: float, generator: torch.Generator | None) -> None:
    """AdamW with a one-cycle learning rate on cross-entropy of randomly shifted batches."""
    device = train_x.device
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    classifier.train()
    for _ in range(steps):
        batch = torch.randint(0, train_x.shape[0], (batch_size,), generator=generator).to(device)
        x = _shift_augment(train_x[batch], generator)
        loss = F.cross_entropy(classifier(x), train_y[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()


def train_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    steps: int = 1500,
    batch_size: int = 128,
    lr: float = 2e-3,
    test_fraction: float = 0.2,
    generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
) -> TrainedClassifier:
    """Train an ImageClassifier by AdamW on cross-entropy with random 1-pixel shifts; test on held-out.

    The result is a function of the arguments: the held-out split, the batches, the shifts, the initial
    weights and the dropout masks all follow `generator` (torch's global RNG is left as it was).
    """
    images = torch.as_tensor(images).float()
    labels = torch.as_tensor(labels).long().reshape(-1)
    if images.ndim != 4:
        raise InvalidInputError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    if labels.shape[0] != images.shape[0]:
        raise InvalidInputError(f"{images.shape[0]} images but {labels.shape[0]} labels: give one per image")
    if not 0.0 < test_fraction < 1.0:
        raise InvalidInputError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    count = images.shape[0]
    n_test = max(1, int(round(test_fraction * count)))
    if count - n_test < 2:
        raise InvalidInputError(f"need more images to train a classifier, got {count}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    order = torch.randperm(count, generator=generator)
    train_idx, test_idx = order[n_test:], order[:n_test]
    # the initial weights and the dropout masks come from torch's global RNG: seed it from `generator`
    # (in a forked RNG state) so that the classifier depends on the arguments, not on what ran before
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        classifier = ImageClassifier(images.shape[1], tuple(images.shape[2:]), num_classes).to(device)
        _fit(classifier, images[train_idx].to(device), labels[train_idx].to(device), steps, batch_size, lr,
             generator)
    classifier.eval()
    accuracy = conditional_accuracy(classifier, images[test_idx], labels[test_idx])
    return TrainedClassifier(classifier, accuracy)
