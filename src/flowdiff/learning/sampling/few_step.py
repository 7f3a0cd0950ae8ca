"""The few-step sampler of a flow map: jumps x_r = x_t + (r - t) u(x_t, r, t) along a time grid, NFE = steps.

`sample` picks it when the model is a flow map and no ODE/SDE solver is named (or the solver is
`FLOW_MAP`); naming a solver ("euler", "heun", ...) integrates the map's own velocity u(x, t, t)
instead. Guidance mixes the conditional and unconditional average velocities, as for flows.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from flowdiff.dynamics.simulate import Trajectory
from flowdiff.errors import IncompatibleError
from flowdiff.learning.flowmaps.maps import jump, require_flow_map

FLOW_MAP = "flow_map"
"""The name of the jump rule wherever a sampler is named by its solver."""


def uses_jumps(model, solver, stochastic: bool, prediction: str) -> bool:
    """True when sampling should jump with the flow map: a flow map with no solver named, or solver `FLOW_MAP`."""
    from flowdiff.learning.flowmaps.maps import is_flow_map

    if solver != FLOW_MAP:
        return solver is None and not stochastic and prediction == "velocity" and is_flow_map(model)
    require_flow_map(model, f"the {FLOW_MAP!r} sampler")
    if stochastic or prediction != "velocity":
        raise IncompatibleError(f"the {FLOW_MAP!r} sampler jumps with a flow map's average velocity without noise; "
                                "use sigma = 0 and prediction 'velocity' (or an SDE solver on u(x, t, t))")
    return True


def flow_map_sampler(field, x0: torch.Tensor, ts: torch.Tensor, save: str = "final",
                     callback: Callable[[dict], None] | None = None) -> Trajectory:
    """Carry x0 along the grid ts by flow-map jumps; `field` is a bound condition (`builders.Conditioned`)."""
    x, states = x0, [x0]
    for step in range(len(ts) - 1):
        x = jump(field.model, x, ts[step], ts[step + 1], **field.cond)
        if save == "all":
            states.append(x)
        if callback is not None:
            callback({"step": step + 1, "t": ts[step + 1], "x": x, "nfe": step + 1})
    if save == "all":
        return Trajectory(times=ts, states=torch.stack(states), nfe=len(ts) - 1)
    return Trajectory(times=ts[-1:], states=x[None], nfe=len(ts) - 1)
