"""The data-token posterior p_{1|t}(. | x) of a token network, with classifier-free guidance.

The network gives logits over the K data tokens at every position. The posterior over the S states of
a token puts no mass on the mask token (data are never masked), and for the mask source an unmasked
token is already its data value: p_{1|t}(a | x) = delta_{x_i}(a) there (the mixture path never
changes a token that left the mask). Guidance mixes log-posteriors: log p^w = log p(. | null) +
w (log p(. | y) - log p(. | null)), renormalised — the guided rates are the path's rates of p^w.
"""

from __future__ import annotations

import math

import torch

from flowdiff.errors import IncompatibleError
from flowdiff.learning.guidance import check_guidance_scale
from flowdiff.paths.discrete import MixturePath


def _guided_logits(model, x: torch.Tensor, t: torch.Tensor, y, guidance: float | None) -> torch.Tensor:
    if guidance is None:
        return model(x, t, **({} if y is None else {"y": y}))
    null = getattr(model, "num_classes", None)
    if null is None:
        raise IncompatibleError("classifier-free guidance needs a label-conditioned model (num_classes=K)")
    if y is None:
        raise IncompatibleError("classifier-free guidance needs labels y to guide towards")
    check_guidance_scale(guidance)
    batch = x.shape[0]
    y = torch.as_tensor(y, device=x.device, dtype=torch.long).reshape(-1).expand(batch)
    t = torch.as_tensor(t, device=x.device)
    both = model(torch.cat([x, x]), t if t.numel() == 1 else torch.cat([t.reshape(-1)] * 2),
                 y=torch.cat([y, torch.full_like(y, null)]))
    conditional, unconditional = both[:batch].log_softmax(-1), both[batch:].log_softmax(-1)
    return unconditional + float(guidance) * (conditional - unconditional)


def log_posterior(model, path: MixturePath, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None,
                  guidance: float | None = None) -> torch.Tensor:
    """log p_{1|t}(a | x), shape (batch, L, S): the network's softmax over data tokens (module docstring)."""
    logits = _guided_logits(model, x, t, y, guidance)
    if logits.shape != (*x.shape, path.vocab_size):
        raise IncompatibleError(f"the network returned logits of shape {tuple(logits.shape)}; a vocabulary of "
                                f"{path.vocab_size} needs {(*x.shape, path.vocab_size)}")
    log_p = logits.float().log_softmax(-1)
    if path.mask_token is None:
        return log_p
    log_p = torch.cat([log_p, torch.full_like(log_p[..., :1], -math.inf)], dim=-1)
    unmasked = (x != path.mask_token).unsqueeze(-1)
    known = torch.where(torch.nn.functional.one_hot(x.long(), path.num_states).bool(), 0.0, -math.inf)
    return torch.where(unmasked, known, log_p)
