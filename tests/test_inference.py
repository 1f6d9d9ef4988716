"""Single-pass inference: permutation tests and Poisson-bootstrap intervals streamed next to the IGC map."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats

from igcorr.errors import ConstantTargetError, InputError, NonFiniteError, ShapeError
from igcorr.reducers.base import Computed, SampleBatch
from igcorr.reducers.bootstrap import BootstrapReducer, poisson_weights
from igcorr.reducers.correlation import CorrelationReducer
from igcorr.reducers.permutation import PermutationReducer
from igcorr.seeding import keyed_permutation

X_SHAPE = (2, 3)  # six input components, exercised as a 2-D input shape


@pytest.fixture(autouse=True)
def single_thread():
    """Run these many tiny tensor operations on one thread: on a busy machine, waking torch's worker threads
    costs far more than the operations themselves."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------------------------------------
# data and feeding helpers
# ----------------------------------------------------------------------------------------------------------
def make_data(n: int = 40, n_outputs: int = 2, x_shape: tuple[int, ...] = X_SHAPE, seed: int = 0,
              signal: float = 1.0) -> dict[str, torch.Tensor]:
    """Attributions, predictions and targets of a linear model f_k(x) = Σ_i w_{k,i} x_i (zero baseline)."""
    generator = torch.Generator().manual_seed(seed)
    n_in = int(np.prod(x_shape))
    x = torch.randn(n, n_in, dtype=torch.float64, generator=generator)
    weights = torch.randn(n_outputs, n_in, dtype=torch.float64, generator=generator)
    attributions = x[:, None, :] * weights[None]  # IG of a linear model with a zero baseline
    predictions = attributions.sum(dim=2)
    noise = torch.randn(n, n_outputs, dtype=torch.float64, generator=generator)
    targets = signal * predictions + noise
    return {"x": x.reshape(n, *x_shape), "attributions": attributions.reshape(n, n_outputs, *x_shape),
            "predictions": predictions, "targets": targets}


def batch_of(data: dict[str, torch.Tensor], indices: torch.Tensor) -> SampleBatch:
    return SampleBatch(indices=indices, inputs=data["x"][indices], targets=data["targets"][indices],
                       attributions=data["attributions"][indices], predictions=data["predictions"][indices],
                       baseline_predictions=torch.zeros_like(data["predictions"][indices]))


def feed(reducer, data: dict[str, torch.Tensor], batch_size: int, order: torch.Tensor | None = None):
    order = torch.arange(len(data["targets"])) if order is None else order
    for start in range(0, len(order), batch_size):
        reducer.update(batch_of(data, order[start:start + batch_size]))
    return reducer


def region_masks(x_shape: tuple[int, ...] = X_SHAPE) -> torch.Tensor:
    """Three overlapping regions over the flattened components."""
    n_in = int(np.prod(x_shape))
    masks = torch.zeros(3, n_in, dtype=torch.bool)
    masks[0, :2] = True
    masks[1, 2:] = True
    masks[2, ::2] = True
    return masks


def permutation_result(computed: Computed) -> dict[str, np.ndarray]:
    """A permutation reducer's result as flat numpy arrays: observed, p_value, p_fwe, q_value (per component),
    region_observed, region_p_value, region_p_fwe, region_q_value (per region), n_permutations, n_samples."""
    result = {}
    if computed.maps is not None:
        result["observed"] = computed.maps.numpy()
        result.update({name: values.numpy() for name, values in computed.extra_maps.items()})
    result.update({f"region_{name}": values.numpy() for name, values in computed.regions.items()})
    result.update({name: values.numpy() for name, values in computed.diagnostics.items()})
    return result


def bootstrap_result(computed: Computed) -> dict[str, np.ndarray]:
    """A bootstrap reducer's result as flat numpy arrays: map_estimate, map_low, map_high, map_se (per component),
    region_estimate, ... (per region), correlation_estimate, ... (per output), level, n_replicates."""
    result = {}
    if computed.maps is not None:
        result["map_estimate"] = computed.maps.numpy()
        result.update({f"map_{part}": values.numpy() for part, values in computed.extra_maps.items()})
    result.update({f"region_{part}": values.numpy() for part, values in computed.regions.items()})
    for name, values in computed.diagnostics.items():
        result["correlation_estimate" if name == "correlation" else name] = values.numpy()
    return result


def assert_results_close(first: dict, second: dict, rtol: float = 1e-10, atol: float = 1e-12) -> None:
    assert first.keys() == second.keys()
    for key in first:
        np.testing.assert_allclose(first[key], second[key], rtol=rtol, atol=atol, err_msg=key)


def permutation_reducer(data, n_permutations=50, seed=7, **kwargs) -> PermutationReducer:
    outputs = list(range(data["targets"].shape[1]))
    return PermutationReducer(outputs, data["targets"], n_permutations, seed, **kwargs)


def bootstrap_reducer(data, n_replicates=40, seed=3, **kwargs) -> BootstrapReducer:
    return BootstrapReducer(list(range(data["targets"].shape[1])), n_replicates, seed, **kwargs)


# ----------------------------------------------------------------------------------------------------------
# permutation reducer: exactness
# ----------------------------------------------------------------------------------------------------------
def test_observed_statistic_is_the_unscaled_igc_numerator():
    data = make_data()
    igc = feed(CorrelationReducer([0, 1]), data, 9)
    permutation = feed(permutation_reducer(data), data, 9)
    observed, null = permutation.statistics()
    numerator = igc.attribution_target.covariance().reshape(2, *X_SHAPE).numpy()
    np.testing.assert_allclose(observed, numerator, rtol=1e-12, atol=1e-15)
    assert null.shape == (50, 2, *X_SHAPE)
    # dividing by σ_y σ_ŷ gives the IGC map itself
    computed = igc.compute()
    scale = (computed.diagnostics["target_std"] * computed.diagnostics["prediction_std"]).numpy()
    result = permutation_result(permutation.compute())
    np.testing.assert_allclose(result["observed"] / scale[:, None, None], computed.maps.reshape(2, *X_SHAPE),
                               rtol=1e-12, atol=1e-15)


def test_permuted_statistics_match_explicitly_permuted_targets():
    data = make_data(n=13)
    reducer = feed(permutation_reducer(data, n_permutations=25, seed=5, regions=region_masks()), data, 4)
    _, null = reducer.statistics()
    _, region_null = reducer.statistics("regions")
    attributions = data["attributions"].flatten(start_dim=2)
    centred = data["targets"] - data["targets"].mean(dim=0)
    masks = region_masks().to(torch.float64)
    for p in range(25):
        image = torch.from_numpy(keyed_permutation(5, p, np.arange(13), 13))
        expected = (attributions * centred[image][:, :, None]).sum(dim=0) / 13  # (K, D)
        np.testing.assert_allclose(null[p].reshape(2, -1), expected.numpy(), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(region_null[p], (expected @ masks.T).numpy(), rtol=1e-12, atol=1e-15)


def test_permutation_p_values_follow_their_definition():
    data = make_data(n=30)
    result = permutation_result(feed(permutation_reducer(data, n_permutations=99, regions=region_masks()), data, 30).compute())
    observed, null = feed(permutation_reducer(data, n_permutations=99), data, 30).statistics()
    exceed = (np.abs(null) >= np.abs(observed)).sum(axis=0)
    np.testing.assert_array_equal(result["p_value"], (1 + exceed) / 100)
    # family per output: the maximum over that output's components
    for k in range(2):
        maxima = np.abs(null[:, k]).reshape(99, -1).max(axis=1)
        expected = (1 + (maxima[:, None] >= np.abs(observed[k]).reshape(1, -1)).sum(axis=0)) / 100
        np.testing.assert_array_equal(result["p_fwe"][k].reshape(-1), expected)
    assert np.all(result["p_fwe"] >= result["p_value"])
    assert np.all(result["q_value"] >= result["p_value"])
    shapes = {key: value.shape for key, value in result.items()}
    assert shapes == {"observed": (2, *X_SHAPE), "p_value": (2, *X_SHAPE), "p_fwe": (2, *X_SHAPE),
                      "q_value": (2, *X_SHAPE), "region_observed": (2, 3), "region_p_value": (2, 3),
                      "region_p_fwe": (2, 3), "region_q_value": (2, 3), "n_permutations": (2,),
                      "n_samples": (2,)}  # diagnostics are per output
    assert np.all(result["n_permutations"] == 99) and np.all(result["n_samples"] == 30)


def test_strong_signal_is_detected_and_unrelated_components_are_not():
    generator = torch.Generator().manual_seed(4)
    n, d = 200, 30
    attributions = torch.randn(n, 1, d, dtype=torch.float64, generator=generator)
    targets = attributions[:, :, 0] + 0.5 * torch.randn(n, 1, dtype=torch.float64, generator=generator)
    data = {"x": attributions[:, 0], "attributions": attributions, "predictions": attributions.sum(dim=2),
            "targets": targets}
    result = permutation_result(feed(PermutationReducer([0], targets, 199, seed=1), data, 64).compute())
    assert result["p_fwe"][0, 0] == pytest.approx(1 / 200)
    assert result["q_value"][0, 0] <= 30 / 200  # BH over 30 components of the smallest p-value 1 / (P + 1)
    assert np.all(result["p_fwe"][0, 1:] > 0.05)


# ----------------------------------------------------------------------------------------------------------
# permutation reducer: batching, merging, state
# ----------------------------------------------------------------------------------------------------------
def test_permutation_reducer_is_batch_size_and_order_invariant():
    data = make_data(n=29)
    results = [permutation_result(feed(permutation_reducer(data, regions=region_masks()), data, size).compute())
               for size in (1, 7, 29)]
    shuffled = torch.randperm(29, generator=torch.Generator().manual_seed(0))
    results.append(permutation_result(feed(permutation_reducer(data, regions=region_masks()), data, 5, shuffled).compute()))
    for other in results[1:]:
        assert_results_close(results[0], other)


def test_permutation_reducer_merge_of_halves_equals_one_pass():
    data = make_data(n=31)
    whole = permutation_result(feed(permutation_reducer(data, regions=region_masks()), data, 31).compute())
    for first_half in (torch.arange(0, 15), torch.arange(0, 31, 2)):  # contiguous and interleaved shards
        second_half = torch.tensor([i for i in range(31) if i not in set(first_half.tolist())])
        first = feed(permutation_reducer(data, regions=region_masks()), data, 4, first_half)
        second = feed(permutation_reducer(data, regions=region_masks()), data, 6, second_half)
        first.merge(second)
        assert_results_close(whole, permutation_result(first.compute()))
    # merging into an empty reducer, as the distributed runner does
    merged = permutation_reducer(data, regions=region_masks())
    merged.merge(feed(permutation_reducer(data, regions=region_masks()), data, 8, torch.arange(20)))
    merged.merge(feed(permutation_reducer(data, regions=region_masks()), data, 8, torch.arange(20, 31)))
    assert_results_close(whole, permutation_result(merged.compute()))


def test_permutation_reducer_state_round_trip_and_resumption():
    data = make_data(n=25)
    whole = permutation_result(feed(permutation_reducer(data), data, 25).compute())
    partial = feed(permutation_reducer(data), data, 5, torch.arange(12))
    resumed = permutation_reducer(data)
    resumed.load_state_dict({key: value.clone() for key, value in partial.state_dict().items()})
    feed(resumed, data, 5, torch.arange(12, 25))
    assert_results_close(whole, permutation_result(resumed.compute()))
    empty = permutation_reducer(data)
    empty.load_state_dict(permutation_reducer(data).state_dict())
    assert empty.count == 0
    with pytest.raises(InputError, match="another configuration"):
        permutation_reducer(data, n_permutations=51).load_state_dict(partial.state_dict())
    other = make_data(n=25, seed=9)
    with pytest.raises(InputError, match="other targets"):
        permutation_reducer(other).load_state_dict(partial.state_dict())


def test_regions_only_gives_the_same_region_results_as_full_mode():
    data = make_data(n=40)
    full = permutation_result(feed(permutation_reducer(data, n_permutations=199, regions=region_masks()), data, 7).compute())
    only = permutation_result(feed(permutation_reducer(data, n_permutations=199, regions=region_masks(), regions_only=True),
                       data, 11).compute())
    assert "p_value" not in only and "observed" not in only
    for key in ("region_p_value", "region_p_fwe", "region_q_value"):
        np.testing.assert_array_equal(full[key], only[key], err_msg=key)
    np.testing.assert_allclose(full["region_observed"], only["region_observed"], rtol=1e-12, atol=1e-15)
    # region masks may also be given with the input's shape
    shaped = permutation_result(feed(permutation_reducer(data, n_permutations=199, regions=region_masks().reshape(3, *X_SHAPE),
                                             regions_only=True), data, 40).compute())
    np.testing.assert_array_equal(shaped["region_p_value"], full["region_p_value"])


def test_permutation_statistics_do_not_suffer_from_large_offsets():
    data = make_data(n=50)
    shifted = dict(data, attributions=data["attributions"] + 1e6, targets=data["targets"] + 1e8)
    plain, _ = feed(permutation_reducer(data), data, 7).statistics()
    offset, _ = feed(permutation_reducer(shifted), shifted, 7).statistics()
    np.testing.assert_allclose(offset, plain, rtol=1e-6, atol=1e-6 * np.abs(plain).max())


def test_components_without_variation_get_p_value_one():
    data = make_data(n=30)
    attributions = data["attributions"].clone()
    attributions[:, :, 0, 0] = 0.0
    attributions[:, :, 1, 2] = 0.37  # constant, non-zero: its covariance with the targets is exactly 0
    data = dict(data, attributions=attributions)
    result = permutation_result(feed(permutation_reducer(data), data, 7).compute())
    np.testing.assert_array_equal(result["observed"][:, 0, 0], 0.0)
    np.testing.assert_array_equal(result["observed"][:, 1, 2], 0.0)
    np.testing.assert_array_equal(result["p_value"][:, [0, 1], [0, 2]], 1.0)
    np.testing.assert_array_equal(result["p_fwe"][:, [0, 1], [0, 2]], 1.0)


# ----------------------------------------------------------------------------------------------------------
# permutation reducer: calibration under the null
# ----------------------------------------------------------------------------------------------------------
def null_data(n: int, d: int, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    attributions = torch.randn(n, 1, d, dtype=torch.float64, generator=generator)
    targets = torch.randn(n, 1, dtype=torch.float64, generator=generator)
    return {"x": attributions[:, 0], "attributions": attributions, "predictions": attributions.sum(dim=2),
            "targets": targets}


def test_null_p_values_are_uniform():
    data = null_data(n=60, d=500, seed=11)
    result = permutation_result(feed(PermutationReducer([0], data["targets"], 199, seed=2), data, 16).compute())
    p_values = result["p_value"].reshape(-1)
    assert scipy_stats.kstest(p_values, "uniform").pvalue > 1e-3
    assert 0.03 < np.mean(p_values <= 0.1) < 0.17


def test_family_wise_error_rate_under_the_null_is_controlled():
    alpha, repetitions = 0.1, 200
    any_fwe = any_bh = 0
    for repetition in range(repetitions):
        data = null_data(n=30, d=20, seed=1000 + repetition)
        result = permutation_result(feed(PermutationReducer([0], data["targets"], 99, seed=repetition), data, 30).compute())
        any_fwe += bool((result["p_fwe"] <= alpha).any())
        any_bh += bool((result["q_value"] <= alpha).any())  # under the complete null, FDR = FWER
    standard_error = np.sqrt(alpha * (1 - alpha) / repetitions)
    assert any_fwe / repetitions <= alpha + 3 * standard_error
    assert any_fwe / repetitions >= alpha - 4 * standard_error  # not vacuous: the max-statistic is near-exact
    assert any_bh / repetitions <= alpha + 3 * standard_error


# ----------------------------------------------------------------------------------------------------------
# permutation reducer: validation
# ----------------------------------------------------------------------------------------------------------
def test_permutation_reducer_validation():
    data = make_data(n=10)
    targets = data["targets"]
    with pytest.raises(InputError, match="n_permutations"):
        PermutationReducer([0, 1], targets, 0, seed=0)
    with pytest.raises(InputError, match="seed"):
        PermutationReducer([0, 1], targets, 5, seed=1.5)
    with pytest.raises(ShapeError, match=r"\(N, K\)"):
        PermutationReducer([0], targets, 5, seed=0)
    with pytest.raises(ConstantTargetError, match=r"\[1\]"):
        PermutationReducer([0, 1], torch.stack([targets[:, 0], torch.ones(10)], dim=1), 5, seed=0)
    with pytest.raises(InputError, match="needs regions"):
        PermutationReducer([0, 1], targets, 5, seed=0, regions_only=True)
    with pytest.raises(InputError, match="boolean"):
        PermutationReducer([0, 1], targets, 5, seed=0, regions=region_masks().double())
    with pytest.raises(InputError, match="no component"):
        PermutationReducer([0, 1], targets, 5, seed=0, regions=torch.zeros(2, 6, dtype=torch.bool))
    with pytest.raises(ShapeError, match="region masks"):
        feed(PermutationReducer([0, 1], targets, 5, seed=0, regions=torch.ones(2, 5, dtype=torch.bool)), data, 10)

    reducer = PermutationReducer([0, 1], targets.numpy(), 5, seed=0)  # numpy targets are accepted
    with pytest.raises(InputError, match="attributions"):
        reducer.update(SampleBatch(indices=torch.arange(2), inputs=data["x"][:2], targets=targets[:2]))
    with pytest.raises(InputError, match="differ"):
        reducer.update(SampleBatch(indices=torch.arange(2), inputs=data["x"][:2], targets=targets[:2] + 1,
                                   attributions=data["attributions"][:2]))
    with pytest.raises(InputError, match="10 samples"):
        reducer.update(SampleBatch(indices=torch.tensor([9, 10]), inputs=data["x"][:2], targets=None,
                                   attributions=data["attributions"][:2]))
    broken = dict(data, attributions=data["attributions"].clone())
    broken["attributions"][1, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"samples \[1\]"):
        reducer.update(batch_of(broken, torch.arange(3)))
    reducer.update(batch_of(data, torch.arange(4)))
    with pytest.raises(InputError, match="twice"):
        reducer.update(batch_of(data, torch.tensor([3, 4])))
    with pytest.raises(InputError, match="twice"):
        reducer.update(batch_of(data, torch.tensor([5, 5])))
    with pytest.raises(InputError, match="seen 4 of the 10"):
        reducer.compute()
    overlapping = feed(PermutationReducer([0, 1], targets, 5, seed=0), data, 10, torch.arange(3, 6))
    with pytest.raises(InputError, match="disjoint"):
        reducer.merge(overlapping)
    with pytest.raises(InputError, match="same targets size"):
        reducer.merge(PermutationReducer([0, 1], targets, 5, seed=1))


# ----------------------------------------------------------------------------------------------------------
# bootstrap reducer
# ----------------------------------------------------------------------------------------------------------
def test_poisson_weights_are_keyed_and_poisson():
    weights = poisson_weights(0, np.arange(50)[:, None], np.arange(2000)[None, :])
    assert weights.shape == (50, 2000)
    np.testing.assert_array_equal(weights[:, 100:110],
                                  poisson_weights(0, np.arange(50)[:, None], np.arange(100, 110)[None, :]))
    counts = np.bincount(weights.astype(np.int64).reshape(-1), minlength=6)
    expected = scipy_stats.poisson(1.0).pmf(np.arange(6)) * weights.size
    observed = np.append(counts[:5], counts[5:].sum())
    expected = np.append(expected[:5], weights.size - expected[:5].sum())
    assert scipy_stats.chisquare(observed, expected).pvalue > 1e-3


def test_bootstrap_estimates_equal_the_igc_reducer_and_replicates_are_weighted_igc():
    data = make_data(n=35)
    igc = feed(CorrelationReducer([0, 1]), data, 35).compute()
    reducer = feed(bootstrap_reducer(data, regions=region_masks()), data, 8)
    result = bootstrap_result(reducer.compute())
    np.testing.assert_allclose(result["map_estimate"], igc.maps.reshape(2, *X_SHAPE), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(result["correlation_estimate"], igc.diagnostics["correlation"], rtol=1e-12)
    np.testing.assert_allclose(result["region_estimate"], igc.maps.numpy() @ region_masks().double().numpy().T,
                               rtol=1e-12, atol=1e-14)
    # a replicate by brute force: weighted moments with the keyed Poisson weights
    replicates = reducer.replicates()
    for b in (0, 17):
        w = torch.from_numpy(poisson_weights(3, np.array([[b]]), np.arange(35)[None, :])[0])
        total = w.sum()

        def weighted_mean(values, w=w, total=total):
            return (w.reshape(-1, *[1] * (values.ndim - 1)) * values).sum(dim=0) / total

        y, y_hat, a = data["targets"], data["predictions"], data["attributions"].flatten(start_dim=2)
        y_c, y_hat_c = y - weighted_mean(y), y_hat - weighted_mean(y_hat)
        scale = (weighted_mean(y_c**2) * weighted_mean(y_hat_c**2)).sqrt()
        expected_map = weighted_mean((a - weighted_mean(a)) * y_c[:, :, None]) / scale[:, None]
        np.testing.assert_allclose(replicates["map"][b + 1].reshape(2, -1), expected_map.numpy(), rtol=1e-10)
        np.testing.assert_allclose(replicates["correlation"][b + 1], (weighted_mean(y_c * y_hat_c) / scale).numpy(),
                                   rtol=1e-10)
    assert replicates["map"].shape == (41, 2, *X_SHAPE)
    shapes = {key: value.shape for key, value in result.items()}
    expected_shapes = {f"{name}_{part}": shape for name, shape in
                       (("map", (2, *X_SHAPE)), ("region", (2, 3)), ("correlation", (2,)))
                       for part in ("estimate", "low", "high", "se")}
    assert shapes == {**expected_shapes, "level": (2,), "n_replicates": (2,)}  # diagnostics are per output
    assert np.all(result["level"] == 0.95) and np.all(result["n_replicates"] == 40)
    assert np.all(result["map_low"] <= result["map_high"]) and np.all(result["map_se"] > 0)


def test_bootstrap_reducer_is_batch_size_invariant_and_merges():
    data = make_data(n=29)
    results = [bootstrap_result(feed(bootstrap_reducer(data, regions=region_masks()), data, size).compute())
               for size in (1, 7, 29)]
    for other in results[1:]:
        assert_results_close(results[0], other)
    first = feed(bootstrap_reducer(data, regions=region_masks()), data, 3, torch.arange(0, 29, 2))
    second = feed(bootstrap_reducer(data, regions=region_masks()), data, 4, torch.arange(1, 29, 2))
    first.merge(second)
    assert_results_close(results[0], bootstrap_result(first.compute()))
    merged = bootstrap_reducer(data, regions=region_masks())
    merged.merge(feed(bootstrap_reducer(data, regions=region_masks()), data, 29, torch.arange(10)))
    merged.merge(feed(bootstrap_reducer(data, regions=region_masks()), data, 29, torch.arange(10, 29)))
    assert_results_close(results[0], bootstrap_result(merged.compute()))


def test_bootstrap_reducer_state_round_trip_and_resumption():
    data = make_data(n=25)
    whole = bootstrap_result(feed(bootstrap_reducer(data), data, 25).compute())
    partial = feed(bootstrap_reducer(data), data, 6, torch.arange(13))
    resumed = bootstrap_reducer(data)
    resumed.load_state_dict({key: value.clone() for key, value in partial.state_dict().items()})
    feed(resumed, data, 6, torch.arange(13, 25))
    assert_results_close(whole, bootstrap_result(resumed.compute()))
    with pytest.raises(InputError, match="another configuration"):
        bootstrap_reducer(data, n_replicates=41).load_state_dict(partial.state_dict())


def test_bootstrap_regions_only_matches_full_mode():
    data = make_data(n=40)
    full = bootstrap_result(feed(bootstrap_reducer(data, regions=region_masks()), data, 9).compute())
    only = bootstrap_result(feed(bootstrap_reducer(data, regions=region_masks(), regions_only=True), data, 40).compute())
    assert "map_low" not in only
    for key in only:
        np.testing.assert_allclose(only[key], full[key], rtol=1e-10, atol=1e-13, err_msg=key)


def test_bootstrap_is_accurate_with_large_offsets():
    data = make_data(n=50)
    shifted = dict(data, attributions=data["attributions"] + 1e6, predictions=data["predictions"] + 1e7,
                   targets=data["targets"] + 1e8)
    plain = bootstrap_result(feed(bootstrap_reducer(data), data, 7).compute())
    offset = bootstrap_result(feed(bootstrap_reducer(shifted), shifted, 7).compute())
    for key in plain:
        np.testing.assert_allclose(offset[key], plain[key], rtol=1e-6, atol=1e-7, err_msg=key)


def test_bootstrap_interval_coverage_of_a_known_correlation():
    # y = ŷ + ε with Var ŷ = Σ w², Var ε = s²: ρ(ŷ, y) = |w| / sqrt(|w|² + s²), and for independent standard
    # inputs the population IGC map is IGC_i = w_i² / (σ_ŷ σ_y) = ρ w_i² / |w|².
    weights = torch.tensor([[1.0, 0.5]], dtype=torch.float64)
    noise_std = 1.0
    norm2 = float((weights**2).sum())
    rho = np.sqrt(norm2 / (norm2 + noise_std**2))
    igc_0 = rho * float(weights[0, 0] ** 2) / norm2
    covered_r = covered_map = 0
    repetitions = 100
    for repetition in range(repetitions):
        generator = torch.Generator().manual_seed(500 + repetition)
        x = torch.randn(150, 2, dtype=torch.float64, generator=generator)
        attributions = x[:, None, :] * weights[None]
        predictions = attributions.sum(dim=2)
        targets = predictions + noise_std * torch.randn(150, 1, dtype=torch.float64, generator=generator)
        data = {"x": x, "attributions": attributions, "predictions": predictions, "targets": targets}
        result = bootstrap_result(feed(BootstrapReducer([0], 200, seed=repetition, level=0.9), data, 150).compute())
        covered_r += bool(result["correlation_low"][0] <= rho <= result["correlation_high"][0])
        covered_map += bool(result["map_low"][0, 0] <= igc_0 <= result["map_high"][0, 0])
    assert 0.80 <= covered_r / repetitions <= 0.97
    assert 0.80 <= covered_map / repetitions <= 0.97


def test_bootstrap_reducer_validation():
    data = make_data(n=10)
    with pytest.raises(InputError, match="n_replicates"):
        BootstrapReducer([0, 1], 1, seed=0)
    with pytest.raises(InputError, match="level"):
        BootstrapReducer([0, 1], 10, seed=0, level=1.0)
    with pytest.raises(InputError, match="needs regions"):
        BootstrapReducer([0, 1], 10, seed=0, regions_only=True)
    reducer = BootstrapReducer([0, 1], 10, seed=0)
    with pytest.raises(InputError, match="no sample"):
        reducer.compute()
    with pytest.raises(InputError, match="predictions"):
        reducer.update(SampleBatch(indices=torch.arange(2), inputs=data["x"][:2], targets=data["targets"][:2],
                                   attributions=data["attributions"][:2]))
    with pytest.raises(ShapeError, match="indices"):
        reducer.update(SampleBatch(indices=torch.arange(2), inputs=data["x"][:3], targets=data["targets"][:3],
                                   attributions=data["attributions"][:3], predictions=data["predictions"][:3]))
    broken = dict(data, predictions=data["predictions"].clone())
    broken["predictions"][4, 1] = float("inf")
    with pytest.raises(NonFiniteError, match="batch.predictions"):
        feed(BootstrapReducer([0, 1], 10, seed=0), broken, 10)
    constant = dict(data, targets=torch.ones(10, 2, dtype=torch.float64))
    with pytest.raises(ConstantTargetError):
        feed(BootstrapReducer([0, 1], 10, seed=0), constant, 10).compute()
    with pytest.raises(InputError, match="same outputs"):
        reducer.merge(BootstrapReducer([0, 1], 10, seed=1))
