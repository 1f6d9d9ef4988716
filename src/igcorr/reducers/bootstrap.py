"""Bootstrap confidence intervals of IGC maps, region sums and the prediction–target correlation, in one pass.

The Poisson bootstrap replaces "draw N samples with replacement" by independent Poisson(1) counts
w_{b,n} per replicate b and sample n, which is what makes it streamable: replicate b is the dataset statistic
with every sample weighted by w_{b,n}, and w_{b,n} is a pure function of (seed, b, global sample index n)
(inverse CDF of :func:`igcorr.seeding.keyed_uniform`), so the replicates do not depend on batch size,
sharding or resumption. For each replicate the reducer keeps weighted co-moments, combined batch by batch and
across shards with the weighted form of Chan et al.'s pairwise update in float64, from which it computes the
weighted IGC map Cov_w(A, y) / (σ_{y,w} σ_{ŷ,w}), its region sums and the weighted Pearson r(ŷ, y).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from igcorr.errors import InputError, ShapeError
from igcorr.reducers.base import Reducer, SampleBatch
from igcorr.reducers.correlation import check_not_constant
from igcorr.reducers.permutation import (as_mask_matrix, check_count, check_finite, check_indices, check_seed,
                                         mask_matrix_for)
from igcorr.seeding import keyed_uniform
from igcorr.stats import percentile_interval

__all__ = ["BootstrapReducer", "poisson_weights"]

#: tag mixed into the keys of the bootstrap weights, so they never coincide with other draws of the same seed
_BOOTSTRAP_TAG = 0xB0075_7EA9
#: CDF of Poisson(1) at 0, 1, 2, ...; beyond the last entry the CDF is 1 to float64 precision
_POISSON_CDF = np.cumsum([math.exp(-1.0) / math.factorial(k) for k in range(25)])


def poisson_weights(seed: int, replicates: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Poisson(1) bootstrap counts keyed by (seed, replicate, sample index).

    Parameters
    ----------
    seed : int
        Random seed.
    replicates : int array, shape (B, 1)
        Replicate numbers b.
    indices : int array, shape (n,)
        Global sample indices.

    Returns
    -------
    numpy.ndarray of float64, shape (B, n)
        w[b, j] ~ Poisson(1), a pure function of (seed, replicates[b], indices[j]).
    """
    uniform = keyed_uniform(seed, _BOOTSTRAP_TAG, replicates, indices)
    return np.searchsorted(_POISSON_CDF, uniform, side="right").astype(np.float64)


class _WeightedCoMoment:
    """Weighted means and co-moment of a and b for R weightings (replicates) at once.

    For each row r it keeps the total weight W_r, the weighted means of a and b and the weighted co-moment
    Σ_n w_{r,n} (a_n − ā_r)(b_n − b̄_r). A batch is first summarised about its unweighted means (so the
    weighted sums are of small, centred numbers) and then combined with the state by the weighted Chan update,
    exact for any non-negative weights, including rows whose weight in the batch or in the state is zero.
    """

    def __init__(self) -> None:
        self.weight: torch.Tensor | None = None  # (R,)
        self.mean_a: torch.Tensor | None = None  # (R, *A)
        self.mean_b: torch.Tensor | None = None  # (R, *B)
        self.comoment: torch.Tensor | None = None  # (R, *broadcast(A, B))

    def update(self, weights: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
        """Add samples a (n, *A) and b (n, *B) with weights (R, n)."""
        centre_a, centre_b = a.mean(dim=0), b.mean(dim=0)
        delta_a, delta_b = a - centre_a, b - centre_b
        total = weights.sum(dim=1)  # (R,)
        sum_a = (weights @ delta_a.flatten(start_dim=1)).reshape(-1, *a.shape[1:])
        sum_b = (weights @ delta_b.flatten(start_dim=1)).reshape(-1, *b.shape[1:])
        product = delta_a * delta_b
        sum_ab = (weights @ product.flatten(start_dim=1)).reshape(-1, *product.shape[1:])
        inverse = torch.where(total > 0, 1.0 / total.clamp(min=1e-300), 0.0)  # 0 for rows without weight here
        mean_a = centre_a + sum_a * self._expand(inverse, sum_a.ndim)
        mean_b = centre_b + sum_b * self._expand(inverse, sum_b.ndim)
        comoment = sum_ab - sum_a * sum_b * self._expand(inverse, sum_ab.ndim)  # about the weighted means
        self._combine(total, mean_a, mean_b, comoment)

    @staticmethod
    def _expand(values: torch.Tensor, ndim: int) -> torch.Tensor:
        return values.reshape(values.shape[0], *([1] * (ndim - 1)))

    def _combine(self, weight: torch.Tensor, mean_a: torch.Tensor, mean_b: torch.Tensor,
                 comoment: torch.Tensor) -> None:
        if self.weight is None:
            self.weight, self.mean_a, self.mean_b = weight.clone(), mean_a.clone(), mean_b.clone()
            self.comoment = comoment.clone()
            return
        total = self.weight + weight
        fraction = torch.where(total > 0, weight / total.clamp(min=1e-300), 0.0)  # w_new / (w_old + w_new)
        delta_a, delta_b = mean_a - self.mean_a, mean_b - self.mean_b
        cross = self._expand(self.weight * fraction, comoment.ndim)  # w_old w_new / total
        # in place (the state tensors are owned by this object), to keep the peak memory low
        self.comoment += comoment
        self.comoment += delta_a * delta_b * cross
        self.mean_a += delta_a * self._expand(fraction, delta_a.ndim)
        self.mean_b += delta_b * self._expand(fraction, delta_b.ndim)
        self.weight = total

    def merge(self, other: "_WeightedCoMoment") -> None:
        if other.weight is not None:
            device = self.weight.device if self.weight is not None else other.weight.device
            self._combine(other.weight.to(device), other.mean_a.to(device), other.mean_b.to(device),
                          other.comoment.to(device))

    def state_dict(self, prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}weight": self.weight, f"{prefix}mean_a": self.mean_a, f"{prefix}mean_b": self.mean_b,
                f"{prefix}comoment": self.comoment}

    def load_state_dict(self, state: dict[str, torch.Tensor], prefix: str) -> None:
        for name in ("weight", "mean_a", "mean_b", "comoment"):
            setattr(self, name, state[f"{prefix}{name}"].to(torch.float64).clone())


class BootstrapReducer(Reducer):
    """Streaming Poisson bootstrap of the IGC map, its region sums and the correlation r(ŷ, y).

    Replicate b weights sample n by w_{b,n} ~ Poisson(1), keyed by (seed, b, n). Its statistics are the
    weighted versions of the IGC quantities, with weighted means, variances and covariances (population
    normalisation by the total weight W_b = Σ_n w_{b,n}):

    * map_b[k, i] = Cov_w(A_{·,k,i}, y_{·,k}) / (σ_w(y_k) σ_w(ŷ_k)),
    * region_b[k, r] = Σ_{i ∈ region r} map_b[k, i],
    * correlation_b[k] = Cov_w(ŷ_k, y_k) / (σ_w(y_k) σ_w(ŷ_k)).

    An extra row with all weights 1 gives the plain (unweighted) estimates, identical to the IGC reducer's.

    Memory: 2·(B + 1)·K·F float64 numbers (weighted means and co-moments of the attributions), with F = D input
    components, or F = R regions with ``regions_only=True``, i.e. 16·(B + 1)·K·F bytes (B = 1000, K = 10,
    D = 784: 125 MB; regions-only with R = 20: 3.2 MB), plus O(B·K) for the scalars. Work per sample: B keyed
    Poisson draws and about 3·B·K·F multiply-adds.

    Parameters
    ----------
    outputs : list of int
        The attributed model outputs (K of them; used in messages).
    n_replicates : int
        B >= 2 bootstrap replicates.
    seed : int
        Key of the resampling weights.
    level : float
        Confidence level of the percentile intervals, strictly between 0 and 1.
    regions : bool tensor or array, shape (R, D) or (R, *x_shape), optional
        Region masks over the input components (e.g. ``igcorr.regions.as_region_masks(...)[1]``).
    regions_only : bool
        Keep only region sums (memory 2·(B + 1)·K·R); the per-component map intervals are then not available.
        Needs ``regions``.

    Notes
    -----
    Batches must carry ``indices`` (n,), ``attributions`` (n, K, *x_shape), ``predictions`` (n, K) and
    ``targets`` (n, K). The reducer cannot tell whether a sample was folded in twice; the caller streams each
    sample once (as for every reducer).
    """

    def __init__(self, outputs: list[int], n_replicates: int, seed: int, level: float = 0.95, regions: Any = None,
                 regions_only: bool = False) -> None:
        self.outputs = list(outputs)
        if not self.outputs:
            raise InputError("outputs is empty; give the attributed output indices")
        self.n_outputs = len(self.outputs)
        self.n_replicates = check_count(n_replicates, "n_replicates", 2)
        self.seed = check_seed(seed)
        if isinstance(level, bool) or not isinstance(level, (int, float, np.floating)) or not 0.0 < level < 1.0:
            raise InputError(f"level must be a number strictly between 0 and 1 (e.g. 0.95), got {level!r}")
        self.level = float(level)
        self.masks = as_mask_matrix(regions, regions_only)
        self.regions_only = regions_only
        self._reset()

    def _reset(self) -> None:
        self.count = 0
        self.x_shape: tuple[int, ...] | None = None
        self._region_matrix: torch.Tensor | None = None
        self.attribution_target = _WeightedCoMoment()  # a = A (n, K, F), b = y (n, K, 1)
        self.scalars = _WeightedCoMoment()  # columns (ŷ, y): a (n, K, 2, 1), b (n, K, 1, 2)

    def _config(self) -> torch.Tensor:
        n_regions = 0 if self.masks is None else self.masks.shape[0]
        return torch.tensor([self.n_outputs, self.n_replicates, self.seed & ((1 << 63) - 1), n_regions,
                             int(self.regions_only)], dtype=torch.int64)

    # -- streaming -----------------------------------------------------------------------------------------
    def _check_batch(self, batch: SampleBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        missing = [name for name in ("attributions", "predictions", "targets") if getattr(batch, name) is None]
        if missing:
            raise InputError(f"the bootstrap reducer needs {', '.join(missing)} in every batch")
        attributions, predictions, targets = batch.attributions, batch.predictions, batch.targets
        if attributions.ndim < 3 or attributions.shape[1] != self.n_outputs:
            raise ShapeError(
                f"batch.attributions must have shape (n, K, *x_shape) with K = {self.n_outputs}, got "
                f"{tuple(attributions.shape)}"
            )
        n = attributions.shape[0]
        for name, value in (("predictions", predictions), ("targets", targets)):
            if tuple(value.shape) != (n, self.n_outputs):
                raise ShapeError(f"batch.{name} must have shape (n, K) = ({n}, {self.n_outputs}), got "
                                 f"{tuple(value.shape)}")
        if self.x_shape is not None and tuple(attributions.shape[2:]) != self.x_shape:
            raise ShapeError(
                f"batch.attributions has x_shape {tuple(attributions.shape[2:])}, earlier batches had {self.x_shape}"
            )
        return attributions, predictions, targets

    def update(self, batch: SampleBatch) -> None:
        """Fold one batch into every replicate (and the unweighted estimate).

        Parameters
        ----------
        batch : SampleBatch
            Needs ``indices`` (n,), ``attributions`` (n, K, *x_shape), ``predictions`` (n, K), ``targets`` (n, K).
        """
        attributions, predictions, targets = self._check_batch(batch)
        n = attributions.shape[0]
        indices = check_indices(batch, n, None)
        if n == 0:
            return
        for name, values in (("batch.attributions", attributions), ("batch.predictions", predictions),
                             ("batch.targets", targets)):
            check_finite(values.detach(), name, indices)
        device = attributions.device
        if self.x_shape is None:
            if self.masks is not None:
                self._region_matrix = mask_matrix_for(self.masks, tuple(attributions.shape[2:]), device)
            self.x_shape = tuple(attributions.shape[2:])
        features = attributions.detach().flatten(start_dim=2).to(torch.float64)
        if self.regions_only:
            features = features @ self._region_matrix.T.to(device)
        draws = poisson_weights(self.seed, np.arange(self.n_replicates, dtype=np.int64)[:, None],
                                indices.cpu().numpy()[None, :])
        weights = torch.cat([torch.ones(1, n, dtype=torch.float64),  # row 0: the plain estimate
                             torch.from_numpy(draws)]).to(device)
        y = targets.detach().to(device=device, dtype=torch.float64)
        y_hat = predictions.detach().to(device=device, dtype=torch.float64)
        self.attribution_target.update(weights, features, y.unsqueeze(2))
        columns = torch.stack([y_hat, y], dim=2)
        self.scalars.update(weights, columns.unsqueeze(3), columns.unsqueeze(2))
        self.count += n

    # -- combination and state -----------------------------------------------------------------------------
    def merge(self, other: "BootstrapReducer") -> None:
        """Fold in a reducer of the same configuration that saw other samples."""
        if not isinstance(other, BootstrapReducer) or not torch.equal(self._config(), other._config()):
            raise InputError(
                "can only merge bootstrap reducers built with the same outputs, n_replicates, seed and regions"
            )
        if other.count == 0:
            return
        if self.count and other.x_shape != self.x_shape:
            raise ShapeError(f"cannot merge states of x_shape {other.x_shape} and {self.x_shape}")
        if self.count == 0:
            self.load_state_dict(other.state_dict())
            return
        self.attribution_target.merge(other.attribution_target)
        self.scalars.merge(other.scalars)
        self.count += other.count

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The state: ``config`` (int64 (5,)), ``count`` (int64) and, once a sample was seen, ``x_shape``
        (int64) and the weighted co-moments ``attribution_target.*`` (weight (B + 1,), mean_a (B + 1, K, F),
        mean_b (B + 1, K, 1), comoment (B + 1, K, F)) and ``scalars.*`` (the 2 x 2 co-moment of (ŷ, y)), all
        float64; row 0 has unit weights. The tensors are the live state, not copies (updates change
        them in place): serialise them at once or clone them."""
        state = {"config": self._config(), "count": torch.tensor(self.count, dtype=torch.int64)}
        if self.count:
            state["x_shape"] = torch.tensor(self.x_shape, dtype=torch.int64)
            state.update(self.attribution_target.state_dict("attribution_target."))
            state.update(self.scalars.state_dict("scalars."))
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore a state from :meth:`state_dict` of a reducer with the same configuration."""
        if "config" not in state or "count" not in state:
            raise InputError("not a bootstrap reducer state: missing 'config' or 'count'")
        if not torch.equal(state["config"].cpu().to(torch.int64), self._config()):
            raise InputError(
                "the saved bootstrap state was made with another configuration (outputs, n_replicates, seed or "
                "regions)"
            )
        self._reset()
        self.count = int(state["count"])
        if self.count == 0:
            return
        self.x_shape = tuple(int(v) for v in state["x_shape"].reshape(-1).tolist())
        self.attribution_target.load_state_dict(state, "attribution_target.")
        self.scalars.load_state_dict(state, "scalars.")
        if self.masks is not None:
            self._region_matrix = mask_matrix_for(self.masks, self.x_shape, self.attribution_target.weight.device)

    # -- results -------------------------------------------------------------------------------------------
    def replicates(self) -> dict[str, np.ndarray]:
        """The statistics of the unweighted estimate (row 0) and of every replicate (rows 1..B).

        Returns
        -------
        dict of str to numpy.ndarray
            ``"map"`` (B + 1, K, *x_shape) unless regions_only; ``"region"`` (B + 1, K, R) with regions;
            ``"correlation"`` (B + 1, K). A replicate whose weighted target or prediction variance is 0 (or
            whose total weight is 0) has NaN statistics.

        Raises
        ------
        InputError
            If no sample was seen.
        ConstantTargetError
            If the targets or predictions of an output are constant over the dataset.
        """
        if self.count == 0:
            raise InputError("the bootstrap reducer has seen no sample: the dataset is empty")
        scalars = self.scalars
        weight = scalars.weight  # (B + 1,)
        safe_weight = torch.where(weight > 0, weight, torch.nan)[:, None]
        variance_hat = scalars.comoment[:, :, 0, 0] / safe_weight
        variance_y = scalars.comoment[:, :, 1, 1] / safe_weight
        covariance = scalars.comoment[:, :, 0, 1] / safe_weight
        std_hat, std_y = variance_hat.clamp(min=0).sqrt(), variance_y.clamp(min=0).sqrt()
        check_not_constant(std_y[0], scalars.mean_a[0, :, 1, 0], "target", self.outputs)
        check_not_constant(std_hat[0], scalars.mean_a[0, :, 0, 0], "model's attributed score", self.outputs)
        scale = std_y * std_hat  # (B + 1, K)
        scale = torch.where(scale > 0, scale, torch.nan)
        result = {"correlation": (covariance / scale).cpu().numpy()}
        maps = self.attribution_target.comoment / (safe_weight * scale)[:, :, None]  # (B + 1, K, F)
        rows = maps.shape[0]
        if self.regions_only:
            result["region"] = maps.cpu().numpy()
        else:
            result["map"] = maps.cpu().numpy().reshape(rows, self.n_outputs, *self.x_shape)
            if self._region_matrix is not None:
                result["region"] = (maps @ self._region_matrix.T).cpu().numpy()
        return result

    def compute(self) -> dict[str, np.ndarray]:
        """Estimates, percentile intervals and bootstrap standard errors.

        Returns
        -------
        dict of str to numpy.ndarray
            For each statistic ``s`` in ``"map"`` (shape (K, *x_shape); absent with ``regions_only=True``),
            ``"region"`` (shape (K, R); only with regions) and ``"correlation"`` (shape (K,)):

            * ``f"{s}_estimate"``: the plain statistic on the whole dataset (the IGC map, its region sums,
              Pearson r(ŷ, y));
            * ``f"{s}_low"``, ``f"{s}_high"``: percentile interval at ``level`` (the (1 − level)/2 and
              (1 + level)/2 quantiles of the B replicates, :func:`igcorr.stats.percentile_interval`);
            * ``f"{s}_se"``: bootstrap standard error (standard deviation of the replicates, ddof = 1).

            A component with any NaN replicate (e.g. a replicate with constant weighted predictions, which is
            possible only for tiny datasets) gets NaN bounds and standard error.
            Also ``"level"`` (0-d float64) and ``"n_replicates"`` (0-d int64, B).
        """
        result: dict[str, np.ndarray] = {}
        for name, values in self.replicates().items():
            replicates = values[1:]
            low, high = percentile_interval(replicates, self.level)
            result[f"{name}_estimate"] = values[0]
            result[f"{name}_low"] = low
            result[f"{name}_high"] = high
            result[f"{name}_se"] = replicates.std(axis=0, ddof=1)
        result["level"] = np.asarray(self.level, dtype=np.float64)
        result["n_replicates"] = np.asarray(self.n_replicates, dtype=np.int64)
        return result
