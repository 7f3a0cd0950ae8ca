"""Corrupt data files are refused in one line that names the file and the cause (never advising pickle)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.parametrize("name, content, message", [
    ("random.npy", b"garbage\x00\x01\x02\x03", "no array header (flowdiff never loads pickled objects)"),
    ("big.csv", b"a,b\n1," + b"7" * 200_000 + b"\n", "field larger than field limit"),
])
def test_corrupt_vector_files_are_one_line(tmp_path, cli, name, content, message):
    (tmp_path / name).write_bytes(content)
    result = cli("train", "--data", tmp_path / name, "--out", tmp_path / "run", "--quiet")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert str(tmp_path / name) in result.stderr and message in result.stderr
    assert "allow_pickle" not in result.stderr and not (tmp_path / "run").exists()


def test_a_truncated_npz_is_one_line(tmp_path, cli):
    np.savez(tmp_path / "whole.npz", x=np.random.default_rng(0).normal(size=(200, 2)))
    (tmp_path / "cut.npz").write_bytes((tmp_path / "whole.npz").read_bytes()[:300])
    result = cli("train", "--data", tmp_path / "cut.npz", "--out", tmp_path / "run", "--quiet")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "cut.npz" in result.stderr and "is it complete?" in result.stderr


def test_a_decompression_bomb_is_refused_not_decoded(tmp_path, monkeypatch):
    """PIL refuses images beyond twice MAX_IMAGE_PIXELS; here the limit is lowered instead of making a huge file."""
    from PIL import Image

    from flowdiff.data.images import load_images
    from flowdiff.errors import InvalidInputError

    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("L", (64, 64)).save(folder / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(InvalidInputError, match="too large to decode safely"):
        load_images(str(folder))


def test_values_beyond_float32_are_named_as_an_overflow(tmp_path, cli):
    np.savetxt(tmp_path / "huge.csv", np.array([[1.0, 2.0], [3e39, 4.0], [5.0, 6.0]]), delimiter=",")
    result = cli("train", "--data", tmp_path / "huge.csv", "--out", tmp_path / "run", "--quiet")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "beyond float32's range" in result.stderr and "row indices 1," in result.stderr
    assert "NaN" not in result.stderr and not (tmp_path / "run").exists()
