"""Per-sample Baseline Shapley (Sundararajan & Najmi 2020), estimated by sampling permutations.

The Shapley value of input component i for the game v(S) = f(x_S, b_{not S}) (components in S taken from the
input x, the others from the baseline b) is the average, over all orderings of the D components, of the change
of f when i is switched from b to x after the components that precede it. The estimator here averages over
P random orderings per (sample, baseline) and over the M baselines:

    BS_{n,k,i} = (1/(M P)) Σ_{b, π} [f_k(z^{π,b}_{t(i)}) − f_k(z^{π,b}_{t(i)−1})],

where z_t is b with its first t components in the order π replaced by x's and t(i) is i's position in π.
Along one ordering the credits telescope to f(x) − f(b), so Σ_i BS_{n,k,i} = f_k(x_n) − mean_b f_k(b) holds
exactly for any number of orderings (up to float64 rounding).

Every ordering is a pure function of (seed, global sample index, permutation index) through
:mod:`igcorr.seeding`, so attributions do not depend on batching. The D + 1 coalition points of many
(sample, baseline, permutation) triples are laid end to end and evaluated in chunked forward passes without
gradients; a chunk may hold many short walks or a piece of one long walk.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from igcorr._docs import fill_doc
from igcorr._validation import check_optional_positive_int, check_positive_int, check_seed
from igcorr.attribution.base import PerSampleMethod, per_sample_baselines
from igcorr.errors import NonFiniteError, ShapeError
from igcorr.model import Extras, ModelAdapter, take_rows
from igcorr.paths.budget import DEFAULT_CHUNK_POINTS
from igcorr.paths.integrator import PathIntegrals
from igcorr.seeding import keyed_uint64

#: key that separates the permutation stream from every other random stream drawn with the same seed
_PERMUTATION_STREAM = 0x5AB1E5


def check_n_permutations(n_permutations: Any) -> int:
    """Validate the number of sampled orderings; returns it as an int."""
    return check_positive_int(n_permutations, "n_permutations")


def permutation_orders(seed: int, indices: np.ndarray, n_permutations: int,
                       n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """Random orderings of ``n_features`` components, keyed by (seed, sample index, permutation index).

    Each ordering sorts the components by a 64-bit hash of (seed, sample, permutation, component), which makes
    it a uniformly random permutation that depends on nothing else.

    Parameters
    ----------
    seed : int
    indices : int array (n,)
        Global sample indices.
    n_permutations : int
        Orderings per sample (P).
    n_features : int
        Number of components (D).

    Returns
    -------
    order : int64 array (n, P, D)
        ``order[j, p, t]`` is the component switched at step t + 1 of ordering p of sample j.
    rank : int64 array (n, P, D)
        The inverse: ``rank[j, p, i]`` is the step (0-based) at which component i is switched.
    """
    keys = keyed_uint64(int(seed), _PERMUTATION_STREAM, np.asarray(indices, dtype=np.int64)[:, None, None],
                        np.arange(n_permutations)[None, :, None], np.arange(n_features)[None, None, :])
    order = np.argsort(keys, axis=2, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(n_features), order.shape), axis=2)
    return order, rank


def baseline_shapley(adapter: ModelAdapter, x: torch.Tensor, baselines: torch.Tensor, outputs: torch.Tensor, *,
                     n_permutations: int, seed: int, indices: np.ndarray, chunk_points: int = DEFAULT_CHUNK_POINTS,
                     per_sample_output: torch.Tensor | None = None, extras: Extras | None = None) -> PathIntegrals:
    """Baseline Shapley values of a batch, averaged over sampled orderings and the baselines.

    The model is evaluated in its own dtype on the (sample, baseline, ordering, step) coalition points, in
    forward passes of ``chunk_points`` points without gradients; credits are accumulated in float64.

    Parameters
    ----------
    adapter : ModelAdapter
        Evaluates the attributed scores.
    x : Tensor (n, *x_shape)
    baselines : Tensor (n, M, *x_shape)
    outputs : LongTensor (K,)
        Indices of the scores to attribute.
    n_permutations : int
        Orderings per (sample, baseline) (P). The same P orderings of a sample are used for each of its
        baselines.
    seed : int
        Seed of the orderings.
    indices : int array (n,)
        Global indices of the samples (key of their orderings; used in error messages).
    chunk_points : int
        Coalition points per forward pass.
    per_sample_output : LongTensor (n,), optional
        Attribute for sample j only ``outputs[per_sample_output[j]]`` (K = 1 in the result).
    extras : dict of Tensor (n, ...), optional
        The samples' other model inputs, handed to the model with each of their coalitions.

    Returns
    -------
    PathIntegrals
        ``attributions`` (n, K, *x_shape), ``predictions`` f(x) (n, K) and ``baseline_predictions``
        mean_b f(b) (n, K), float64 on x's device. Σ_i attributions = predictions − baseline_predictions.
    """
    n, n_baselines = baselines.shape[:2]
    x_shape = tuple(x.shape[1:])
    if tuple(baselines.shape[2:]) != x_shape or len(baselines) != len(x):
        raise ShapeError(f"baselines of shape {tuple(baselines.shape)} do not match inputs {tuple(x.shape)}")
    n_features = int(np.prod(x_shape, dtype=np.int64))
    if n_features == 0:
        raise ShapeError(f"inputs of shape {x_shape} have no components to attribute")
    n_permutations = check_n_permutations(n_permutations)
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if len(indices) != n:
        raise ShapeError(f"{len(indices)} sample indices were given for {n} samples")
    dev = x.device
    n_outputs = 1 if per_sample_output is not None else len(outputs)
    order_np, rank_np = permutation_orders(seed, indices, n_permutations, n_features)
    order = torch.as_tensor(order_np, device=dev).reshape(n * n_permutations, n_features)
    rank = torch.as_tensor(rank_np, device=dev).reshape(n * n_permutations, n_features)
    if per_sample_output is not None:
        per_sample_output = per_sample_output.to(dev)
    inputs = x.reshape(n, n_features)
    starts = baselines.reshape(n * n_baselines, n_features)

    walks_per_sample = n_baselines * n_permutations
    steps = n_features + 1
    total = n * walks_per_sample * steps
    credits = torch.zeros(n * n_features, n_outputs, dtype=torch.float64, device=dev)
    predictions = torch.zeros(n, n_outputs, dtype=torch.float64, device=dev)
    baseline_sum = torch.zeros(n, n_outputs, dtype=torch.float64, device=dev)
    previous: torch.Tensor | None = None
    with torch.no_grad():
        for begin in range(0, total, chunk_points):
            point = torch.arange(begin, min(begin + chunk_points, total), device=dev)
            walk, step = point // steps, point % steps
            sample = walk // walks_per_sample
            start_row = walk // n_permutations
            order_row = sample * n_permutations + walk % n_permutations
            switched = rank[order_row] < step.unsqueeze(1)
            points = torch.where(switched, inputs[sample], starts[start_row]).reshape(len(point), *x_shape)
            scores = adapter.scores(points, extras=take_rows(extras, sample))[:, outputs]
            if per_sample_output is not None:
                scores = scores.gather(1, per_sample_output[sample].unsqueeze(1))
            scores = scores.to(torch.float64)
            finite = torch.isfinite(scores).all(dim=1)
            if not bool(finite.all()):
                bad = int(indices[int(sample[~finite][0])])
                raise NonFiniteError(
                    f"the model's score is not finite (NaN or Inf) at a coalition of sample {bad} (its components "
                    "partly switched to a baseline); check the model for divisions by zero, log of zero or overflow"
                )
            # score of the preceding point of the same walk: inside this chunk, or the last one of the previous
            before = torch.cat([scores[:1] if previous is None else previous, scores[:-1]])
            previous = scores[-1:]
            moved = step > 0
            component = order[order_row[moved], step[moved] - 1]
            credits.index_add_(0, sample[moved] * n_features + component, scores[moved] - before[moved])
            at_baseline = step == 0
            baseline_sum.index_add_(0, sample[at_baseline], scores[at_baseline])
            at_input = (step == n_features) & (walk % walks_per_sample == 0)
            predictions[sample[at_input]] = scores[at_input]
    credits /= walks_per_sample
    baseline_sum /= walks_per_sample
    attributions = credits.reshape(n, n_features, n_outputs).transpose(1, 2).reshape(n, n_outputs, *x_shape)
    return PathIntegrals(attributions.contiguous(), predictions, baseline_sum)


@fill_doc
class BaselineShapley(PerSampleMethod):
    """Baseline Shapley values of one output per sample, by sampling orderings of the input components.

    Parameters
    ----------
    %(model)s
    %(score)s
    %(output)s

    Notes
    -----
    Cost: D + 1 forward evaluations per (sample, baseline, ordering), batched ``chunk_points`` at a time; no
    gradients. Completeness Σ_i BS_i = f(x) − mean_b f(b) is exact for any number of orderings. With an additive
    model every ordering gives the exact Shapley value.
    """

    @fill_doc
    def attribute(self, inputs: torch.Tensor, baselines: Any = None,
                  target: int | Sequence[int] | torch.Tensor | None = None, n_permutations: int = 25, seed: int = 0,
                  return_convergence_delta: bool = False, chunk_points: int | None = None,
                  extra_inputs: dict[str, torch.Tensor] | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Attribute ``target`` of each input sample.

        Parameters
        ----------
        inputs : Tensor (n, *x_shape)
        %(sample_baselines)s
        %(target)s
        n_permutations : int
            Random orderings of the components per (sample, baseline).
        seed : int
            Seed of the orderings; sample j (its position in ``inputs``) always gets the same orderings.
        return_convergence_delta : bool
            Also return Σ_i BS − (f(x) − mean_b f(b)) per sample, shape (n,) (zero up to rounding).
        chunk_points : int, optional
            Coalition points per forward pass.
        %(extra_inputs)s

        Returns
        -------
        Tensor of the inputs' shape and dtype (and the delta, if asked).
        """
        seed = check_seed(seed)
        n_permutations = check_n_permutations(n_permutations)
        chunk_points = check_optional_positive_int(chunk_points, "chunk_points") or DEFAULT_CHUNK_POINTS
        with self._prepared(inputs, target, chunk_points=chunk_points, extra_inputs=extra_inputs) as call:
            stack = per_sample_baselines(baselines, call.x)
            values = baseline_shapley(self.adapter, call.x, stack, call.outputs, n_permutations=n_permutations,
                                      seed=seed, indices=np.arange(len(call.x)), chunk_points=chunk_points,
                                      per_sample_output=call.per_sample, extras=call.extras)
        return self._returned(call, values, return_convergence_delta)
