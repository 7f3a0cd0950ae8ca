"""The files of an evaluation: eval.json (the result) and eval.png (each metric against NFE, log-log, one line
per solver, the data baseline dashed), both written atomically.

It draws the JSON-ready result of `flowdiff.runs.evaluation.evaluate_run` (or of
`flowdiff.learning.evaluation.evaluate`) as a matplotlib `Figure` (Agg, no pyplot state).
"""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.figure import Figure

from flowdiff import atomic
from flowdiff.runs.evaluation import EVAL_JSON, EVAL_PNG


def _line(row: dict) -> str:
    """The line a row belongs to: its solver, with its grid when not uniform."""
    grid = row.get("grid", "uniform")
    return row["solver"] if grid == "uniform" else f"{row['solver']} ({grid})"


def evaluation_figure(result: dict, title: str = "") -> Figure:
    """One panel per metric of `result["baseline"]`: the metric of each row against its NFE, by solver."""
    rows, baseline = result["rows"], result["baseline"]
    names = list(baseline)
    columns = min(len(names), 2)
    lines = math.ceil(len(names) / columns)
    figure = Figure(figsize=(4.6 * columns, 3.4 * lines), layout="constrained")
    axes = figure.subplots(lines, columns, squeeze=False)
    for ax in axes.flat[len(names) :]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        for solver in dict.fromkeys(map(_line, rows)):
            mine = sorted((row for row in rows if _line(row) == solver), key=lambda row: row["nfe"])
            values = [(row["nfe"], row["metrics"][name]) for row in mine if row["metrics"][name] > 0]
            if values:
                ax.plot(*zip(*values), marker="o", lw=1.5, label=solver)
        if baseline[name] > 0:  # unbiased MMD^2 / energy of data vs data are ~0 (maybe < 0): not drawn
            ax.axhline(baseline[name], color="grey", ls="--", lw=1, label="data vs data")
        ax.set_xscale("log", base=2)
        if all(row["metrics"][name] > 0 for row in rows):
            ax.set_yscale("log")
        ax.set(xlabel="NFE (function evaluations per sample)", title=name)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    return figure


def write_evaluation(result: dict, directory: str | Path) -> list[Path]:
    """Write `result` as eval.json and its figure as eval.png into `directory`; return the two files."""
    directory = Path(directory)
    title = f"{result.get('run', 'model')}: {result['n']} samples vs {result['reference']}"
    return [atomic.write_json(directory / EVAL_JSON, result),
            atomic.save_figure(evaluation_figure(result, title), directory / EVAL_PNG)]
