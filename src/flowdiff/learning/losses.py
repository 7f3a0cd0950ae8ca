"""Training losses: conditional flow matching and denoising score matching.

Both draw t ~ U[t_min, t_max], noise x0 ~ p_init = N(0, I), pair noise and data with a coupling,
form x_t = alpha_t x1 + beta_t x0 on the Gaussian path and regress the network's output at
(x_t, t, y) on a conditional target, whose expectation given x_t is the marginal quantity.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from flowdiff.errors import IncompatibleError, InvalidInputError
from flowdiff.learning.flowmaps import MeanFlow, Shortcut
from flowdiff.learning.flowmaps.meanflow import ImprovedMeanFlow
from flowdiff.learning.stable_target import require_independent, stable_velocity
from flowdiff.learning.training.distributed import Shard, all_gather, current_shard, sharded
from flowdiff.paths.couplings import Coupled, Coupling, get_coupling
from flowdiff.paths.gaussian_path import GaussianPath, PathSample
from flowdiff.registry import lookup


def draw(kind: str, shape, generator: torch.Generator | None, device, dtype) -> torch.Tensor:
    """torch.rand/randn ("uniform"/"normal") drawn on the generator's device, then moved to `device`.

    Under a `Shard` (distributed training) the first dimension is this rank's share of the global
    batch: the whole global batch's draw is made and this rank's rows are kept, so every example
    gets the same number whatever the number of ranks.
    """
    shape = tuple(shape)
    shard = current_shard()
    if shard is not None and shape:
        full = _draw(kind, (shape[0] * shard.world_size, *shape[1:]), generator, device, dtype)
        return shard.local(full, shape[0])
    return _draw(kind, shape, generator, device, dtype)


def _draw(kind: str, shape: tuple, generator: torch.Generator | None, device, dtype) -> torch.Tensor:
    source = generator.device if generator is not None else device
    fn = torch.rand if kind == "uniform" else torch.randn
    return fn(shape, generator=generator, device=source, dtype=dtype).to(device)


def drop_labels(
    y: torch.Tensor, null_label: int, p: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Replace each label by the null label with probability p (classifier-free guidance training)."""
    if p <= 0:
        return y
    dropped = draw("uniform", y.shape, generator, y.device, torch.float32) < p
    return torch.where(dropped, torch.full_like(y, null_label), y)


def _check_model_input(model, x1: torch.Tensor, y, label_dropout: float) -> None:
    shape = getattr(model, "data_shape", None)
    if shape is not None and tuple(x1.shape[1:]) != tuple(shape):
        raise InvalidInputError(
            f"data points have shape {tuple(x1.shape[1:])} but the model expects {tuple(shape)}"
        )
    if x1.ndim < 2 or x1.shape[0] < 1:
        raise InvalidInputError(f"x1 must be a batch of shape (batch, *shape), got {tuple(x1.shape)}")
    if not 0.0 <= label_dropout <= 1.0:
        raise InvalidInputError(f"label_dropout must be a probability in [0, 1], got {label_dropout}")
    if y is not None and getattr(model, "num_classes", None) is None:
        raise IncompatibleError("labels y were given but the model is unconditional (num_classes=None)")
    if label_dropout > 0 and y is None:
        raise IncompatibleError("label_dropout needs labels y (it replaces labels by the null label)")


TIME_LAWS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "uniform": lambda u: u,
    "early": lambda u: 1 - (1 - u).sqrt(),
}
"""Laws of the training time t on [0, 1], as maps of u ~ U[0, 1]: "uniform", and "early" with density
2 (1 - t) (inverse CDF), which puts more of the regression near the noise end t = 0 — where a field
trained with minibatch OT decides between the modes (measured in docs/evaluation.md)."""


def path_batch(
    model,
    path: GaussianPath,
    x1: torch.Tensor,
    y: torch.Tensor | None = None,
    coupling: Coupling | str | None = None,
    label_dropout: float = 0.0,
    generator: torch.Generator | None = None,
    t_min: float = 0.0,
    t_max: float = 1.0,
    time_law: str = "uniform",
) -> tuple[PathSample, dict]:
    """Draw noise, the coupled pairs, t (by `time_law`) and x_t; return the path sample and model keywords."""
    _check_model_input(model, x1, y, label_dropout)
    if not 0.0 <= t_min < t_max <= 1.0:
        raise InvalidInputError(f"need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")
    n = x1.shape[0]
    pair = couple(get_coupling(coupling), x1, y, generator)
    law = lookup(TIME_LAWS, time_law, "time law")
    t = t_min + (t_max - t_min) * law(draw("uniform", (n,), generator, x1.device, x1.dtype))
    sample = path.sample(pair.x1, t, noise=pair.x0)
    cond = {}
    if pair.y is not None:
        cond["y"] = drop_labels(pair.y, model.num_classes, label_dropout, generator)
    return sample, cond


def couple(coupling: Coupling, x1: torch.Tensor, y: torch.Tensor | None,
           generator: torch.Generator | None) -> Coupled:
    """Draw the noise x0 ~ N(0, I) for the batch x1 and pair it with x1 by the coupling.

    Under a `Shard`, a coupling that pairs the whole batch (`pairs_batch`, minibatch OT) is
    solved on the global batch — data gathered from every rank, the global batch's noise, the
    same solution on every rank — and this rank keeps its slice; with `gather_couplings` off each
    rank pairs its own slice, drawing with a generator of its own (forked from the shared one).
    """
    shard = current_shard()
    if shard is None or not getattr(coupling, "pairs_batch", False):
        x0 = draw("normal", x1.shape, generator, x1.device, x1.dtype)
        return coupling(x0, x1, y, generator)
    if not shard.gather_couplings:
        x0 = draw("normal", x1.shape, generator, x1.device, x1.dtype)
        return coupling(x0, x1, y, _fork(generator, shard))
    return _couple_global_batch(coupling, x1, y, generator, shard)


def _couple_global_batch(coupling: Coupling, x1: torch.Tensor, y: torch.Tensor | None,
                         generator: torch.Generator | None, shard: Shard) -> Coupled:
    n = x1.shape[0]
    with sharded(None):
        x0 = draw("normal", (n * shard.world_size, *x1.shape[1:]), generator, x1.device, x1.dtype)
    pair = coupling(x0, all_gather(x1), None if y is None else all_gather(y), generator)
    return Coupled(x0=shard.local(pair.x0, n), x1=shard.local(pair.x1, n),
                   y=None if pair.y is None else shard.local(pair.y, n))


def _fork(generator: torch.Generator | None, shard: Shard) -> torch.Generator | None:
    """A generator of this rank's own, seeded from one draw of the shared generator (which stays in step)."""
    if generator is None:
        return None
    seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
    return torch.Generator(device=generator.device).manual_seed(seed + shard.rank)


def flow_matching_loss(
    model,
    path: GaussianPath,
    x1: torch.Tensor,
    y: torch.Tensor | None = None,
    coupling: Coupling | str | None = None,
    label_dropout: float = 0.0,
    generator: torch.Generator | None = None,
    t_min: float = 0.0,
    t_max: float = 1.0,
    time_law: str = "uniform",
) -> torch.Tensor:
    """Conditional flow matching: mean |u_theta(x_t, t, y) - (d_alpha_t x1 + d_beta_t x0)|^2 over entries."""
    s, cond = path_batch(model, path, x1, y, coupling, label_dropout, generator, t_min, t_max, time_law)
    return (model(s.x_t, s.t, **cond) - s.velocity).pow(2).mean()


WEIGHTINGS = ("noise", "uniform")
"""Score-matching weightings lambda_t: "noise" = beta_t^2, "uniform" = 1."""


def score_matching_loss(
    model,
    path: GaussianPath,
    x1: torch.Tensor,
    y: torch.Tensor | None = None,
    coupling: Coupling | str | None = None,
    label_dropout: float = 0.0,
    generator: torch.Generator | None = None,
    weighting: str = "noise",
    t_min: float = 0.0,
    t_max: float = 1.0,
    time_law: str = "uniform",
) -> torch.Tensor:
    """Denoising score matching E lambda_t |s_theta(x_t, t, y) + x0 / beta_t|^2 (conditional score target).

    weighting="noise" (default): lambda_t = beta_t^2, i.e. E |beta_t s_theta + x0|^2, the
    noise-prediction form — finite for every t, as the target -x0/beta_t is not at t = 1.
    weighting="uniform": lambda_t = 1, with beta_t clamped at the path's min_scale; its target
    variance 1/beta_t^2 explodes near t = 1, so pair it with t_max < 1.
    A network that predicts the noise trains with this loss as `Converted(net, path, "noise", "score")`.
    """
    if weighting not in WEIGHTINGS:
        raise InvalidInputError(f"unknown weighting {weighting!r}; choose one of: {', '.join(WEIGHTINGS)}")
    s, cond = path_batch(model, path, x1, y, coupling, label_dropout, generator, t_min, t_max, time_law)
    score = model(s.x_t, s.t, **cond)
    beta = path.values(s.t, s.x_t).beta
    if weighting == "noise":
        return (beta * score + s.noise).pow(2).mean()
    return (score + s.noise / beta.clamp_min(path.min_scale)).pow(2).mean()


class FlowMatching:
    """The conditional flow matching loss as an object: its time law and range, and what it trains.

    `loss(model, path, x1, y=..., coupling=..., label_dropout=..., generator=...)` is
    `flow_matching_loss` with these hyperparameters; the network learns the velocity.
    """

    name = "flow_matching"
    prediction = "velocity"

    def __init__(self, time_law: str = "uniform", t_min: float = 0.0, t_max: float = 1.0) -> None:
        lookup(TIME_LAWS, time_law, "time law")
        if not 0.0 <= t_min < t_max <= 1.0:
            raise InvalidInputError(f"need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")
        self.time_law, self.t_min, self.t_max = time_law, float(t_min), float(t_max)

    def _options(self) -> dict:
        return {"time_law": self.time_law, "t_min": self.t_min, "t_max": self.t_max}

    def __call__(self, model, path: GaussianPath, x1: torch.Tensor, **batch) -> torch.Tensor:
        """The loss on the minibatch x1 (keywords: y, coupling, label_dropout, generator)."""
        return flow_matching_loss(model, path, x1, **batch, **self._options())

    def config(self) -> dict:
        """A JSON-ready description: {"name": ..., hyperparameters}."""
        return {"name": self.name, **self._options()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self._options().items())})"


class ScoreMatching(FlowMatching):
    """The denoising score matching loss as an object (weighting, time law and range); it trains the score."""

    name = "score_matching"
    prediction = "score"

    def __init__(self, weighting: str = "noise", time_law: str = "uniform", t_min: float = 0.0,
                 t_max: float = 1.0) -> None:
        super().__init__(time_law, t_min, t_max)
        lookup({w: w for w in WEIGHTINGS}, weighting, "score-matching weighting")
        self.weighting = weighting

    def _options(self) -> dict:
        return {"weighting": self.weighting, **super()._options()}

    def __call__(self, model, path: GaussianPath, x1: torch.Tensor, **batch) -> torch.Tensor:
        """The loss on the minibatch x1 (keywords: y, coupling, label_dropout, generator)."""
        return score_matching_loss(model, path, x1, **batch, **self._options())


class StableTargetFlowMatching(FlowMatching):
    """Flow matching whose target is the conditional velocity averaged over the minibatch's posterior (lower
    variance, O(1/batch) bias; flowdiff.learning.stable_target); the time law and range of `FlowMatching`,
    independent pairs only."""

    name = "stable_target"
    prediction = "velocity"

    def __call__(self, model, path: GaussianPath, x1: torch.Tensor, y: torch.Tensor | None = None,
                 coupling=None, label_dropout: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """The loss on the minibatch x1, whose points are also the posterior's references."""
        require_independent(coupling)
        s, cond = path_batch(model, path, x1, y, coupling, label_dropout, generator, **self._options())
        return (model(s.x_t, s.t, **cond) - stable_velocity(path, s, y, cond.get("y"))).pow(2).mean()


LOSSES: dict[str, Callable[..., FlowMatching]] = {
    "flow_matching": FlowMatching,
    "score_matching": ScoreMatching,
    "stable_target": StableTargetFlowMatching,
    "meanflow": MeanFlow,  # flow maps u(x, r, t): flowdiff.learning.flowmaps
    "imeanflow": ImprovedMeanFlow,
    "shortcut": Shortcut,
}
"""Loss objects by name."""

METHODS: dict[str, str | None] = {
    "flow": None,  # the configured loss (flow_matching, score_matching, stable_target)
    "meanflow": "meanflow",
    "imeanflow": "imeanflow",
    "shortcut": "shortcut",
    "discrete": None,  # discrete flow matching on tokens: its loss is TrainConfig.discrete_loss
}
"""Training methods by name: the loss each trains with (None: the configured one). A loss whose class has
`flow_map = True` trains a network built with a second time input (flowdiff.learning.flowmaps)."""


def get_loss(loss: str | dict | FlowMatching, **kwargs) -> FlowMatching:
    """A loss object from itself, its name or its config dict (keywords override the hyperparameters).

    A custom callable loss(model, path, x1, **batch) is returned as it is.
    """
    from flowdiff.registry import build

    if callable(loss) and not isinstance(loss, FlowMatching) and not kwargs:
        return loss  # a custom loss(model, path, x1, **batch); its `prediction` attribute, if any, is read
    return build(LOSSES, loss, "loss", base=FlowMatching, **kwargs)
