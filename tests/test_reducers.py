"""Reducer state declared once: derived merge, reset, state_dict and load_state_dict, for every reducer."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from scipy import stats

from igcorr.errors import InputError, ResultFileError, ShapeError
from igcorr.reducers import (CoMoment, Computed, CorrelationReducer, MomentsReducer, PearsonReducer, SampleBatch,
                             TTestReducer)
from igcorr.reducers.base import Accumulator, StateDictError, SumAndMax, chan_combine, is_unset
from igcorr.reducers.bootstrap import BootstrapReducer, WeightedCoMoment
from igcorr.reducers.inference import WithInference
from igcorr.reducers.permutation import PermutationReducer

N, K, X_SHAPE = 30, 2, (2, 3)


@pytest.fixture(autouse=True)
def single_thread():
    """Many tiny tensor operations: one thread is faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_data(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(N, *X_SHAPE, dtype=torch.float64, generator=generator)
    attributions = torch.randn(N, K, *X_SHAPE, dtype=torch.float64, generator=generator)
    baseline_predictions = torch.randn(N, K, dtype=torch.float64, generator=generator)
    predictions = attributions.flatten(2).sum(dim=2) + baseline_predictions + 1e-3 * torch.randn(
        N, K, dtype=torch.float64, generator=generator)
    targets = inputs.reshape(N, -1)[:, :K] + predictions + torch.randn(N, K, dtype=torch.float64, generator=generator)
    variance = torch.rand(N, K, *X_SHAPE, dtype=torch.float64, generator=generator)
    steps = torch.randint(4, 20, (N,), generator=generator).to(torch.float64)
    return {"inputs": inputs, "attributions": attributions, "predictions": predictions,
            "baseline_predictions": baseline_predictions, "targets": targets, "attribution_variance": variance,
            "steps": steps}


DATA = make_data()
MASKS = torch.tensor([[True, True, False, False, False, False], [False, False, True, True, True, True]])


def batch_of(indices, data=DATA) -> SampleBatch:
    indices = torch.as_tensor(indices)
    return SampleBatch(indices=indices, **{name: values[indices] for name, values in data.items()})


def feed(reducer, indices, size: int = 4, data=DATA):
    indices = list(indices)
    for start in range(0, len(indices), size):
        reducer.update(batch_of(indices[start:start + size], data))
    return reducer


REDUCERS = {
    "moments": lambda: MomentsReducer([0, 1]),
    "pearson": lambda: PearsonReducer([0, 1]),
    "ttest": lambda: TTestReducer([0, 1], [-0.5, 0.0], [0.5, 0.3]),
    "welch": lambda: TTestReducer([0, 1], -0.2, 0.2, equal_var=False),
    "correlation": lambda: CorrelationReducer([0, 1], against="targets"),
    "autocorrelation": lambda: CorrelationReducer([0, 1], against="predictions"),
    "permutation": lambda: PermutationReducer([0, 1], DATA["targets"], 20, seed=3, regions=MASKS),
    "permutation_regions_only": lambda: PermutationReducer([0, 1], DATA["targets"], 20, seed=3, regions=MASKS,
                                                           regions_only=True),
    "bootstrap": lambda: BootstrapReducer([0, 1], 15, seed=4, regions=MASKS),
    "with_inference": lambda: WithInference(CorrelationReducer([0, 1]),
                                            PermutationReducer([0, 1], DATA["targets"], 10, seed=5, regions=MASKS),
                                            BootstrapReducer([0, 1], 10, seed=5, regions=MASKS)),
}

#: a reducer of the same kind and another configuration
OTHER_CONFIGURATION = {
    "moments": lambda: MomentsReducer([0, 2]),
    "pearson": lambda: PearsonReducer([1, 0]),
    "ttest": lambda: TTestReducer([0, 1], [-0.5, 0.0], [0.5, 0.4]),
    "welch": lambda: TTestReducer([0, 1], -0.2, 0.2, equal_var=True),
    "correlation": lambda: CorrelationReducer([0, 1], against="predictions"),
    "autocorrelation": lambda: CorrelationReducer([0, 1], against="targets"),
    "permutation": lambda: PermutationReducer([0, 1], DATA["targets"], 21, seed=3, regions=MASKS),
    "permutation_regions_only": lambda: PermutationReducer([0, 1], DATA["targets"], 20, seed=3, regions=MASKS[[1, 0]],
                                                           regions_only=True),
    "bootstrap": lambda: BootstrapReducer([0, 1], 15, seed=5, regions=MASKS),
    "with_inference": lambda: WithInference(CorrelationReducer([0, 1]),
                                            PermutationReducer([0, 1], DATA["targets"], 10, seed=6, regions=MASKS),
                                            BootstrapReducer([0, 1], 10, seed=5, regions=MASKS)),
}


def flat(computed: Computed) -> dict[str, np.ndarray]:
    assert isinstance(computed, Computed)
    result = {} if computed.maps is None else {"maps": np.asarray(computed.maps)}
    for field in ("extra_maps", "diagnostics", "regions"):
        result.update({f"{field}/{name}": np.asarray(value) for name, value in getattr(computed, field).items()})
    return result


def assert_same_results(first, second, rtol=1e-12, atol=1e-12) -> None:
    a, b = flat(first.compute()), flat(second.compute())
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=rtol, atol=atol, err_msg=key)


def assert_same_state(first: dict, second: dict) -> None:
    assert list(first) == list(second)
    for key in first:
        assert first[key].dtype == second[key].dtype, key
        assert torch.equal(first[key], second[key]), key


# ----------------------------------------------------------------------------------------------------------
# derived behaviour, for every reducer
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(REDUCERS))
def test_merge_of_two_halves_equals_one_pass(name):
    whole = feed(REDUCERS[name](), range(N), size=N)
    first = feed(REDUCERS[name](), range(0, N, 2), size=3)  # interleaved shards
    second = feed(REDUCERS[name](), range(1, N, 2), size=5)
    first.merge(second)
    assert_same_results(first, whole)
    empty = REDUCERS[name]()
    empty.merge(feed(REDUCERS[name](), range(13)))
    empty.merge(REDUCERS[name]())  # merging an empty state changes nothing
    empty.merge(feed(REDUCERS[name](), range(13, N)))
    assert_same_results(empty, whole)


@pytest.mark.parametrize("name", list(REDUCERS))
def test_state_dict_round_trip_through_the_derived_methods(name):
    reducer = feed(REDUCERS[name](), range(17))
    state = reducer.state_dict()
    assert list(state) == reducer.state_keys()
    assert all(isinstance(value, torch.Tensor) for value in state.values())
    assert all(is_unset(value) or value.dtype in (torch.float64, torch.int64, torch.bool) for value in state.values())
    saved = {key: value.clone() for key, value in state.items()}
    restored = REDUCERS[name]()
    restored.load_state_dict(saved)
    assert_same_state(restored.state_dict(), state)
    # the restored state owns its tensors: changing the loaded dict changes nothing
    for value in saved.values():
        if value.is_floating_point():
            value.fill_(np.nan)
    assert_same_state(restored.state_dict(), state)
    for part in (reducer, restored):
        feed(part, range(17, N), size=6)
    assert_same_results(restored, reducer, rtol=0, atol=0)


@pytest.mark.parametrize("name", list(REDUCERS))
def test_the_keys_are_fixed_by_the_declaration(name):
    empty = REDUCERS[name]()
    state = empty.state_dict()
    assert list(state) == empty.state_keys() == list(feed(REDUCERS[name](), range(5)).state_dict())
    assert any(is_unset(value) for value in state.values())  # pieces allocated by the first update
    restored = REDUCERS[name]()
    restored.load_state_dict(state)
    assert_same_state(restored.state_dict(), empty.state_dict())


@pytest.mark.parametrize("name", list(REDUCERS))
def test_reset_forgets_every_sample(name):
    fresh = REDUCERS[name]()
    reducer = feed(REDUCERS[name](), range(12))
    reducer.reset()
    assert_same_state(reducer.state_dict(), fresh.state_dict())
    feed(reducer, range(N), size=7)
    feed(fresh, range(N), size=7)
    assert_same_results(reducer, fresh, rtol=0, atol=0)


@pytest.mark.parametrize("name", list(REDUCERS))
def test_tampered_states_are_refused_and_leave_the_reducer_unchanged(name):
    state = {key: value.clone() for key, value in feed(REDUCERS[name](), range(N)).state_dict().items()}
    target = feed(REDUCERS[name](), range(4))
    before = {key: value.clone() for key, value in target.state_dict().items()}
    removed = sorted(state)[len(state) // 2]
    missing = {key: value for key, value in state.items() if key != removed}
    with pytest.raises(ResultFileError, match=rf"missing keys \['{re.escape(removed)}'\]"):
        target.load_state_dict(missing)
    with pytest.raises(ResultFileError, match=r"unexpected keys \['surplus'\]"):
        target.load_state_dict({**state, "surplus": torch.zeros(1)})
    with pytest.raises(ResultFileError, match="another configuration"):
        target.load_state_dict(OTHER_CONFIGURATION[name]().state_dict())
    with pytest.raises(InputError, match="another configuration"):  # a StateDictError is both
        target.load_state_dict(OTHER_CONFIGURATION[name]().state_dict())
    assert_same_state(target.state_dict(), before)


@pytest.mark.parametrize("name", list(REDUCERS))
def test_merging_another_configuration_is_refused(name):
    reducer = feed(REDUCERS[name](), range(4))
    with pytest.raises(InputError, match="can only merge|cannot merge"):
        reducer.merge(OTHER_CONFIGURATION[name]())
    with pytest.raises(InputError, match="cannot merge a"):
        reducer.merge(CoMoment())


def test_malformed_pieces_are_refused():
    reducer = feed(CorrelationReducer([0, 1]), range(10))
    state = reducer.state_dict()
    with pytest.raises(StateDictError, match="scalars.count"):
        CorrelationReducer([0, 1]).load_state_dict({**state, "scalars.count": torch.tensor([1.5, 2.0])})
    with pytest.raises(StateDictError, match="not a tensor"):
        CorrelationReducer([0, 1]).load_state_dict({**state, "scalars.mean_a": [0.0]})
    with pytest.raises(StateDictError, match="dict of tensors"):
        CorrelationReducer([0, 1]).load_state_dict([("scalars.count", torch.tensor(1))])
    permutation = feed(REDUCERS["permutation"](), range(10))
    state = permutation.state_dict()
    with pytest.raises(StateDictError, match="x_shape"):
        REDUCERS["permutation"]().load_state_dict({**state, "x_shape": torch.tensor(2.0)})


def test_merging_states_of_other_input_shapes_is_refused():
    reducer = feed(REDUCERS["bootstrap"](), range(4))
    data = {name: values.reshape(N, K, 6) if values.ndim == 4 else values for name, values in DATA.items()}
    other = feed(REDUCERS["bootstrap"](), range(4, 8), data=data)
    with pytest.raises(ShapeError, match="x_shape"):
        reducer.merge(other)


def test_permutation_shards_must_be_disjoint_and_a_failed_merge_changes_nothing():
    reducer = feed(REDUCERS["permutation"](), range(10))
    before = {key: value.clone() for key, value in reducer.state_dict().items()}
    with pytest.raises(InputError, match="disjoint"):
        reducer.merge(feed(REDUCERS["permutation"](), range(8, 12)))
    assert_same_state(reducer.state_dict(), before)


def test_a_refused_merge_of_reducers_with_inference_changes_nothing():
    reducer = feed(REDUCERS["with_inference"](), range(10))
    before = {key: value.clone() for key, value in reducer.state_dict().items()}
    with pytest.raises(InputError, match="disjoint"):
        reducer.merge(feed(REDUCERS["with_inference"](), range(9, 15)))
    assert_same_state(reducer.state_dict(), before)


# ----------------------------------------------------------------------------------------------------------
# the accumulators
# ----------------------------------------------------------------------------------------------------------
def reference_comoment(batches):
    """The co-moment by the pairwise update as it was written by hand before the state was declared."""
    count, mean_a, mean_b, comoment = 0, None, None, None
    for a, b in batches:
        n = a.shape[0]
        batch_a, batch_b = a.mean(dim=0), b.mean(dim=0)
        batch_c = ((a - batch_a) * (b - batch_b)).sum(dim=0)
        if count == 0:
            count, mean_a, mean_b, comoment = n, batch_a.clone(), batch_b.clone(), batch_c.clone()
            continue
        total = count + n
        delta_a, delta_b = batch_a - mean_a, batch_b - mean_b
        comoment = comoment + batch_c + delta_a * delta_b * (count * n / total)
        mean_a = mean_a + delta_a * (n / total)
        mean_b = mean_b + delta_b * (n / total)
        count = total
    return count, mean_a, mean_b, comoment


def test_comoment_is_bit_for_bit_the_pairwise_update():
    generator = torch.Generator().manual_seed(1)
    a = 1e3 + torch.randn(50, 4, 3, dtype=torch.float64, generator=generator)
    b = torch.randn(50, 1, 3, dtype=torch.float64, generator=generator)
    bounds = [0, 1, 7, 20, 21, 50]
    batches = [(a[lo:hi], b[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:])]
    moment = CoMoment()
    for batch in batches:
        moment.update(*batch)
    count, mean_a, mean_b, comoment = reference_comoment(batches)
    assert moment.count == count
    assert torch.equal(moment.mean_a, mean_a) and torch.equal(moment.mean_b, mean_b)
    assert torch.equal(moment.comoment, comoment)
    # merging is the same pairwise update as folding a batch
    first, second = CoMoment(), CoMoment()
    first.update(*batches[0])
    second.update(*batches[1])
    first.merge(second)
    count, mean_a, mean_b, comoment = reference_comoment(batches[:2])
    assert torch.equal(first.comoment, comoment) and torch.equal(first.mean_a, mean_a)
    np.testing.assert_allclose(moment.covariance().numpy(),
                               np.mean((a - a.mean(0)).numpy() * (b - b.mean(0)).numpy(), axis=0), rtol=1e-10)


def test_accumulators_declare_their_state():
    moment = CoMoment()
    assert moment.state_keys() == ["count", "mean_a", "mean_b", "comoment"]
    extremes = SumAndMax()
    extremes.update(torch.tensor([[1.0, 5.0], [3.0, -1.0]], dtype=torch.float64))
    other = SumAndMax()
    other.update(torch.tensor([[2.0, 7.0]], dtype=torch.float64))
    extremes.merge(other)
    assert extremes.total.tolist() == [6.0, 11.0] and extremes.largest.tolist() == [3.0, 7.0]
    restored = SumAndMax()
    restored.load_state_dict(extremes.state_dict())
    assert restored.total.tolist() == [6.0, 11.0]
    restored.reset()
    assert restored.total is None and restored.largest is None
    weighted = WeightedCoMoment()
    assert weighted.state_keys() == ["weight", "mean_a", "mean_b", "comoment"]


def test_weighted_comoment_with_unit_weights_is_the_plain_comoment():
    generator = torch.Generator().manual_seed(2)
    a = torch.randn(20, 3, dtype=torch.float64, generator=generator)
    b = torch.randn(20, 1, dtype=torch.float64, generator=generator)
    weighted, plain = WeightedCoMoment(), CoMoment()
    for lo, hi in ((0, 6), (6, 7), (7, 20)):
        weighted.update(torch.ones(1, hi - lo, dtype=torch.float64), a[lo:hi], b[lo:hi])
        plain.update(a[lo:hi], b[lo:hi])
    np.testing.assert_allclose(weighted.comoment[0].numpy(), plain.comoment.numpy(), rtol=1e-12)
    np.testing.assert_allclose(weighted.mean_a[0].numpy(), plain.mean_a.numpy(), rtol=1e-12)
    assert float(weighted.weight[0]) == plain.count


def test_declarations_are_checked():
    class Undeclared(Accumulator):
        def __init__(self):
            self.add_state("total", None)

    with pytest.raises(TypeError, match="super"):
        Undeclared()

    class Twice(Accumulator):
        def __init__(self):
            super().__init__()
            self.add_state("total", None)
            self.add_state("total", None, combine="max")

    with pytest.raises(TypeError, match="twice"):
        Twice()
    moment = CoMoment()
    with pytest.raises(TypeError, match="together"):
        moment.fold(count=3, mean_a=torch.zeros(2))
    with pytest.raises(TypeError, match="declares no state"):
        SumAndMax().fold(total=torch.zeros(1), largest=torch.zeros(1), extra=1)
    assert chan_combine({"count": 0}, {"count": 0}) == {"count": 0}


# ----------------------------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------------------------
def test_every_reducer_computes_a_computed_of_tensors():
    for name, make in REDUCERS.items():
        computed = feed(make(), range(N)).compute()
        assert isinstance(computed, Computed), name
        for field in ("extra_maps", "diagnostics"):
            assert all(isinstance(value, torch.Tensor) for value in getattr(computed, field).values()), name
        assert all(value.shape == (K,) for value in computed.diagnostics.values()), name


def test_inference_reducers_computed_layout():
    permutation = feed(REDUCERS["permutation"](), range(N)).compute()
    assert permutation.maps.shape == (K, *X_SHAPE)
    assert set(permutation.extra_maps) == {"p_value", "p_fwe", "q_value"}
    assert set(permutation.regions) == {"observed", "p_value", "p_fwe", "q_value"}
    assert set(permutation.diagnostics) == {"n_permutations", "n_samples"}
    assert feed(REDUCERS["permutation_regions_only"](), range(N)).compute().maps is None
    bootstrap = feed(REDUCERS["bootstrap"](), range(N)).compute()
    assert bootstrap.maps.shape == (K, *X_SHAPE)
    assert set(bootstrap.extra_maps) == {"low", "high", "se"}
    assert set(bootstrap.regions) == {"estimate", "low", "high", "se"}
    assert set(bootstrap.diagnostics) == {"correlation", "correlation_low", "correlation_high", "correlation_se",
                                          "level", "n_replicates"}


def test_with_inference_combines_the_results_as_before():
    main = feed(CorrelationReducer([0, 1]), range(N)).compute()
    combined = feed(REDUCERS["with_inference"](), range(N)).compute()
    np.testing.assert_array_equal(combined.maps.numpy(), main.maps.numpy())
    assert list(combined.extra_maps) == [*main.extra_maps, "p_value", "p_fwe", "q_value", "ci_low", "ci_high",
                                         "bootstrap_se"]
    assert all(value.shape == (K, 6) for value in combined.extra_maps.values())
    assert list(combined.diagnostics) == [*main.diagnostics, "correlation_low", "correlation_high", "correlation_se"]
    assert list(combined.regions) == ["p_value", "p_fwe", "q_value", "low", "high", "se"]
    assert all(isinstance(value, np.ndarray) and value.shape == (K, 2) for value in combined.regions.values())
    only = WithInference(CorrelationReducer([0, 1]), REDUCERS["permutation_regions_only"](),
                         BootstrapReducer([0, 1], 10, seed=5, regions=MASKS, regions_only=True))
    computed = feed(only, range(N)).compute()
    assert list(computed.extra_maps) == list(main.extra_maps)
    assert list(computed.regions) == ["p_value", "p_fwe", "q_value", "low", "high", "se"]
    plain = WithInference(CorrelationReducer([0, 1]), None, BootstrapReducer([0, 1], 10, seed=5))
    assert {key.split(".")[0] for key in plain.state_keys()} == {"main", "bootstrap"}
    assert feed(plain, range(N)).compute().regions == {}


# ----------------------------------------------------------------------------------------------------------
# the t-test against scipy
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("equal_var", [True, False])
def test_streamed_ttest_equals_scipy_ttest_ind(equal_var):
    generator = torch.Generator().manual_seed(8)
    inputs = torch.randn(N, 5, dtype=torch.float64, generator=generator) * torch.tensor([1.0, 2.0, 0.5, 3.0, 1.0],
                                                                                          dtype=torch.float64)
    targets = torch.stack([inputs[:, 0] + torch.randn(N, dtype=torch.float64, generator=generator),
                           torch.randn(N, dtype=torch.float64, generator=generator)], dim=1)
    low, high = [-0.3, -0.1], [0.4, 0.2]
    reducer = TTestReducer([0, 1], low, high, equal_var=equal_var)
    for start in range(0, N, 7):
        part = slice(start, start + 7)
        reducer.update(SampleBatch(indices=torch.arange(N)[part], inputs=inputs[part], targets=targets[part]))
    computed = reducer.compute()
    x, y = inputs.numpy(), targets.numpy()
    for k in range(2):
        expected = stats.ttest_ind(x[y[:, k] >= high[k]], x[y[:, k] <= low[k]], equal_var=equal_var)
        np.testing.assert_allclose(computed.maps[k].numpy(), expected.statistic, rtol=1e-10)
        np.testing.assert_allclose(computed.extra_maps["p_value"][k].numpy(), expected.pvalue, rtol=1e-9,
                                   atol=1e-15)
        np.testing.assert_allclose(computed.extra_maps["df"][k].numpy(), expected.df, rtol=1e-10)
        assert computed.diagnostics["n_low"][k] == np.sum(y[:, k] <= low[k])
