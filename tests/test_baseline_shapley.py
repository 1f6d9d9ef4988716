"""Per-sample Baseline Shapley: exact oracles by enumeration, completeness, keyed orderings, errors."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

import igcorr
from igcorr.errors import InputError, NonFiniteError, ShapeError
from igcorr.attribution.baseline_shapley import permutation_orders


def nonlinear(x: torch.Tensor) -> torch.Tensor:
    """A small nonlinear float64 function of up to 6 components with interactions, two outputs."""
    d = x.shape[1]
    first = torch.tanh(x[:, 0] * x[:, 1]) + x[:, 2 % d] ** 2 * torch.sin(x[:, 3 % d]) + 0.5 * x[:, d - 1]
    second = torch.relu(x.sum(dim=1)) * x[:, 0] - torch.exp(-x[:, 1] ** 2)
    return torch.stack([first, second], dim=1)


def coalition_value(model, x, b, members, output):
    point = b.clone()
    point[list(members)] = x[list(members)]
    return float(model(point.unsqueeze(0))[0, output])


def exact_shapley(model, x, b, output):
    """Shapley values of v(S) = f(x_S, b_rest) by enumerating all coalitions."""
    d = len(x)
    values = np.zeros(d)
    for i in range(d):
        others = [j for j in range(d) if j != i]
        for size in range(d):
            weight = math.factorial(size) * math.factorial(d - size - 1) / math.factorial(d)
            for members in itertools.combinations(others, size):
                gain = coalition_value(model, x, b, members + (i,), output) - coalition_value(model, x, b, members, output)
                values[i] += weight * gain
    return values


def marginals_along(model, x, b, order, output):
    """Credit of each component when switching components from b to x in ``order``."""
    credits = np.zeros(len(x))
    switched = []
    previous = coalition_value(model, x, b, switched, output)
    for component in order:
        switched.append(component)
        current = coalition_value(model, x, b, switched, output)
        credits[component] = current - previous
        previous = current
    return credits


def test_matches_exact_shapley_within_monte_carlo_error():
    generator = torch.Generator().manual_seed(0)
    d, n_permutations = 5, 3000
    x = torch.randn(2, d, dtype=torch.float64, generator=generator)
    b = torch.randn(d, dtype=torch.float64, generator=generator)
    for output in (0, 1):
        estimate = igcorr.BaselineShapley(nonlinear).attribute(x, baselines=b, target=output,
                                                               n_permutations=n_permutations, seed=7, chunk_points=4096)
        for j in range(len(x)):
            exact = exact_shapley(nonlinear, x[j], b, output)
            # the estimator's standard error, from the exact spread of the marginals over all d! orderings
            marginals = np.array([marginals_along(nonlinear, x[j], b, order, output)
                                  for order in itertools.permutations(range(d))])
            np.testing.assert_allclose(marginals.mean(axis=0), exact, atol=1e-12)
            standard_error = marginals.std(axis=0) / math.sqrt(n_permutations)
            assert np.all(np.abs(estimate[j].numpy() - exact) <= 5 * standard_error + 1e-12)
            assert np.abs(estimate[j].numpy() - exact).max() > 1e-6  # really sampled, not enumerated


def test_equals_the_average_over_its_own_orderings_for_each_baseline():
    """Exact check of the estimator: the mean of the marginals along the orderings it drew."""
    generator = torch.Generator().manual_seed(1)
    d, n_permutations, seed = 4, 6, 3
    x = torch.randn(3, d, dtype=torch.float64, generator=generator)
    stack = torch.randn(3, 2, d, dtype=torch.float64, generator=generator)  # two baselines per sample
    got = igcorr.BaselineShapley(nonlinear).attribute(x, baselines=stack, target=1, n_permutations=n_permutations,
                                                      seed=seed, chunk_points=5)
    orders, _ = permutation_orders(seed, np.arange(3), n_permutations, d)
    for j in range(3):
        expected = np.mean([marginals_along(nonlinear, x[j], stack[j, m], orders[j, p], 1)
                            for m in range(2) for p in range(n_permutations)], axis=0)
        np.testing.assert_allclose(got[j].numpy(), expected, rtol=0, atol=1e-13)


def test_two_components_with_both_orderings_is_exact():
    x = torch.tensor([[0.7, -1.3], [2.0, 0.4]], dtype=torch.float64)
    b = torch.tensor([0.2, 0.5], dtype=torch.float64)
    # find a seed whose two orderings per sample are the two different permutations of {0, 1}
    seed = next(s for s in range(200)
                if all(len({tuple(o) for o in orders}) == 2 for orders in permutation_orders(s, np.arange(2), 2, 2)[0]))
    got = igcorr.BaselineShapley(nonlinear).attribute(x, baselines=b, target=0, n_permutations=2, seed=seed)
    for j in range(2):
        np.testing.assert_allclose(got[j].numpy(), exact_shapley(nonlinear, x[j], b, 0), rtol=0, atol=1e-14)


def test_additive_model_is_exact_for_any_ordering():
    weights = torch.tensor([1.0, -2.0, 0.5, 3.0, 0.0, 1.5], dtype=torch.float64)
    model = lambda x: (weights * torch.sin(x) + x**2).sum(dim=1)
    x = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    b = torch.full((6,), 0.3, dtype=torch.float64)
    expected = weights * torch.sin(x) + x**2 - (weights * torch.sin(b) + b**2)
    for n_permutations, seed in ((1, 0), (3, 11)):
        got = igcorr.BaselineShapley(model).attribute(x, baselines=b, n_permutations=n_permutations, seed=seed)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-13)
    for j in range(2):
        np.testing.assert_allclose(exact_shapley(lambda z: model(z).unsqueeze(1), x[j], b, 0), expected[j].numpy(),
                                   atol=1e-12)


def test_completeness_is_exact(cnn):
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64, generator=generator)
    stack = torch.randn(3, 2, 1, 8, 8, dtype=torch.float64, generator=generator)
    values, delta = igcorr.BaselineShapley(cnn, score="softmax").attribute(
        x, baselines=stack, target=[0, 2, 3], n_permutations=2, return_convergence_delta=True)
    with torch.no_grad():
        scores = torch.softmax(cnn(x), dim=1)[torch.arange(3), [0, 2, 3]]
        baseline_scores = torch.softmax(cnn(stack.reshape(6, 1, 8, 8)), dim=1).reshape(3, 2, 4)
        baseline_scores = baseline_scores[torch.arange(3), :, [0, 2, 3]].mean(dim=1)
    torch.testing.assert_close(values.sum(dim=(1, 2, 3)), scores - baseline_scores, rtol=0, atol=1e-12)
    assert delta.abs().max() < 1e-12


def test_dummy_component_gets_exactly_zero():
    model = lambda x: torch.tanh(x[:, 0] * x[:, 1]) + x[:, 2]
    x = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    got = igcorr.BaselineShapley(model).attribute(x, baselines=-0.5, n_permutations=4)
    assert torch.all(got[:, 3] == 0)


def test_chunking_and_target_forms_do_not_change_values(cnn):
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    method = igcorr.BaselineShapley(cnn)
    reference = method.attribute(x, target=[1, 0, 3, 1], n_permutations=2, seed=9, chunk_points=10_000)
    single_walk = method.attribute(x[:2], target=[1, 0], n_permutations=1, seed=9, chunk_points=10_000)
    for chunk_points in (1, 7, 100):  # chunks split walks anywhere, or hold parts of several
        torch.testing.assert_close(method.attribute(x[:2], target=[1, 0], n_permutations=1, seed=9,
                                                    chunk_points=chunk_points), single_walk, rtol=0, atol=1e-12)
    for j, t in enumerate([1, 0, 3, 1]):
        single = igcorr.BaselineShapley(cnn).attribute(x, target=t, n_permutations=2, seed=9)[j]
        torch.testing.assert_close(single, reference[j], rtol=0, atol=1e-12)


def test_orderings_are_keyed_permutations():
    orders, ranks = permutation_orders(5, np.arange(10), 4, 9)
    assert orders.shape == (10, 4, 9)
    assert np.all(np.sort(orders, axis=2) == np.arange(9))
    assert np.all(np.take_along_axis(ranks, orders, axis=2) == np.arange(9))
    part, _ = permutation_orders(5, np.array([6, 2]), 4, 9)
    np.testing.assert_array_equal(part, orders[[6, 2]])
    other, _ = permutation_orders(6, np.arange(10), 4, 9)
    assert np.any(other != orders)
    # roughly uniform: each component lands first in about 1/9 of many orderings
    firsts = permutation_orders(0, np.arange(2000), 9, 9)[0][:, :, 0].reshape(-1)
    counts = np.bincount(firsts, minlength=9) / firsts.size
    assert np.all(np.abs(counts - 1 / 9) < 0.01)


def test_float32_model_and_seed_repeatability():
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).eval()
    x = torch.randn(3, 5)
    first = igcorr.BaselineShapley(model).attribute(x, target=1, n_permutations=3, seed=1)
    again = igcorr.BaselineShapley(model).attribute(x, target=1, n_permutations=3, seed=1)
    assert first.dtype == torch.float32
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert all(p.requires_grad for p in model.parameters())  # the freeze is undone


def test_errors(mlp):
    x = torch.randn(3, 6, dtype=torch.float64)
    method = igcorr.BaselineShapley(mlp)
    with pytest.raises(InputError, match="n_permutations"):
        method.attribute(x, target=0, n_permutations=0)
    with pytest.raises(InputError, match="target"):
        method.attribute(x, n_permutations=2)
    with pytest.raises(InputError, match="explicit baselines"):
        method.attribute(x, baselines=igcorr.baselines.FromData(2), target=0)
    with pytest.raises(ShapeError, match="baselines of shape"):
        method.attribute(x, baselines=torch.zeros(5), target=0)
    with pytest.raises(InputError, match="seed"):
        method.attribute(x, target=0, seed=1.5)
    with pytest.raises(ShapeError, match="non-empty"):
        method.attribute(x[:0], target=0)
    log_model = lambda z: torch.log(z[:, :1])
    with pytest.raises(NonFiniteError, match="sample 1"):
        igcorr.BaselineShapley(log_model).attribute(torch.tensor([[1.0, 1.0], [-1.0, 2.0]], dtype=torch.float64),
                                                    baselines=1.0, n_permutations=2)
