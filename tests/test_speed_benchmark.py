"""The speed benchmark's contenders compute the same IGC map, so its timings compare equal work."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
bench_igc = pytest.importorskip("bench_igc")


@pytest.fixture
def workload():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3)).double().eval()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(10, 1, 6, 6, dtype=torch.float64, generator=generator)
    y = torch.arange(10) % 3
    baselines = torch.randn(2, 1, 6, 6, dtype=torch.float64, generator=generator)
    return bench_igc.Workload("tiny", model, x, y, baselines, "softmax", 3)


def test_contenders_compute_the_same_map(workload):
    ours, _, engine = bench_igc.run_igcorr(workload, 6)
    floor, _ = bench_igc.run_floor(workload, 6, chunk=7)  # chunks that split paths
    captum, _ = bench_igc.run_captum(workload, 6, outputs=3)  # biased trapezoid, rescaled
    assert engine["readout"] is None
    np.testing.assert_allclose(floor, ours, rtol=0, atol=1e-12)
    # Captum builds its path positions and step sizes in float32, hence agreement to single precision only
    single = 1e-6 * np.abs(ours).max()
    np.testing.assert_allclose(captum, ours, rtol=0, atol=single)
    middle, _, _ = bench_igc.run_igcorr(workload, 6, method="riemann_middle")
    captum_middle, _ = bench_igc.run_captum(workload, 6, outputs=3, method="riemann_middle")
    np.testing.assert_allclose(captum_middle, middle, rtol=0, atol=single)
    assert bench_igc.relative_error(middle, ours) > 0  # different rules, different maps


def test_subset_and_errors(workload):
    part = bench_igc.subset(workload, 4)
    assert len(part.x) == 4 and part.baselines is workload.baselines
    reference = np.ones((2, 3))
    assert bench_igc.relative_error(reference * 1.01, reference) == pytest.approx(0.01)
