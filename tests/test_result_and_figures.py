"""Result views (region sums) and the figure functions of the public API."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

import igcorr
from igcorr.plotting import plot_diagnostics, plot_maps, plot_region_bars, symmetric_limit


@pytest.fixture
def result(mlp, regression_data):
    return igcorr.IGC(mlp).attribute(regression_data, baselines=3, n_steps=8, progress=False)


def test_region_sums_partition_the_map(result):
    halves = {"first": np.arange(6) < 3, "second": np.arange(6) >= 3}
    table = result.region_sums(halves)
    assert len(table) == 2 * 3
    sums = table.column("sum").reshape(3, 2)
    np.testing.assert_allclose(sums.sum(axis=1), result.map_sums, atol=1e-12)
    np.testing.assert_allclose(table.column("share").reshape(3, 2).sum(axis=1), 1.0, atol=1e-12)
    labels = np.array([1, 1, 1, 2, 2, 2])
    np.testing.assert_allclose(result.region_sums(labels).column("sum"), table.column("sum"), atol=1e-15)


def test_figures_are_drawn(result, tmp_path):
    table = result.region_sums({"a": np.arange(6) < 2, "b": np.arange(6) >= 2})
    with_stats = table.with_columns(low=table.column("sum") - 0.1, high=table.column("sum") + 0.1,
                                    p_value=np.linspace(0.001, 0.5, len(table)))
    for figure in (plot_region_bars(with_stats), plot_region_bars(table, value="share"), plot_diagnostics(result),
                   plot_maps(result.maps[:, None, :]), result.plot()):
        path = tmp_path / "figure.png"
        figure.savefig(path)
        assert path.stat().st_size > 1000
    bars = plot_region_bars(with_stats)
    assert len(bars.axes[0].patches) == len(table)
    assert sum(text.get_text() == "*" for text in bars.axes[0].texts) == int((with_stats.column("p_value") < 0.05).sum())


def test_symmetric_limit():
    maps = np.concatenate([np.linspace(-1, 1, 101), [50.0]])
    assert symmetric_limit(maps) == pytest.approx(1.25 * np.percentile(np.abs(maps), 99))
    assert symmetric_limit(np.zeros(4)) == 1.0
