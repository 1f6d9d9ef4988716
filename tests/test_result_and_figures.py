"""Result views (region sums) and the figure functions of the public API."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import json
import re

import numpy as np
import pytest

import igcorr
from igcorr.errors import ResultFileError
from igcorr.plotting import plot_diagnostics, plot_maps, plot_region_bars, symmetric_limit
from igcorr.result import FORMAT_VERSION


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


def _with_header(tmp_path, header):
    """A result file whose maps are fine and whose JSON header is ``header`` (any JSON value)."""
    path = tmp_path / "edited.npz"
    encoded = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    np.savez(path, maps=np.zeros((2, 3)), header=encoded, **{"diagnostic/correlation": np.zeros(2)})
    return path


def _good_header():
    return {"format_version": FORMAT_VERSION, "method": "igc",
            "metadata": {"outputs": [0, 1], "inputs": {"kind": "SingleInput", "names": ["input"], "shapes": [[3]]},
                         "inference": {"regions": ["a"]}, "seconds": 1.5}}


def test_a_well_formed_header_loads(tmp_path):
    loaded = igcorr.load(_with_header(tmp_path, _good_header()))
    assert loaded.method == "igc" and loaded.outputs == [0, 1] and loaded.maps.shape == (2, 3)


@pytest.mark.parametrize("edit, field", [
    (lambda h: h.pop("method"), "'method' is missing"),
    (lambda h: h.pop("metadata"), "'metadata' is missing"),
    (lambda h: h.pop("format_version"), "'format_version' is missing"),
    (lambda h: h.update(method=3), "'method' must be a non-empty string"),
    (lambda h: h.update(method=""), "'method' must be a non-empty string"),
    (lambda h: h.update(metadata=[1, 2]), "'metadata' must be a JSON object"),
    (lambda h: h.update(format_version="1"), "'format_version' must be an integer"),
    (lambda h: h["metadata"].update(outputs="all"), "'metadata.outputs' must be a list of 2 integers"),
    (lambda h: h["metadata"].update(outputs=[0, 1, 2]), "'metadata.outputs' must be a list of 2 integers"),
    (lambda h: h["metadata"].update(inputs=["input"]), "'metadata.inputs' must be a JSON object"),
    (lambda h: h["metadata"]["inputs"].pop("names"), "'metadata.inputs.names' must be a non-empty list"),
    (lambda h: h["metadata"].update(inputs={"kind": "MultipleInputs", "names": ["a", "b"], "shapes": [[1]]}),
     "'metadata.inputs.shapes' must be a list of 2 shapes"),
    (lambda h: h["metadata"].update(inference="yes"), "'metadata.inference' must be a JSON object"),
    (lambda h: h["metadata"]["inference"].update(regions="a"), "'metadata.inference.regions' must be a list"),
    (lambda h: h["metadata"].update(seconds="fast"), "'metadata.seconds' must be a number"),
])
def test_a_malformed_header_names_the_field(tmp_path, edit, field):
    header = _good_header()
    edit(header)
    with pytest.raises(ResultFileError, match=re.escape(field)):
        igcorr.load(_with_header(tmp_path, header))


@pytest.mark.parametrize("header", [[1, 2], "igc", None])
def test_a_header_that_is_not_an_object(tmp_path, header):
    with pytest.raises(ResultFileError, match="must be a JSON object"):
        igcorr.load(_with_header(tmp_path, header))


def test_another_format_version_is_refused(tmp_path):
    header = {**_good_header(), "format_version": FORMAT_VERSION + 1}
    with pytest.raises(ResultFileError, match=f"result format {FORMAT_VERSION + 1}"):
        igcorr.load(_with_header(tmp_path, header))
