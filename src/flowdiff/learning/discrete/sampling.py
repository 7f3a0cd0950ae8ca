"""Sampling a discrete flow model: the Euler CTMC sampler, and the first-hitting sampler of the mask source.

"euler": `steps` steps on a uniform grid of [0, 1]; each of the first steps - 1 is an Euler jump of the
rates u_t(a | x) = d kappa / (1 - kappa) (p_{1|t}(a | x) - delta_{x_i}(a)); the last step, from t_{N-1} to 1,
is the path's exact end: every token still at its source value becomes data, so it is drawn from
p_{1|t_{N-1}}(. | x) (an unmasked token of the mask source stays). NFE = steps.

"first_hitting" (mask source only): the next unmasking time of m masked tokens is drawn exactly,
1 - kappa_s = (1 - kappa_t) U^(1/m), one masked position is chosen uniformly and drawn from
p_{1|s}(. | x): one network call per unmasking event, NFE = L, no time-discretisation error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from flowdiff.dynamics.ctmc import categorical, ctmc_euler, uniform
from flowdiff.errors import IncompatibleError, InvalidInputError
from flowdiff.learning.devices import model_device
from flowdiff.learning.discrete.posterior import log_posterior
from flowdiff.paths.discrete import MixturePath
from flowdiff.registry import lookup


@dataclass(frozen=True)
class TokenSamples:
    """Sampled token sequences (n, L) and the number of network evaluations (NFE) it took."""

    tokens: torch.Tensor
    nfe: int


def _euler(posterior: Callable, path: MixturePath, x: torch.Tensor, steps: int, generator,
           categorical_dtype: str) -> tuple[torch.Tensor, int]:
    ts = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64, device=x.device)
    nfe = 0
    if steps >= 2:
        rates = lambda x, t: path.rates(posterior(x, t), x, t)  # noqa: E731
        trajectory = ctmc_euler(rates, x, ts[:-1], generator, categorical_dtype=categorical_dtype)
        x, nfe = trajectory.final, trajectory.nfe
    last = categorical(posterior(x, ts[-2]), generator, categorical_dtype)
    return last.to(x.dtype), nfe + 1


def _first_hitting(posterior: Callable, path: MixturePath, x: torch.Tensor, steps: int, generator,
                   categorical_dtype: str) -> tuple[torch.Tensor, int]:
    if path.mask_token is None:
        raise IncompatibleError("the first-hitting sampler needs the mask source; use the euler sampler")
    n, length = x.shape
    t = torch.zeros(n, dtype=torch.float64, device=x.device)
    rows = torch.arange(n, device=x.device)
    for event in range(length):
        masked = x == path.mask_token
        remaining = length - event
        survive = (1 - path.kappa(t).kappa) * uniform((n,), generator, x.device, torch.float64) ** (1.0 / remaining)
        t = path.kappa.inverse((1 - survive).clamp(0.0, 1.0))
        position = categorical(masked.double(), generator, categorical_dtype)
        probs = posterior(x, t)[rows, position]
        x = x.clone()
        x[rows, position] = categorical(probs, generator, categorical_dtype).to(x.dtype)
    return x, length


SAMPLERS = {"euler": _euler, "first_hitting": _first_hitting}
"""Discrete samplers by name."""


@torch.no_grad()
def sample_tokens(model, path: MixturePath, n: int, steps: int = 100, method: str = "euler",
                  y: torch.Tensor | int | None = None, guidance: float | None = None,
                  generator: torch.Generator | None = None, categorical_dtype: str = "float64",
                  device=None) -> TokenSamples:
    """n sequences x_1 from x_0 ~ p_0 by the CTMC of the model's rates ("euler" or "first_hitting", module doc).

    `y` (an int or (n,) labels) conditions the model; `guidance` w mixes the log-posteriors
    log p(. | null) + w (log p(. | y) - log p(. | null)). Returns the tokens and the NFE.
    """
    sampler = lookup(SAMPLERS, method, "discrete sampler")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidInputError(f"n must be a positive integer, got {n!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InvalidInputError(f"steps must be a positive integer, got {steps!r}")
    shape = getattr(model, "data_shape", None)
    if shape is None or len(shape) != 1:
        raise IncompatibleError("sampling tokens needs a token network (data_shape (L,)), e.g. TokenMLP")
    length = int(shape[0])
    device = torch.device(device) if device is not None else model_device(model)
    if y is not None:
        y = torch.as_tensor(y, device=device, dtype=torch.long).reshape(-1).expand(n)

    def posterior(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=device)
        return log_posterior(model, path, x, t.to(torch.get_default_dtype()), y, guidance).double().exp()

    x0 = path.sample_source((n, length), generator, device)
    tokens, nfe = sampler(posterior, path, x0, steps, generator, categorical_dtype)
    return TokenSamples(tokens=tokens, nfe=nfe * (2 if guidance is not None else 1))
