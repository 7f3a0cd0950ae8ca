"""Vector files (.npy, .npz, .csv) and the data registry: loading, labels, checks, standardisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flowdiff.data.files import Standardization, load_vectors
from flowdiff.data.info import DataInfo
from flowdiff.data.registry import load_dataset
from flowdiff.errors import InvalidInputError


def _points(n=50, d=3, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float64)


def test_npy_npz_and_csv_give_the_same_vectors(tmp_path):
    x = _points()
    np.save(tmp_path / "a.npy", x)
    np.savez(tmp_path / "b.npz", data=x)
    np.savetxt(tmp_path / "c.csv", x, delimiter=",", header="u,v,w", comments="")
    np.savetxt(tmp_path / "d.csv", x, delimiter=",")  # no header
    for name in ("a.npy", "b.npz", "c.csv", "d.csv"):
        data = load_vectors(tmp_path / name)
        assert data.x.dtype == np.float32 and data.x.shape == (50, 3)
        np.testing.assert_allclose(data.x, x, rtol=1e-6, atol=1e-6)
        assert data.y is None and data.num_classes is None


def test_labels_from_npz_and_csv_are_mapped_to_class_indices(tmp_path):
    x = _points(6, 2)
    np.savez(tmp_path / "a.npz", x=x, y=np.array([3, 7, 3, 7, 7, 3]))
    data = load_vectors(tmp_path / "a.npz")
    assert data.y.tolist() == [0, 1, 0, 1, 1, 0] and data.class_names == ["3", "7"] and data.num_classes == 2
    np.savez(tmp_path / "b.npz", data=x, labels=np.array([1.0, 0.0, 1.0, 2.0, 2.0, 0.0]))  # integral floats
    assert load_vectors(tmp_path / "b.npz").y.tolist() == [1, 0, 1, 2, 2, 0]
    rows = ["a,kind,b"] + [f"{u},{k},{v}" for (u, v), k in zip(x, ["cat", "dog", "cat", "cat", "dog", "eel"])]
    (tmp_path / "c.csv").write_text("\n".join(rows) + "\n")
    data = load_vectors(tmp_path / "c.csv", label_column="kind")
    np.testing.assert_allclose(data.x, x, rtol=1e-6)
    assert data.class_names == ["cat", "dog", "eel"] and data.y.tolist() == [0, 1, 0, 0, 1, 2]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_are_refused_naming_the_file_and_rows(tmp_path, bad):
    x = _points()
    x[4, 1] = bad
    x[9, 0] = bad
    np.save(tmp_path / "bad.npy", x)
    with pytest.raises(InvalidInputError, match=r"bad\.npy.*NaN or inf in 2 row\(s\) \(row indices 4, 9,"):
        load_vectors(tmp_path / "bad.npy")
    np.savetxt(tmp_path / "bad.csv", x, delimiter=",")
    with pytest.raises(InvalidInputError, match="NaN or inf"):
        load_vectors(tmp_path / "bad.csv")


def test_wrong_dimensionality_is_refused(tmp_path):
    np.save(tmp_path / "flat.npy", np.arange(10.0))
    with pytest.raises(InvalidInputError, match=r"flat\.npy.*2-D array \(n, d\), got shape \(10,\).*reshape"):
        load_vectors(tmp_path / "flat.npy")
    np.save(tmp_path / "cube.npy", np.zeros((4, 2, 2)))
    with pytest.raises(InvalidInputError, match=r"2-D array \(n, d\), got shape \(4, 2, 2\)"):
        load_vectors(tmp_path / "cube.npy")
    np.save(tmp_path / "text.npy", np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(InvalidInputError, match="numeric"):
        load_vectors(tmp_path / "text.npy")


def test_label_problems_are_refused(tmp_path):
    x = _points(5, 2)
    np.savez(tmp_path / "short.npz", x=x, y=np.array([0, 1, 0]))
    with pytest.raises(InvalidInputError, match=r"short\.npz: there are 5 data rows but 3 labels"):
        load_vectors(tmp_path / "short.npz")
    np.savez(tmp_path / "frac.npz", x=x, y=np.array([0.0, 0.5, 1.0, 1.0, 0.0]))
    with pytest.raises(InvalidInputError, match="labels must be integers"):
        load_vectors(tmp_path / "frac.npz")
    np.savez(tmp_path / "keys.npz", a=x, b=x)
    with pytest.raises(InvalidInputError, match=r"'x' or 'data'.*\['a', 'b'\]"):
        load_vectors(tmp_path / "keys.npz")


def test_csv_problems_are_refused_with_the_line(tmp_path):
    (tmp_path / "a.csv").write_text("u,v\n1,2\n3,oops\n")
    with pytest.raises(InvalidInputError, match="line 3 has the non-numeric value 'oops'"):
        load_vectors(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("u,v\n1,2\n3\n")
    with pytest.raises(InvalidInputError, match="line 3 has 1 fields, expected 2"):
        load_vectors(tmp_path / "b.csv")
    (tmp_path / "c.csv").write_text("u,v\n1,2\n3,4\n")
    with pytest.raises(InvalidInputError, match=r"no column 'label'; the columns are \['u', 'v'\]"):
        load_vectors(tmp_path / "c.csv", label_column="label")
    (tmp_path / "d.csv").write_text("1,2\n3,4\n")
    with pytest.raises(InvalidInputError, match="needs a header row"):
        load_vectors(tmp_path / "d.csv", label_column="label")
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_vectors(tmp_path / "missing.csv")


def test_registry_dispatches_and_lists_the_builtin_names_for_unknown_specs(tmp_path):
    toy = load_dataset("moons", n=100, generator=torch.Generator().manual_seed(0))
    assert toy.x.shape == (100, 2) and toy.kind == "vectors" and toy.info.source == "toy"
    assert toy.y is not None and toy.num_classes == 2
    again = load_dataset("moons", n=100, generator=torch.Generator().manual_seed(0))
    assert torch.equal(toy.x, again.x)  # the same seed draws the same points
    with pytest.raises(InvalidInputError, match=r"unknown data set 'mooons'.*moons, circles.*digits"):
        load_dataset("mooons")
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_dataset(tmp_path / "nothing.npz")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InvalidInputError, match="unsupported data file"):
        load_dataset(tmp_path / "notes.txt")


def test_standardisation_is_recorded_and_maps_samples_back(tmp_path):
    x = _points(400, 3) * np.array([10.0, 0.1, 1.0]) + np.array([100.0, -5.0, 0.0])
    np.save(tmp_path / "x.npy", x)
    data = load_dataset(tmp_path / "x.npy")
    assert data.info.mean is not None and data.info.std is not None
    torch.testing.assert_close(data.x.mean(0), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(data.x.std(0, unbiased=False), torch.ones(3), atol=1e-4, rtol=0)
    back = DataInfo.from_dict(data.info.to_dict()).unstandardize(data.x.double())
    np.testing.assert_allclose(back.numpy(), x, rtol=1e-5, atol=1e-4)
    raw = load_dataset(tmp_path / "x.npy", standardize=False)
    assert raw.info.mean is None and float(raw.x[:, 0].mean()) > 90
    constant = Standardization.fit(np.ones((5, 2), dtype=np.float32))
    assert constant.std.tolist() == [1.0, 1.0]  # a constant column is shifted, not divided by 0
    subset = load_dataset(tmp_path / "x.npy", n=50, generator=torch.Generator().manual_seed(1))
    assert subset.x.shape == (50, 3)


def test_data_info_round_trip_and_label_lookup():
    info = DataInfo(kind="vectors", shape=(2,), num_classes=2, class_names=["cat", "dog"])
    again = DataInfo.from_dict(info.to_dict())
    assert again == info
    assert info.label_index("dog") == 1 and info.label_index(0) == 0
    with pytest.raises(InvalidInputError, match=r"unknown label 'eel'.*\['cat', 'dog'\]"):
        info.label_index("eel")


@pytest.mark.parametrize("spec, options, message", [
    ("digits", {"standardize": True}, "apply to vector files, not image sets"),
    ("digits", {"label_column": "y"}, "apply to vector files, not image sets"),
    ("moons", {"image_size": 8}, "an image size applies to image sets, and 'moons' is not one"),
    ("moons", {"standardize": True}, "standardize applies to data files"),
    ("moons", {"label_column": "y"}, "a label column applies to data files; the toy set 'moons' brings its own"),
])
def test_options_that_do_not_apply_to_the_data_are_refused_not_ignored(spec, options, message):
    with pytest.raises(InvalidInputError, match=message):
        load_dataset(spec, n=16, **options)
