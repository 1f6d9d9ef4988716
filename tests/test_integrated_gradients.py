"""Per-sample IG: axioms, analytic oracles and parity with Captum."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import igcorr
from igcorr.errors import InputError, NonFiniteError, ShapeError
from igcorr.paths.quadrature import METHODS

captum_attr = pytest.importorskip("captum.attr")

CAPTUM_NAME = {"riemann_left": "riemann_left", "riemann_right": "riemann_right",
               "riemann_middle": "riemann_middle", "gausslegendre": "gausslegendre"}


def captum_ig(model, inputs, baselines, target, n_steps, method):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # Captum builds its nodes with torch.linspace in the default dtype
    try:
        return captum_attr.IntegratedGradients(model).attribute(
            inputs, baselines=baselines, target=target, n_steps=n_steps, method=method)
    finally:
        torch.set_default_dtype(previous)


@pytest.mark.parametrize("method", list(CAPTUM_NAME))
def test_matches_captum_on_a_cnn(cnn, method):
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    baseline = torch.full((5, 1, 8, 8), 0.25, dtype=torch.float64)
    ours = igcorr.IntegratedGradients(cnn).attribute(x, baselines=baseline, target=2, n_steps=20, method=method)
    theirs = captum_ig(cnn, x, baseline, 2, 20, CAPTUM_NAME[method])
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-8)


def test_trapezoid_is_captum_rescaled(cnn):
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    targets = [0, 3, 1, 3]
    n = 16
    ours = igcorr.IntegratedGradients(cnn).attribute(x, target=targets, n_steps=n, method="trapezoid")
    theirs = captum_ig(cnn, x, torch.zeros_like(x), targets, n, "riemann_trapezoid")
    torch.testing.assert_close(theirs, ours * (n - 1) / n, rtol=0, atol=1e-10)


def test_per_sample_targets_match_single_target_runs(cnn):
    x = torch.randn(6, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    targets = torch.tensor([0, 1, 2, 3, 2, 1])
    ig = igcorr.IntegratedGradients(cnn)
    mixed = ig.attribute(x, target=targets, n_steps=8)
    for j, t in enumerate(targets.tolist()):
        torch.testing.assert_close(mixed[j], ig.attribute(x[j : j + 1], target=t, n_steps=8)[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_completeness_error_shrinks_with_steps(mlp, method):
    x = torch.randn(8, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    ig = igcorr.IntegratedGradients(mlp)
    deltas = [ig.attribute(x, baselines=0.5, target=1, n_steps=n, method=method,
                           return_convergence_delta=True)[1].abs().max().item() for n in (4, 32, 256)]
    assert deltas[2] < deltas[0]
    assert deltas[2] < 1e-3
    if method in ("trapezoid", "gausslegendre", "riemann_middle"):
        assert deltas[2] < 1e-5


def test_linear_model_is_exact():
    model = nn.Linear(5, 1).double()
    x = torch.randn(7, 5, dtype=torch.float64)
    baseline = torch.randn(5, dtype=torch.float64)
    expected = model.weight.detach()[0] * (x - baseline)
    for method in METHODS:
        got = igcorr.IntegratedGradients(model).attribute(x, baselines=baseline, n_steps=3, method=method)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_baseline_stack_is_the_mean_over_baselines(mlp):
    x = torch.randn(3, 6, dtype=torch.float64)
    stack = torch.randn(4, 6, dtype=torch.float64)
    ig = igcorr.IntegratedGradients(mlp)
    shared = ig.attribute(x, baselines=igcorr.baselines.Shared(stack), target=0, n_steps=10)
    per_sample = ig.attribute(x, baselines=stack.unsqueeze(0).expand(3, 4, 6), target=0, n_steps=10)
    separate = torch.stack([ig.attribute(x, baselines=b, target=0, n_steps=10) for b in stack]).mean(0)
    torch.testing.assert_close(shared, separate, rtol=0, atol=1e-13)
    torch.testing.assert_close(per_sample, separate, rtol=0, atol=1e-13)


def test_dummy_feature_gets_zero():
    model = lambda x: torch.tanh(x[:, 0] * x[:, 1]) + x[:, 3] ** 2
    x = torch.randn(5, 4, dtype=torch.float64)
    got = igcorr.IntegratedGradients(model).attribute(x, baselines=0.3, n_steps=16)
    assert torch.all(got[:, 2] == 0)


def test_linearity_over_models(mlp):
    other = nn.Sequential(nn.Linear(6, 5), nn.Softplus(), nn.Linear(5, 3)).double()
    combined = lambda x: 2.0 * mlp(x) - 0.5 * other(x)
    x = torch.randn(4, 6, dtype=torch.float64)
    ig = lambda model: igcorr.IntegratedGradients(model).attribute(x, target=1, n_steps=12)
    torch.testing.assert_close(ig(combined), 2.0 * ig(mlp) - 0.5 * ig(other), rtol=0, atol=1e-12)


def test_symmetric_features_get_equal_attribution():
    model = lambda x: torch.tanh(x[:, 0] * x[:, 1] + x[:, 0] + x[:, 1]) + x[:, 2]
    x = torch.tensor([[0.7, 0.7, 1.0], [-1.2, -1.2, 0.5]], dtype=torch.float64)
    got = igcorr.IntegratedGradients(model).attribute(x, baselines=0.1, n_steps=20)
    torch.testing.assert_close(got[:, 0], got[:, 1], rtol=0, atol=1e-14)


def test_implementation_invariance():
    wide = nn.Sequential(nn.Linear(3, 2, bias=False), nn.Linear(2, 1, bias=False)).double()
    collapsed = nn.Linear(3, 1, bias=False).double()
    with torch.no_grad():
        collapsed.weight.copy_(wide[1].weight @ wide[0].weight)
    x = torch.randn(4, 3, dtype=torch.float64)
    torch.testing.assert_close(igcorr.IntegratedGradients(wide).attribute(x, n_steps=5),
                               igcorr.IntegratedGradients(collapsed).attribute(x, n_steps=5), rtol=0, atol=1e-13)


def test_chunking_does_not_change_the_result(cnn):
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64)
    ig = igcorr.IntegratedGradients(cnn)
    big = ig.attribute(x, target=1, n_steps=9, chunk_points=10_000)
    small = ig.attribute(x, target=1, n_steps=9, chunk_points=1)
    torch.testing.assert_close(big, small, rtol=0, atol=1e-13)


def test_model_state_is_restored():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Linear(4, 1)).double()
    model.train()
    model[0].weight.requires_grad_(False)
    with pytest.warns(UserWarning, match="training mode"):
        igcorr.IntegratedGradients(model).attribute(torch.randn(2, 4, dtype=torch.float64), n_steps=4)
    assert model.training and model[1].training
    assert not model[0].weight.requires_grad and model[0].bias.requires_grad
    assert all(p.grad is None for p in model.parameters())


def test_errors():
    model = nn.Linear(4, 2).double()
    ig = igcorr.IntegratedGradients(model)
    x = torch.randn(3, 4, dtype=torch.float64)
    with pytest.raises(InputError, match="target"):
        ig.attribute(x)
    with pytest.raises(InputError, match="out of range"):
        ig.attribute(x, target=5)
    with pytest.raises(ShapeError, match="baselines"):
        ig.attribute(x, baselines=torch.zeros(5), target=0)
    bad = x.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(NonFiniteError, match="sample 2"):
        ig.attribute(bad, target=0)
    with pytest.raises(InputError, match="dtype"):
        ig.attribute(torch.ones(3, 4, dtype=torch.int64), target=0)
