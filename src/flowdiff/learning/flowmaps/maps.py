"""Flow maps: a network u(x, r, t) for the average velocity between two times, so that one evaluation jumps.

For the ODE dX = v_t(X) dt with flow psi_{t -> r}, the flow map's average velocity is

    u(x, r, t) = (psi_{t -> r}(x) - x) / (r - t) = 1 / (r - t) * int_t^r v_s(X_s) ds,   X_t = x,

so x_r = x_t + (r - t) u(x_t, r, t) (the jump) and u(x, t, t) = v_t(x): a flow model is the case r = t.
In flowdiff time runs from noise (t = 0) to data (t = 1), so a sampling jump has r > t. A network is a
flow map when it was built with `flow_map=True`; it is called as model(x, t, r=r, **cond) and r = None
means r = t, so every caller of the one convention f(x, t, **cond) gets the velocity u(x, t, t).
"""

from __future__ import annotations

import torch

from flowdiff.errors import IncompatibleError

WRAPPED = ("module", "model")
"""Attributes under which wrappers (EMA, guidance, prediction conversion, a bound condition) keep their network."""


def is_flow_map(model) -> bool:
    """True when the network (under its wrappers) takes a second time r: u(x, r, t)."""
    for _ in range(16):  # wrappers nest a few levels at most
        if getattr(model, "flow_map", False) is True:
            return True
        inner = next((getattr(model, name) for name in WRAPPED if hasattr(model, name)), None)
        if inner is None or inner is model:
            return False
        model = inner
    return False


def require_flow_map(model, what: str) -> None:
    """Raise IncompatibleError unless `model` is a flow map u(x, r, t) (built with flow_map=True)."""
    if not is_flow_map(model):
        raise IncompatibleError(f"{what} needs a flow map u(x, r, t), but this network has one time input; build it "
                                "with flow_map=True (e.g. MLP(dim, flow_map=True)) to give it the second time r")


def jump(model, x: torch.Tensor, t, r, **cond) -> torch.Tensor:
    """x_r = x_t + (r - t) u(x_t, r, t): one step of a flow map from time t to time r."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    r = torch.as_tensor(r, dtype=x.dtype, device=x.device)
    step = (r - t).reshape(-1, *([1] * (x.ndim - 1))) if (r - t).ndim else r - t
    return x + step * model(x, t, r=r, **cond)
