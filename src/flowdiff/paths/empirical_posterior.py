"""The posterior of a Gaussian path over a finite set of data points: the stable target field.

The conditional target u_t(x|z) = d_alpha z + d_beta eps of one pair (x0, z) has the marginal velocity
u_t(x) = E[u_t(x|Z) | x_t = x] as its expectation, but a large variance where x_t could have come from many
data points (small t: every mode is plausible). The stable target field (Xu et al. 2023, for scores) averages
the conditional target over the posterior p(z_j | x_t) of the minibatch's data points z_1..z_B, which include
the point x_t was drawn from:

    w_ij = softmax_j( -|x_i - alpha_t z_j|^2 / (2 beta_t^2) ),   E[z | x_i] ~ sum_j w_ij z_j,

and the velocity d_alpha E[z|x] + d_beta (x - alpha_t E[z|x]) / beta_t. Written around the pair's own z_i,

    target_i = u_t(x_i | z_i) + (d_alpha - d_beta alpha_t / beta_t) sum_j w_ij (z_j - z_i),

so where beta_t -> 0 (every other weight vanishes) it is the conditional target, with no 0 / 0. Over a fixed set
of points it is the exact marginal velocity of their empirical distribution; as an estimate of the data's
E[z|x] it is self-normalised over B points: biased by O(1/B), with far less variance than one point. The
training loss is flowdiff.learning.losses.StableTargetFlowMatching.
"""

from __future__ import annotations

import torch

from flowdiff.paths.gaussian_path import GaussianPath


def posterior_shift(path: GaussianPath, x: torch.Tensor, t: torch.Tensor, z: torch.Tensor, own: torch.Tensor,
                    allowed: torch.Tensor | None = None) -> torch.Tensor:
    """(d_alpha - d_beta alpha_t / beta_t) sum_j w_ij (z_j - own_i): what turns the conditional target of the pair
    (x_i, own_i) into the posterior average over the reference points z (B', *shape); `allowed` (B, B') masks
    the references each x_i may have come from (it must allow own_i's row, if own_i is among them)."""
    batch = x.shape[0]
    s = path.values(t, x)
    alpha, beta = s.alpha.reshape(-1, 1), s.beta.reshape(-1, 1).clamp_min(path.min_scale)  # (batch or 1, 1)
    flat_x, flat_z = x.reshape(batch, -1), z.reshape(z.shape[0], -1)
    # -|x_i - alpha_i z_j|^2 / (2 beta_i^2) up to a term constant in j (softmax ignores it): one matrix product,
    # in float64, as the logits reach |x| |z| / beta^2 near t = 1 while neighbours differ by far less
    wide_x, wide_z, scale = flat_x.double(), flat_z.double(), (alpha / beta.pow(2)).double()
    logits = scale * (wide_x @ wide_z.T) - (0.5 * scale * alpha.double()) * wide_z.pow(2).sum(1)[None]
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    weights = torch.softmax(logits, dim=1).to(flat_z.dtype)
    shift = weights @ flat_z - own.reshape(batch, -1)  # sum_j w_ij (z_j - own_i), as sum_j w_ij = 1
    factor = s.d_alpha.reshape(-1, 1) - s.d_beta.reshape(-1, 1) * alpha / beta
    return (factor * shift).reshape(x.shape)
