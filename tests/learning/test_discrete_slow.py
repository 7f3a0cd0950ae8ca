"""Discrete flow matching trained for about a minute on markov_tokens (3 tokens from 4, the law known exactly):
both sources reach the law, and the Euler sampler's total variation shrinks with its steps (slow: -m slow)."""

import pytest
import torch
from discrete_toys import ExactPosterior

from flowdiff.data.tokens import markov_law
from flowdiff.learning.discrete import DiscreteFlowMatching, elbo, sample_tokens
from flowdiff.learning.models import TokenMLP
from flowdiff.learning.training.trainer import Trainer
from flowdiff.paths.discrete import MixturePath

N = 20_000
"""Samples per measurement: TV of a sample of the law itself to the law is about 0.016 at this size."""


@pytest.mark.slow
@pytest.mark.parametrize("source, kind", [("mask", "cross_entropy"), ("uniform", "generalized_kl")])
def test_trained_for_a_minute_both_sources_reach_the_law_and_euler_improves_with_steps(source, kind):
    """Measured (2000 steps, 20,000 samples): TV at 2, 8, 32 Euler steps 0.236, 0.058, 0.028 (mask) and 0.281,
    0.077, 0.029 (uniform); first hitting 0.027 (mask, NFE 3); a sample of the law itself is at 0.017. Mean ELBO
    -3.413 (mask) and -4.597 (uniform) against the exact posterior's -3.409 and -4.537 (the uniform bound is
    1.15 nats below log p even there), -H(p) = -3.385."""
    law, path = markov_law(), MixturePath(4, source)
    torch.manual_seed(0)
    model = TokenMLP(4, 3, hidden=(128, 128))
    data = law.sample(50_000, torch.Generator().manual_seed(0))
    Trainer(model, path, data, loss=DiscreteFlowMatching(kind), steps=2000, batch_size=256, lr=2e-3, warmup=50,
            ema_decay=None).fit()
    model.eval()
    tv = {steps: law.total_variation(sample_tokens(model, path, N, steps=steps,
                                                   generator=torch.Generator().manual_seed(1)).tokens)
          for steps in (2, 8, 32)}
    assert tv[2] > tv[8] > tv[32] and tv[32] < 0.07, tv
    if source == "mask":
        hitting = sample_tokens(model, path, N, method="first_hitting", generator=torch.Generator().manual_seed(2))
        assert law.total_variation(hitting.tokens) < 0.05 and hitting.nfe == 3
    entropy = float(-(law.weights[law.weights > 0] * law.weights[law.weights > 0].log()).sum())
    x1 = law.sample(2000, torch.Generator().manual_seed(3))
    trained, best = (elbo(network, path, x1, samples=16, generator=torch.Generator().manual_seed(4))
                     for network in (model, ExactPosterior(path, law.support, law.weights)))
    standard_error = float((trained.nats - best.nats).std()) / 2000**0.5
    assert float(trained.nats.mean()) < -entropy + 4 * standard_error
    assert abs(float(trained.nats.mean() - best.nats.mean())) < 0.15 + 4 * standard_error
