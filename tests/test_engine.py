"""Fast paths of the gradient engine give the same maps as the direct computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import igcorr
from igcorr.errors import InputError


class Encoder(nn.Module):
    """An encoding model: a nonlinear core of width 4 and a linear readout to many outputs."""

    def __init__(self, n_out: int = 30) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.core = nn.Sequential(nn.Linear(6, 4), nn.Tanh())
        self.readout = nn.Linear(4, n_out)

    def forward(self, x):
        return self.readout(self.core(x))


@pytest.fixture
def encoding_data():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, dtype=torch.float64, generator=generator)
    return x, torch.randn(40, 30, dtype=torch.float64, generator=generator) + x[:, :1]


def test_readout_shortcut_equals_direct_computation(encoding_data):
    model = Encoder().double().eval()
    shortcut = igcorr.IGC(model).attribute(encoding_data, baselines=3, n_steps=8, progress=False)
    direct = igcorr.IGC(model, readout=False).attribute(encoding_data, baselines=3, n_steps=8, progress=False)
    assert shortcut.metadata["engine"]["readout"] == {"layer": "readout", "width": 4}
    assert direct.metadata["engine"]["readout"] is None
    np.testing.assert_allclose(shortcut.maps, direct.maps, rtol=0, atol=1e-10)
    for name in ("correlation", "baseline_term", "completeness_mean"):
        np.testing.assert_allclose(shortcut.diagnostics[name], direct.diagnostics[name], rtol=0, atol=1e-10)


def test_readout_is_only_used_where_it_helps_and_is_exact(encoding_data):
    model = Encoder().double().eval()
    few = igcorr.IGC(model).attribute(encoding_data, outputs=[0, 1], n_steps=4, progress=False)
    assert few.metadata["engine"]["readout"] is None  # 2 outputs < width 4: no saving
    named = igcorr.IGC(model, readout="readout").attribute(encoding_data, outputs=[0, 1], n_steps=4, progress=False)
    assert named.metadata["engine"]["readout"]["layer"] == "readout"
    np.testing.assert_allclose(named.maps, few.maps, rtol=0, atol=1e-10)
    probabilities = igcorr.IGC(model, score="softmax").attribute(encoding_data, n_steps=4, progress=False)
    assert probabilities.metadata["engine"]["readout"] is None  # a softmax is not linear
    with pytest.raises(InputError, match="score=None"):
        igcorr.IGC(model, score="softmax", readout="readout").attribute(encoding_data, n_steps=4, progress=False)
    with pytest.raises(InputError, match="not an nn.Linear"):
        igcorr.IGC(model, readout="core").attribute(encoding_data, n_steps=4, progress=False)


def test_output_strategies_agree(cnn):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(12, 1, 8, 8, dtype=torch.float64, generator=generator)
    y = torch.randint(0, 4, (12,), generator=generator)
    maps = {}
    for strategy in ("loop", "batched", "auto"):
        result = igcorr.IGC(cnn, output_strategy=strategy).attribute((x, y), baselines=2, n_steps=6, progress=False)
        maps[strategy] = result.maps
        assert result.metadata["engine"]["output_strategy"] in ("loop", "batched")
    np.testing.assert_allclose(maps["batched"], maps["loop"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(maps["auto"], maps["loop"], rtol=0, atol=1e-12)


def test_chunk_size_follows_the_memory_budget(cnn):
    x = torch.randn(10, 1, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 4, (10,))
    small = igcorr.IGC(cnn, max_memory=2_000_000).attribute((x, y), n_steps=5, progress=False)
    large = igcorr.IGC(cnn, max_memory=2_000_000_000).attribute((x, y), n_steps=5, progress=False)
    assert small.metadata["engine"]["chunk_points"] < large.metadata["engine"]["chunk_points"]
    np.testing.assert_allclose(small.maps, large.maps, rtol=0, atol=1e-12)
    with pytest.raises(InputError, match="max_memory=.* is too small"):
        igcorr.IGC(cnn, max_memory=1000).attribute((x, y), n_steps=5, progress=False)
