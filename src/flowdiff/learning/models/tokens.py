"""Networks over token sequences: logits of the data-token posterior p_{1|t}(. | x) at every position.

Both take x (batch, L) of integer tokens in 0..K (K is the mask token of the mask source), a time
t (0-d or (batch,)) and optional labels y, and return logits (batch, L, K) over the K data tokens.
`TokenMLP` embeds the tokens, flattens them and runs an MLP (short sequences); `TokenDiT` runs the
adaLN-zero `DiTBlock`s of `learning.models.dit` on token plus position embeddings (longer ones).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from flowdiff.errors import IncompatibleError, InvalidInputError
from flowdiff.learning.models.dit import DiTBlock, modulate
from flowdiff.learning.models.embeddings import LabelEmbedding, TimeEmbedding


def _check_sizes(vocab_size, length, num_classes) -> None:
    for name, value, low in (("vocab_size", vocab_size, 2), ("length", length, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InvalidInputError(f"{name} must be an integer >= {low}, got {value!r}")
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 1):
        raise InvalidInputError(f"num_classes must be None or a positive integer, got {num_classes!r}")


class _TokenNetwork(nn.Module):
    """What both token networks share: sizes, input checks and the condition e(t) + e(y)."""

    discrete = True

    def _setup(self, vocab_size: int, length: int, num_classes: int | None, width: int) -> None:
        _check_sizes(vocab_size, length, num_classes)
        self.vocab_size, self.length, self.num_classes = vocab_size, length, num_classes
        self.data_shape = (length,)
        self.time_embedding = TimeEmbedding(width)
        self.label_embedding = None if num_classes is None else LabelEmbedding(num_classes, width)

    @property
    def null_label(self) -> int | None:
        """The label index meaning "no condition" (None for an unconditional model)."""
        return self.num_classes

    def condition(self, t, y: torch.Tensor | None, batch: int) -> torch.Tensor:
        """The (batch, width) conditioning vector e(t) + e(y)."""
        t = torch.as_tensor(t).to(torch.get_default_dtype())
        c = self.time_embedding(t, batch)
        if self.label_embedding is not None:
            return c + self.label_embedding(y, batch)
        if y is not None:
            raise IncompatibleError("labels y were given to a token network built without classes "
                                    "(num_classes=None); build it with num_classes=K or call it without y")
        return c

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """x checked: an integer (batch, L) tensor of values 0..K (K: the mask token)."""
        if x.ndim != 2 or x.shape[1] != self.length:
            raise InvalidInputError(f"expected tokens of shape (batch, {self.length}), got {tuple(x.shape)}")
        if torch.is_floating_point(x):
            raise InvalidInputError(f"tokens must be integers, got {x.dtype}")
        return x.long()


class TokenMLP(_TokenNetwork):
    """logits(x, t, y) = MLP(flatten(E[x]) projected + e(t) + e(y)) reshaped to (batch, L, K)."""

    def __init__(self, vocab_size: int, length: int, hidden: Sequence[int] = (256, 256, 256),
                 embed_dim: int = 32, num_classes: int | None = None) -> None:
        super().__init__()
        hidden = [hidden] if isinstance(hidden, int) else list(hidden)
        if not hidden or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
            raise InvalidInputError(f"hidden must be one or more positive layer widths, got {hidden!r}")
        self._setup(vocab_size, length, num_classes, hidden[0])
        self.hidden, self.embed_dim = tuple(hidden), int(embed_dim)
        self.embedding = nn.Embedding(vocab_size + 1, self.embed_dim)
        self.input = nn.Linear(length * self.embed_dim, hidden[0])
        layers: list[nn.Module] = []
        for before, after in zip(hidden, [*hidden[1:], length * vocab_size], strict=True):
            layers += [nn.SiLU(), nn.Linear(before, after)]
        self.net = nn.Sequential(*layers)

    def config(self) -> dict:
        """The registered name and the keyword arguments that rebuild this model."""
        return {"name": "token_mlp", "vocab_size": self.vocab_size, "length": self.length,
                "hidden": list(self.hidden), "embed_dim": self.embed_dim, "num_classes": self.num_classes}

    def forward(self, x: torch.Tensor, t, y: torch.Tensor | None = None) -> torch.Tensor:
        """Posterior logits (batch, L, K) at tokens x (batch, L), times t, labels y or None."""
        x = self.tokens(x)
        h = self.input(self.embedding(x).flatten(1)) + self.condition(t, y, x.shape[0])
        return self.net(h).reshape(x.shape[0], self.length, self.vocab_size)


class TokenDiT(_TokenNetwork):
    """logits(x, t, y): DiT blocks (adaLN-zero on e(t) + e(y)) over token + position embeddings, a linear head."""

    def __init__(self, vocab_size: int, length: int, hidden: int = 128, depth: int = 4, heads: int = 4,
                 num_classes: int | None = None) -> None:
        super().__init__()
        for name, value in (("hidden", hidden), ("depth", depth), ("heads", heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{name} must be an integer >= 1, got {value!r}")
        if hidden % heads:
            raise InvalidInputError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
        self._setup(vocab_size, length, num_classes, hidden)
        self.hidden_size, self.depth, self.heads = hidden, depth, heads
        self.embedding = nn.Embedding(vocab_size + 1, hidden)
        self.position = nn.Parameter(0.02 * torch.randn(length, hidden))
        self.blocks = nn.ModuleList(DiTBlock(hidden, heads) for _ in range(depth))
        self.final_norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.final_adaptive = nn.Linear(hidden, 2 * hidden)
        self.head = nn.Linear(hidden, vocab_size)
        nn.init.zeros_(self.final_adaptive.weight)
        nn.init.zeros_(self.final_adaptive.bias)

    def config(self) -> dict:
        """The registered name and the keyword arguments that rebuild this model."""
        return {"name": "token_dit", "vocab_size": self.vocab_size, "length": self.length,
                "hidden": self.hidden_size, "depth": self.depth, "heads": self.heads,
                "num_classes": self.num_classes}

    def forward(self, x: torch.Tensor, t, y: torch.Tensor | None = None) -> torch.Tensor:
        """Posterior logits (batch, L, K) at tokens x (batch, L), times t, labels y or None."""
        x = self.tokens(x)
        c = self.condition(t, y, x.shape[0])
        h = self.embedding(x) + self.position
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.final_adaptive(F.silu(c)).chunk(2, dim=-1)
        return self.head(modulate(self.final_norm(h), shift, scale))
