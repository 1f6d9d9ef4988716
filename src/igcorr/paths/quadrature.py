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
