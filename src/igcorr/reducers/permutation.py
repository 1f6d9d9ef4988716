"""Permutation tests of IGC maps, computed in the same single pass as the maps.

IGC is linear in the centred target: with y_c = y − ȳ (ȳ the mean over the whole dataset),

    N σ_y σ_ŷ IGC_{k,i} = S_{k,i} = Σ_n A_{n,k,i} y_c[n, k].

The null hypothesis "the attributions carry no information about the targets" is tested by permuting the
targets over the samples. Permutation p replaces y_c[n] by y_c[π_p(n)], so its statistic

    S_p[k, i] = Σ_n A_{n,k,i} y_c[π_p(n), k]

is one more accumulator updated from the same per-sample attributions: P permutations cost P extra sums, not P
extra passes over the model. π_p is evaluated pointwise by :func:`igcorr.seeding.keyed_permutation` keyed by
(seed, p), so S_p does not depend on batch size, sharding or resumption. σ_y and σ_ŷ are the same for every
permutation (a permutation does not change the targets' spread, and the predictions are not permuted), so the
p-values of S and of the IGC map are the same and no σ is needed.

The targets of the whole dataset must be known up front (a cheap pre-pass over the data, without the model).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from igcorr._validation import check_bool, check_finite, check_positive_int, check_seed
from igcorr.errors import ConstantTargetError, InputError, NonFiniteError, ShapeError
from igcorr.reducers.base import Computed, Reducer, SampleBatch, outputs_config
from igcorr.seeding import keyed_permutation
from igcorr.stats import benjamini_hochberg, max_statistic_pvalues, permutation_pvalues

__all__ = ["PermutationReducer"]

#: permutation images computed per chunk (permutations x batch samples); keeps the hashing in cache and the
#: gathered targets small
_CHUNK_ELEMENTS = 1 << 16


# ----------------------------------------------------------------------------------------------------------
# helpers shared with the bootstrap reducer
# ----------------------------------------------------------------------------------------------------------
def as_mask_matrix(regions: Any, regions_only: bool) -> torch.Tensor | None:
    """Validate region masks and return them as a bool tensor of shape (R, *s) (None without regions).

    ``regions`` is a boolean stack of shape (R, D) over the flattened input components or (R, *x_shape), as a
    torch tensor or numpy array; :func:`igcorr.regions.as_region_masks` turns every other accepted form
    (label maps, dicts, broadcastable masks) into such a stack.
    """
    regions_only = check_bool(regions_only, "regions_only")
    if regions is None:
        if regions_only:
            raise InputError("regions_only=True needs regions: give a boolean mask stack of shape (R, D)")
        return None
    masks = regions if isinstance(regions, torch.Tensor) else torch.as_tensor(np.asarray(regions))
    if masks.dtype != torch.bool:
        raise InputError(
            f"regions must be a boolean mask stack of shape (R, D) or (R, *x_shape), got dtype {masks.dtype}; "
            "use igcorr.regions.as_region_masks(regions, x_shape)[1] to convert label maps or dicts"
        )
    if masks.ndim < 2 or masks.shape[0] == 0:
        raise ShapeError(
            f"regions must be a stack of masks of shape (R, D) or (R, *x_shape) with R >= 1, got shape "
            f"{tuple(masks.shape)}; give a single mask as mask[None]"
        )
    empty = torch.nonzero(~masks.flatten(start_dim=1).any(dim=1)).reshape(-1).tolist()
    if empty:
        raise InputError(f"region(s) {empty} have no component (all-False masks); remove them or fix the masks")
    return masks.detach()


def mask_matrix_for(masks: torch.Tensor, x_shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """The masks as a float64 (R, D) matrix on ``device``, after checking them against the inputs' shape."""
    n_features = int(np.prod(x_shape, dtype=np.int64))
    mask_shape = tuple(masks.shape[1:])
    matches = mask_shape == tuple(x_shape) if masks.ndim > 2 else mask_shape[0] == n_features
    if not matches:
        raise ShapeError(
            f"the region masks have shape {tuple(masks.shape)} but the attributions have x_shape {x_shape} "
            f"(D = {n_features} components): give masks of shape (R, {n_features}) or (R, *x_shape), e.g. "
            "igcorr.regions.as_region_masks(regions, x_shape)[1]"
        )
    return masks.reshape(masks.shape[0], n_features).to(device=device, dtype=torch.float64)


class RegionMatrix:
    """The region masks as a float64 (R, D) matrix, built for the inputs' shape and device on first use."""

    def __init__(self, masks: torch.Tensor | None) -> None:
        self.masks = masks
        self._key: tuple | None = None
        self._matrix: torch.Tensor | None = None

    def matrix(self, x_shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """The (R, D) matrix for inputs of ``x_shape`` on ``device`` (checks the masks against the shape)."""
        key = (tuple(x_shape), torch.device(device))
        if key != self._key:
            self._matrix, self._key = mask_matrix_for(self.masks, x_shape, device), key
        return self._matrix


def regions_config(masks: torch.Tensor | None) -> torch.Tensor:
    """A configuration entry identifying region masks: per region its size and the sum of its (1-based)
    component numbers, (R, 2) int64; (0, 2) without regions."""
    if masks is None:
        return torch.zeros(0, 2, dtype=torch.int64)
    flat = masks.reshape(masks.shape[0], -1).to(torch.int64).cpu()
    numbers = torch.arange(1, flat.shape[1] + 1, dtype=torch.int64)
    return torch.stack([flat.sum(dim=1), flat @ numbers], dim=1)


def seed_config(seed: int) -> int:
    """A seed as a configuration entry (an int64)."""
    return seed & ((1 << 63) - 1)


def check_indices(batch: SampleBatch, n_samples: int, limit: int | None) -> torch.Tensor:
    """Validate ``batch.indices`` (a 1-D integer tensor with one index per sample, < limit if given)."""
    indices = batch.indices
    if not isinstance(indices, torch.Tensor):
        indices = torch.as_tensor(np.asarray(indices))
    if indices.ndim != 1 or indices.shape[0] != n_samples:
        raise ShapeError(
            f"batch.indices must have shape (n,) = ({n_samples},) with the global index of each sample, got "
            f"{tuple(indices.shape)}"
        )
    if indices.dtype.is_floating_point or indices.dtype.is_complex or indices.dtype == torch.bool:
        raise InputError(f"batch.indices must be integers (global sample indices), got dtype {indices.dtype}")
    indices = indices.to(torch.int64)
    if n_samples and int(indices.min()) < 0:
        raise InputError("batch.indices must be non-negative global sample indices")
    if limit is not None and n_samples and int(indices.max()) >= limit:
        raise InputError(
            f"batch.indices contains {int(indices.max())}, but the targets given at construction cover only "
            f"{limit} samples (indices 0..{limit - 1}); give the targets of the whole dataset"
        )
    return indices


def per_output(function: Any, observed: np.ndarray, null: np.ndarray) -> np.ndarray:
    """Apply a (observed, null) -> p-values function separately to each output (axis 0 of observed)."""
    return np.stack([function(observed[k], null[:, k]) for k in range(observed.shape[0])])


def bh_per_output(p_values: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values) over the components of each output separately."""
    return np.stack([benjamini_hochberg(p_values[k])[1] for k in range(p_values.shape[0])])


# ----------------------------------------------------------------------------------------------------------
# the reducer
# ----------------------------------------------------------------------------------------------------------
class PermutationReducer(Reducer):
    """Streaming permutation test of the IGC map (and of its region sums) against shuffled targets.

    For every output k and input component i it accumulates the observed statistic
    S_0[k, i] = Σ_n A_{n,k,i} (y_{n,k} − ȳ_k) and P permuted ones
    S_p[k, i] = Σ_n A_{n,k,i} (y_{π_p(n),k} − ȳ_k), p = 1..P, where π_p is a keyed pseudo-random permutation of
    the N samples (:func:`igcorr.seeding.keyed_permutation` with key (seed, p − 1)). S_0 / N is the unscaled
    IGC numerator Cov_n(A_{·,k,i}, y_{·,k}); IGC = S_0 / (N σ_y σ_ŷ), and σ_y σ_ŷ is the same under every
    permutation, so the p-values computed from S are those of the IGC map.

    Memory: the state holds (P + 1)·K·F float64 sums, F = D (input components) in full mode or F = R (regions)
    with ``regions_only=True``, i.e. 8·(P + 1)·K·F bytes (P = 1000, K = 10, D = 784: 63 MB; P = 10,000, K = 10,
    R = 20 in regions-only mode: 16 MB), plus (P + 1)·K sums of permuted targets and N booleans recording which
    samples were seen. Work per sample: P evaluations of the keyed permutation (about 0.1 µs each on a CPU
    core) and 2·P·K·F multiply-adds.

    Parameters
    ----------
    outputs : list of int
        The attributed model outputs (K of them; used in messages).
    targets : torch.Tensor or numpy.ndarray, shape (N, K)
        The targets of the whole dataset, already encoded exactly as the batches' ``targets`` (e.g. one-hot
        columns for classes), row n = global sample index n. Converted to float64 on the attributions' device.
    n_permutations : int
        P >= 1. The smallest attainable p-value is 1 / (P + 1).
    seed : int
        Key of the permutations; the same seed gives the same permutations in every run.
    regions : bool tensor or array, shape (R, D) or (R, *x_shape), optional
        Region masks over the input components (e.g. ``igcorr.regions.as_region_masks(...)[1]``); region
        statistics are the sums of S over each region, tested the same way.
    regions_only : bool
        Keep only the region sums (state (P + 1)·K·R instead of (P + 1)·K·D), so P = 10,000 is cheap; the
        per-component results are then not available. Needs ``regions``.

    Notes
    -----
    Every sample of the dataset must be folded in exactly once (in any batches, shards or order) before
    :meth:`compute`; the reducer checks this with its record of seen indices. Batches must carry
    ``indices`` and ``attributions``; when they carry ``targets`` these are checked against the targets given
    here. The permutations are pseudo-random draws (with replacement) from all N! orderings, so the p-values
    are Monte-Carlo permutation p-values, valid because observed and permuted statistics are exchangeable under
    the null hypothesis. The max-statistic correction uses the raw statistic, so within one output it weighs
    components with large attribution variance more (as the IGC map itself does).
    """

    kind = "permutation reducer"

    def __init__(self, outputs: list[int], targets: Any, n_permutations: int, seed: int, regions: Any = None,
                 regions_only: bool = False) -> None:
        super().__init__()
        self.outputs = list(outputs)
        if not self.outputs:
            raise InputError("outputs is empty; give the attributed output indices")
        self.n_permutations = check_positive_int(n_permutations, "n_permutations",
                                                 hint="the number of target permutations")
        self.seed = check_seed(seed)
        self.masks = as_mask_matrix(regions, regions_only)
        self.regions_only = bool(regions_only)
        self.targets = self._check_targets(targets)
        self.n_samples, self.n_outputs = self.targets.shape
        self.centred = self.targets - self.targets.mean(dim=0)
        self._regions = RegionMatrix(self.masks)

        self.add_config("n_samples", self.n_samples, label="targets size")
        self.add_config("outputs", outputs_config(self.outputs))
        self.add_config("n_permutations", self.n_permutations)
        self.add_config("seed", seed_config(self.seed))
        self.add_config("regions", regions_config(self.masks))
        self.add_config("regions_only", int(self.regions_only))
        self.add_config("targets", self._fingerprint(), rtol=1e-12, shown=False)
        # checks first (merging is done in the order of declaration)
        self.add_state("x_shape", None, combine="same", kind="shape")
        self.add_state("seen", None, combine=_disjoint_union, dtype=torch.bool)  # (N,) which samples were folded in
        # attributions are accumulated minus ``shift`` (K, F) (the first sample's), to keep the sums of small
        # numbers; ``sums`` (K, P + 1, F), row 0 = identity; ``target_sums`` (K, P + 1) = Σ_seen y_c[π_p(n)],
        # which re-bases another state's shift when merging
        self.add_joint_state({"shift": None, "sums": None, "target_sums": None}, combine=_rebase)
        self.add_state("count", 0, combine="sum")

    # -- validation ----------------------------------------------------------------------------------------
    def _check_targets(self, targets: Any) -> torch.Tensor:
        if not isinstance(targets, torch.Tensor):
            array = np.asarray(targets)
            if array.dtype.kind not in "biuf":
                raise InputError(f"targets must be a real-valued (N, K) tensor, got dtype {array.dtype}")
            targets = torch.as_tensor(array)
        if targets.is_complex() or targets.dtype == torch.bool:
            raise InputError(f"targets must be a real-valued (N, K) tensor, got dtype {targets.dtype}")
        targets = targets.detach().to(torch.float64)
        if targets.ndim != 2 or targets.shape[1] != len(self.outputs):
            raise ShapeError(
                f"targets must have shape (N, K) = (N, {len(self.outputs)}) (one column per attributed output, "
                f"encoded as in the batches), got {tuple(targets.shape)}"
            )
        if targets.shape[0] < 2:
            raise InputError(f"a permutation test needs at least 2 samples, got N = {targets.shape[0]}")
        if not bool(torch.isfinite(targets).all()):
            raise NonFiniteError("targets contain NaN or infinite values; clean or drop those samples first")
        spread = targets.max(dim=0).values - targets.min(dim=0).values
        constant = torch.nonzero(spread == 0).reshape(-1).tolist()
        if constant:
            raise ConstantTargetError(
                f"the target of output(s) {[self.outputs[k] for k in constant]} is constant over the dataset, so "
                "there is nothing to permute; drop those outputs (outputs=...)"
            )
        return targets

    def _fingerprint(self) -> torch.Tensor:
        weights = torch.arange(1, self.n_samples + 1, dtype=torch.float64, device=self.targets.device)
        return torch.stack([self.targets.sum(dim=0), (self.targets * weights[:, None]).sum(dim=0)]).cpu()

    # -- streaming -----------------------------------------------------------------------------------------
    def _features(self, attributions: torch.Tensor) -> torch.Tensor:
        """(n, K, F) float64: flattened attributions, or their region sums in regions-only mode."""
        flat = attributions.flatten(start_dim=2).to(torch.float64)
        if self.regions_only:
            return flat @ self._regions.matrix(self.x_shape, flat.device).T
        return flat

    def _initialise(self, attributions: torch.Tensor) -> None:
        device = attributions.device
        x_shape = tuple(attributions.shape[2:])
        if self.masks is not None:
            self._regions.matrix(x_shape, device)  # checks the masks against the inputs' shape
        n_features = (self.masks.shape[0] if self.regions_only else int(np.prod(x_shape, dtype=np.int64)))
        rows = self.n_permutations + 1
        self.x_shape = x_shape
        self.seen = torch.zeros(self.n_samples, dtype=torch.bool, device=device)
        self.sums = torch.zeros(self.n_outputs, rows, n_features, dtype=torch.float64, device=device)
        self.target_sums = torch.zeros(self.n_outputs, rows, dtype=torch.float64, device=device)

    def update(self, batch: SampleBatch) -> None:
        """Fold one batch into the sums.

        Parameters
        ----------
        batch : SampleBatch
            Needs ``indices`` (n,) and ``attributions`` (n, K, *x_shape); ``targets`` (n, K), when given, must
            equal the constructor's targets at ``indices``.
        """
        attributions = batch.attributions
        if attributions is None:
            raise InputError("the permutation reducer needs per-sample attributions (batch.attributions)")
        if attributions.ndim < 3 or attributions.shape[1] != self.n_outputs:
            raise ShapeError(
                f"batch.attributions must have shape (n, K, *x_shape) with K = {self.n_outputs}, got "
                f"{tuple(attributions.shape)}"
            )
        n = attributions.shape[0]
        indices = check_indices(batch, n, self.n_samples)
        if n == 0:
            return
        if self.x_shape is None:
            self._initialise(attributions)
        elif tuple(attributions.shape[2:]) != self.x_shape:
            raise ShapeError(
                f"batch.attributions has x_shape {tuple(attributions.shape[2:])}, earlier batches had {self.x_shape}"
            )
        device = self.sums.device
        if self.centred.device != device:
            self.centred, self.targets = self.centred.to(device), self.targets.to(device)
        indices = indices.to(device)
        if len(torch.unique(indices)) != n or bool(self.seen[indices].any()):
            raise InputError(
                "a sample index was given twice (within a batch or in an earlier batch); every sample must be "
                "folded in exactly once"
            )
        if batch.targets is not None:
            given = batch.targets.detach().to(device=device, dtype=torch.float64)
            if given.shape != (n, self.n_outputs) or not torch.allclose(given, self.targets[indices],
                                                                          rtol=1e-7, atol=1e-9):
                raise InputError(
                    "the batch's targets differ from the targets given to the permutation reducer at the same "
                    "indices; pass the whole dataset's targets encoded exactly as in the batches (same order, "
                    "same output columns)"
                )

        check_finite(attributions.detach(), "batch.attributions", indices)
        features = self._features(attributions.detach().to(device))  # (n, K, F)
        if self.shift is None:
            self.shift = features[0].clone()
        features = (features - self.shift).transpose(0, 1)  # (K, n, F)
        self._accumulate(indices, features)
        self.seen[indices] = True
        self.count += n

    def _accumulate(self, indices: torch.Tensor, features: torch.Tensor) -> None:
        """Add Σ_n features[k, n] y_c[π_p(n), k] to row p of the sums, for the identity and all permutations."""
        n = indices.shape[0]
        index_array = indices.cpu().numpy()
        chunk = max(1, _CHUNK_ELEMENTS // n)
        for start in range(0, self.n_permutations + 1, chunk):
            stop = min(start + chunk, self.n_permutations + 1)
            # row 0 is the identity (the observed statistic); row p >= 1 uses the permutation keyed (seed, p - 1)
            streams = np.arange(max(start, 1) - 1, stop - 1, dtype=np.int64)[:, None]
            images = keyed_permutation(self.seed, streams, index_array[None, :], self.n_samples)
            if start == 0:
                images = np.concatenate([index_array[None, :], images])
            images = torch.from_numpy(images).to(features.device)
            permuted = self.centred[images].permute(2, 0, 1)  # (K, rows, n)
            self.sums[:, start:stop] += torch.bmm(permuted, features)
            self.target_sums[:, start:stop] += permuted.sum(dim=2)

    # -- results -------------------------------------------------------------------------------------------
    def statistics(self, level: str = "components") -> tuple[np.ndarray, np.ndarray]:
        """The observed and permuted statistics, scaled to covariances (divided by N).

        Parameters
        ----------
        level : {"components", "regions"}
            Per input component (not available with ``regions_only``) or per region.

        Returns
        -------
        observed : numpy.ndarray, shape (K, *x_shape) or (K, R)
            Cov_n(A_{·,k,i}, y_{·,k}) = S_0 / N, i.e. the IGC map times σ_y σ_ŷ.
        null : numpy.ndarray, shape (P, K, *x_shape) or (P, K, R)
            S_p / N for the permutations p = 1..P.

        Raises
        ------
        InputError
            If not every sample of the dataset was folded in, or the level is unavailable.
        """
        if level not in ("components", "regions"):
            raise InputError(f"level must be 'components' or 'regions', got {level!r}")
        if self.count != self.n_samples:
            raise InputError(
                f"the permutation reducer has seen {self.count} of the {self.n_samples} samples whose targets it "
                "was given; stream every sample (and merge all shards) before computing, or give only the "
                "targets of the samples that are streamed"
            )
        # Over the whole dataset Σ_n y_c[π(n)] = Σ_n y_c[n] = 0, so the shift term c · target_sums vanishes.
        sums = self.sums / self.n_samples  # (K, P + 1, F)
        if level == "regions":
            if self.masks is None:
                raise InputError("no regions were given to the permutation reducer")
            if not self.regions_only:
                sums = sums @ self._regions.matrix(self.x_shape, sums.device).T
            shape: tuple[int, ...] = (sums.shape[2],)
        else:
            if self.regions_only:
                raise InputError("per-component statistics are not kept with regions_only=True")
            shape = self.x_shape
        values = sums.transpose(0, 1).cpu().numpy()  # (P + 1, K, F)
        values = values.reshape(values.shape[0], self.n_outputs, *shape)
        return values[0], values[1:]

    def compute(self) -> Computed:
        """Permutation p-values, family-wise corrected p-values and q-values, as float64 tensors.

        Returns
        -------
        Computed
            Per input component (absent with ``regions_only=True``: ``maps`` is then None), of shape
            (K, *x_shape):

            * ``maps``: the observed statistic Cov_n(A, y) per component (the IGC map times σ_y σ_ŷ; same sign);
            * ``extra_maps["p_value"]``: two-sided permutation p-value (1 + #{p : |S_p| >= |S_0|}) / (P + 1);
            * ``extra_maps["p_fwe"]``: max-statistic family-wise corrected p-value, the family being all
              components of the same output;
            * ``extra_maps["q_value"]``: Benjamini–Hochberg adjusted p-value over the components of the same
              output.

            Per region, when regions were given, of shape (K, R): ``regions["observed"]``,
            ``regions["p_value"]``, ``regions["p_fwe"]`` (family: the R regions of one output) and
            ``regions["q_value"]``.

            Per output (K,): ``diagnostics["n_permutations"]`` (P) and ``diagnostics["n_samples"]`` (N).
            Reject at level α where a p-value or q-value is <= α.
        """
        computed = Computed(maps=None)
        levels = ([] if self.regions_only else ["components"]) + ([] if self.masks is None else ["regions"])
        for level in levels:
            observed, null = self.statistics(level)
            p_value = per_output(permutation_pvalues, observed, null)
            tested = {"p_value": p_value, "p_fwe": per_output(max_statistic_pvalues, observed, null),
                      "q_value": bh_per_output(p_value)}
            if level == "components":
                computed.maps = _tensor(observed)
                computed.extra_maps.update({name: _tensor(values) for name, values in tested.items()})
            else:
                computed.regions.update({name: _tensor(values) for name, values in {"observed": observed,
                                                                                    **tested}.items()})
        computed.diagnostics = {"n_permutations": torch.full((self.n_outputs,), float(self.n_permutations),
                                                             dtype=torch.float64),
                                "n_samples": torch.full((self.n_outputs,), float(self.n_samples), dtype=torch.float64)}
        return computed


def _tensor(values: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.float64))


# ----------------------------------------------------------------------------------------------------------
# combine rules of the state
# ----------------------------------------------------------------------------------------------------------
def _disjoint_union(mine: torch.Tensor | None, theirs: torch.Tensor | None) -> torch.Tensor | None:
    """The samples seen by either state, which must not have seen any sample in common."""
    if theirs is None:
        return mine
    if mine is None:
        return theirs.clone()
    theirs = theirs.to(mine.device)
    if bool((mine & theirs).any()):
        raise InputError("the two reducers saw some of the same samples; shards must be disjoint")
    mine |= theirs
    return mine


def _rebase(mine: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """Add the other state's sums to ours after moving them from its shift to ours:
    Σ (a − c_o) t = Σ (a − c_s) t + (c_s − c_o) Σ t."""
    if theirs["shift"] is None:  # no sample accumulated there
        return mine
    if mine["shift"] is None:
        return {name: value.clone() for name, value in theirs.items()}
    device = mine["sums"].device
    other_sums, other_target_sums = theirs["sums"].to(device), theirs["target_sums"].to(device)
    rebase = (theirs["shift"].to(device) - mine["shift"])[:, None, :] * other_target_sums[:, :, None]
    mine["sums"] += other_sums + rebase
    mine["target_sums"] += other_target_sums
    return mine
