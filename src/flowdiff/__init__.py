"""flowdiff: flow and diffusion generative models.

Noise X_0 ~ p_init is carried to data X_1 ~ p_data by simulating an ODE dX = u_t(X) dt
(a flow model) or an SDE dX = u_t(X) dt + sigma_t dW (a diffusion model), whose vector
field is a network trained by flow matching. Public names are imported on first use, so
`import flowdiff` stays fast for the command line.
"""

from __future__ import annotations

import importlib

from flowdiff._version import __version__ as __version__

_PUBLIC = {
    # layer 1: dynamics
    "ODE": "flowdiff.dynamics.equations",
    "SDE": "flowdiff.dynamics.equations",
    "simulate": "flowdiff.dynamics.simulate",
    "Trajectory": "flowdiff.dynamics.simulate",
    "get_solver": "flowdiff.dynamics.solvers",
    "BrownianMotion": "flowdiff.dynamics.processes",
    "OrnsteinUhlenbeck": "flowdiff.dynamics.processes",
    "Langevin": "flowdiff.dynamics.processes",
    "Gaussian": "flowdiff.dynamics.densities",
    "ctmc_euler": "flowdiff.dynamics.ctmc",
    "GaussianMixture": "flowdiff.dynamics.densities",
    # layer 2: paths
    "GaussianPath": "flowdiff.paths.gaussian_path",
    "MarginalField": "flowdiff.paths.marginals",
    "marginal_velocity": "flowdiff.paths.marginals",
    "marginal_score": "flowdiff.paths.marginals",
    "marginal_log_prob": "flowdiff.paths.marginals",
    "MixturePath": "flowdiff.paths.discrete",
    "ClassifierFreeGuidance": "flowdiff.learning.guidance",
    "Converted": "flowdiff.learning.predictions",
    "as_velocity": "flowdiff.learning.predictions",
    "as_score": "flowdiff.learning.predictions",
    # layer 3: learning
    "flow_matching_loss": "flowdiff.learning.losses",
    "score_matching_loss": "flowdiff.learning.losses",
    "sample": "flowdiff.learning.sampling",
    "log_prob": "flowdiff.learning.likelihood",
    "bits_per_dim": "flowdiff.learning.likelihood",
    "DiscreteFlowMatching": "flowdiff.learning.discrete",
    "sample_tokens": "flowdiff.learning.discrete",
    "elbo": "flowdiff.learning.discrete",
    "Trainer": "flowdiff.learning.training.trainer",
    "TrainConfig": "flowdiff.learning.training.config",
    "Hook": "flowdiff.learning.training.hooks",
    "FlowMatching": "flowdiff.learning.losses",
    "ScoreMatching": "flowdiff.learning.losses",
    "StableTargetFlowMatching": "flowdiff.learning.losses",
    "MeanFlow": "flowdiff.learning.flowmaps",
    "Shortcut": "flowdiff.learning.flowmaps",
    "EMA": "flowdiff.learning.training.ema",
    "conditional_accuracy": "flowdiff.learning.classifier",
    "feature_frechet_distance": "flowdiff.learning.classifier",
    # layer 4: edges
    "train": "flowdiff.runs.train",
    "load": "flowdiff.runs.load",
    "RunDirectory": "flowdiff.runs.directory",
    "DataInfo": "flowdiff.data.info",
    "ImageData": "flowdiff.data.images",
    "load_images": "flowdiff.data.images",
    "load_tokens": "flowdiff.data.tokens",
}

_MODULES = {
    "grids": "flowdiff.dynamics.grids",
    "solvers": "flowdiff.dynamics.solvers",
    "schedules": "flowdiff.paths.schedules",
    "couplings": "flowdiff.paths.couplings",
    "models": "flowdiff.learning.models",
    "metrics": "flowdiff.learning.metrics",
    "runs": "flowdiff.runs",
    "errors": "flowdiff.errors",
}

__all__ = sorted([*_PUBLIC, *_MODULES])


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
    elif name in _MODULES:
        value = importlib.import_module(_MODULES[name])
    else:
        raise AttributeError(f"module 'flowdiff' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
