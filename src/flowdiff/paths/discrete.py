"""The factorised mixture path on token sequences and the CTMC rate that carries it.

Given a data sequence x1 of L tokens from a vocabulary 0..K-1, each token of x_t is independently
its data value with probability kappa_t and a draw of the source p_0 otherwise:

    p_t(a | x1_i) = (1 - kappa_t) p_0(a) + kappa_t delta_{x1_i}(a),    kappa_0 = 0, kappa_1 = 1.

Sources: "uniform" (p_0 uniform over the K tokens) or "mask" (p_0 = delta_M with an extra mask
token M = K, so a token has S = K + 1 states). With the posterior p_{1|t}(a | x) of the data token
at position i given the whole x_t = x, the per-token rate

    u_t(a | x) = d kappa_t / (1 - kappa_t) * (p_{1|t}(a | x) - delta_{x_i}(a))

generates the marginal path p_t = E_{x1} prod_i p_t(. | x1_i) (Gat et al. 2024, Campbell et al.
2024); `MixturePath.rates` writes this conversion out and the tests check the Kolmogorov forward
equation d p_t / dt = p_t Q_t exactly on enumerable toys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from flowdiff.dynamics.ctmc import uniform as draw_uniform
from flowdiff.errors import IncompatibleError, InvalidInputError
from flowdiff.registry import build, lookup


@dataclass(frozen=True)
class KappaValues:
    """kappa_t (the probability of the data token) and d kappa_t / dt at some times t."""

    kappa: torch.Tensor
    d_kappa: torch.Tensor


class Kappa:
    """A kappa schedule: increasing from kappa_0 = 0 to kappa_1 = 1, with its derivative and inverse."""

    def __call__(self, t: torch.Tensor) -> KappaValues:  # pragma: no cover - interface
        raise NotImplementedError

    def inverse(self, kappa: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        """The time t with kappa_t = kappa."""
        raise NotImplementedError

    def config(self) -> dict:
        """The keyword arguments that rebuild this schedule, with its name."""
        return {"name": type(self).__name__.replace("Kappa", "").lower(), **vars(self)}


class LinearKappa(Kappa):
    """kappa_t = t, d kappa_t / dt = 1."""

    def __call__(self, t):
        t = torch.as_tensor(t)
        return KappaValues(kappa=t, d_kappa=torch.ones_like(t))

    def inverse(self, kappa):
        return torch.as_tensor(kappa)


class PolynomialKappa(Kappa):
    """kappa_t = t^n, d kappa_t / dt = n t^(n-1) (n >= 1)."""

    def __init__(self, n: float = 2.0) -> None:
        if isinstance(n, bool) or not isinstance(n, int | float) or not 1.0 <= n < math.inf:
            raise InvalidInputError(f"the kappa exponent n must be a finite number >= 1, got {n!r}")
        self.n = float(n)

    def __call__(self, t):
        t = torch.as_tensor(t)
        return KappaValues(kappa=t**self.n, d_kappa=self.n * t ** (self.n - 1))

    def inverse(self, kappa):
        return torch.as_tensor(kappa) ** (1.0 / self.n)


class CosineKappa(Kappa):
    """kappa_t = 1 - cos(pi t / 2), d kappa_t / dt = (pi / 2) sin(pi t / 2)."""

    def __call__(self, t):
        t = torch.as_tensor(t)
        half_pi = math.pi / 2
        return KappaValues(kappa=1 - torch.cos(half_pi * t), d_kappa=half_pi * torch.sin(half_pi * t))

    def inverse(self, kappa):
        return torch.arccos((1 - torch.as_tensor(kappa)).clamp(0.0, 1.0)) / (math.pi / 2)


KAPPAS = {"linear": LinearKappa, "polynomial": PolynomialKappa, "cosine": CosineKappa}
"""Kappa schedules by name."""

SOURCES = ("mask", "uniform")
"""Source laws p_0 of one token: a mask token M = K, or uniform over the vocabulary."""


@dataclass(frozen=True)
class MixtureSample:
    """A draw of the mixture path: x_t (batch, L) at times t (batch,), from source x0 and data x1."""

    x_t: torch.Tensor
    t: torch.Tensor
    x0: torch.Tensor
    x1: torch.Tensor


class MixturePath:
    """The factorised mixture path p_t(a | x1_i) = (1 - kappa_t) p_0(a) + kappa_t delta_{x1_i}(a) (module doc)."""

    def __init__(self, vocab_size: int, source: str = "mask", kappa: str | dict | Kappa = "linear") -> None:
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 2:
            raise InvalidInputError(f"vocab_size must be an integer >= 2, got {vocab_size!r}")
        lookup({s: s for s in SOURCES}, source, "source")
        self.vocab_size, self.source = vocab_size, source
        self.kappa = build(KAPPAS, kappa, "kappa schedule", Kappa)

    @property
    def num_states(self) -> int:
        """S: the values a token of x_t can take (K, or K + 1 with the mask token)."""
        return self.vocab_size + (self.source == "mask")

    @property
    def mask_token(self) -> int | None:
        """The mask token M = K for the mask source, else None."""
        return self.vocab_size if self.source == "mask" else None

    def config(self) -> dict:
        """A JSON-ready description that rebuilds the path."""
        return {"name": "mixture", "vocab_size": self.vocab_size, "source": self.source,
                "kappa": self.kappa.config()}

    def source_probs(self, device=None, dtype=torch.float64) -> torch.Tensor:
        """p_0 as a vector over the S states."""
        p0 = torch.zeros(self.num_states, device=device, dtype=dtype)
        if self.source == "mask":
            p0[self.vocab_size] = 1.0
        else:
            p0[:] = 1.0 / self.vocab_size
        return p0

    def sample_source(self, shape, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """x0 ~ p_0, an integer tensor of `shape` (all mask tokens, or uniform tokens)."""
        return self.source_from_uniform(draw_uniform(tuple(shape), generator, device))

    def source_from_uniform(self, uniform: torch.Tensor) -> torch.Tensor:
        """x0 ~ p_0 from U(0, 1) draws of its shape: the mask token, or floor(K u) for the uniform source."""
        if self.source == "mask":
            return torch.full(uniform.shape, self.vocab_size, dtype=torch.long, device=uniform.device)
        return (uniform * self.vocab_size).long().clamp_max(self.vocab_size - 1)

    def sample(self, x1: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None,
               x0: torch.Tensor | None = None, uniform: torch.Tensor | None = None) -> MixtureSample:
        """x_t: each token is x1_i w.p. kappa_t, else x0_i ~ p_0 (`uniform`: the U(0,1) draws, else drawn)."""
        self.check_data(x1)
        t = torch.as_tensor(t, device=x1.device)
        t = (t if torch.is_floating_point(t) else t.to(torch.get_default_dtype())).expand(x1.shape[0])
        x0 = self.sample_source(x1.shape, generator, x1.device) if x0 is None else x0
        if uniform is None:
            uniform = draw_uniform(x1.shape, generator, x1.device)
        keep_data = uniform < self.kappa(t).kappa[:, None]
        return MixtureSample(x_t=torch.where(keep_data, x1, x0), t=t, x0=x0, x1=x1)

    def check_data(self, x1: torch.Tensor) -> None:
        """Raise unless x1 is an integer tensor (batch, L) of tokens in 0..K-1."""
        if not isinstance(x1, torch.Tensor) or x1.ndim != 2 or torch.is_floating_point(x1):
            raise InvalidInputError("data tokens must be an integer tensor of shape (batch, L)")
        if x1.numel() and (int(x1.min()) < 0 or int(x1.max()) >= self.vocab_size):
            raise InvalidInputError(f"data tokens range from {int(x1.min())} to {int(x1.max())}; a vocabulary "
                                    f"of {self.vocab_size} needs tokens in 0..{self.vocab_size - 1}")

    def conditional_probs(self, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """p_t(a | x1_i) for every position and state, shape (batch, L, S) (float64)."""
        kappa = self.kappa(torch.as_tensor(t, dtype=torch.float64)).kappa.reshape(-1, 1, 1)
        data = torch.nn.functional.one_hot(x1.long(), self.num_states).to(torch.float64)
        return (1 - kappa) * self.source_probs(x1.device) + kappa * data

    def rate_scale(self, t: torch.Tensor) -> torch.Tensor:
        """d kappa_t / (1 - kappa_t), the factor of the posterior-to-rate conversion."""
        values = self.kappa(t)
        return values.d_kappa / (1 - values.kappa)

    def rates(self, posterior: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """u_t(a | x) = d kappa_t / (1 - kappa_t) (p_{1|t}(a | x) - delta_{x_i}(a)), shape (batch, L, S).

        `posterior` (batch, L, S) is p_{1|t}(. | x) per position (zero on the mask token).
        """
        if posterior.shape != (*x.shape, self.num_states):
            raise IncompatibleError(f"the posterior must have shape {(*x.shape, self.num_states)} "
                                    f"(batch, L, S), got {tuple(posterior.shape)}")
        t = torch.as_tensor(t, dtype=posterior.dtype, device=x.device)
        scale = self.rate_scale(t).reshape(-1, 1, 1)
        here = torch.nn.functional.one_hot(x.long(), self.num_states).to(posterior.dtype)
        return scale * (posterior - here)

    def __repr__(self) -> str:
        return f"MixturePath(vocab_size={self.vocab_size}, source={self.source!r}, kappa={self.kappa.config()})"


def exact_posterior(path: MixturePath, support: torch.Tensor, weights: torch.Tensor, x: torch.Tensor,
                    t: torch.Tensor) -> torch.Tensor:
    """p_{1|t}(a | x) per position for a data law on finitely many sequences: Bayes' rule over the support.

    `support` (M, L) lists the sequences, `weights` (M,) their probabilities; p(x1 | x_t = x) is
    proportional to p(x1) prod_i p_t(x_i | x1_i). Returns (batch, L, S) in float64.
    """
    t = torch.as_tensor(t, dtype=torch.float64, device=x.device).expand(x.shape[0])
    kappa = path.kappa(t).kappa[:, None, None]
    source = path.source_probs(x.device)[x.long()][:, None, :]  # p_0(x_i), (B, 1, L)
    likelihood = (1 - kappa) * source + kappa * (x[:, None, :] == support[None]).to(torch.float64)
    joint = weights.to(torch.float64) * likelihood.prod(-1)  # (B, M)
    weight = joint / joint.sum(-1, keepdim=True).clamp_min(1e-300)  # an impossible x gets no rates
    data = torch.nn.functional.one_hot(support.long(), path.num_states).to(torch.float64)  # (M, L, S)
    return torch.einsum("bm,mls->bls", weight, data)
