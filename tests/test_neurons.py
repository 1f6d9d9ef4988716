"""Internal-neuron attributions: conductance, region-to-neuron attributions, their dataset-wise map, ablation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import igcorr
from igcorr.errors import InputError, ModelError, ShapeError
from igcorr.attribution.neurons import InternalNeurons
from igcorr.paths.quadrature import rule as quadrature_rule

from conftest import SmallCNN, make_mlp


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def small_cnn() -> nn.Module:
    torch.manual_seed(1)
    return SmallCNN().double().eval()


def _window() -> torch.Tensor:
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[:, 2:5, 1:6] = True
    return mask


@pytest.mark.parametrize("layer", ["features.1", "features.4", "head.1"])
def test_units_sum_to_ig_and_regions_partition_the_conductance(small_cnn, layer):
    x, baseline = _randn(3, 1, 8, 8, seed=1), 0.1 * _randn(1, 8, 8, seed=2)
    ig = igcorr.IntegratedGradients(small_cnn).attribute(x, baseline, target=2, n_steps=12)
    neurons = InternalNeurons(small_cnn, layer)
    conductance, delta = neurons.conductance(x, baseline, target=2, n_steps=12, return_convergence_delta=True)
    # Σ over units of the conductance = the input-space IG total (same rule: the chain rule holds per node)
    torch.testing.assert_close(conductance.flatten(1).sum(dim=1), ig.flatten(1).sum(dim=1), rtol=0, atol=1e-12)
    _, ig_delta = igcorr.IntegratedGradients(small_cnn).attribute(x, baseline, target=2, n_steps=12,
                                                                  return_convergence_delta=True)
    torch.testing.assert_close(delta, ig_delta.to(torch.float64), rtol=0, atol=1e-12)
    # Σ_j A_j^S = Σ_{i∈S} IG_i, and A^S over a partition of the input = conductance
    window = _window()
    rows = torch.zeros(1, 8, 8, dtype=torch.bool)
    rows[:, :2] = True
    parts = [window, rows & ~window, ~rows & ~window]
    regions = [neurons.region_attribution(x, part, baseline, target=2, n_steps=12) for part in parts]
    for part, region in zip(parts, regions):
        torch.testing.assert_close(region.flatten(1).sum(dim=1), (ig * part).flatten(1).sum(dim=1), rtol=0, atol=1e-12)
    torch.testing.assert_close(sum(regions), conductance, rtol=0, atol=1e-12)
    assert tuple(conductance.shape[1:]) != tuple(x.shape[1:]) or layer == "features.1"


def test_region_attribution_equals_the_explicit_jacobian_oracle():
    """On a tiny MLP, build C_{j,i} from full Jacobians of g and h at every node and compare."""
    model = make_mlp(n_in=6, n_hidden=8, n_out=3, seed=3)
    x, baseline = _randn(2, 6, seed=4), _randn(6, seed=5)
    region = torch.tensor([True, False, True, True, False, False])
    n_steps = 9
    nodes = quadrature_rule("trapezoid", n_steps)
    g = lambda z: model[1](model[0](z))  # noqa: E731
    h = lambda a: torch.softmax(model[2](a), dim=-1)[1]  # noqa: E731
    expected_region, expected_conductance = [], []
    for sample in x:
        delta = sample - baseline
        contributions = torch.zeros(8, 6, dtype=torch.float64)
        for alpha, weight in zip(nodes.nodes, nodes.weights):
            point = baseline + float(alpha) * delta
            jacobian_g = torch.autograd.functional.jacobian(g, point)  # (8, 6)
            gradient_h = torch.autograd.functional.jacobian(h, g(point))  # (8,)
            contributions += float(weight) * gradient_h[:, None] * jacobian_g * delta[None]
        expected_region.append(contributions[:, region].sum(dim=1))
        expected_conductance.append(contributions.sum(dim=1))
    neurons = InternalNeurons(model, "1", score="softmax")
    for jvp in ("forward", "double_backward"):
        found = neurons.region_attribution(x, region, baseline, target=1, n_steps=n_steps, jvp=jvp)
        torch.testing.assert_close(found, torch.stack(expected_region), rtol=1e-10, atol=1e-13)
        found = neurons.conductance(x, baseline, target=1, n_steps=n_steps, jvp=jvp)
        torch.testing.assert_close(found, torch.stack(expected_conductance), rtol=1e-10, atol=1e-13)


def test_jvp_matches_a_finite_difference_computation(small_cnn):
    """A^S computed with J_g v replaced by the central difference (g(γ + εv) − g(γ − εv)) / 2ε."""
    layer = small_cnn.features[1]
    x, window = _randn(2, 1, 8, 8, seed=6), _window()
    n_steps, epsilon = 6, 1e-5
    nodes = quadrature_rule("trapezoid", n_steps)

    def g(points: torch.Tensor) -> torch.Tensor:
        captured = []
        handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            with torch.no_grad():
                small_cnn(points)
        finally:
            handle.remove()
        return captured[0]

    def gradient_h(points: torch.Tensor) -> torch.Tensor:
        leaf = g(points).clone().requires_grad_(True)
        handle = layer.register_forward_hook(lambda _m, _i, _o: leaf)
        try:
            (gradient,) = torch.autograd.grad(small_cnn(points)[:, 0].sum(), leaf)
        finally:
            handle.remove()
        return gradient

    expected = torch.zeros(2, 4, 8, 8, dtype=torch.float64)
    direction = x * window  # baseline zero
    for alpha, weight in zip(nodes.nodes, nodes.weights):
        points = float(alpha) * x
        difference = (g(points + epsilon * direction) - g(points - epsilon * direction)) / (2 * epsilon)
        expected += float(weight) * gradient_h(points) * difference
    found = InternalNeurons(small_cnn, "features.1").region_attribution(x, window, target=0, n_steps=n_steps)
    torch.testing.assert_close(found, expected, rtol=1e-6, atol=1e-9)


def test_layer_validation(small_cnn):
    x = _randn(2, 1, 8, 8, seed=7)

    class Skip(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner, self.out = nn.Linear(4, 4), nn.Linear(4, 1)

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return self.out(torch.tanh(self.inner(z)) + z)

    with pytest.raises(ModelError, match="skip connection"):
        InternalNeurons(Skip().double(), "inner").conductance(_randn(2, 4, seed=8))
    with pytest.raises(InputError, match="no submodule"):
        InternalNeurons(small_cnn, "nope")
    with pytest.raises(InputError):
        InternalNeurons(small_cnn, nn.Linear(2, 2))
    neurons = InternalNeurons(small_cnn, "head.1")
    with pytest.raises(ShapeError):
        neurons.region_attribution(x, torch.ones(8, 8, dtype=torch.bool), target=0)
    with pytest.raises(InputError):
        neurons.region_attribution(x, torch.full((1, 8, 8), 0.5), target=0)
    with pytest.raises(InputError):
        neurons.conductance(x, target=0, jvp="reverse")
    with pytest.raises(InputError):
        neurons.region_attribution(x, None, target=0)


# ------------------------------------------------------------------------------------------------ dataset-wise
def test_region_correlation_carries_the_region_share_of_igc(small_cnn):
    x = _randn(24, 1, 8, 8, seed=9)
    with torch.no_grad():
        y = small_cnn(x)[:, :2] + 0.3 * _randn(24, 2, seed=10)
    window = _window()
    options = {"n_steps": 8, "outputs": [0, 1], "seed": 4, "batch_size": 10}
    for baselines in (None, 2):  # a shared zero baseline, and two dataset baselines drawn per sample
        igc = igcorr.IGC(small_cnn).attribute((x, y), baselines=baselines, progress=False, **options)
        neurons = InternalNeurons(small_cnn, "head.1")
        inside = neurons.region_correlation((x, y), window[0:1], baselines=baselines, **options)
        outside = neurons.region_correlation((x, y), ~window, baselines=baselines, **options)
        assert inside.maps.shape == (2, 12)
        np.testing.assert_allclose(inside.map_sums, igc.maps[:, window].sum(axis=1), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(inside.map_sums + outside.map_sums, igc.map_sums, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(inside.correlation, igc.correlation, rtol=1e-12)
        np.testing.assert_allclose(inside.baseline_term, igc.baseline_term, rtol=1e-9, atol=1e-14)
    assert inside.metadata["layer"] == "head.1" and inside.metadata["region_size"] == int(window.sum())


# ------------------------------------------------------------------------------------------------ ablation
class Blocks(nn.Module):
    """Units 0–3 read only inputs 0–3 (the region), units 4–7 only inputs 4–7; the outside units weigh more."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden, self.act, self.out = nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 1)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            block = 0.5 + torch.rand(4, 4, generator=generator)
            self.hidden.weight.zero_()
            self.hidden.weight[:4, :4] = block
            self.hidden.weight[4:, 4:] = block
            self.hidden.bias.zero_()
            self.out.weight.copy_(torch.tensor([[1.0, 1.0, 1.0, 1.0, 3.0, 3.0, 3.0, 3.0]]))
            self.out.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.act(self.hidden(x)))


def test_ablating_top_region_units_moves_mass_out_of_the_region():
    model = Blocks().double().eval()
    x = 0.3 + torch.rand(6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    region = torch.tensor([True] * 4 + [False] * 4)
    neurons = InternalNeurons(model, "act")
    by_region = neurons.ablation_curve(x, region, target=0, counts=[0, 2, 4, 8], ranking="region", n_steps=16)
    by_conductance = neurons.ablation_curve(x, region, target=0, counts=[0, 2, 4, 8], ranking="conductance",
                                            n_steps=16)
    assert set(by_region.order[:4].tolist()) == {0, 1, 2, 3}
    assert set(by_conductance.order[:4].tolist()) == {4, 5, 6, 7}
    assert by_region.inside[0] > 0.5 and by_region.inside[2] == pytest.approx(0.0, abs=1e-12)
    assert by_region.outside[2] == pytest.approx(by_region.outside[0], rel=1e-12)
    assert by_conductance.inside[2] == pytest.approx(by_conductance.inside[0], rel=1e-12)
    assert by_conductance.outside[2] == pytest.approx(0.0, abs=1e-12)
    assert by_region.inside[-1] == by_region.outside[-1] == 0.0
    np.testing.assert_allclose(by_region.fractions, [0, 0.25, 0.5, 1.0])
    # the model's hooks are gone afterwards
    assert not model.act._forward_hooks
    # the dataset-wise measure (IGC of the region) moves the same way
    y = model(x).detach()[:, 0] + 0.1 * torch.arange(6, dtype=torch.float64)
    igc_curve = neurons.ablation_curve(x, region, target=0, counts=[0, 3, 4], labels=y, n_steps=8)
    assert igc_curve.measure == "igc"
    share = igc_curve.inside / (igc_curve.inside + igc_curve.outside)
    assert share[0] > 0.4 and share[1] < 0.35 and share[2] == 0.0
    assert bool((np.diff(igc_curve.outside) > 0).all())  # the correlation moves to the outside units


def test_ablation_validation():
    model = Blocks().double().eval()
    x = torch.rand(4, 8, dtype=torch.float64)
    region = torch.tensor([True] * 4 + [False] * 4)
    neurons = InternalNeurons(model, "act")
    with pytest.raises(InputError):
        neurons.ablation_curve(x, region, target=0, counts=[9])
    with pytest.raises(InputError):
        neurons.ablation_curve(x, region, target=0, ranking="random")
    custom = neurons.ablation_curve(x, region, target=0, counts=[0, 1], ranking=np.arange(8.0))
    assert custom.ranking == "custom" and custom.order[0] == 7
