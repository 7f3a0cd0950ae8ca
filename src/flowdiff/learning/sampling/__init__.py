"""Sampling, split the k-diffusion way: builders (noise, grid, guidance, SDE drift), samplers that carry
a start point along a grid and return a `Trajectory`, and `sample`, the convenience on top."""

from flowdiff.learning.sampling.builders import GRIDS, diffusion_drift, guided_field, noise, time_grid
from flowdiff.learning.sampling.sample import sample
from flowdiff.learning.sampling.samplers import ode_sampler, sde_sampler

__all__ = ["GRIDS", "diffusion_drift", "guided_field", "noise", "ode_sampler", "sample",
           "sde_sampler", "time_grid"]
