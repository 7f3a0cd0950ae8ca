"""Token data for discrete flow matching: integer arrays, labelled .npz files, text as characters, toy laws.

A token data set is an integer tensor (N, L) of values 0..K-1 (K: the vocabulary size) with optional
labels (N,). Files: an .npy of integers (N, L); an .npz with "tokens" (or "x") and optionally "y" (or
"labels"); a text file (.txt), read as characters: the vocabulary is its sorted distinct characters and
the sequences are its windows of `TEXT_LENGTH` characters. Toy laws shipped in code are exactly known,
so that samples can be compared with them: "markov_tokens" (3 tokens from 4, a Markov chain) and
"checkerboard_tokens" (the 2-D checkerboard on a 64 x 64 grid: 2 tokens from 64).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from flowdiff.data.info import DataInfo
from flowdiff.data.registry import DEFAULT_TOY_SIZE, Dataset
from flowdiff.errors import IncompatibleError, InvalidInputError

TEXT_LENGTH = 32
"""Characters per training sequence of a text file."""

TOKEN_SUFFIXES = (".npy", ".npz", ".txt")
"""Files that hold token data."""


@dataclass(frozen=True)
class TokenLaw:
    """A law on finitely many sequences: `support` (M, L) and their probabilities `weights` (M,)."""

    support: torch.Tensor
    weights: torch.Tensor
    vocab_size: int

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n sequences drawn from the law, (n, L) int64."""
        return self.support[torch.multinomial(self.weights, n, replacement=True, generator=generator)]

    def probabilities(self, tokens: torch.Tensor) -> torch.Tensor:
        """Empirical frequencies of `tokens` (n, L) over the support (mass off the support is not counted)."""
        index = {tuple(row): k for k, row in enumerate(self.support.tolist())}
        counts = torch.zeros(len(self.support), dtype=torch.float64)
        for row in tokens.tolist():
            k = index.get(tuple(row))
            if k is not None:
                counts[k] += 1
        return counts / max(len(tokens), 1)

    def total_variation(self, tokens: torch.Tensor) -> float:
        """TV(empirical law of `tokens`, this law) = sum |p_hat - p| / 2, mass off the support included."""
        frequencies = self.probabilities(tokens)
        off_support = 1.0 - float(frequencies.sum())
        return 0.5 * (float((frequencies - self.weights).abs().sum()) + off_support)


def markov_law() -> TokenLaw:
    """3 tokens from 4: x_1 ~ pi, x_{k+1} ~ P[x_k, .] (a sticky chain with a forbidden move 0 -> 3)."""
    start = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
    move = torch.tensor([[0.6, 0.3, 0.1, 0.0], [0.1, 0.5, 0.3, 0.1], [0.1, 0.1, 0.6, 0.2], [0.3, 0.1, 0.1, 0.5]],
                        dtype=torch.float64)
    support = torch.cartesian_prod(*[torch.arange(4)] * 3)
    weights = start[support[:, 0]] * move[support[:, 0], support[:, 1]] * move[support[:, 1], support[:, 2]]
    return TokenLaw(support=support, weights=weights, vocab_size=4)


def checkerboard_law(size: int = 64, board: int = 8) -> TokenLaw:
    """The checkerboard on a size x size grid of a board x board board: (i, j) uniform on the dark squares."""
    grid = torch.cartesian_prod(torch.arange(size), torch.arange(size))
    cell = size // board
    support = grid[(grid[:, 0] // cell + grid[:, 1] // cell) % 2 == 0]
    weights = torch.full((len(support),), 1.0 / len(support), dtype=torch.float64)
    return TokenLaw(support=support, weights=weights, vocab_size=size)


TOKEN_TOYS = {"markov_tokens": markov_law, "checkerboard_tokens": checkerboard_law}
"""Token laws shipped in code, by name."""


def token_law(name: str) -> TokenLaw | None:
    """The exact law of a token toy set, or None for data without a known law."""
    factory = TOKEN_TOYS.get(str(name))
    return None if factory is None else factory()


def _check_tokens(array: np.ndarray, source: str) -> np.ndarray:
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise InvalidInputError(f"{source}: tokens must be integers 0..K-1, got an array of dtype {array.dtype} "
                                "(convert with array.astype(np.int64) if its values are whole numbers)")
    if array.ndim == 1:
        array = array.reshape(-1, 1)
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise InvalidInputError(f"{source}: tokens must be a 2-D array (N sequences, L tokens), got {array.shape}")
    if int(array.min()) < 0:
        raise InvalidInputError(f"{source}: tokens must be >= 0 (vocabulary 0..K-1), got {int(array.min())}")
    return array.astype(np.int64)


def encode_text(text: str, vocabulary: list[str], source: str = "text") -> np.ndarray:
    """The characters of `text` as tokens: character vocabulary[k] is token k; refuses other characters."""
    index = {character: k for k, character in enumerate(vocabulary)}
    unknown = sorted(set(text) - index.keys())
    if unknown:
        shown = "".join(unknown[:20]).encode("unicode_escape").decode("ascii")
        raise InvalidInputError(f"{source}: {len(unknown)} character(s) not in the vocabulary of "
                                f"{len(vocabulary)} characters the run was trained on: {shown!r}")
    return np.fromiter((index[c] for c in text), dtype=np.int64, count=len(text))


def _read(path: Path, vocabulary: list[str] | None = None) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    """Tokens, labels or None, vocabulary (text) or None from a token file; text is encoded with `vocabulary`
    when given (a trained run's), else with its own sorted distinct characters."""
    suffix = path.suffix.lower()
    if suffix == ".txt":
        text = path.read_text(encoding="utf-8")
        if len(text) < TEXT_LENGTH:
            raise InvalidInputError(f"{path}: a text needs at least {TEXT_LENGTH} characters, got {len(text)}")
        vocabulary = sorted(set(text)) if vocabulary is None else list(vocabulary)
        codes = encode_text(text, vocabulary, str(path))
        windows = np.lib.stride_tricks.sliding_window_view(codes, TEXT_LENGTH)
        return np.ascontiguousarray(windows), None, vocabulary
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise InvalidInputError(f"{path}: not a readable numpy file ({error})") from None
    if suffix == ".npy":
        return loaded, None, None
    keys = list(loaded.keys())
    data_key = next((k for k in ("tokens", "x", "data") if k in keys), None)
    if data_key is None:
        raise InvalidInputError(f"{path}: an .npz of tokens needs an array 'tokens' (or 'x'), found {keys}")
    label_key = next((k for k in ("y", "labels") if k in keys), None)
    return loaded[data_key], None if label_key is None else loaded[label_key], None


def _labels(labels: np.ndarray | None, n: int, source: str) -> tuple[torch.Tensor | None, int | None]:
    if labels is None:
        return None, None
    labels = np.asarray(labels).reshape(-1)
    if labels.shape[0] != n or not np.issubdtype(labels.dtype, np.integer) or int(labels.min()) < 0:
        raise InvalidInputError(f"{source}: labels must be {n} integers >= 0 (one per sequence), got "
                                f"{labels.shape[0]} of dtype {labels.dtype}")
    return torch.from_numpy(labels.astype(np.int64)), int(labels.max()) + 1


def load_tokens(spec: str | Path, n: int | None = None, generator: torch.Generator | None = None,
                vocab_size: int | None = None, vocabulary: list[str] | None = None) -> Dataset:
    """A token data set (kind "tokens") from a toy name or a file (module docstring), n sequences at most.

    `vocab_size` (a trained run's) refuses tokens outside 0..vocab_size-1; by default it is max + 1.
    `vocabulary` (a text run's characters) encodes a text file with them instead of its own.
    """
    text = str(spec)
    found_vocabulary = None
    if text in TOKEN_TOYS:
        law = TOKEN_TOYS[text]()
        x, y, source, name = law.sample(DEFAULT_TOY_SIZE if n is None else n, generator), None, "toy", text
        found = law.vocab_size
    else:
        path = Path(text).expanduser()
        if not path.is_file():
            raise InvalidInputError(f"token file {path} does not exist; discrete training takes an integer .npy, a "
                                    f".npz with labels, a .txt, or a toy law ({', '.join(TOKEN_TOYS)})")
        array, labels, found_vocabulary = _read(path, vocabulary)
        array = _check_tokens(array, str(path))
        x, source, name = torch.from_numpy(array), "file", str(path.resolve())
        y, _ = _labels(labels, x.shape[0], str(path))
        found = len(found_vocabulary) if found_vocabulary is not None else int(x.max()) + 1
        if n is not None and n < x.shape[0]:
            keep = torch.randperm(x.shape[0], generator=generator)[:n]
            x, y = x[keep], None if y is None else y[keep]
    size = found if vocab_size is None else int(vocab_size)
    if int(x.max()) >= size:
        raise InvalidInputError(f"{text}: token values reach {int(x.max())}, outside the vocabulary 0..{size - 1}")
    num_classes = None if y is None else int(y.max()) + 1
    info = DataInfo(kind="tokens", shape=(int(x.shape[1]),), num_classes=num_classes, source=source, name=name,
                    size=int(x.shape[0]), vocab_size=max(size, 2), vocabulary=found_vocabulary)
    return Dataset(x.contiguous(), y, num_classes, "tokens", info)


def load_heldout_tokens(spec: str | Path, info: DataInfo, n: int | None = None,
                        generator: torch.Generator | None = None) -> Dataset:
    """Held-out sequences for a trained run described by `info`: a token file of its sequence length and
    vocabulary (text encoded with its characters), labelled if and only if the run is."""
    source = str(spec)
    if source not in TOKEN_TOYS and not Path(source).expanduser().is_file():
        raise InvalidInputError(f"held-out file {source} does not exist (give a token .npy/.npz or a text file)")
    is_text = Path(source).suffix.lower() == ".txt"
    if is_text and info.vocabulary is None:
        raise IncompatibleError(f"{source} is text, but the run was trained on integer tokens, not text: "
                                "give held-out tokens as an .npy or .npz of integers")
    data = load_tokens(spec, n=n, generator=generator, vocab_size=info.vocab_size,
                       vocabulary=info.vocabulary if is_text else None)
    length = info.shape[0]
    if data.x.shape[1] != length:
        raise IncompatibleError(f"{source} has sequences of {data.x.shape[1]} tokens, the run was trained on "
                                f"sequences of {length}")
    if info.num_classes is None:
        return data.without_labels()
    if data.y is None:
        raise IncompatibleError(f"the run is conditioned on {info.num_classes} labels, but {source} holds no labels: "
                                "give an .npz with 'tokens' and 'y'")
    if int(data.y.max()) >= info.num_classes:
        raise InvalidInputError(f"{source}: labels reach {int(data.y.max())}, outside the run's labels "
                                f"0..{info.num_classes - 1}")
    return data


def decode(tokens: torch.Tensor, vocabulary: list[str]) -> list[str]:
    """Token sequences (n, L) back to text: token k is the character vocabulary[k]."""
    return ["".join(vocabulary[int(k)] for k in row) for row in tokens]
