"""IG2 (iterative gradient path): axioms, analytic oracles, references and the dataset-wise integration."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import igcorr
from igcorr.errors import InputError, ModelError, ShapeError
from igcorr import IG2, IG2Path, select_references
from igcorr.attribution.ig2 import OtherClassReferences

from conftest import make_mlp


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


class Backbone(nn.Module):
    """Linear + tanh features; the representation of the models below."""

    def __init__(self, n_in: int = 5, width: int = 4, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.layer = nn.Linear(n_in, width)
        self.act = nn.Tanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.layer(x))


class Head(nn.Module):
    """f(x) = Σ_h c_h · head_h(backbone(x)): several linear heads on one shared backbone."""

    def __init__(self, backbone: nn.Module, heads: list[nn.Module], coefficients: list[float]) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleList(heads)
        self.coefficients = coefficients

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        return sum(c * head(torch.sin(features)) for c, head in zip(self.coefficients, self.heads))


# ------------------------------------------------------------------------------------------------ axioms and oracles
def test_completeness_error_shrinks_with_the_step_size_at_fixed_path_length():
    model = make_mlp()
    x, references = _randn(4, 6, seed=1), _randn(4, 2, 6, seed=2)
    residuals = []
    for steps in (20, 40, 80, 160):
        result = IG2(model, representation="1").attribute(x, references, steps=steps, step_size=2.0 / steps)
        residuals.append(float(result.completeness_residual.abs().max()))
    assert all(later < earlier for earlier, later in zip(residuals, residuals[1:]))
    assert residuals[-1] < residuals[0] / 6  # first order in η: ≈ halves with every halving
    assert residuals[-1] < 1e-3


def test_linear_model_is_exact_against_gradcf():
    torch.manual_seed(0)
    linear = nn.Linear(5, 1).double()
    backbone = Backbone().double()

    class LinearModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone, self.linear = backbone, linear

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.backbone(x)  # runs the representation layer inside the model's forward pass
            return self.linear(x)

    x, references = _randn(3, 5, seed=3), _randn(2, 5, seed=4)
    result = IG2(LinearModel().eval(), representation="backbone").attribute(x, references, steps=40, step_size=0.05)
    expected = linear.weight.detach()[0] * (x - result.counterfactuals.mean(dim=1))
    torch.testing.assert_close(result.attributions, expected, rtol=0, atol=1e-13)
    assert float(result.completeness_residual.abs().max()) < 1e-13
    # the path really moved towards the references' representation
    assert bool((result.distances[:, :, -1] < 0.5 * result.distances[:, :, 0]).all())


def test_dummy_feature_gets_zero_and_its_coordinate_never_moves():
    class IgnoresLast(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(nn.Linear(4, 6), nn.Tanh())
            self.out = nn.Linear(6, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.features(x[:, :4]))

    torch.manual_seed(0)
    model = IgnoresLast().double().eval()
    x = _randn(3, 5, seed=5).clamp(-1.5, 1.5)
    references = _randn(3, 2, 5, seed=6)
    result = IG2(model, representation="features").attribute(x, references, steps=30, step_size=0.1,
                                                             clip=(-2.0, 2.0), return_path=True)
    assert result.path is not None and result.path.shape == (3, 2, 31, 5)
    assert bool((result.attributions[:, 4] == 0).all())
    assert bool((result.path[..., 4] == x[:, None, None, 4]).all())
    assert bool((result.attributions[:, :4] != 0).any())
    torch.testing.assert_close(result.path[:, :, 0], x[:, None].expand(3, 2, 5))
    torch.testing.assert_close(result.path[:, :, -1], result.counterfactuals)


def test_linearity_over_two_heads_sharing_the_representation():
    backbone = Backbone().double()
    torch.manual_seed(1)
    first, second = nn.Linear(4, 1).double(), nn.Linear(4, 1).double()
    x, references = _randn(4, 5, seed=7), _randn(3, 5, seed=8)
    options = {"steps": 25, "step_size": 0.08}
    results = {}
    for name, heads, coefficients in (("a", [first], [1.0]), ("b", [second], [1.0]),
                                      ("mix", [first, second], [2.0, -0.5])):
        model = Head(backbone, heads, coefficients).eval()
        results[name] = IG2(model, representation=backbone).attribute(x, references, **options)
    torch.testing.assert_close(results["mix"].counterfactuals, results["a"].counterfactuals)
    torch.testing.assert_close(results["mix"].attributions,
                               2.0 * results["a"].attributions - 0.5 * results["b"].attributions, rtol=0, atol=1e-13)


def test_symmetry_when_model_and_representation_are_symmetric():
    torch.manual_seed(2)
    backbone = Backbone(n_in=4).double()
    with torch.no_grad():  # features 0 and 1 enter everything through the same weights
        backbone.layer.weight[:, 1] = backbone.layer.weight[:, 0]
    model = Head(backbone, [nn.Linear(4, 1).double()], [1.0]).eval()
    x = _randn(3, 4, seed=9)
    x[:, 1] = x[:, 0]
    references = _randn(3, 2, 4, seed=10)
    references[..., 1] = references[..., 0]
    result = IG2(model, representation="backbone").attribute(x, references, steps=30, step_size=0.1)
    torch.testing.assert_close(result.attributions[:, 0], result.attributions[:, 1], rtol=0, atol=1e-14)
    assert bool((result.attributions[:, 0] != 0).all())


# ------------------------------------------------------------------------------------------------ the API
def test_target_is_the_predicted_class_at_x_and_pairs_are_vectorised_exactly():
    model = make_mlp(n_out=4, seed=3)
    x, references = _randn(5, 6, seed=11), _randn(5, 3, 6, seed=12)
    explainer = IG2(model, representation="1", score="softmax")
    batch = explainer.attribute(x, references, steps=15, step_size=0.1)
    with torch.no_grad():
        predicted = torch.softmax(model(x), dim=1).argmax(dim=1)
    assert torch.equal(batch.targets, predicted)
    single = [explainer.attribute(x[i : i + 1], references[i : i + 1], target=int(predicted[i]), steps=15,
                                  step_size=0.1) for i in range(5)]
    torch.testing.assert_close(batch.attributions, torch.cat([s.attributions for s in single]), rtol=0, atol=1e-14)
    torch.testing.assert_close(batch.counterfactuals, torch.cat([s.counterfactuals for s in single]))
    chunked = explainer.attribute(x, references, steps=15, step_size=0.1, chunk_points=2)
    torch.testing.assert_close(chunked.attributions, batch.attributions, rtol=0, atol=1e-14)
    residual = batch.attributions.sum(dim=1) - (batch.predictions - batch.counterfactual_predictions.mean(dim=1))
    torch.testing.assert_close(batch.completeness_residual, residual)


def test_representation_forms_agree_and_auto_is_the_input_of_the_last_linear():
    model = make_mlp(seed=4)
    x, references = _randn(3, 6, seed=13), _randn(2, 6, seed=14)
    options = {"target": 1, "steps": 10, "step_size": 0.1}
    by_name = IG2(model, representation="1").attribute(x, references, **options)
    by_module = IG2(model, representation=model[1]).attribute(x, references, **options)
    by_callable = IG2(model, representation=lambda z: model[1](model[0](z))).attribute(x, references, **options)
    automatic = IG2(model).attribute(x, references, **options)
    for other in (by_module, by_callable, automatic):
        torch.testing.assert_close(other.attributions, by_name.attributions, rtol=0, atol=1e-14)


def test_clip_keeps_the_path_in_range_and_completeness_uses_the_true_displacement():
    model = make_mlp(seed=5)
    x = _randn(4, 6, seed=15).clamp(-0.9, 0.9)
    references = 3.0 * _randn(4, 2, 6, seed=16)  # mostly outside the range: the path runs into the bounds
    result = IG2(model, representation="1").attribute(x, references, target=0, steps=200, step_size=0.02,
                                                      clip=(-1.0, 1.0), return_path=True)
    assert float(result.path.abs().max()) <= 1.0
    assert bool((result.counterfactuals.abs() == 1.0).any())
    assert float(result.completeness_residual.abs().max()) < 2e-3


def test_float32_model_and_auto_step_size():
    model = make_mlp(seed=6).float()
    x, references = _randn(3, 6, seed=17).float(), _randn(3, 2, 6, seed=18).float()
    result = IG2(model).attribute(x, references, target=2, steps=100)
    assert result.attributions.dtype == torch.float32
    assert float(result.completeness_residual.abs().max()) < 0.02
    assert bool((result.distances[:, :, -1] < 0.2 * result.distances[:, :, 0]).all())


def test_argument_validation():
    model = make_mlp()
    x, references = _randn(2, 6, seed=19), _randn(2, 6, seed=20)
    explainer = IG2(model, representation="1")
    for bad in ({"steps": 0}, {"steps": 2.5}, {"step_size": -1.0}, {"step_size": float("nan")},
                {"clip": (1.0, 0.0)}, {"clip": (0.0,)}, {"eps": 0.0}):
        with pytest.raises(InputError):
            explainer.attribute(x, references, target=0, **bad)
    with pytest.raises(ShapeError):
        explainer.attribute(x, _randn(3, 2, 6, seed=21), target=0)
    with pytest.raises(ShapeError):
        explainer.attribute(x, _randn(2, 5, seed=21), target=0)
    with pytest.raises(InputError):
        explainer.attribute(x, None, target=0)
    with pytest.raises(InputError, match="no submodule"):
        IG2(model, representation="nope")
    with pytest.raises(InputError):
        IG2(model, representation=nn.Linear(2, 2))
    with pytest.raises(InputError):
        IG2Path(steps=-1)

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(6, 6)

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return self.layer(torch.tanh(self.layer(z))).sum(dim=1)

    with pytest.raises(ModelError, match="ran 2 times"):
        IG2(Twice().double(), representation="layer").attribute(x, references, steps=2, step_size=0.1)


# ------------------------------------------------------------------------------------------------ references
def test_select_references_differ_from_the_predicted_class_and_do_not_depend_on_batching():
    data_x = _randn(40, 6, seed=22)
    data_y = torch.arange(40) % 4
    predicted = torch.tensor([0, 1, 2, 3, 0, 1])
    references, chosen = select_references(data_x, data_y, predicted, k=5, seed=7, indices=np.arange(10, 16),
                                           return_indices=True)
    assert references.shape == (6, 5, 6)
    assert bool((data_y[chosen] != predicted[:, None]).all())
    assert all(len(set(row.tolist())) == 5 for row in chosen)
    torch.testing.assert_close(references, data_x[chosen])
    # the draw of sample 13 is the same alone, and scores are argmax-ed like labels
    alone, alone_chosen = select_references(data_x, data_y, torch.nn.functional.one_hot(predicted[3:4], 4).double(),
                                            k=5, seed=7, indices=[13], return_indices=True)
    assert torch.equal(alone_chosen[0], chosen[3])
    other_seed = select_references(data_x, data_y, predicted, k=5, seed=8, indices=np.arange(10, 16),
                                   return_indices=True)[1]
    assert not torch.equal(other_seed, chosen)
    with pytest.raises(InputError):
        select_references(data_x, data_y, predicted, k=31, seed=0)
    with pytest.raises(ShapeError):
        select_references(data_x, data_y[:30], predicted, k=2, seed=0)


# ------------------------------------------------------------------------------------------------ dataset-wise
def _regression_data(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    x = _randn(40, 6, seed=23)
    with torch.no_grad():
        y = model(x) + 0.5 * _randn(40, 3, seed=24)
    return x, y


def test_igc_on_ig2_matches_the_per_sample_attributions_and_its_completeness():
    model = make_mlp()
    x, y = _regression_data(model)
    references = _randn(3, 6, seed=25)
    path = IG2Path(representation="1", steps=40, step_size=0.05)
    result = igcorr.IGC(model).attribute((x, y), baselines=references, path=path, batch_size=16, progress=False)
    # the IGC formula by hand from the per-sample method (one target per call)
    per_sample = torch.stack([IG2(model, representation="1").attribute(x, references, target=k, steps=40,
                                                                        step_size=0.05).attributions
                              for k in range(3)], dim=1)
    centred = (y - y.mean(dim=0)).unsqueeze(2)
    with torch.no_grad():
        prediction_std = model(x).std(dim=0, unbiased=False)
    expected = (per_sample * centred).mean(dim=0) / (y.std(dim=0, unbiased=False) * prediction_std).unsqueeze(1)
    np.testing.assert_allclose(result.maps, expected.numpy(), rtol=1e-9, atol=1e-12)
    # Σ map = r + baseline term, up to the IG2 completeness error (|Cov(residual, y)|/(σ_y σ_ŷ) ≤ max|residual|/σ_ŷ)
    gap = result.map_sums - (result.correlation + result.baseline_term)
    bound = result.diagnostics["completeness_max"] / result.diagnostics["prediction_std"]
    assert bool((np.abs(gap) <= bound + 1e-12).all())
    assert bool((np.abs(result.baseline_term) > 10 * np.abs(gap)).all())  # GradCFs differ per sample
    assert result.metadata["parameters"]["path"] == "ig2"


def test_dataset_references_of_another_class_are_keyed_by_sample():
    model = make_mlp(n_out=3, seed=7)
    x = _randn(30, 6, seed=26)
    labels = torch.arange(30) % 3
    path = IG2Path(representation="1", steps=12, step_size=0.1)
    runs = [igcorr.IGaC(model, score="softmax").attribute((x, labels), baselines=2, path=path, batch_size=size,
                                                          seed=3, progress=False) for size in (7, 30)]
    np.testing.assert_allclose(runs[0].maps, runs[1].maps, rtol=0, atol=1e-13)
    assert runs[0].metadata["baselines"]["kind"] == "ig2_references"
    moments = igcorr.IGMoments(model, score="softmax").attribute((x, labels), baselines=2, path="ig2", seed=3,
                                                                 progress=False)
    assert moments.maps.shape == (3, 6)
    # the drawn references never share the predicted class
    spec = OtherClassReferences(2)
    from igcorr.data import DataSource

    spec.prepare((6,), DataSource((x, labels)), 3)
    with torch.no_grad():
        predicted = model(x).argmax(dim=1)
    drawn = spec.for_samples(np.arange(30), x, predicted)
    matches = (drawn.unsqueeze(2) == x.unsqueeze(0).unsqueeze(0)).all(dim=3)  # (30, 2, 30) which sample was drawn
    assert bool((labels[matches.float().argmax(dim=2)] != predicted[:, None]).all())


def test_ig2_path_argument_errors():
    model = make_mlp()
    x, y = _regression_data(model)
    with pytest.raises(InputError, match="needs references"):
        igcorr.IGC(model).attribute((x, y), path="ig2", progress=False)
    with pytest.raises(InputError, match="IG2Path"):
        igcorr.IGC(model).attribute((x, y), baselines=2, path="ig2", tolerance=1e-3, progress=False)
    with pytest.raises(InputError, match="path must be"):
        igcorr.IGC(model).attribute((x, y), baselines=2, path="curved", progress=False)
