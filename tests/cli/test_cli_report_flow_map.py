"""`flowdiff report` of a flow map: its 1-jump, 2-jump and 100-Euler-step samples side by side (a scatter beside the
data for 2-D runs, a grid with one row per label for labelled image runs), and a manifest of each panel's NFE."""

from __future__ import annotations

import json

import pytest
from test_cli_report import TINY, flowdiff, report_images

PANELS = [("flow_map", 1, 1), ("flow_map", 2, 2), ("euler", 100, 100)]  # (solver, steps, NFE) left to right


@pytest.fixture(scope="module")
def flow_maps(tmp_path_factory):
    """Tiny shortcut runs (20 steps): unlabelled moons and labelled digits."""
    root = tmp_path_factory.mktemp("flow_map_report")
    moons, digits = root / "moons", root / "digits"
    done = flowdiff("train", "--data", "moons", "--method", "shortcut", "--n-data", 256, "--hidden", "16,16",
                    "--out", moons, "--no-report", *TINY)
    assert done.returncode == 0, done.stderr
    done = flowdiff("train", "--data", "digits", "--method", "shortcut", "--out", digits, "--no-report", *TINY)
    assert done.returncode == 0, done.stderr
    return {"moons": moons, "digits": digits}


def panels_of(run) -> list[tuple[str, int, int]]:
    manifest = json.loads((run / "figures" / "run_report" / "few_step.json").read_text())
    assert manifest["figure"] == "few_step.png"
    return [(panel["solver"], panel["steps"], panel["nfe"]) for panel in manifest["panels"]]


def test_report_of_a_2d_flow_map_adds_the_few_step_scatter_beside_the_data(flow_maps, cli):
    run = flow_maps["moons"]
    done = cli("report", run, "--n", 200, "--steps", 4)
    assert done.returncode == 0, done.stderr
    page = (run / "run_report.html").read_text()
    images = report_images(run / "run_report.html")
    assert set(images) == {"loss", "samples", "trajectories", "vector_field", "few_step"}
    assert '<img src="figures/run_report/few_step.png"' in page and "Few-step samples of the flow map" in page
    assert "the data (a fresh draw of moons" in page
    assert panels_of(run) == PANELS


def test_report_of_a_labelled_image_flow_map_has_one_row_per_label_with_the_samplers_side_by_side(flow_maps):
    from PIL import Image

    run = flow_maps["digits"]
    done = flowdiff("report", run, "--n", 2, "--steps", 2)
    assert done.returncode == 0, done.stderr
    images = report_images(run / "run_report.html")
    assert set(images) == {"loss", "samples_per_class", "samples_per_guidance", "trajectories", "few_step"}
    assert panels_of(run) == PANELS
    # 10 rows of 48 px digits (50 px apart); per row 2 + 1 + 2 + 1 + 2 images (white gaps between the samplers)
    # right of a 15 px label column
    assert Image.open(images["few_step"]).size == (15 + 8 * 50 + 2, 10 * 50 + 2)
    assert "One row per label (w = 1); left to right, 2 samples each: 1 jump (NFE 1); 2 jumps (NFE 2); 100 Euler " \
           "steps of u(x, t, t) (NFE 100)" in (run / "run_report.html").read_text()
