"""Quadrature rules for the path integral of Integrated Gradients on [0, 1].

A rule is a pair (nodes, weights): the integral of g over [0, 1] is approximated by Σ_s weights[s]·g(nodes[s]).
Every rule here integrates constants exactly (weights sum to 1). Captum's "riemann_trapezoid" differs: its
n nodes carry weights summing to (n − 1)/n; igcorr's "trapezoid" is the unbiased composite trapezoid rule.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from igcorr._validation import check_int
from igcorr.errors import InputError
from igcorr.seeding import keyed_uint64

METHODS = ("trapezoid", "riemann_left", "riemann_right", "riemann_middle", "gausslegendre")


class Rule(NamedTuple):
    """Nodes and weights of a quadrature rule on [0, 1], both float64 arrays of shape (n_steps,)."""

    nodes: np.ndarray
    weights: np.ndarray

    @property
    def includes_endpoints(self) -> bool:
        """True when the first node is α = 0 (the baseline) and the last is α = 1 (the input)."""
        return bool(self.nodes[0] == 0.0 and self.nodes[-1] == 1.0)


def rule(method: str, n_steps: int) -> Rule:
    """Build the quadrature rule ``method`` with ``n_steps`` nodes.

    Parameters
    ----------
    method : {"trapezoid", "riemann_left", "riemann_right", "riemann_middle", "gausslegendre"}
        "trapezoid" uses the uniform grid including both ends (so f(baseline) and f(input) are evaluated for
        free); the Riemann rules use n equal intervals and their left ends, right ends or midpoints;
        "gausslegendre" uses the Gauss–Legendre nodes mapped to [0, 1].
    n_steps : int
        Number of nodes (at least 2 for the trapezoid rule, at least 1 otherwise).

    Returns
    -------
    Rule
        ``nodes`` and ``weights``, float64 arrays of shape (n_steps,), weights summing to 1.
    """
    if method not in METHODS:
        raise InputError(f"unknown quadrature method {method!r}; choose one of {', '.join(METHODS)}")
    n_steps = check_int(n_steps, "n_steps", hint="the number of nodes of the rule")
    minimum = 2 if method == "trapezoid" else 1
    if n_steps < minimum:
        raise InputError(f"the {method} rule needs n_steps >= {minimum}, got {n_steps}")
    n = int(n_steps)
    if method == "trapezoid":
        nodes = np.linspace(0.0, 1.0, n)
        weights = np.full(n, 1.0 / (n - 1))
        weights[[0, -1]] *= 0.5
    elif method == "gausslegendre":
        points, gauss_weights = np.polynomial.legendre.leggauss(n)
        nodes, weights = 0.5 * (points + 1.0), 0.5 * gauss_weights
    else:
        offset = {"riemann_left": 0.0, "riemann_middle": 0.5, "riemann_right": 1.0}[method]
        nodes = (np.arange(n) + offset) / n
        weights = np.full(n, 1.0 / n)
    return Rule(nodes.astype(np.float64), weights.astype(np.float64))


def stratified_nodes(seed: int, indices: np.ndarray, n_points: int) -> torch.Tensor:
    """Monte-Carlo path positions: for sample ``indices[j]``, point s lies uniformly in [s/S, (s + 1)/S).

    Stratification keeps the estimator unbiased while spreading the points over the whole path. Every value is
    a pure function of (seed, sample index, s), so it does not depend on batching.

    Returns
    -------
    Tensor, float64, shape (len(indices), n_points)
    """
    bits = keyed_uint64(seed, np.asarray(indices)[:, None], np.arange(n_points)[None], 0xA1FA)
    uniform = (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return torch.from_numpy((np.arange(n_points)[None] + uniform) / n_points)


def shifted_nodes(seed: int, indices: np.ndarray, n_baselines: int, n_steps: int, replicate: int = 0) -> torch.Tensor:
    """Randomised node positions of the straight paths of samples ``indices``, each with ``n_baselines`` paths.

    The path [0, 1] is cut into C = n_steps / 2 equal cells, and every path gets one antithetic pair of nodes
    per cell, (c + u)/C and (c + 1 − u)/C with u in [0, 1/2), each of weight 1/n_steps. Because u is uniform
    over [0, 1/2) for every (path, cell), each node is uniform over its cell and the rule is an unbiased
    estimate of each path's integral: quadrature errors have mean zero, so the errors of different samples
    cancel in a dataset-wise map instead of adding up. The pair's symmetry removes the first-order error of a
    smooth integrand within each cell.

    The M paths of a sample share the cells out: in every cell, u = (π(m) + v_m)/(2M) for path m, with π a random
    permutation of the M paths and v_m uniform in [0, 1), so that the 2M nodes of a sample's paths fall into
    the cell's 2M equal sub-intervals, one in each (a grid shifted from path to path, covering the positions the
    others miss). Every value is a pure function of (seed, sample index, cell, path, replicate): independent
    of batching, and ``replicate`` gives independent draws of the same rule.

    Parameters
    ----------
    seed : int
    indices : int array (n,)
        Global sample indices.
    n_baselines : int
        Paths per sample (M).
    n_steps : int
        Nodes per path; even, at least 2.
    replicate : int
        Which independent draw.

    Returns
    -------
    Tensor, float64, shape (n, M, n_steps)
        Each path's nodes, cell by cell (left node, right node).
    """
    if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 2 or n_steps % 2:
        raise InputError(f"shifted grids place antithetic pairs: n_steps must be an even integer >= 2, got {n_steps!r}")
    cells, m = int(n_steps) // 2, int(n_baselines)
    sample = np.asarray(indices, dtype=np.int64)[:, None, None]
    cell = np.arange(cells)[None, :, None]
    path = np.arange(m)[None, None, :]
    order = keyed_uint64(seed, 0x5B1F7, sample, cell, path, replicate)
    slot = np.argsort(np.argsort(order, axis=2, kind="stable"), axis=2, kind="stable")
    jitter = (keyed_uint64(seed, 0x5B1F8, sample, cell, path, replicate) >> np.uint64(11)).astype(np.float64)
    u = (slot + jitter * 2.0**-53) / (2 * m)  # (n, C, M), in [0, 1/2)
    pairs = np.stack([(cell + u) / cells, (cell + 1 - u) / cells], axis=3)  # (n, C, M, 2)
    return torch.from_numpy(np.ascontiguousarray(pairs.transpose(0, 2, 1, 3)).reshape(len(pairs), m, 2 * cells))
