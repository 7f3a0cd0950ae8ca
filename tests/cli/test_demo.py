"""`flowdiff demo`, shortened: it trains, samples and writes report.html with non-empty figures."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from flowdiff.cli.demo_cmd import free_directory


def test_short_demo_writes_a_report_with_all_its_figures(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "flowdiff", "demo", "--out", str(out), "--steps", "60", "--batch", "128",
         "--hidden", "32,32", "--n", "300", "--n-eval", "200", "--quality-steps", "2,8", "--quiet"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = out / "report.html"
    assert f"report: {report}" in result.stdout  # it says where the report is
    page = report.read_text()
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) == 5  # loss, data vs samples, trajectories, vector field, quality against steps
    for source in images:
        image = (report.parent / source).resolve()
        assert image.is_file() and image.stat().st_size > 1000, source
        assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for heading in ("Training loss", "Data vs samples", "Trajectories from noise to data",
                    "The learned vector field", "Sample quality against the number of steps"):
        assert heading in page
    quality = json.loads((out / "quality.json").read_text())
    assert quality["steps"] == [2, 8] and len(quality["curves"]) == 3 and quality["baseline"] > 0
    assert page.count("<tr>") == 1 + 2 + 1  # header, one row per step count, the two-sample baseline
    assert (out / "config.json").is_file() and (out / "checkpoints" / "latest.json").is_file()


def test_the_default_run_directory_never_replaces_an_existing_one(tmp_path):
    base = tmp_path / "demo"
    assert free_directory(base) == base
    base.mkdir()
    assert free_directory(base) == Path(f"{base}-2")
    Path(f"{base}-2").mkdir()
    assert free_directory(base) == Path(f"{base}-3")
