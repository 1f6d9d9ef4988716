"""Permutation tests and bootstrap intervals computed in the same pass as the IGC map."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

import igcorr
from igcorr.errors import InputError

REGIONS = {"signal": np.arange(6) < 2, "rest": np.arange(6) >= 2}


@pytest.fixture
def data():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(120, 6, dtype=torch.float64, generator=generator)
    return x, x[:, :2] + torch.randn(120, 2, dtype=torch.float64, generator=generator)


def run(model, data, **kwargs):
    kwargs.setdefault("progress", False)
    kwargs.setdefault("baselines", 3)
    return igcorr.IGC(model).attribute(data, n_steps=8, **kwargs)


def test_maps_tables_and_files(mlp, data, tmp_path):
    mlp = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()
    result = run(mlp, data, permutations=99, bootstrap=50, regions=REGIONS)
    for name in ("p_value", "p_fwe", "q_value", "ci_low", "ci_high", "bootstrap_se"):
        assert result.extra_maps[name].shape == result.maps.shape, name
    assert np.all(result.extra_maps["p_fwe"] >= result.extra_maps["p_value"])
    assert np.all(result.extra_maps["p_value"] >= 1 / 100)
    assert np.all(result.diagnostics["correlation_low"] <= result.correlation)
    assert np.all(result.correlation <= result.diagnostics["correlation_high"])
    table = result.region_sums()
    assert set(table.columns) >= {"p_value", "p_fwe", "q_value", "low", "high", "se"}
    np.testing.assert_allclose(table.column("sum"), result.region_sums(REGIONS).column("sum"))
    assert result.metadata["inference"]["regions"] == ["signal", "rest"]
    loaded = igcorr.load(result.save(tmp_path / "with_inference"))
    assert loaded.region_sums().to_dict().keys() == table.to_dict().keys()
    np.testing.assert_array_equal(loaded.region_sums().column("p_value"), table.column("p_value"))


def test_batch_size_and_regions_only_invariance(mlp, data):
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()
    full = run(model, data, permutations=60, bootstrap=20, regions=REGIONS, batch_size=120)
    small = run(model, data, permutations=60, bootstrap=20, regions=REGIONS, batch_size=7)
    only = run(model, data, permutations=60, bootstrap=20, regions=REGIONS, regions_only=True, batch_size=13)
    for name in ("p_value", "ci_low", "ci_high"):
        np.testing.assert_allclose(small.extra_maps[name], full.extra_maps[name], rtol=0, atol=1e-10)
    for name in ("p_value", "p_fwe", "low", "high"):
        np.testing.assert_allclose(only.region_sums().column(name), full.region_sums().column(name), atol=1e-10)
    assert "p_value" not in only.extra_maps


class Interrupting(Dataset):
    """Raises when an index is read for the second time (the first read is the permutation test's pass over
    the targets): a crash in the middle of the attribution."""

    def __init__(self, x, y, fail_at=None):
        self.x, self.y, self.fail_at, self.reads = x, y, fail_at, 0

    def __len__(self):
        return len(self.x)

    def __getitem__(self, index):
        if index == self.fail_at:
            self.reads += 1
            if self.reads == 2:
                raise RuntimeError("simulated crash")
        return self.x[index], self.y[index]


def test_resumed_run_carries_the_inference(data, tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()
    x, y = data
    # constant baselines: dataset draws would read the crashing sample early
    options = dict(permutations=40, bootstrap=15, regions=REGIONS, batch_size=10, baselines=0.5)
    reference = run(model, (x, y), **options)
    checkpoint = tmp_path / "inference.ckpt"
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(model, Interrupting(x, y, fail_at=75), checkpoint=checkpoint, checkpoint_every=0, **options)
    assert torch.load(checkpoint, weights_only=True)["next"] == 70
    with pytest.raises(InputError, match="inference"):
        run(model, Interrupting(x, y), checkpoint=checkpoint, **{**options, "permutations": 41})
    resumed = run(model, Interrupting(x, y), checkpoint=checkpoint, **options)
    np.testing.assert_allclose(resumed.maps, reference.maps, rtol=0, atol=1e-12)
    for name in ("p_value", "ci_low", "bootstrap_se"):
        np.testing.assert_allclose(resumed.extra_maps[name], reference.extra_maps[name], rtol=0, atol=1e-12)


def test_invalid_inference_arguments(mlp, data):
    with pytest.raises(InputError, match="regions_only=True needs regions"):
        run(mlp, data, permutations=10, regions_only=True)
    with pytest.raises(InputError, match="permutations must be"):
        run(mlp, data, permutations=-1)
    with pytest.raises(InputError, match="at least 2 replicates"):
        run(mlp, data, bootstrap=1)
    result = run(mlp, (data[0], torch.cat([data[1], data[1][:, :1]], 1)))
    with pytest.raises(InputError, match="no tested regions"):
        result.region_sums()
