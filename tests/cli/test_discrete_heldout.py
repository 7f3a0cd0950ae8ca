"""`flowdiff eval RUN --heldout FILE` for discrete runs: the ELBO of held-out token or text sequences beside the
training one, a check of its math on a known law written to token files, and one-line refusals of bad files."""

import json

import numpy as np
import pytest
import torch

from flowdiff.data.tokens import markov_law

N = 1000
"""Held-out sequences (and --n): the whole held-out file is used, so its exact log-likelihood is known."""


def exact_log_p(tokens: np.ndarray) -> np.ndarray:
    """log p(x) of each sequence under markov_tokens' law (-inf off its support)."""
    law = markov_law()
    index = {tuple(row): k for k, row in enumerate(law.support.tolist())}
    return np.log(np.array([float(law.weights[index[tuple(row)]]) for row in tokens.tolist()]))


@pytest.fixture(scope="module")
def token_run(tmp_path_factory):
    """A discrete run trained through the CLI on 3000 draws of markov_tokens written to an .npy file."""
    from flowdiff.cli.app import main

    folder = tmp_path_factory.mktemp("heldout")
    np.save(folder / "train.npy", markov_law().sample(3000, torch.Generator().manual_seed(1)).numpy())
    main(["train", "--data", str(folder / "train.npy"), "--method", "discrete", "--out", str(folder / "run"),
          "--steps", "150", "--batch", "128", "--hidden", "64,64", "--lr", "0.003", "--quiet"])
    return folder


def test_heldout_elbo_of_fresh_draws_bounds_their_log_likelihood_and_matches_the_training_elbo(cli, token_run):
    held = markov_law().sample(N, torch.Generator().manual_seed(2)).numpy()
    np.save(token_run / "held.npy", held)
    done = cli("eval", token_run / "run", "--heldout", token_run / "held.npy", "--nfe", "2", "--n", N,
               "--out", token_run / "fresh")
    assert done.returncode == 0, done.stderr
    assert "training" in done.stdout and "held-out: held.npy" in done.stdout and "bits per token" in done.stdout
    result = json.loads((token_run / "fresh" / "eval.json").read_text())
    train, heldout = result, result["held_out"]
    assert heldout["n"] == N and heldout["file"] == str((token_run / "held.npy").resolve())
    # ELBO(x) <= log p_theta(x), and E_x log p_theta(x) <= E_x log p(x) (Gibbs): the mean held-out ELBO lies below
    # the mean exact log-likelihood of the same sequences, up to its standard error
    assert heldout["elbo_nats"] < exact_log_p(held).mean() + 4 * heldout["elbo_standard_error"]
    # training and held-out sequences are draws of one law: a model that does not overfit gives both one ELBO
    gap = abs(heldout["elbo_nats"] - train["elbo_nats"])
    assert gap < 4 * np.hypot(heldout["elbo_standard_error"], train["elbo_standard_error"])
    assert heldout["bits_per_token"] == pytest.approx(-heldout["elbo_nats"] / (3 * np.log(2)), rel=1e-6)


def test_heldout_sequences_the_law_forbids_get_a_far_lower_elbo(cli, token_run):
    """The held-out ELBO is that of the file: sequences with the forbidden move 0 -> 3 (log p = -inf)."""
    np.save(token_run / "forbidden.npy", np.tile([[0, 3, 0], [1, 0, 3]], (100, 1)))
    done = cli("eval", token_run / "run", "--heldout", token_run / "forbidden.npy", "--nfe", "2", "--n", 200,
               "--out", token_run / "forbidden")
    assert done.returncode == 0, done.stderr
    result = json.loads((token_run / "forbidden" / "eval.json").read_text())
    assert result["held_out"]["n"] == 200
    assert result["held_out"]["elbo_nats"] < result["elbo_nats"] - 2.0


@pytest.mark.parametrize("name, make, message", [
    ("long.npy", lambda f: np.save(f, np.zeros((20, 4), np.int64)), "sequences of 4 tokens"),
    ("big.npy", lambda f: np.save(f, np.full((20, 3), 7)), "outside the vocabulary 0..3"),
    ("float.npy", lambda f: np.save(f, np.ones((20, 3))), "must be integers"),
    ("text.txt", lambda f: f.write_text("abcd" * 10), "trained on integer tokens"),
    ("missing.npy", lambda f: None, "does not exist"),
])
def test_a_bad_heldout_file_is_one_line_and_writes_nothing(cli, token_run, name, make, message):
    make(token_run / name)
    out = token_run / f"bad-{name}"
    done = cli("eval", token_run / "run", "--heldout", token_run / name, "--nfe", "2", "--n", "20", "--out", out)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
    assert message in done.stderr and not (out / "eval.json").exists()


def test_a_text_run_encodes_heldout_text_with_its_vocabulary_and_refuses_new_characters(cli, tmp_path):
    (tmp_path / "corpus.txt").write_text("abcab cabca bcabc\n" * 8)
    run = tmp_path / "text"
    done = cli("train", "--data", tmp_path / "corpus.txt", "--method", "discrete", "--out", run, "--steps", "3",
               "--batch", "8", "--model", "token_mlp", "--hidden", "16", "--quiet")
    assert done.returncode == 0, done.stderr
    (tmp_path / "held.txt").write_text("cab\nabc " * 8)  # only the corpus's characters, in a new order
    done = cli("eval", run, "--heldout", tmp_path / "held.txt", "--nfe", "2", "--n", "8")
    assert done.returncode == 0, done.stderr
    held = json.loads((run / "eval.json").read_text())["held_out"]
    assert held["n"] == 8 and held["elbo_nats"] < 0 and held["bits_per_token"] > 0
    (tmp_path / "new.txt").write_text("abc xyz\n" * 8)
    done = cli("eval", run, "--heldout", tmp_path / "new.txt", "--nfe", "2", "--n", "8", "--out", tmp_path / "new")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "3 character(s) not in the vocabulary of 5 characters" in done.stderr and "'xyz'" in done.stderr
    assert not (tmp_path / "new" / "eval.json").exists()


def test_a_labelled_run_takes_heldout_labels_in_its_range_only(cli, tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "train.npz", tokens=rng.integers(0, 4, (64, 3)), y=rng.integers(0, 2, 64))
    run = tmp_path / "run"
    done = cli("train", "--data", tmp_path / "train.npz", "--method", "discrete", "--out", run, "--steps", "3",
               "--batch", "8", "--hidden", "8", "--quiet")
    assert done.returncode == 0, done.stderr
    np.savez(tmp_path / "held.npz", tokens=rng.integers(0, 4, (16, 3)), y=rng.integers(0, 2, 16))
    done = cli("eval", run, "--heldout", tmp_path / "held.npz", "--nfe", "2", "--n", "16", "--out", tmp_path / "ok")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "ok" / "eval.json").read_text())["held_out"]["n"] == 16
    np.save(tmp_path / "unlabelled.npy", rng.integers(0, 4, (16, 3)))
    np.savez(tmp_path / "labels5.npz", tokens=rng.integers(0, 4, (16, 3)), y=np.full(16, 5))
    for file, message in (("unlabelled.npy", "holds no labels"), ("labels5.npz", "outside the run's labels 0..1")):
        done = cli("eval", run, "--heldout", tmp_path / file, "--nfe", "2", "--n", "16", "--out", tmp_path / "bad")
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and message in done.stderr
    assert not (tmp_path / "bad" / "eval.json").exists()


def test_heldout_given_to_a_vector_run_is_one_line_and_writes_nothing(cli, tmp_path):
    from flowdiff.learning.training.config import TrainConfig
    from flowdiff.runs.build import build_trainer

    build_trainer(TrainConfig(data="moons", steps=2, hidden="8", batch_size=16, device="cpu", n_data=64),
                  tmp_path / "moons").fit()
    np.save(tmp_path / "held.npy", np.zeros((4, 3), np.int64))
    done = cli("eval", tmp_path / "moons", "--heldout", tmp_path / "held.npy", "--n", "8", "--nfe", "2")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--heldout" in done.stderr
    assert not (tmp_path / "moons" / "eval.json").exists()
