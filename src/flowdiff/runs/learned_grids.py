"""Learned time grids stored with a run: RUN/grids.json holds one grid per (solver, steps).

`flowdiff sample RUN --grid learned` looks the grid up here and, when the run has none for its solver
and steps yet, learns it (`flowdiff.learning.sampling.learned_grid.learn_grid`) and stores it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from flowdiff.atomic import write_json
from flowdiff.errors import InvalidInputError
from flowdiff.learning.sampling.learned_grid import LearnedGrid, learn_grid

GRIDS_FILE = "grids.json"
"""The file in a run directory that holds its learned grids."""


def stored_grids(run_dir: str | Path) -> list[LearnedGrid]:
    """The learned grids stored in a run directory (none when it has no grids.json)."""
    file = Path(run_dir) / GRIDS_FILE
    if not file.is_file():
        return []
    try:
        entries = json.loads(file.read_text())["grids"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
        raise InvalidInputError(f"{file} is not a file of learned grids ({error}); remove it to learn them "
                                "again") from None
    return [LearnedGrid.from_dict(entry) for entry in entries]


def find_grid(run_dir: str | Path, solver: str, steps: int) -> LearnedGrid | None:
    """The stored grid for `solver` with `steps` steps, or None."""
    return next((g for g in stored_grids(run_dir) if g.solver == solver and g.steps == steps), None)


def store_grid(run_dir: str | Path, grid: LearnedGrid) -> Path:
    """Add `grid` to the run's grids.json (replacing one for the same solver and steps), atomically."""
    kept = [g for g in stored_grids(run_dir) if (g.solver, g.steps) != (grid.solver, grid.steps)]
    return write_json(Path(run_dir) / GRIDS_FILE, {"grids": [g.to_dict() for g in [*kept, grid]]})


def learned_grid_for(run, solver: str, steps: int, seed: int = 0,
                     callback: Callable[[dict], None] | None = None) -> tuple[LearnedGrid, bool]:
    """The run's learned grid for (solver, steps), learned and stored first when missing; True if learned now."""
    found = find_grid(run.directory, solver, steps)
    if found is not None:
        return found, False
    grid = learn_grid(run.model, solver, steps, generator=torch.Generator(device=run.device).manual_seed(seed),
                      callback=callback)
    store_grid(run.directory, grid)
    return grid, True
