"""A user's own vectors from .npy, .npz or .csv files, checked before any training starts.

Data must be a 2-D array (n, d) of finite numbers. Labels are optional: an .npz array "y"
(or "labels"), or a CSV column chosen by name. Labels may be integers (or, in a CSV, names);
they are mapped to class indices 0..K-1 and the original values are kept as class names.
"""

from __future__ import annotations

import csv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flowdiff.errors import InvalidInputError

VECTOR_SUFFIXES = (".npy", ".npz", ".csv")
DATA_KEYS = ("x", "data")
LABEL_KEYS = ("y", "labels")


@dataclass
class VectorData:
    """Vectors x (n, d) float32, class indices y (n,) int64 or None, and the class names."""

    x: np.ndarray
    y: np.ndarray | None
    num_classes: int | None
    class_names: list[str] | None
    source: str


@dataclass(frozen=True)
class Standardization:
    """Per-coordinate mean and std: the network sees (x - mean) / std (std 0 is replaced by 1)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardization:
        """Mean and standard deviation of each coordinate of x."""
        mean = x.mean(axis=0, dtype=np.float64)
        std = x.std(axis=0, dtype=np.float64)
        std = np.where(std > 0, std, 1.0)
        return cls(mean.astype(np.float32), std.astype(np.float32))

    def apply(self, x: np.ndarray) -> np.ndarray:
        """(x - mean) / std."""
        return ((x - self.mean) / self.std).astype(np.float32)


def _check_vectors(x: np.ndarray, source: str) -> np.ndarray:
    if np.iscomplexobj(x):
        raise InvalidInputError(f"{source}: data must be real numbers, got complex dtype {x.dtype}")
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise InvalidInputError(f"{source}: data must be numeric, got an array of dtype {x.dtype}")
    if x.ndim != 2:
        hint = " (for 1-D data use x.reshape(-1, 1))" if x.ndim == 1 else ""
        raise InvalidInputError(f"{source}: data must be a 2-D array (n, d), got shape {x.shape}{hint}")
    if x.shape[0] < 2 or x.shape[1] < 1:
        raise InvalidInputError(f"{source}: data needs at least 2 rows and 1 column, got shape {x.shape}")
    wide = x.astype(np.float64)
    overflow = np.isfinite(wide) & (np.abs(wide) > np.finfo(np.float32).max)
    if overflow.any():
        rows = np.unique(np.nonzero(overflow)[0])
        shown = ", ".join(str(r) for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
        raise InvalidInputError(
            f"{source}: {len(rows)} row(s) hold values beyond float32's range (|x| > 3.4e38; row indices {shown}, "
            "counting the first data row as 0); the network computes in float32: rescale the data first")
    x = wide.astype(np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        shown = ", ".join(str(r) for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
        raise InvalidInputError(
            f"{source}: data contains NaN or inf in {len(rows)} row(s) (row indices {shown}, counting the "
            "first data row as 0); remove or fill them"
        )
    return x


def _encode_labels(labels: np.ndarray, n: int, source: str) -> tuple[np.ndarray, list[str]]:
    """Check labels and map them to class indices 0..K-1; return the indices and the class names."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise InvalidInputError(f"{source}: labels must be 1-D (one per row), got shape {labels.shape}")
    if labels.shape[0] != n:
        raise InvalidInputError(f"{source}: there are {n} data rows but {labels.shape[0]} labels; give "
                                "one per row")
    if labels.dtype.kind in "fc":
        if not np.isfinite(labels).all() or not (labels == np.round(labels)).all():
            raise InvalidInputError(f"{source}: labels must be integers (class ids), got non-integer values")
        labels = labels.astype(np.int64)
    if labels.dtype.kind == "b":
        labels = labels.astype(np.int64)
    if labels.dtype.kind not in "iuUS":
        raise InvalidInputError(f"{source}: labels must be integers or names, got dtype {labels.dtype}")
    classes, index = np.unique(labels, return_inverse=True)
    return index.astype(np.int64), [str(c) for c in classes]


def _load_npy(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    return np.load(path, allow_pickle=False), None


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    with np.load(path, allow_pickle=False) as archive:
        names = list(archive.files)
        data_key = next((k for k in DATA_KEYS if k in names), None)
        if data_key is None:
            if len(names) != 1:
                raise InvalidInputError(
                    f"{path}: an .npz needs an array named 'x' or 'data' (and optionally 'y' or 'labels'); "
                    f"it holds {names}"
                )
            data_key = names[0]
        label_key = next((k for k in LABEL_KEYS if k in names), None)
        return archive[data_key], (archive[label_key] if label_key else None)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _load_csv(path: Path, label_column: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    if not rows:
        raise InvalidInputError(f"{path}: the CSV file is empty")
    header = None
    if not all(_is_number(cell) for cell in rows[0]):
        header, rows = [cell.strip() for cell in rows[0]], rows[1:]
    if label_column is not None:
        if header is None:
            raise InvalidInputError(f"{path}: the label column {label_column!r} needs a header row naming "
                                    "the columns")
        if label_column not in header:
            raise InvalidInputError(f"{path}: no column {label_column!r}; the columns are {header}")
    width = len(header) if header else len(rows[0])
    label_at = header.index(label_column) if label_column is not None else None
    values, labels = [], []
    for number, row in enumerate(rows, start=2 if header else 1):
        if len(row) != width:
            raise InvalidInputError(f"{path}: line {number} has {len(row)} fields, expected {width}")
        cells = [cell.strip() for cell in row]
        if label_at is not None:
            labels.append(cells.pop(label_at))
        try:
            values.append([float(cell) for cell in cells])
        except ValueError:
            bad = next(cell for cell in cells if not _is_number(cell))
            raise InvalidInputError(
                f"{path}: line {number} has the non-numeric value {bad!r}; every column except the "
                "label column must be numeric (name the label column)"
            ) from None
    x = np.asarray(values, dtype=np.float64).reshape(len(values), width - (label_at is not None))
    if label_at is None:
        return x, None
    y = np.asarray(labels)
    if all(_is_number(v) for v in labels):
        y = np.asarray([float(v) for v in labels])
    return x, y


def _reason(error: Exception) -> str:
    """Why a data file could not be read, in words that never advise loading pickled objects."""
    text = str(error)
    if "pickle" in text:
        return "it is not a numeric .npy array: no array header (flowdiff never loads pickled objects)"
    if isinstance(error, zipfile.BadZipFile):
        return "it is not a complete .npz (zip) archive: truncated or not an .npz"
    return text.splitlines()[0] if text else type(error).__name__


def load_vectors(path: str | Path, label_column: str | None = None) -> VectorData:
    """Read vectors (and optional labels) from a .npy, .npz or .csv file, checking them."""
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in VECTOR_SUFFIXES:
        raise InvalidInputError(f"{path}: unsupported file type {suffix!r}; use one of {VECTOR_SUFFIXES}")
    if not path.is_file():
        raise InvalidInputError(f"data file {path} does not exist")
    if label_column is not None and suffix != ".csv":
        raise InvalidInputError(
            f"{path}: a label column applies to CSV files; in an .npz store labels as 'y' or 'labels'"
        )
    try:
        if suffix == ".npy":
            x, labels = _load_npy(path)
        elif suffix == ".npz":
            x, labels = _load_npz(path)
        else:
            x, labels = _load_csv(path, label_column)
    except InvalidInputError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, csv.Error) as error:
        raise InvalidInputError(f"{path}: cannot read the file ({_reason(error)})") from None
    x = _check_vectors(np.asarray(x), str(path))
    if labels is None:
        return VectorData(x, None, None, None, str(path))
    y, names = _encode_labels(labels, x.shape[0], str(path))
    return VectorData(x, y, len(names), names, str(path))
