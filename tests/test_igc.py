"""IGC: completeness decomposition, the linear oracle, axioms, invariances, files and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import igcorr
from igcorr.errors import ConstantTargetError, InputError, NonFiniteError, ResultFileError, ShapeError


def run(model, data, score=None, **kwargs):
    kwargs.setdefault("progress", False)
    return igcorr.IGC(model, score=score).attribute(data, **kwargs)


def test_shared_baselines_sum_to_pearson_r(mlp, regression_data):
    x, y = regression_data
    result = run(mlp, (x, y), baselines=igcorr.baselines.FromData(5, shared=True), n_steps=512)
    with torch.no_grad():
        predictions = mlp(x).numpy()
    pearson = [np.corrcoef(predictions[:, k], y[:, k].numpy())[0, 1] for k in range(3)]
    np.testing.assert_allclose(result.correlation, pearson, atol=1e-12)
    np.testing.assert_allclose(result.baseline_term, 0.0, atol=1e-12)
    np.testing.assert_allclose(result.map_sums, pearson, atol=1e-6)
    assert result.ig_completeness["max"] < 1e-4


def test_per_sample_baselines_sum_to_r_plus_baseline_term(mlp, regression_data):
    x, y = regression_data
    result = run(mlp, (x, y), baselines=4, n_steps=48, method="gausslegendre", seed=3)
    assert np.all(np.abs(result.baseline_term) > 1e-6)
    np.testing.assert_allclose(result.map_sums, result.correlation + result.baseline_term, atol=1e-6)


def test_linear_oracle():
    generator = torch.Generator().manual_seed(0)
    mixing = torch.randn(5, 5, dtype=torch.float64, generator=generator)
    x = torch.randn(20_000, 5, dtype=torch.float64, generator=generator) @ mixing
    w = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0], dtype=torch.float64)
    model = nn.Linear(5, 1, bias=True).double()
    with torch.no_grad():
        model.weight.copy_(w[None])
        model.bias.fill_(0.7)
        y = model(x)
    result = run(model, (x, y), n_steps=2)
    sample_cov = torch.cov(x.T, correction=0)
    exact = (w * (sample_cov @ w) / (w @ sample_cov @ w)).numpy()
    np.testing.assert_allclose(result.maps[0], exact, atol=1e-10)
    true_cov = mixing.T @ mixing
    oracle = (w * (true_cov @ w) / (w @ true_cov @ w)).numpy()
    np.testing.assert_allclose(result.maps[0], oracle, atol=0.05)
    assert result.maps[0, 3] == 0.0
    assert result.map_sums[0] == pytest.approx(1.0, abs=1e-12)


def test_batch_size_invariance_with_per_sample_draws(cnn):
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(23, 1, 8, 8, dtype=torch.float64, generator=generator)
    y = torch.randint(0, 4, (23,), generator=generator)
    maps = [run(cnn, (x, y), baselines=3, n_steps=6, batch_size=b, score="softmax").maps for b in (1, 7, 23)]
    np.testing.assert_allclose(maps[0], maps[2], rtol=0, atol=1e-12)
    np.testing.assert_allclose(maps[1], maps[2], rtol=0, atol=1e-12)


def test_data_forms_agree(mlp, regression_data):
    x, y = regression_data
    dataset = TensorDataset(x, y)
    reference = run(mlp, (x, y), baselines=3, n_steps=8)
    for data in (dataset, DataLoader(dataset, batch_size=11), (x.numpy(), y.numpy())):
        np.testing.assert_allclose(run(mlp, data, baselines=3, n_steps=8).maps, reference.maps, atol=1e-12)


def test_class_labels_are_one_hot_encoded(cnn):
    x = torch.randn(30, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    labels = torch.arange(30) % 4
    one_hot = nn.functional.one_hot(labels, 4).double()
    by_label = run(cnn, (x, labels), n_steps=4, outputs=[1, 3], score="log_softmax")
    by_one_hot = run(cnn, (x, one_hot), n_steps=4, outputs=[1, 3], score="log_softmax")
    by_selected_columns = run(cnn, (x, one_hot[:, [1, 3]]), n_steps=4, outputs=[1, 3], score="log_softmax")
    np.testing.assert_allclose(by_label.maps, by_one_hot.maps, atol=1e-14)
    np.testing.assert_allclose(by_label.maps, by_selected_columns.maps, atol=1e-14)
    assert by_label.outputs == [1, 3] and by_label.maps.shape == (2, 1, 8, 8)


def test_dummy_and_symmetry_axioms():
    model = lambda x: torch.tanh(x[:, :1] + x[:, 1:2]) + 0.0 * x[:, 2:3]
    generator = torch.Generator().manual_seed(6)
    half = torch.randn(200, 3, dtype=torch.float64, generator=generator)
    x = torch.cat([half, half[:, [1, 0, 2]]])  # exchangeable first two features
    noise = 0.1 * torch.randn(200, 1, dtype=torch.float64, generator=generator)
    y = model(x) + torch.cat([noise, noise])
    result = run(model, (x, y), n_steps=32)
    assert result.maps[0, 2] == 0.0
    assert result.maps[0, 0] == pytest.approx(result.maps[0, 1], abs=1e-12)


def test_linearity_in_the_model_up_to_the_prediction_scale(mlp, regression_data):
    x, y = regression_data
    other = nn.Sequential(nn.Linear(6, 4), nn.Softplus(), nn.Linear(4, 3)).double()
    combined = lambda inputs: 2.0 * mlp(inputs) - 0.5 * other(inputs)
    scaled = lambda model: (lambda r: r.maps * r.diagnostics["prediction_std"][:, None])(
        run(model, (x, y), n_steps=16))
    np.testing.assert_allclose(scaled(combined), 2.0 * scaled(mlp) - 0.5 * scaled(other), atol=1e-12)


def test_function_as_model_float32_data():
    x = torch.randn(50, 4, 4)
    model = lambda inputs: inputs[:, :2, :2].mean(dim=(1, 2)) ** 2
    y = model(x) + 0.01 * torch.randn(50)
    result = run(model, (x, y), baselines=2, n_steps=16)
    assert result.maps.shape == (1, 4, 4) and result.maps.dtype == np.float64
    assert np.all(result.maps[0, 2:, :] == 0) and result.maps[0, :2, :2].sum() > 0.5


def test_seed_controls_dataset_draws(mlp, regression_data):
    x, y = regression_data
    first, again, other = (run(mlp, (x, y), baselines=2, n_steps=8, seed=s).maps for s in (1, 1, 2))
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-6


def test_save_load_round_trip(tmp_path, mlp, regression_data):
    result = run(mlp, regression_data, baselines=2, n_steps=8)
    path = result.save(tmp_path / "run")
    assert path.suffix == ".npz"
    loaded = igcorr.load(path)
    np.testing.assert_array_equal(loaded.maps, result.maps)
    np.testing.assert_array_equal(loaded.correlation, result.correlation)
    assert loaded.metadata == result.metadata
    assert loaded.metadata["baselines"] == {"kind": "dataset", "count": 2, "shared": False}
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ResultFileError):
        igcorr.load(truncated)
    with pytest.raises(ResultFileError):
        igcorr.load(tmp_path / "missing.npz")


def test_plot_returns_a_figure(mlp, regression_data):
    figure = run(mlp, regression_data, n_steps=4).plot()
    assert len(figure.axes) >= 3


def test_errors(mlp, regression_data):
    x, y = regression_data
    with pytest.raises(ShapeError, match="60 samples but Y has 59"):
        run(mlp, (x, y[:-1]))
    with pytest.raises(ShapeError, match="columns"):
        run(mlp, (x, y[:, :2]))
    bad = x.clone()
    bad[17, 0] = float("inf")
    with pytest.raises(NonFiniteError, match="sample 17"):
        run(mlp, (bad, y), batch_size=8)
    constant = y.clone()
    constant[:, 1] = 3.0
    with pytest.raises(ConstantTargetError, match=r"\[1\]"):
        run(mlp, (x, constant))
    with pytest.raises(InputError, match="out of range"):
        run(mlp, (x, y), outputs=[0, 3])
    with pytest.raises(InputError, match="empty"):
        run(mlp, (x[:0], y[:0]))
    with pytest.raises(InputError, match="dataset baselines were requested"):
        run(mlp, (x, y), baselines=igcorr.baselines.FromData(100, shared=True))
    with pytest.raises(ShapeError, match="baselines of shape"):
        run(mlp, (x, y), baselines=torch.zeros(5))
