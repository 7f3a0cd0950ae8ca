"""The evidence lower bound on log p(x1) of a discrete flow model on the mixture path; bits per token.

The model's CTMC (rates v from its posterior) and the conditional process given x1 (rates u, ending at
x1) start from the same source p_0, so log p_theta(x1) >= -KL(conditional path || model path):

    ELBO(x1) = - int_0^1 E_{x_t ~ p_t(. | x1)} sum_i D_i(t) dt,

with D_i the generalized KL of the rates at token i (`learning.discrete.loss.token_divergence`). For the
mask source with the exact posterior the bound is tight (the mixture of conditional processes is itself
Markov); for the uniform source it is not. Estimated by Monte Carlo with stratified times.

For the mask source only masked tokens contribute, D_i = c (-log p(x1_i | x_t)), and P(masked) c = d kappa,
so that, substituting kappa for t, ELBO = -L E_{kappa ~ U(0,1), i ~ U{1..L}} E_{x_t | i masked}
[-log p_{1|t}(x1_i | x_t)]: one position per draw, with bounded weights (the direct estimator has the
weight c = d kappa / (1 - kappa), unbounded at t = 1). For the uniform source the draw at position i is
split exactly into its two cases, x_i = x1_i (weight (kappa + (1 - kappa) / K) / (1 - kappa)) and x_i = b,
a uniform other token (weight 1 - 1 / K), two network calls per draw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from flowdiff.dynamics.ctmc import uniform
from flowdiff.errors import InvalidInputError
from flowdiff.learning.discrete.posterior import log_posterior
from flowdiff.paths.discrete import MixturePath


@dataclass(frozen=True)
class ElboEstimate:
    """ELBO(x1) in nats per sequence (batch,), the standard error of each estimate, and the length L."""

    nats: torch.Tensor
    standard_error: torch.Tensor
    length: int

    @property
    def bits_per_token(self) -> torch.Tensor:
        """-ELBO / (L ln 2): an upper bound on the code length per token, in bits."""
        return -self.nats / (self.length * math.log(2.0))


@torch.no_grad()
def elbo(model, path: MixturePath, x1: torch.Tensor, y: torch.Tensor | None = None, samples: int = 64,
         generator: torch.Generator | None = None, t_max: float = 1.0 - 1e-6) -> ElboEstimate:
    """ELBO(x1) = -int_0^1 E sum_i D_i dt (module docstring) by `samples` stratified times per sequence."""
    path.check_data(x1)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
        raise InvalidInputError(f"samples must be an integer >= 2, got {samples!r}")
    batch, device = x1.shape[0], x1.device
    offsets = uniform((samples, batch), generator, device, torch.float64)
    strata = ((torch.arange(samples, device=device, dtype=torch.float64)[:, None] + offsets) / samples).reshape(-1)
    repeated = x1.repeat(samples, 1)
    labels = None if y is None else torch.as_tensor(y, device=device).reshape(-1).expand(batch).repeat(samples)
    terms = (_masked_terms if path.mask_token is not None else _uniform_terms)(
        model, path, repeated, strata.clamp_max(t_max), labels, generator)
    terms = terms.reshape(samples, batch)
    return ElboEstimate(nats=terms.mean(0), standard_error=terms.std(0) / math.sqrt(samples), length=x1.shape[1])


def _masked_terms(model, path: MixturePath, x1: torch.Tensor, kappa: torch.Tensor, labels,
                  generator: torch.Generator | None) -> torch.Tensor:
    """L log p_{1|t}(x1_i | x_t) with kappa_t = kappa, a uniform position i masked and the others drawn."""
    n, length = x1.shape
    t, x_t, rows, position = _context(path, x1, kappa, generator)
    x_t[rows, position] = path.mask_token
    log_p = log_posterior(model, path, x_t, t.float(), labels).double()
    return length * log_p[rows, position, x1[rows, position]]


def _context(path: MixturePath, x1: torch.Tensor, kappa: torch.Tensor, generator):
    """t with kappa_t = kappa, x_t ~ p_t(. | x1), the row indices and a uniform position per row."""
    n, length = x1.shape
    t = path.kappa.inverse(kappa)
    source = generator.device if generator is not None else x1.device
    position = torch.randint(length, (n,), generator=generator, device=source).to(x1.device)
    return t, path.sample(x1, t, generator).x_t, torch.arange(n, device=x1.device), position


def _uniform_terms(model, path: MixturePath, x1: torch.Tensor, kappa: torch.Tensor, labels,
                   generator: torch.Generator | None) -> torch.Tensor:
    """-L (w_stay c^-1 D_i(x_i = x1_i) + (1 - 1/K) c^-1 D_i(x_i = b)) at one uniform position i (module doc)."""
    n, length = x1.shape
    vocab = path.vocab_size
    t, x_t, rows, position = _context(path, x1, kappa, generator)
    data = x1[rows, position]
    source = generator.device if generator is not None else x1.device
    other = (data + 1 + torch.randint(vocab - 1, (n,), generator=generator, device=source).to(x1.device)) % vocab
    stay, move = x_t.clone(), x_t.clone()
    stay[rows, position], move[rows, position] = data, other
    both = None if labels is None else torch.cat([labels, labels])
    log_p = log_posterior(model, path, torch.cat([stay, move]), torch.cat([t, t]).float(), both).double()
    p_stay = log_p[rows, position, data].exp()
    log_p_data, p_other = log_p[n + rows, position, data], log_p[n + rows, position, other].exp()
    weight_stay = (kappa + (1 - kappa) / vocab) / (1 - kappa)
    divergence = weight_stay * (1 - p_stay) + (1 - 1 / vocab) * (-log_p_data - p_other)
    return -length * divergence
