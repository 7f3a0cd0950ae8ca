"""Token data: integer arrays, labelled .npz files, text as characters, the toy laws, and refusals of bad files."""

import numpy as np
import pytest
import torch

from flowdiff.data.tokens import TEXT_LENGTH, checkerboard_law, decode, load_tokens, markov_law
from flowdiff.errors import InvalidInputError


def test_the_toy_laws_are_normalised_and_the_checkerboard_is_on_its_dark_squares():
    for law in (markov_law(), checkerboard_law()):
        assert abs(law.weights.sum().item() - 1) < 1e-12 and bool((law.weights >= 0).all())
    board = checkerboard_law()
    assert len(board.support) == 64 * 64 // 2
    assert bool((((board.support[:, 0] // 8) + (board.support[:, 1] // 8)) % 2 == 0).all())
    assert markov_law().weights[(markov_law().support[:, :2] == torch.tensor([0, 3])).all(1)].sum() == 0


def test_total_variation_of_samples_from_the_law_is_at_the_noise_floor_and_off_support_mass_counts():
    law = markov_law()
    tokens = law.sample(20_000, torch.Generator().manual_seed(0))
    # E TV <= sum_x sqrt(p (1 - p) / n) / 2 = 0.022 (Jensen), and TV exceeds its mean by 0.015 with probability
    # below exp(-2 n 0.015^2) = 1e-4 (McDiarmid: one draw moves TV by at most 1/n); measured 0.0151
    bound = 0.5 * (law.weights * (1 - law.weights) / 20_000).sqrt().sum().item()
    assert law.total_variation(tokens) < bound + 0.015
    assert law.total_variation(torch.tensor([[0, 3, 0]] * 10)) == pytest.approx(1.0)


def test_files_of_tokens_labels_and_text(tmp_path):
    np.save(tmp_path / "t.npy", np.array([[0, 1, 2], [2, 1, 0]]))
    data = load_tokens(tmp_path / "t.npy")
    assert data.kind == "tokens" and data.x.dtype == torch.int64 and data.info.vocab_size == 3 and data.y is None
    np.savez(tmp_path / "l.npz", tokens=np.array([[0, 1], [1, 1], [3, 0]]), y=np.array([0, 1, 1]))
    labelled = load_tokens(tmp_path / "l.npz")
    assert labelled.num_classes == 2 and labelled.info.vocab_size == 4 and labelled.y.tolist() == [0, 1, 1]
    text = "the cat sat on the mat, and the dog sat on the log.\n" * 2
    (tmp_path / "c.txt").write_text(text)
    chars = load_tokens(tmp_path / "c.txt")
    vocabulary = chars.info.vocabulary
    assert vocabulary == sorted(set(text)) and chars.x.shape == (len(text) - TEXT_LENGTH + 1, TEXT_LENGTH)
    assert decode(chars.x[:1], vocabulary) == [text[:TEXT_LENGTH]]


@pytest.mark.parametrize("make, message", [
    (lambda d: np.save(d / "f.npy", np.random.rand(5, 3)), "must be integers"),
    (lambda d: np.savez(d / "f.npz", tokens=np.ones((5, 3), np.float32)), "dtype float32"),
    (lambda d: np.save(d / "f.npy", np.array([[0, -1]])), ">= 0"),
    (lambda d: np.savez(d / "f.npz", other=np.zeros((3, 2), int)), "'tokens'"),
    (lambda d: (d / "f.txt").write_text("short"), "at least"),
])
def test_bad_token_files_are_refused_in_one_line(tmp_path, make, message):
    make(tmp_path)
    (file,) = tmp_path.iterdir()
    with pytest.raises(InvalidInputError, match=message):
        load_tokens(file)


def test_tokens_outside_a_runs_vocabulary_are_refused(tmp_path):
    np.save(tmp_path / "t.npy", np.array([[0, 1, 7]]))
    with pytest.raises(InvalidInputError, match="outside the vocabulary 0..4"):
        load_tokens(tmp_path / "t.npy", vocab_size=5)


def test_a_missing_token_file_names_what_discrete_training_takes():
    from flowdiff.data.tokens import load_tokens
    from flowdiff.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match=r"token file moons does not exist; .*markov_tokens"):
        load_tokens("moons")


def test_text_is_encoded_with_a_given_vocabulary_and_other_characters_are_refused(tmp_path):
    from flowdiff.data.tokens import encode_text

    vocabulary = ["\n", " ", "a", "b", "c", "z"]
    assert encode_text("zab\n c", vocabulary).tolist() == [5, 2, 3, 0, 1, 4]
    text = "cab ab\n" * 6  # no "z": its own vocabulary would number the characters differently
    (tmp_path / "h.txt").write_text(text)
    data = load_tokens(tmp_path / "h.txt", vocabulary=vocabulary)
    assert data.info.vocabulary == vocabulary and data.info.vocab_size == 6
    assert decode(data.x[:1], vocabulary) == [text[:TEXT_LENGTH]]
    assert load_tokens(tmp_path / "h.txt").info.vocabulary == ["\n", " ", "a", "b", "c"]
    with pytest.raises(InvalidInputError, match=r"2 character\(s\) not in the vocabulary of 6 .*: 'qx'"):
        encode_text("aqxb", vocabulary, "held.txt")
