"""Few-step generation with flow maps u(x, r, t): the abstraction, and the MeanFlow and shortcut losses."""

from flowdiff.learning.flowmaps.maps import is_flow_map, jump, require_flow_map
from flowdiff.learning.flowmaps.meanflow import MeanFlow, meanflow_target
from flowdiff.learning.flowmaps.shortcut import Shortcut, shortcut_target

__all__ = ["MeanFlow", "Shortcut", "is_flow_map", "jump", "meanflow_target", "require_flow_map", "shortcut_target"]
