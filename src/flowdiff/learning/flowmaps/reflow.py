"""Reflow (Liu et al. 2022, rectified flow): a new flow trained on the (noise, sample) pairs of a teacher's ODE.

The teacher's ODE carries each X_0 to X_1 = psi_{0 -> 1}(X_0), a deterministic coupling of p_init and (nearly)
p_data. Flow matching on these fixed pairs, x_t = t X_1 + (1 - t) X_0 on the linear path, learns the marginal
velocity of that coupling; its paths cross less than those of independent pairs, so its ODE is straighter and
fewer steps suffice. `straightness` measures it: E int_0^1 |u_t(X_t) - (X_1 - X_0)|^2 dt along the sampled
trajectories, 0 exactly when every trajectory is a straight line travelled at constant speed.
"""

from __future__ import annotations

import torch

from flowdiff.errors import InvalidInputError
from flowdiff.paths.couplings import Coupled, Coupling


class StoredPairs(Coupling):
    """The reflow coupling: minibatches of stored pairs (x0[i], x1[i]) with their labels y[i] (when the teacher was
    label-conditioned), indices drawn with the loss's generator.

    The trainer's data batch only sets the batch size and device; the pairs replace it, so that each x1 is
    matched with the noise the teacher carried to it, and with the label the teacher was conditioned on.
    """

    name = "stored_pairs"

    def __init__(self, x0: torch.Tensor, x1: torch.Tensor, y: torch.Tensor | None = None) -> None:
        if not (isinstance(x0, torch.Tensor) and isinstance(x1, torch.Tensor)) or x0.shape != x1.shape \
                or x0.ndim < 2 or x0.shape[0] < 1:
            raise InvalidInputError("stored pairs need noise x0 and samples x1 of the same shape (n, *shape), n >= 1")
        if y is not None and not (isinstance(y, torch.Tensor) and tuple(y.shape) == (x0.shape[0],)):
            raise InvalidInputError(f"stored pairs' labels must have shape ({x0.shape[0]},), one per pair")
        self.x0, self.x1, self.y = x0, x1, y

    def __call__(self, x0, x1, y=None, generator=None) -> Coupled:
        """A batch of stored pairs as large as the given one, with their stored labels (y itself is replaced)."""
        from flowdiff.learning.losses import draw

        n, total = x1.shape[0], self.x0.shape[0]
        index = (draw("uniform", (n,), generator, self.x0.device, torch.float64) * total).long().clamp(max=total - 1)
        labels = None if self.y is None or y is None else self.y[index].to(y.device)
        return Coupled(x0=self.x0[index].to(x1), x1=self.x1[index].to(x1), y=labels)

    def config(self) -> dict:
        """Its name and the number of pairs (the pairs themselves live on disk)."""
        if self.y is None:
            return {"name": self.name, "pairs": int(self.x0.shape[0])}
        return {"name": self.name, "pairs": int(self.x0.shape[0]), "labelled": True}

    def __repr__(self) -> str:
        return f"StoredPairs(pairs={int(self.x0.shape[0])})"


@torch.no_grad()
def straightness(velocity, x0: torch.Tensor, steps: int = 100, **cond) -> float:
    """E int_0^1 |u_t(X_t) - (X_1 - X_0)|^2 dt along Euler trajectories of `steps` steps from x0 (0: straight)."""
    ts = torch.linspace(0.0, 1.0, steps + 1, dtype=x0.dtype, device=x0.device)
    x, speeds = x0, []
    for k in range(steps):
        u = velocity(x, ts[k], **cond)
        speeds.append(u)
        x = x + (ts[k + 1] - ts[k]) * u
    chord = x - x0
    return float(torch.stack([(u - chord).pow(2).reshape(len(x0), -1).sum(1).mean() for u in speeds]).mean())
