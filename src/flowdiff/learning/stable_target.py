"""The stable target's velocity for any loss that regresses on v(x_t, t): flow matching, MeanFlow, the shortcut.

The conditional velocity of each pair averaged over the posterior of the minibatch's data points
(flowdiff.paths.empirical_posterior), with labels respected, over the global batch under torchrun (gathered
from every rank) so that the target does not depend on the number of ranks.
"""

from __future__ import annotations

import torch

from flowdiff.errors import IncompatibleError
from flowdiff.learning.training.distributed import all_gather, current_shard
from flowdiff.paths.couplings import Independent, get_coupling
from flowdiff.paths.empirical_posterior import posterior_shift
from flowdiff.paths.gaussian_path import GaussianPath, PathSample


def require_independent(coupling) -> None:
    """Refuse a coupling other than independent pairs (the posterior assumes x_t ~ N(alpha_t z, beta_t^2 I) given z)."""
    if not isinstance(get_coupling(coupling), Independent):
        raise IncompatibleError(f"the stable target needs independent pairs (its posterior assumes them), "
                                f"not the coupling {get_coupling(coupling).name!r}")


@torch.no_grad()
def posterior_velocity(path: GaussianPath, sample: PathSample, y: torch.Tensor | None = None,
                       given: torch.Tensor | None = None, references: torch.Tensor | None = None,
                       reference_labels: torch.Tensor | None = None) -> torch.Tensor:
    """The posterior-averaged velocity at the sample's x_t over the reference points (default: the sample's own
    `x1`, with labels y); with labels, an example whose label was kept in `given` (the labels the network sees)
    averages over its label's points only, one whose label was dropped over all."""
    if references is None:
        references, reference_labels = sample.x1, y
    allowed = None
    if y is not None:
        kept = torch.ones_like(y, dtype=torch.bool) if given is None else given == y
        allowed = (reference_labels[None, :] == y[:, None]) | ~kept[:, None]
    return sample.velocity + posterior_shift(path, sample.x_t, sample.t, references, sample.x1, allowed)


def stable_velocity(path: GaussianPath, sample: PathSample, y: torch.Tensor | None = None,
                    given: torch.Tensor | None = None) -> torch.Tensor:
    """`posterior_velocity` over the global batch's points (this rank's alone in one process)."""
    if current_shard() is None:
        return posterior_velocity(path, sample, y, given)
    labels = None if y is None else all_gather(y)
    return posterior_velocity(path, sample, y, given, all_gather(sample.x1), labels)
