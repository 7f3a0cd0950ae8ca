"""The discrete path as a user runs it: train on tokens, sample tokens (and text), eval (ELBO, distance to a
known law), and one-line refusals of bad input."""

import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def markov_run(tmp_path_factory):
    """A discrete run on the markov_tokens toy law, trained briefly through the CLI."""
    from flowdiff.cli.app import main

    out = tmp_path_factory.mktemp("runs") / "markov"
    main(["train", "--data", "markov_tokens", "--method", "discrete", "--out", str(out), "--steps", "150",
          "--batch", "128", "--n-data", "3000", "--hidden", "64,64", "--lr", "0.003", "--quiet"])
    return out


def test_train_sample_and_eval_a_token_run(cli, markov_run):
    config = json.loads((markov_run / "config.json").read_text())
    assert config["path"] == {"name": "mixture", "vocab_size": 4, "source": "mask", "kappa": {"name": "linear"}}
    assert config["data"]["kind"] == "tokens" and config["model"]["name"] == "token_mlp"
    done = cli("sample", markov_run, "--n", "200", "--steps", "8", "--force")
    assert done.returncode == 0 and "NFE 8" in done.stdout
    tokens = np.load(markov_run / "samples.npz")["tokens"]
    assert tokens.shape == (200, 3) and tokens.dtype == np.int64 and tokens.min() >= 0 and tokens.max() < 4
    done = cli("sample", markov_run, "--n", "50", "--ctmc", "first_hitting", "--out", markov_run / "fh.npz")
    assert done.returncode == 0 and "NFE 3" in done.stdout
    done = cli("eval", markov_run, "--nfe", "2,8", "--n", "300", "--force")
    assert done.returncode == 0 and "bits per token" in done.stdout
    result = json.loads((markov_run / "eval.json").read_text())
    assert [row["nfe"] for row in result["rows"]] == [2, 8, 3]
    assert all(0 <= row["total_variation"] <= 1 for row in result["rows"])
    # the ELBO bounds log p: on average below -H(p) (up to its standard error), on the training sequences and
    # on held-out ones (fresh draws of the toy's law, not the training draws)
    assert result["elbo_data"] == "training sequences" and "fresh draws" in result["held_out"]["data"]
    for estimate in (result, result["held_out"]):
        assert estimate["elbo_nats"] < -result["entropy_nats"] + 4 * estimate["elbo_standard_error"]
        assert estimate["bits_per_token"] > 0
    done = cli("report", markov_run)
    assert done.returncode == 2 and "discrete (token) run" in done.stderr and done.stderr.count("\n") == 1


def test_a_text_run_writes_decoded_text(cli, tmp_path):
    (tmp_path / "corpus.txt").write_text("abcab cabca bcabc\n" * 8)
    out = tmp_path / "text"
    done = cli("train", "--data", tmp_path / "corpus.txt", "--method", "discrete", "--out", out, "--steps", "5",
               "--batch", "8", "--model", "token_dit", "--quiet")
    assert done.returncode == 0, done.stderr
    done = cli("sample", out, "--n", "3", "--steps", "2")
    assert done.returncode == 0, done.stderr
    lines = (out / "samples.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3 and all(len(line) == 32 and set(line) <= set("abc \u2424") for line in lines)


@pytest.mark.parametrize("make, args, message", [
    (lambda d: np.save(d / "f.npy", np.random.rand(20, 3)), ["--data", "f.npy"], "must be integers"),
    (lambda d: np.save(d / "f.npy", np.ones((20, 3), np.float32)), ["--data", "f.npy"], "dtype float32"),
    (lambda d: np.savez(d / "f.npz", tokens=np.ones((20, 3)), y=np.zeros(20, int)), ["--data", "f.npz"],
     "must be integers"),
    (lambda d: np.save(d / "f.npy", np.array([[0, 1], [-1, 2]])), ["--data", "f.npy"], "must be >= 0"),
    (lambda d: None, ["--data", "markov_tokens", "--source", "gaussian"], "--source"),
    (lambda d: None, ["--data", "markov_tokens", "--schedule", "vp"], "unknown kappa schedule"),
    (lambda d: None, ["--data", "markov_tokens", "--model", "unet"], "token data uses token_mlp"),
    (lambda d: None, ["--data", "markov_tokens", "--coupling", "ot"], "apply to Gaussian paths"),
])
def test_bad_input_is_one_line_and_writes_no_run(cli, tmp_path, monkeypatch, make, args, message):
    monkeypatch.chdir(tmp_path)
    make(tmp_path)
    done = cli("train", "--method", "discrete", "--out", "run", "--steps", "2", "--quiet", *args)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and message in done.stderr
    assert done.stderr.count("\n") == 1 and not (tmp_path / "run").exists()


def test_token_data_changed_under_a_run_is_one_line_and_writes_nothing(cli, tmp_path):
    """A run trained on tokens 0..3 whose file then changes (one token within the vocabulary; then a token 7): eval
    and resume refuse, in one line each, naming the change."""
    data = tmp_path / "t.npy"
    np.save(data, np.random.default_rng(0).integers(0, 4, (64, 3)))
    out = tmp_path / "run"
    done = cli("train", "--data", data, "--method", "discrete", "--out", out, "--steps", "3", "--batch", "8",
               "--hidden", "8", "--quiet")
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "config.json").read_text())["path"]["vocab_size"] == 4
    tokens = np.load(data)
    tokens[0, 0] = (tokens[0, 0] + 1) % 4  # still inside the vocabulary: only the checksum tells
    np.save(data, tokens)
    done = cli("eval", out, "--nfe", "2", "--n", "20")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert done.stderr.startswith("error: ") and "changed since" in done.stderr and "checksum differs" in done.stderr
    np.save(data, np.random.default_rng(0).integers(0, 8, (64, 3)))
    done = cli("eval", out, "--nfe", "2", "--n", "20")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert done.stderr.startswith("error: ") and "changed since" in done.stderr
    assert not (out / "eval.json").exists()
    done = cli("train", "--data", data, "--method", "discrete", "--out", out, "--steps", "3", "--batch", "8",
               "--hidden", "8", "--quiet", "--resume")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "checksum differs" in done.stderr
    assert json.loads((out / "config.json").read_text())["path"]["vocab_size"] == 4


def test_a_stopped_token_run_resumes_to_the_weights_of_an_uninterrupted_one(cli, tmp_path):
    """A discrete run stopped at step 6 and resumed by `train --resume` ends with the uninterrupted run's weights."""
    from safetensors.torch import load_file

    from flowdiff.learning.training.config import TrainConfig
    from flowdiff.runs.discrete import build_discrete_trainer

    config = TrainConfig(data="markov_tokens", method="discrete", n_data=500, hidden=(16,), steps=12, batch_size=16,
                         warmup=2, checkpoint_every=6, device="cpu", labels=False)
    build_discrete_trainer(config, tmp_path / "whole").fit()
    build_discrete_trainer(config, tmp_path / "stopped").fit(until=6)
    assert json.loads((tmp_path / "stopped" / "checkpoints" / "latest.json").read_text())["step"] == 6
    done = cli("train", "--out", tmp_path / "stopped", "--resume", "--quiet")
    assert done.returncode == 0, done.stderr
    for name in ("whole", "stopped"):
        assert json.loads((tmp_path / name / "checkpoints" / "latest.json").read_text())["step"] == 12
    for file in ("model.safetensors", "ema.safetensors"):
        whole, resumed = (load_file(tmp_path / name / "checkpoints" / "step_00000012" / file)
                          for name in ("whole", "stopped"))
        assert whole.keys() == resumed.keys() and all(bool((whole[k] == resumed[k]).all()) for k in whole)
