"""The stable target's velocity for any loss that regresses on v(x_t, t): flow matching and MeanFlow.

The posterior over the minibatch's points runs over the global batch under torchrun (gathered from every rank),
so that the target does not depend on the number of ranks.
"""

from __future__ import annotations

import torch

from flowdiff.errors import IncompatibleError
from flowdiff.paths.couplings import Independent, get_coupling
from flowdiff.paths.gaussian_path import GaussianPath, PathSample


def stable_target_coupling(coupling) -> None:
    """Refuse a coupling other than independent pairs (the posterior assumes x_t ~ N(alpha_t z, beta_t^2 I) given z)."""
    if not isinstance(get_coupling(coupling), Independent):
        raise IncompatibleError(f"the stable target needs independent pairs (its posterior assumes them), "
                                f"not the coupling {get_coupling(coupling).name!r}")


def stable_velocity(path: GaussianPath, sample: PathSample, y: torch.Tensor | None = None,
                    given: torch.Tensor | None = None) -> torch.Tensor:
    """`StableTargetFlowMatching.target` of the sample over the global batch's points (this rank's alone in one
    process), with labels y and the labels the network sees (`given`)."""
    from flowdiff.learning.losses import StableTargetFlowMatching
    from flowdiff.learning.training.distributed import all_gather, current_shard

    if current_shard() is None:
        return StableTargetFlowMatching.target(path, sample, y, given)
    labels = None if y is None else all_gather(y)
    return StableTargetFlowMatching.target(path, sample, y, given, all_gather(sample.x1), labels)
