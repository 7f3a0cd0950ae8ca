"""Few-step generation with flow maps u(x, r, t): the abstraction, the MeanFlow and shortcut losses, reflow's
stored pairs and the distillation loss."""

from flowdiff.learning.flowmaps.distill import TrajectoryDistillation
from flowdiff.learning.flowmaps.maps import is_flow_map, jump, require_flow_map
from flowdiff.learning.flowmaps.meanflow import MeanFlow, meanflow_target
from flowdiff.learning.flowmaps.reflow import StoredPairs, straightness
from flowdiff.learning.flowmaps.shortcut import Shortcut, shortcut_target

__all__ = ["MeanFlow", "Shortcut", "StoredPairs", "TrajectoryDistillation", "is_flow_map", "jump", "meanflow_target",
           "require_flow_map", "shortcut_target", "straightness"]
