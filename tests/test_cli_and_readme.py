"""End-to-end: the demo through the command line, and the README quickstart as pasted."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np

import igcorr
from igcorr.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_demo_command_writes_figure_result_and_summary(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "8", "--steps", "24", "--baselines", "2", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "test accuracy" in printed
    for name in ("class_maps.png", "result.npz", "summary.md"):
        assert (out / name).stat().st_size > 0
    result = igcorr.load(out / "result.npz")
    assert result.maps.shape == (10, 1, 8, 8)
    assert result.metadata["demo"]["test_accuracy"] > 0.8
    # shared baselines: every class map sums to its correlation up to quadrature error
    np.testing.assert_allclose(result.map_sums, result.correlation, atol=0.05)
    np.testing.assert_allclose(result.baseline_term, 0.0, atol=1e-12)
    assert "| class | Pearson r |" in (out / "summary.md").read_text()


def test_readme_quickstart_runs_as_pasted(tmp_path):
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks, "the README has no python quickstart"
    for block in blocks:
        completed = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True,
                                   timeout=300)
        assert completed.returncode == 0, completed.stderr
    assert (tmp_path / "quickstart.npz").exists()
