"""The dataset-wise family: IGaC, IG moments, naive correlation, naive t-test and BSC, and their reducers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch.utils.data import DataLoader, TensorDataset

import igcorr
from igcorr.errors import ConstantTargetError, InputError
from igcorr.reducers import (CorrelationReducer, MomentsReducer, PearsonReducer, SampleBatch, TTestReducer)

SHARED = igcorr.baselines.FromData(4, shared=True)


def quiet(attribution, data, **kwargs):
    kwargs.setdefault("progress", False)
    return attribution.attribute(data, **kwargs)


@pytest.fixture
def inputs_and_targets():
    """Correlated inputs (N, 2, 3) and three continuous targets."""
    generator = torch.Generator().manual_seed(10)
    x = torch.randn(80, 2, 3, dtype=torch.float64, generator=generator)
    flat = x.reshape(80, 6)
    y = torch.stack([flat[:, 0] + 0.5 * flat[:, 3], flat[:, 1] * flat[:, 2], -flat[:, 5]], dim=1)
    y = y + 0.3 * torch.randn(80, 3, dtype=torch.float64, generator=generator)
    return x, y


def flat_model(model):
    return lambda x: model(x.reshape(len(x), -1))


# ---------------------------------------------------------------------------------------------------- IGaC


def test_igac_sums_to_one_with_shared_baselines(mlp, regression_data):
    x, y = regression_data
    result = quiet(igcorr.IGaC(mlp), (x, y), baselines=SHARED, n_steps=256)
    assert result.method == "igac"
    np.testing.assert_allclose(result.correlation, 1.0, atol=1e-12)
    np.testing.assert_allclose(result.baseline_term, 0.0, atol=1e-12)
    np.testing.assert_allclose(result.map_sums, 1.0, atol=1e-4)
    # it is IGC against the predictions: IGC with y = f(x) gives the same map up to the scale σ_y = σ_ŷ
    with torch.no_grad():
        predictions = mlp(x)
    igc = quiet(igcorr.IGC(mlp), (x, predictions), baselines=SHARED, n_steps=256)
    np.testing.assert_allclose(result.maps, igc.maps, atol=1e-12)


def test_igac_ignores_target_values(mlp, regression_data):
    x, y = regression_data
    with_targets = quiet(igcorr.IGaC(mlp), (x, y), baselines=2, n_steps=32, method="gausslegendre")
    constant = quiet(igcorr.IGaC(mlp), (x, torch.zeros_like(y)), baselines=2, n_steps=32, method="gausslegendre")
    np.testing.assert_array_equal(with_targets.maps, constant.maps)
    assert np.all(np.abs(with_targets.baseline_term) > 1e-3)  # per-sample draws: not exactly 1
    np.testing.assert_allclose(with_targets.map_sums, 1.0 + with_targets.baseline_term, atol=1e-6)


# ---------------------------------------------------------------------------------------------------- IG moments


def test_ig_moments_match_per_sample_ig(mlp, regression_data):
    x, y = regression_data
    stack = torch.randn(2, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    result = quiet(igcorr.IGMoments(mlp), (x, y), baselines=stack, n_steps=24, outputs=[0, 2])
    ig = igcorr.IntegratedGradients(mlp)
    per_sample = np.stack([ig.attribute(x, baselines=igcorr.baselines.Shared(stack), target=k, n_steps=24).numpy()
                           for k in (0, 2)], axis=1)  # (N, K, D)
    assert result.maps.shape == result.extra_maps["std"].shape == (2, 6)
    np.testing.assert_allclose(result.maps, per_sample.mean(axis=0), rtol=0, atol=1e-13)
    np.testing.assert_allclose(result.extra_maps["std"], per_sample.std(axis=0, ddof=0), rtol=0, atol=1e-13)
    np.testing.assert_allclose(result.extra_maps["std"] ** 2, per_sample.var(axis=0), rtol=0, atol=1e-13)
    np.testing.assert_allclose(result.diagnostics["map_sum"],
                               result.diagnostics["prediction_mean"] - result.diagnostics["baseline_prediction_mean"],
                               atol=1e-3)
    assert result.ig_completeness["max"] < 1e-3


# ---------------------------------------------------------------------------------------------------- naive correlation


def test_naive_correlation_matches_numpy(inputs_and_targets):
    x, y = inputs_and_targets
    flat, targets = x.reshape(80, 6).numpy(), y.numpy()
    expected = np.corrcoef(flat.T, targets.T)[6:, :6]  # (K, D)
    without_model = quiet(igcorr.NaiveCorrelation(), (x, y))
    assert without_model.maps.shape == (3, 2, 3) and without_model.method == "naive_correlation"
    np.testing.assert_allclose(without_model.maps.reshape(3, 6), expected, rtol=0, atol=1e-13)
    p_values = np.array([[stats.pearsonr(flat[:, i], targets[:, k])[1] for i in range(6)] for k in range(3)])
    np.testing.assert_allclose(without_model.extra_maps["p_value"].reshape(3, 6), p_values, rtol=1e-9, atol=1e-14)
    model = flat_model(torch.nn.Linear(6, 3).double())
    with_model = quiet(igcorr.NaiveCorrelation(model), (x, y), outputs=[2, 0])
    np.testing.assert_allclose(with_model.maps.reshape(2, 6), expected[[2, 0]], rtol=0, atol=1e-13)
    np.testing.assert_allclose(without_model.diagnostics["target_std"], targets.std(axis=0), atol=1e-13)


def test_naive_correlation_labels_integer_inputs_and_constant_components():
    generator = torch.Generator().manual_seed(12)
    x = torch.randint(0, 5, (50, 4), generator=generator)
    x[:, 3] = 2  # constant component
    labels = torch.arange(50) % 3
    with pytest.warns(UserWarning, match="1 of 4 input components are constant"):
        result = quiet(igcorr.NaiveCorrelation(), (x, labels))
    one_hot = torch.nn.functional.one_hot(labels, 3).double().numpy()
    expected = np.array([[np.corrcoef(x[:, i].double().numpy(), one_hot[:, k])[0, 1] for i in range(3)]
                         for k in range(3)])
    np.testing.assert_allclose(result.maps[:, :3], expected, atol=1e-13)
    assert np.all(result.maps[:, 3] == 0) and np.all(result.extra_maps["p_value"][:, 3] == 1)
    np.testing.assert_array_equal(result.diagnostics["n_constant_inputs"], [1, 1, 1])


def test_naive_correlation_errors(inputs_and_targets):
    x, y = inputs_and_targets
    constant = y.clone()
    constant[:, 1] = 4.0
    with pytest.raises(ConstantTargetError, match=r"\[1\]"):
        quiet(igcorr.NaiveCorrelation(), (x, constant))
    with pytest.raises(InputError, match="score needs a model"):
        igcorr.NaiveCorrelation(None, score="softmax")
    labels = torch.arange(80) % 3
    with pytest.raises(InputError, match="number of classes"):
        quiet(igcorr.NaiveCorrelation(), DataLoader(TensorDataset(x, labels), batch_size=8))


# ---------------------------------------------------------------------------------------------------- naive t-test


def scipy_t(flat, target, low, high, equal_var=True):
    return stats.ttest_ind(flat[target >= high], flat[target <= low], equal_var=equal_var)


def test_naive_ttest_default_thresholds_match_scipy(inputs_and_targets):
    x, y = inputs_and_targets
    result = quiet(igcorr.NaiveTTest(), (x, y))
    flat, targets = x.reshape(80, 6).numpy(), y.numpy()
    normal = stats.norm()
    for k in range(3):
        mean, std = targets[:, k].mean(), targets[:, k].std()
        low, high = mean + normal.ppf(0.1) * std, mean + normal.ppf(0.9) * std
        assert result.diagnostics["threshold_low"][k] == pytest.approx(low, abs=1e-12)
        assert result.diagnostics["threshold_high"][k] == pytest.approx(high, abs=1e-12)
        assert result.diagnostics["n_low"][k] == np.sum(targets[:, k] <= low)
        assert result.diagnostics["n_high"][k] == np.sum(targets[:, k] >= high)
        expected = scipy_t(flat, targets[:, k], low, high)
        np.testing.assert_allclose(result.maps[k].reshape(-1), expected.statistic, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(result.extra_maps["p_value"][k].reshape(-1), expected.pvalue, rtol=1e-9, atol=1e-14)
    assert result.metadata["parameters"]["thresholds"]["rule"] == "default"
    assert result.metadata["parameters"]["test"] == "student"


def test_naive_ttest_explicit_thresholds_and_welch(inputs_and_targets):
    x, y = inputs_and_targets
    flat, targets = x.reshape(80, 6).numpy(), y.numpy()
    lows, highs = [-0.5, 0.0, -0.2], [0.5, 0.3, 0.1]
    for equal_var in (True, False):
        result = quiet(igcorr.NaiveTTest(), (x, y), thresholds=(lows, highs), equal_var=equal_var)
        for k in range(3):
            expected = scipy_t(flat, targets[:, k], lows[k], highs[k], equal_var)
            np.testing.assert_allclose(result.maps[k].reshape(-1), expected.statistic, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(result.extra_maps["p_value"][k].reshape(-1), expected.pvalue, rtol=1e-9,
                                       atol=1e-14)
            if hasattr(expected, "df"):
                np.testing.assert_allclose(result.extra_maps["df"][k].reshape(-1), expected.df, rtol=1e-10)
    scalar = quiet(igcorr.NaiveTTest(), (x, y), thresholds=(0.0, 0.0), outputs=1)
    expected = scipy_t(flat, targets[:, 1], 0.0, 0.0)
    np.testing.assert_allclose(scalar.maps[0].reshape(-1), expected.statistic, rtol=1e-10)
    # a stream needs no pre-pass with explicit thresholds
    loader = DataLoader(TensorDataset(x, y), batch_size=9)
    streamed = quiet(igcorr.NaiveTTest(), loader, thresholds=(lows, highs))
    np.testing.assert_allclose(streamed.maps, quiet(igcorr.NaiveTTest(), (x, y), thresholds=(lows, highs)).maps,
                               atol=1e-12)


def test_naive_ttest_one_hot_targets(cnn):
    generator = torch.Generator().manual_seed(13)
    x = torch.rand(60, 1, 8, 8, dtype=torch.float64, generator=generator)
    labels = torch.randint(0, 4, (60,), generator=generator)
    x[labels == 2, 0, :3, :3] += 0.5  # class 2 is brighter in the corner
    result = quiet(igcorr.NaiveTTest(cnn), (x, labels))
    np.testing.assert_array_equal(result.diagnostics["threshold_low"], 0.5)
    np.testing.assert_array_equal(result.diagnostics["n_high"], np.bincount(labels.numpy(), minlength=4))
    flat = x.reshape(60, -1).numpy()
    for k in range(4):
        expected = stats.ttest_ind(flat[labels.numpy() == k], flat[labels.numpy() != k])
        np.testing.assert_allclose(result.maps[k].reshape(-1), expected.statistic, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(result.extra_maps["p_value"][k].reshape(-1), expected.pvalue, rtol=1e-9,
                                   atol=1e-14)
    assert result.maps[2, 0, :3, :3].min() > 3
    one_hot = torch.nn.functional.one_hot(labels, 4).double()
    for data in ((x, one_hot), DataLoader(TensorDataset(x, labels), batch_size=16)):
        np.testing.assert_allclose(quiet(igcorr.NaiveTTest(cnn), data).maps, result.maps, atol=1e-12)


def test_naive_ttest_errors(inputs_and_targets):
    x, y = inputs_and_targets
    with pytest.raises(InputError, match="pair"):
        quiet(igcorr.NaiveTTest(), DataLoader(TensorDataset(x, y), batch_size=8))
    with pytest.raises(InputError, match=r"output 0: 0 low"):
        quiet(igcorr.NaiveTTest(), (x, y), thresholds=(-100.0, 0.0))
    with pytest.raises(InputError, match="must not exceed"):
        quiet(igcorr.NaiveTTest(), (x, y), thresholds=(1.0, 0.0))
    with pytest.raises(InputError, match="one per attributed output"):
        quiet(igcorr.NaiveTTest(), (x, y), thresholds=([0.0, 0.1], [1.0, 1.1]))
    with pytest.raises(InputError, match="quantiles"):
        quiet(igcorr.NaiveTTest(), (x, y), quantiles=(0.9, 0.1))
    with pytest.raises(InputError, match="pair"):
        quiet(igcorr.NaiveTTest(), (x, y), thresholds=0.5)


# ---------------------------------------------------------------------------------------------------- BSC


def test_bsc_sums_to_pearson_r_with_shared_baselines(mlp, regression_data):
    x, y = regression_data
    result = quiet(igcorr.BSC(mlp), (x, y), baselines=SHARED, n_permutations=3)
    with torch.no_grad():
        predictions = mlp(x).numpy()
    pearson = [np.corrcoef(predictions[:, k], y[:, k].numpy())[0, 1] for k in range(3)]
    assert result.method == "bsc" and result.maps.shape == (3, 6)
    np.testing.assert_allclose(result.correlation, pearson, atol=1e-12)
    np.testing.assert_allclose(result.baseline_term, 0.0, atol=1e-12)
    np.testing.assert_allclose(result.map_sums, pearson, rtol=0, atol=1e-10)
    assert result.ig_completeness["max"] < 1e-12


def test_bsc_per_sample_draws_and_linear_model():
    generator = torch.Generator().manual_seed(14)
    x = torch.randn(40, 5, dtype=torch.float64, generator=generator)
    model = torch.nn.Linear(5, 1).double()
    with torch.no_grad():
        y = model(x) + 0.2 * torch.randn(40, 1, dtype=torch.float64, generator=generator)
    bsc = quiet(igcorr.BSC(model), (x, y), baselines=3, n_permutations=1, seed=4)
    np.testing.assert_allclose(bsc.map_sums, bsc.correlation + bsc.baseline_term, rtol=0, atol=1e-10)
    # for a linear model Baseline Shapley equals IG, so BSC equals IGC
    igc = quiet(igcorr.IGC(model), (x, y), baselines=3, n_steps=2, seed=4)
    np.testing.assert_allclose(bsc.maps, igc.maps, atol=1e-12)


# ---------------------------------------------------------------------------------------------------- invariances


def family_runs(cnn, x, labels):
    yield "igac", lambda b: quiet(igcorr.IGaC(cnn, score="softmax"), (x, labels), baselines=2, n_steps=4,
                                  batch_size=b, seed=1)
    yield "moments", lambda b: quiet(igcorr.IGMoments(cnn), (x, labels), baselines=2, n_steps=4, batch_size=b,
                                     outputs=[0, 3], seed=1)
    yield "naive_correlation", lambda b: quiet(igcorr.NaiveCorrelation(cnn), (x, labels), batch_size=b)
    yield "naive_ttest", lambda b: quiet(igcorr.NaiveTTest(cnn), (x, labels), batch_size=b)
    yield "bsc", lambda b: quiet(igcorr.BSC(cnn, score="softmax"), (x, labels), baselines=2, n_permutations=1,
                                 batch_size=b, seed=1)


def test_batch_size_invariance(cnn):
    generator = torch.Generator().manual_seed(15)
    x = torch.randn(21, 1, 8, 8, dtype=torch.float64, generator=generator)
    labels = torch.arange(21) % 4
    for name, run in family_runs(cnn, x, labels):
        results = [run(b) for b in (1, 7, 21)]
        for other in results[:2]:
            np.testing.assert_allclose(other.maps, results[2].maps, rtol=0, atol=1e-12, err_msg=name)
            for key, value in results[2].extra_maps.items():
                np.testing.assert_allclose(other.extra_maps[key], value, rtol=1e-12, atol=1e-12, err_msg=name)


def synthetic_batches(n=30, k=2, shape=(2, 3), seed=16):
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(n, *shape, dtype=torch.float64, generator=generator)
    targets = inputs.reshape(n, -1)[:, :k] + torch.randn(n, k, dtype=torch.float64, generator=generator)
    attributions = torch.randn(n, k, *shape, dtype=torch.float64, generator=generator)
    baseline_predictions = torch.randn(n, k, dtype=torch.float64, generator=generator)
    predictions = attributions.flatten(2).sum(dim=2) + baseline_predictions + 1e-3 * torch.randn(
        n, k, dtype=torch.float64, generator=generator)

    def batch(part):
        return SampleBatch(indices=torch.arange(n)[part], inputs=inputs[part], targets=targets[part],
                           attributions=attributions[part], predictions=predictions[part],
                           baseline_predictions=baseline_predictions[part])

    return batch


REDUCERS = {
    "moments": lambda: MomentsReducer([0, 1]),
    "pearson": lambda: PearsonReducer([0, 1]),
    "ttest": lambda: TTestReducer([0, 1], [-0.3, 0.0], [0.3, 0.5]),
    "welch": lambda: TTestReducer([0, 1], -0.2, 0.2, equal_var=False),
    "correlation": lambda: CorrelationReducer([0, 1], against="targets"),
    "autocorrelation": lambda: CorrelationReducer([0, 1], against="predictions"),
}


def assert_same(first, second):
    a, b = first.compute(), second.compute()
    np.testing.assert_allclose(a.maps.numpy(), b.maps.numpy(), rtol=1e-12, atol=1e-13)
    assert a.extra_maps.keys() == b.extra_maps.keys() and a.diagnostics.keys() == b.diagnostics.keys()
    for key in a.extra_maps:
        np.testing.assert_allclose(a.extra_maps[key].numpy(), b.extra_maps[key].numpy(), rtol=1e-12, atol=1e-13)
    for key in a.diagnostics:
        np.testing.assert_allclose(a.diagnostics[key].numpy(), b.diagnostics[key].numpy(), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("name", list(REDUCERS))
def test_merge_of_halves_equals_one_pass(name):
    batch = synthetic_batches()
    whole = REDUCERS[name]()
    whole.update(batch(slice(0, 30)))
    first, second = REDUCERS[name](), REDUCERS[name]()
    for begin in range(0, 13, 4):
        first.update(batch(slice(begin, min(begin + 4, 13))))
    second.update(batch(slice(13, 30)))
    first.merge(second)
    assert_same(first, whole)
    empty = REDUCERS[name]()
    empty.merge(whole)
    assert_same(empty, whole)


@pytest.mark.parametrize("name", list(REDUCERS))
def test_state_dict_round_trip(name):
    batch = synthetic_batches()
    reducer = REDUCERS[name]()
    reducer.update(batch(slice(0, 17)))
    state = {key: value.clone() for key, value in reducer.state_dict().items()}
    assert all(isinstance(value, torch.Tensor) for value in state.values())
    restored = REDUCERS[name]()
    restored.load_state_dict(state)
    assert_same(restored, reducer)
    for part in (reducer, restored):
        part.update(batch(slice(17, 30)))
    assert_same(restored, reducer)


def test_ttest_reducers_with_other_thresholds_do_not_merge():
    with pytest.raises(InputError, match="thresholds"):
        TTestReducer([0], 0.0, 1.0).merge(TTestReducer([0], 0.0, 2.0))


def test_degenerate_components_in_the_ttest():
    x = torch.zeros(6, 2, dtype=torch.float64)
    x[:, 1] = torch.tensor([1.0, 1.0, 1.0, 2.0, 2.0, 2.0])  # constant within each group, different between
    y = torch.tensor([[0.0], [0.0], [0.0], [1.0], [1.0], [1.0]], dtype=torch.float64)
    reducer = TTestReducer([0], 0.5, 0.5)
    reducer.update(SampleBatch(indices=torch.arange(6), inputs=x, targets=y))
    computed = reducer.compute()
    assert computed.maps[0, 0] == 0 and computed.extra_maps["p_value"][0, 0] == 1
    assert computed.maps[0, 1] == np.inf and computed.extra_maps["p_value"][0, 1] == 0
    assert computed.diagnostics["n_constant_inputs"][0] == 1
