"""The one core: typed estimators, per-call options, the memory budget and the layering of the package."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import igcorr
from igcorr.dataset import Adaptive, FixedRule, MonteCarlo
from igcorr.errors import InputError

SRC = Path(__file__).resolve().parents[1] / "src" / "igcorr"


@pytest.fixture
def model_and_data():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2)).double().eval()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(30, 5, dtype=torch.float64, generator=generator)
    y = torch.randn(30, 2, dtype=torch.float64, generator=generator) + x[:, :2]
    return model, (x, y)


def test_estimator_objects_equal_the_keyword_api(model_and_data):
    model, data = model_and_data
    igc = igcorr.IGC(model)
    pairs = [
        (dict(n_steps=16, method="gausslegendre"), dict(path=FixedRule("gausslegendre", 16))),
        (dict(tolerance=1e-4), dict(path=Adaptive(1e-4))),
        (dict(estimator="montecarlo", n_steps=32, baselines=3), dict(path=MonteCarlo(32), baselines=3)),
    ]
    for keywords, typed in pairs:
        by_keywords = igc.attribute(data, progress=False, **keywords)
        by_object = igc.attribute(data, progress=False, **typed)
        np.testing.assert_array_equal(by_keywords.maps, by_object.maps)
        assert by_keywords.metadata["parameters"] == by_object.metadata["parameters"]
    with pytest.raises(InputError, match="set them in the FixedRule object"):
        igc.attribute(data, path=FixedRule("gausslegendre", 16), n_steps=8, progress=False)
    with pytest.raises(InputError, match="path must be"):
        igc.attribute(data, path=object(), progress=False)


def test_options_of_one_call_do_not_stick_to_the_next(model_and_data):
    model, (x, _) = model_and_data
    explainer = igcorr.IntegratedGradients(model)
    small = explainer.attribute(x, target=0, n_steps=8, chunk_points=3)
    default = explainer.attribute(x, target=0, n_steps=8)
    np.testing.assert_allclose(small, default, rtol=0, atol=1e-12)
    assert not hasattr(explainer, "engine")
    igc = igcorr.IGC(model, chunk_points=7)
    first = igc.attribute((x, x[:, :2]), n_steps=8, progress=False)
    second = igc.attribute((x, x[:, :2]), n_steps=8, progress=False)
    assert first.metadata["engine"]["chunk_points"] == second.metadata["engine"]["chunk_points"] == 7


def test_monte_carlo_draws_are_refused_up_front_when_one_sample_exceeds_the_budget(model_and_data):
    model, data = model_and_data
    calls = []
    counting = nn.Sequential(model)
    counting.register_forward_hook(lambda _m, inputs, _o: calls.append(len(inputs[0])))
    # one sample's 2e5 draws of 5 float64 values take 8 MB, more than a quarter of a 16 MB budget
    with pytest.raises(InputError, match="max_memory"):
        igcorr.IGC(counting, max_memory=16 * 2**20).attribute(data, estimator="montecarlo", n_steps=200_000,
                                                               baselines=4, progress=False)
    assert sum(calls) <= 32  # only the probes of the first samples ran (outputs, readout, first layer), no path point


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.col_offset == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import) and node.col_offset == 0:
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("layer, forbidden", [
    ("model.py", ("igcorr.paths", "igcorr.attribution", "igcorr.dataset", "igcorr.reducers")),
    ("paths", ("igcorr.attribution", "igcorr.dataset", "igcorr.reducers", "igcorr.result")),
    ("attribution", ("igcorr.dataset", "igcorr.reducers")),
    ("reducers", ("igcorr.paths", "igcorr.attribution", "igcorr.dataset", "igcorr.model")),
])
def test_layers_only_import_the_layers_below(layer, forbidden):
    target = SRC / layer
    files = [target] if target.is_file() else sorted(target.glob("*.py"))
    for path in files:
        for module in _imports(path):
            assert not module.startswith(forbidden), f"{path.name} imports {module} at module level"
        assert "igcorr_examples" not in path.read_text()
