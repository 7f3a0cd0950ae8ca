"""Training on images: the same loss and Trainer as for vectors, only the network and data change."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from flowdiff.data.images import load_images
from flowdiff.learning.losses import flow_matching_loss
from flowdiff.learning.models.unet import UNet
from flowdiff.learning.training.trainer import Trainer
from flowdiff.paths.gaussian_path import GaussianPath


def held_out_loss(model, path, images, labels) -> float:
    """The flow-matching loss on a fixed batch with fixed t and noise (seed 123), so that runs compare."""
    generator = torch.Generator().manual_seed(123)
    with torch.no_grad():
        return float(flow_matching_loss(model, path, images, y=labels, generator=generator))


def test_short_training_on_digits_lowers_the_loss():
    torch.manual_seed(0)
    digits = load_images("digits")
    train_x, train_y = digits.images[:1500], digits.labels[:1500]
    test_x, test_y = digits.images[1500:], digits.labels[1500:]
    model = UNet(1, 8, base_channels=16, channel_mults=(1, 2), num_classes=10)
    path = GaussianPath("linear")
    # The network starts as u = 0, so the loss is E|x1 - x0|^2 per entry = E[x1^2] + 1 (about 1.6).
    before = held_out_loss(model.eval(), path, test_x, test_y)
    trainer = Trainer(model, path, train_x, labels=train_y, batch_size=64, steps=120, lr=3e-3, warmup=10,
                      ema_decay=None, device="cpu", seed=0, log_every=20)
    result = trainer.fit()
    after = held_out_loss(result.model.eval(), path, test_x, test_y)
    losses = [record["loss"] for record in result.history]
    # A deterministic run (fixed seeds); the held-out batch has 297 images x 64 pixels, so its
    # loss estimate has a relative standard error of a few percent: a fall to below 50% (0.30 was
    # measured) is real learning, not noise.
    assert after < 0.5 * before, (before, after)
    assert losses[-1] < losses[0]


def run_cli(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "flowdiff", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


@pytest.mark.slow
def test_cli_trains_on_digits_and_samples_a_label(tmp_path):
    run = tmp_path / "digits"
    done = run_cli("train", "--data", "digits", "--steps", "30", "--batch", "32", "--out", str(run),
                   "--device", "cpu", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    done = run_cli("sample", str(run), "--label", "3", "--guidance", "3", "--n", "8", "--steps", "4",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with np.load(run / "samples.npz") as samples:
        assert samples["x"].shape == (8, 1, 8, 8)
        assert samples["y"].tolist() == [3] * 8
    assert (run / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    done = run_cli("sample", str(run), "--label", "all", "--n", "2", "--steps", "2",
                   "--out", str(tmp_path / "all.npz"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with np.load(tmp_path / "all.npz") as samples:
        assert samples["y"].tolist() == [k for k in range(10) for _ in range(2)]

    # bad input: one line on stderr, exit status 2, nothing written
    done = run_cli("sample", str(run), "--label", "12", "--n", "2", "--out", str(tmp_path / "bad.npz"),
                   cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("error:"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "bad.npz").exists()


@pytest.mark.parametrize("args, message", [
    (("--data", "{empty}"), "no PNG/JPEG images"),
    (("--data", "{broken}"), "cannot read this image"),
])
def test_cli_rejects_bad_image_folders(tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.png").write_bytes(b"not a png")
    args = [a.format(empty=tmp_path / "empty", broken=tmp_path / "broken") for a in args]
    done = run_cli("train", *args, "--steps", "1", "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("error:") and message in done.stderr, done.stderr


def test_frechet_distance_closed_forms():
    from flowdiff.learning.classifier import frechet_distance

    # commuting (diagonal) covariances: |m1 - m2|^2 + sum_i (s1_i - s2_i)^2 with s = standard deviations
    m1, m2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    expected = 1.0 + 4.0 + (1 - 2) ** 2 + (2 - 1) ** 2 + 0.0
    assert frechet_distance(m1, np.diag(v1), m2, np.diag(v2)) == pytest.approx(expected, rel=1e-9)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 4))
    b = rng.normal(size=(4, 4))
    s1, s2 = a @ a.T + np.eye(4), b @ b.T + np.eye(4)
    assert frechet_distance(m1[:2].repeat(2), s1, m1[:2].repeat(2), s1) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(m1[:2].repeat(2), s1, m2[:2].repeat(2), s2) == pytest.approx(
        frechet_distance(m2[:2].repeat(2), s2, m1[:2].repeat(2), s1), rel=1e-6)


def test_classifier_trains_is_cached_and_measures(tmp_path):
    from flowdiff.learning.classifier import conditional_accuracy, feature_frechet_distance
    from flowdiff.runs.classifier_cache import load_or_train_classifier

    digits = load_images("digits")
    images, labels = digits.images[:600], digits.labels[:600]
    first = load_or_train_classifier(images, labels, 10, tmp_path, name="digits", steps=300,
                                     generator=torch.Generator().manual_seed(0))
    assert not first.from_cache and first.cache_file.suffix == ".safetensors"
    # 120 held-out images: at chance (10%) the accuracy would be 0.10 +- 0.027 (binomial standard
    # error sqrt(0.1 * 0.9 / 120)); 0.5 is 15 standard errors above chance (0.82 was measured).
    assert first.test_accuracy > 0.5
    again = load_or_train_classifier(images, labels, 10, tmp_path, name="digits")
    assert again.from_cache and again.test_accuracy == first.test_accuracy
    test_x, test_y = digits.images[1500:], digits.labels[1500:]
    assert conditional_accuracy(again.classifier, test_x, test_y) == conditional_accuracy(
        first.classifier, test_x, test_y)
    # noise is far from digits in feature space; two halves of the digits are close
    near = feature_frechet_distance(first.classifier, digits.images[:800], digits.images[800:1600])
    noise = torch.rand(800, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    far = feature_frechet_distance(first.classifier, digits.images[:800], noise)
    assert far > 5 * near


def test_classifier_training_depends_on_its_generator_not_on_global_rng():
    from flowdiff.learning.classifier import train_classifier

    digits = load_images("digits")
    images, labels = digits.images[:200], digits.labels[:200]
    weights, accuracies = [], []
    for global_seed in (1, 2):  # what ran before (e.g. flow training) leaves the global RNG anywhere
        torch.manual_seed(global_seed)
        before = torch.get_rng_state()
        trained = train_classifier(images, labels, 10, steps=5, generator=torch.Generator().manual_seed(0))
        assert torch.equal(torch.get_rng_state(), before)  # and the global RNG is left as it was
        weights.append(trained.classifier.state_dict())
        accuracies.append(trained.test_accuracy)
    assert accuracies[0] == accuracies[1]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    other = train_classifier(images, labels, 10, steps=5, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(other.classifier.state_dict()["head.weight"], weights[0]["head.weight"])


def test_a_fresh_28x28_classifier_tells_images_apart():
    import torch.nn.functional as F

    from flowdiff.learning.classifier import ImageClassifier

    # digits enlarged to MNIST's size: the classifier then has four stages of two convolutions
    images = F.interpolate(load_images("digits").images[:100], size=(28, 28), mode="bilinear")
    for seed in range(3):
        torch.manual_seed(seed)
        classifier = ImageClassifier(1, 28, 10).eval()
        with torch.no_grad():
            features = classifier.feature_head[0](classifier.body(images).mean(dim=(-2, -1)))
        # He init: spread over images 1e-3 to 1e-1; torch's default init shrinks it to ~1e-6, nearly
        # constant features from which training starts at the chance loss (the MNIST-5k failure)
        assert features.std(dim=0).mean() > 1e-4
