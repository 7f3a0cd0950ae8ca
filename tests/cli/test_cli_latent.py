"""Latent flow matching from the command line: `flowdiff autoencoder`, `flowdiff train --latent`, sampling,
`fd.load`, resume from the cached codes, and the one-line refusals (missing or changed autoencoder, vectors)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import flowdiff as fd
from flowdiff.learning.training.config import TrainConfig
from flowdiff.runs.autoencoder import autoencoder_trainer

SMALL = {"latent_channels": 2, "base_channels": 8}
FLOW = ("--data", "digits", "--steps", "20", "--batch", "32", "--quiet", "--no-report", "--device", "cpu")


@pytest.fixture(scope="module")
def autoencoder_run(tmp_path_factory):
    """A small autoencoder of the 8x8 digits, trained 40 steps through the library (EMA weights kept)."""
    out = tmp_path_factory.mktemp("latent") / "ae"
    config = TrainConfig(data="digits", steps=40, batch_size=32, lr=3e-3, warmup=5, device="cpu")
    autoencoder_trainer(config, out, architecture=SMALL).fit()
    return out


def test_autoencoder_command_resumes_a_stopped_run_and_writes_its_report(cli, tmp_path):
    out = tmp_path / "ae"
    config = TrainConfig(data="digits", steps=30, batch_size=32, lr=3e-3, warmup=5, device="cpu", labels=False)
    autoencoder_trainer(config, out, architecture=SMALL).fit(until=15)  # stopped half-way: checkpoint at 15
    done = cli("autoencoder", "--out", out, "--resume", "--quiet")
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "checkpoints" / "latest.json").read_text())["step"] == 30
    assert (out / "autoencoder_report.html").is_file()
    assert (out / "figures" / "autoencoder" / "reconstructions.png").is_file()
    again = cli("autoencoder", "--data", "digits", "--out", out, "--quiet")
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr
    vectors = cli("autoencoder", "--data", "moons", "--out", tmp_path / "v", "--steps", "1", "--quiet")
    assert vectors.returncode == 2 and vectors.stderr.count("\n") == 1 and "images" in vectors.stderr


def test_latent_flow_trains_samples_with_guidance_and_loads_as_an_image_sampler(cli, autoencoder_run, tmp_path):
    flow = tmp_path / "flow"
    done = cli("train", *FLOW, "--latent", autoencoder_run, "--out", flow)
    assert done.returncode == 0, done.stderr
    entry = json.loads((flow / "config.json").read_text())["latent"]
    with np.load(flow / "latents.npz") as cache:
        codes, scale = cache["codes"], float(cache["scale_factor"])
    assert codes.shape == (1797, 2, 4, 4) and scale == pytest.approx(entry["scale_factor"])
    assert codes.std(dtype=np.float64) == pytest.approx(1.0, abs=1e-5)  # the scale factor normalises the codes
    sampled = cli("sample", flow, "--n", "2", "--label", "all", "--guidance", "3", "--steps", "4")
    assert sampled.returncode == 0, sampled.stderr
    with np.load(flow / "samples.npz") as samples:
        assert samples["x"].shape == (20, 1, 8, 8) and list(samples["y"][:3]) == [0, 0, 1]
    run = fd.load(flow)
    images = run.sample(n=3, steps=2, generator=torch.Generator().manual_seed(1))
    codes = run.sample(n=3, steps=2, generator=torch.Generator().manual_seed(1), unstandardize=False)
    assert images.shape == (3, 1, 8, 8) and codes.shape == (3, 2, 4, 4)
    torch.testing.assert_close(images, run.decoder.autoencoder.decode(codes / scale))


def test_a_resumed_latent_run_reads_its_cached_codes(cli, autoencoder_run, tmp_path, monkeypatch):
    from flowdiff.runs import latent
    from flowdiff.runs.build import build_trainer

    flow = tmp_path / "flow"
    config = TrainConfig(data="digits", latent=str(autoencoder_run.resolve()), steps=20, batch_size=32, device="cpu")
    build_trainer(config, flow).fit(until=10)

    def refuse(*args, **kwargs):
        raise AssertionError("the codes were encoded again")

    monkeypatch.setattr(latent, "encode_images", refuse)
    done = cli("train", "--out", flow, "--resume", "--quiet", "--no-report")
    assert done.returncode == 0, done.stderr
    assert json.loads((flow / "checkpoints" / "latest.json").read_text())["step"] == 20


def _changed(directory):
    """Perturb the weights of an autoencoder run's checkpoints (a retrained autoencoder, in effect)."""
    from safetensors.torch import load_file, save_file

    for file in directory.glob("checkpoints/step_*/*.safetensors"):
        save_file({k: v + 0.01 for k, v in load_file(file).items()}, file)


def test_missing_changed_or_unfit_autoencoders_are_refused_in_one_line(cli, autoencoder_run, tmp_path):
    copy, flow = tmp_path / "ae", tmp_path / "flow"
    shutil.copytree(autoencoder_run, copy)
    assert cli("train", *FLOW, "--steps", "2", "--latent", copy, "--out", flow).returncode == 0
    _changed(copy)
    changed = cli("sample", flow, "--n", "2")
    assert changed.returncode == 2 and "changed" in changed.stderr and "checksum" in changed.stderr
    shutil.rmtree(copy)
    gone = cli("sample", flow, "--n", "2")
    assert gone.returncode == 2 and "missing" in gone.stderr and gone.stderr.count("\n") == 1
    for args, words in [(("--data", "moons"), "vectors"), (("--data", "digits", "--image-size", "6"), "shape"),
                        (("--data", "digits", "--latent", flow), "not an autoencoder run")]:
        refused = cli("train", "--latent", autoencoder_run, *args, "--steps", "1", "--out", tmp_path / "x", "--quiet")
        assert refused.returncode == 2 and words in refused.stderr and "Traceback" not in refused.stderr
    assert cli("train", "--data", "digits", "--latent", tmp_path / "nowhere", "--out", tmp_path / "y").returncode == 2
    as_flow = cli("sample", autoencoder_run, "--n", "2")
    assert as_flow.returncode == 2 and "autoencoder run, not a flow" in as_flow.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
