"""Discrete flow matching: the posterior network's loss, CTMC samplers, the ELBO, guidance for tokens."""

from flowdiff.learning.discrete.elbo import ElboEstimate, elbo
from flowdiff.learning.discrete.loss import DISCRETE_LOSSES, DiscreteFlowMatching
from flowdiff.learning.discrete.posterior import log_posterior
from flowdiff.learning.discrete.sampling import TokenSamples, sample_tokens

__all__ = ["DISCRETE_LOSSES", "DiscreteFlowMatching", "ElboEstimate", "TokenSamples", "elbo", "log_posterior",
           "sample_tokens"]
