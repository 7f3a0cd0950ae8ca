"""`flowdiff report RUN` and the quick report of `flowdiff train`: a page whose pictures all exist.

Tiny runs (20 steps) are trained through the CLI in subprocesses; the report pictures are
checked for existence, PNG format and their row layout, not for their quality.
"""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
TINY = ["--steps", "20", "--batch", "16", "--warmup", "2", "--quiet", "--device", "cpu"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def flowdiff(*args, cwd=None) -> subprocess.CompletedProcess:
    """Run `python -m flowdiff ARGS` in a fresh process with one torch thread."""
    return subprocess.run([sys.executable, "-m", "flowdiff", *map(str, args)], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=300)


def report_images(page: Path) -> dict[str, Path]:
    """The pictures a report page refers to, by file stem; each must exist and be a non-empty PNG."""
    text = page.read_text(encoding="utf-8")
    sources = [html.unescape(s) for s in re.findall(r'<img src="([^"]+)"', text)]
    assert sources, text
    images = {}
    for source in sources:
        file = page.parent / source
        assert file.is_file(), source
        assert file.stat().st_size > 100 and file.read_bytes()[:8] == PNG_SIGNATURE, source
        images[file.stem] = file
    return images


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A labelled digits run (with train's own quick report) and an unlabelled moons run (without)."""
    root = tmp_path_factory.mktemp("report")
    digits, moons = root / "digits", root / "moons"
    done = flowdiff("train", "--data", "digits", "--out", digits, *TINY)
    assert done.returncode == 0, done.stderr
    assert f"report: {digits / 'run_report.html'}" in done.stdout
    done = flowdiff("train", "--data", "moons", "--n-data", 256, "--hidden", "16,16", "--out", moons,
                    "--no-report", *TINY)
    assert done.returncode == 0, done.stderr
    assert "report:" not in done.stdout and not (moons / "run_report.html").exists()
    return {"digits": digits, "moons": moons}


def test_train_writes_a_quick_report_for_images(runs):
    images = report_images(runs["digits"] / "run_report.html")
    assert set(images) == {"loss", "samples_per_class", "samples_per_guidance", "trajectories"}


def test_report_of_an_image_run_has_rows_per_class_and_per_guidance_scale(runs):
    from PIL import Image

    run = runs["digits"]
    done = flowdiff("report", run, "--n", 3, "--steps", 2, "--guidance", "0,1,2,5")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"report: {run / 'run_report.html'}"
    images = report_images(run / "run_report.html")
    assert set(images) == {"loss", "samples_per_class", "samples_per_guidance", "trajectories"}
    # 8x8 digits are drawn 6x larger (48 px) with 2 px padding: rows are 50 px apart
    heights = {name: Image.open(images[name]).size[1] for name in images if name != "loss"}
    assert heights["samples_per_class"] == 10 * 50 + 2  # one row per class
    assert heights["samples_per_guidance"] == 4 * 50 + 2  # one row per guidance scale
    assert heights["trajectories"] == 8 * 50 + 2  # one strip per label (at most 8)
    text = (run / "run_report.html").read_text()
    assert "columns have the labels 0, 1, 2 and the same noise" in text


def test_report_of_a_2d_run_draws_samples_trajectories_and_the_field(runs, cli):
    run = runs["moons"]
    done = cli("report", run, "--n", 200, "--steps", 4)
    assert done.returncode == 0, done.stderr
    images = report_images(run / "run_report.html")
    assert set(images) == {"loss", "samples", "trajectories", "vector_field"}
    page = (run / "run_report.html").read_text()
    assert "Sample statistics" in page
    # its "Reproduce" commands run on this unconditional run: no --guidance, which it would refuse
    assert f"flowdiff report {run} --n 200 --steps 4 --seed 0" in page and "--guidance" not in page


def test_report_of_a_higher_dimensional_run_shows_sample_statistics(tmp_path, cli):
    from flowdiff.plots.run_report import write_run_report

    data = tmp_path / "five.npy"
    np.save(data, np.random.default_rng(0).normal(size=(200, 5)) * 3.0 + 10.0)
    done = cli("train", "--data", data, "--out", tmp_path / "run", "--hidden", "8,8", "--no-report", *TINY)
    assert done.returncode == 0, done.stderr
    page = write_run_report(tmp_path / "run", n=50, steps=2)
    assert set(report_images(page)) == {"loss"}
    text = page.read_text()
    assert "Sample statistics" in text and "data mean" in text and "50 samples" in text


def test_bad_input_is_one_line_and_exit_2(runs, tmp_path, cli):
    done = flowdiff("report", tmp_path / "missing")
    assert_one_line_error(done, "does not exist")
    assert_one_line_error(cli("report", runs["digits"], "--guidance", "0,x"), "--guidance", "'0,x'")
    assert_one_line_error(cli("report", runs["digits"], "--guidance", "1,nan"), "--guidance")
    assert_one_line_error(cli("report", runs["digits"], "--steps", 0), "--steps")
    assert_one_line_error(cli("report", runs["digits"], "--n", 0), "'--n'")
    assert_one_line_error(cli("report", runs["digits"], "--guidance", "1,inf"), "guidance scales must be finite")
    assert_one_line_error(cli("report", runs["moons"], "--guidance", "3"), "without labels")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(cli("report", tmp_path / "empty"), "not a flowdiff run directory")
