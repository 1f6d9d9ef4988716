import numpy as np
import pytest

from igcorr.errors import InputError
from igcorr.paths.quadrature import METHODS, rule


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n_steps", [2, 5, 64])
def test_weights_sum_to_one_and_nodes_in_unit_interval(method, n_steps):
    nodes, weights = rule(method, n_steps)
    assert len(nodes) == len(weights) == n_steps
    assert weights.sum() == pytest.approx(1.0, abs=1e-14)
    assert nodes.min() >= 0.0 and nodes.max() <= 1.0


def test_exactness_orders():
    cubic = lambda a: 4 * a**3  # integral 1
    nodes, weights = rule("gausslegendre", 2)
    assert weights @ cubic(nodes) == pytest.approx(1.0, abs=1e-14)
    nodes, weights = rule("trapezoid", 2)
    assert weights @ (3 * nodes + 1) == pytest.approx(2.5, abs=1e-14)
    nodes, weights = rule("riemann_middle", 1)
    assert weights @ (2 * nodes) == pytest.approx(1.0, abs=1e-14)


@pytest.mark.parametrize("method", METHODS)
def test_error_shrinks_with_steps(method):
    smooth = lambda a: np.exp(a)
    exact = np.e - 1
    errors = [abs(rule(method, n).weights @ smooth(rule(method, n).nodes) - exact) for n in (4, 16, 64)]
    assert errors[0] > errors[1] > errors[2] or errors[2] < 1e-13


def test_trapezoid_endpoints_and_captum_bias_relation():
    trapezoid = rule("trapezoid", 10)
    assert trapezoid.includes_endpoints
    # Captum's riemann_trapezoid weights are 1/n with halved ends, i.e. ours times (n - 1)/n.
    captum_like = np.full(10, 0.1)
    captum_like[[0, -1]] /= 2
    np.testing.assert_allclose(captum_like, trapezoid.weights * 9 / 10, rtol=1e-14)
    assert not rule("riemann_left", 10).includes_endpoints


@pytest.mark.parametrize("bad", [("simpson", 10), ("trapezoid", 1), ("riemann_left", 0), ("trapezoid", 2.5)])
def test_invalid_rules_raise(bad):
    with pytest.raises(InputError):
        rule(*bad)
