"""Distillation of a flow into a k-step flow map by regression on the teacher's ODE (knowledge distillation,
Luhman & Luhman 2021, for every pair of times of a k-step grid).

The teacher's ODE from X_0 visits the states X_{i/k}, i = 0..k. For any two grid times t_i < t_j the exact
average velocity of the teacher's flow is (X_{t_j} - X_{t_i}) / (t_j - t_i), so a flow-map student u(x, r, t)
regresses on it at (x, r, t) = (X_{t_i}, t_j, t_i). Training on all pairs, not only neighbours, makes one jump
over the whole interval and every sub-grid of the k-step grid (1, 2, ... steps when they divide k) usable.
"""

from __future__ import annotations

import torch

from flowdiff.errors import InvalidInputError
from flowdiff.learning.flowmaps.common import per_example
from flowdiff.learning.flowmaps.maps import require_flow_map


class TrajectoryDistillation:
    """The loss E |u_theta(X_{t_i}, t_j, t_i) - (X_{t_j} - X_{t_i}) / (t_j - t_i)|^2 over stored teacher states.

    `states` is (n, k + 1, *shape): n teacher trajectories at the times i / k, and `labels` (n,) the labels the
    teacher was conditioned on (None: unconditional). Each minibatch draws a trajectory uniformly and a pair
    i = min(a, b) < j = max(a, b) + 1 of a, b uniform on 0..k-1 (with the loss's generator); the student gets the
    trajectory's label, replaced by the null label with probability label_dropout (so it stays guidable). The
    trainer's data batch only sets the batch size and device.
    """

    name = "trajectory_distillation"
    prediction = "velocity"
    flow_map = True

    def __init__(self, states: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        if not isinstance(states, torch.Tensor) or states.ndim < 3 or states.shape[0] < 1 or states.shape[1] < 2:
            raise InvalidInputError("states must be teacher trajectories of shape (n, k + 1, *shape) with k >= 1")
        if labels is not None and not (isinstance(labels, torch.Tensor) and tuple(labels.shape) == (states.shape[0],)):
            raise InvalidInputError(f"labels must have shape ({states.shape[0]},), one per teacher trajectory")
        self.states, self.labels = states, labels

    def __call__(self, model, path, x1: torch.Tensor, y=None, coupling=None, label_dropout: float = 0.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """The loss on a minibatch of the size of x1 (the stored labels replace y; a coupling does not apply)."""
        from flowdiff.learning.losses import draw, drop_labels

        require_flow_map(model, "trajectory distillation")
        count, k = self.states.shape[0], self.states.shape[1] - 1
        n = x1.shape[0]

        def index(size):
            uniform = draw("uniform", (n,), generator, self.states.device, torch.float64)
            return (uniform * size).long().clamp(max=size - 1)

        which, a, b = index(count), index(k), index(k)
        start, end = torch.minimum(a, b), torch.maximum(a, b) + 1  # i < j: each pair with probability 1/k^2 or 2/k^2
        x, later = self.states[which, start].to(x1), self.states[which, end].to(x1)
        t, r = (start.to(x1.dtype) / k).to(x1.device), (end.to(x1.dtype) / k).to(x1.device)
        target = (later - x) / (r - t).reshape(-1, *([1] * (x.ndim - 1)))
        cond = {}
        if self.labels is not None:
            labels = self.labels[which].to(x1.device)
            cond["y"] = drop_labels(labels, model.num_classes, label_dropout, generator)
        return per_example(model(x, t, r=r, **cond) - target).mean()

    def config(self) -> dict:
        """Its name, the number of trajectories and the student's steps k."""
        config = {"name": self.name, "trajectories": int(self.states.shape[0]), "steps": int(self.states.shape[1] - 1)}
        return config if self.labels is None else {**config, "labelled": True}

    def __repr__(self) -> str:
        return f"TrajectoryDistillation(trajectories={self.states.shape[0]}, steps={self.states.shape[1] - 1})"
