"""Exactly enumerable token laws for the discrete tests, and a network that returns their exact posterior."""

import itertools

import torch
from torch import nn

from flowdiff.paths.discrete import MixturePath, exact_posterior

K, L = 3, 2
SUPPORT = torch.tensor(list(itertools.product(range(K), repeat=L)))
WEIGHTS = torch.tensor([0.30, 0.05, 0.0, 0.10, 0.20, 0.05, 0.0, 0.05, 0.25], dtype=torch.float64)
"""A joint law of two tokens from three, with dependence and impossible pairs."""


class ExactPosterior(nn.Module):
    """logits = log p_{1|t}(. | x) of the law (SUPPORT, WEIGHTS) on `path`: the best network there is."""

    def __init__(self, path: MixturePath, support=SUPPORT, weights=WEIGHTS) -> None:
        super().__init__()
        self.path, self.support, self.weights = path, support, weights
        self.length, self.num_classes, self.data_shape = support.shape[1], None, (support.shape[1],)
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the module a device

    def forward(self, x, t, y=None):
        t = torch.as_tensor(t, dtype=torch.float64).expand(x.shape[0])
        posterior = exact_posterior(self.path, self.support, self.weights, x, t)[..., : self.path.vocab_size]
        return posterior.clamp_min(1e-30).log()


def frequencies(tokens: torch.Tensor, k: int = K) -> torch.Tensor:
    """Empirical law of the sequences (n, L) over the k^L sequences, in the order of SUPPORT."""
    codes = sum(tokens[:, i] * k ** (tokens.shape[1] - 1 - i) for i in range(tokens.shape[1]))
    return torch.bincount(codes, minlength=k ** tokens.shape[1]).double() / tokens.shape[0]


def total_variation(p: torch.Tensor, q: torch.Tensor) -> float:
    """sum |p - q| / 2."""
    return 0.5 * (p - q).abs().sum().item()
