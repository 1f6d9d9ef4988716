"""What removed input components are replaced by: a baseline value, the dataset mean, or a noisy linear
imputation from the components that are kept (ROAD, Rong et al. 2022).

A replacement turns a batch of inputs (B, D) and a stack of removal masks (U, D) into the modified inputs
(U, B, D). The masks are shared by all samples (a dataset-wise map ranks the same components first in every
sample), which is what makes the linear imputation cheap: one sparse factorisation per mask serves the whole
batch.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.sparse as sparse
import torch
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import splu

from igcorr.errors import InputError, ShapeError
from igcorr.seeding import generator_for

try:  # optional, not a dependency: bounds the BLAS threads of the sparse solves when it is installed
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - depends on the environment
    threadpool_limits = None

logger = logging.getLogger(__name__)

#: the replacement kinds of :func:`igcorr.evaluation.faithfulness`
REPLACEMENTS = ("mean", "baseline", "linear")

#: tag of the per-sample noise draws of the linear imputation (kept apart from every other draw of a seed)
_NOISE_TAG = 0x5EED_0ADD_0001
#: bytes of sparse factors kept between batches by the linear imputation
_FACTOR_CACHE_BYTES = 256 * 2**20


def reference_tensor(value: Any, x_shape: tuple[int, ...], name: str) -> torch.Tensor:
    """A float64 (D,) tensor from a number or an array of shape x_shape (or (1, *x_shape))."""
    if isinstance(value, bool):
        raise InputError(f"{name} must be a number or an array of shape {x_shape}, got {value!r}")
    tensor = torch.as_tensor(np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value,
                                        dtype=np.float64))
    size = int(np.prod(x_shape, dtype=np.int64))
    if tensor.ndim == 0:
        tensor = tensor.expand(size).clone()
    elif tuple(tensor.shape) in (tuple(x_shape), (1, *x_shape)):
        tensor = tensor.reshape(size)
    else:
        raise ShapeError(f"{name} has shape {tuple(tensor.shape)} but one input has shape {x_shape}; give a number "
                         "or one value per input component")
    if not bool(torch.isfinite(tensor).all()):
        raise InputError(f"{name} contains NaN or Inf")
    return tensor


class Replacement:
    """Fixed values per component (a baseline or the dataset mean): x̃ = where(mask, value, x)."""

    def __init__(self, values: torch.Tensor) -> None:
        self.values = values  # (D,) float64

    def to(self, device: torch.device, dtype: torch.dtype) -> "Replacement":
        self.values = self.values.to(device=device, dtype=dtype)
        return self

    def apply(self, flat: torch.Tensor, masks: torch.Tensor, mask_ids: list[int], indices: np.ndarray) -> torch.Tensor:
        """(U, B, D) modified inputs for the batch ``flat`` (B, D) and the masks (U, D)."""
        return torch.where(masks[:, None, :], self.values.to(flat.dtype), flat[None])

    def describe(self) -> dict[str, Any]:
        return {"kind": "values"}


def neighbour_graph(x_shape: tuple[int, ...]) -> sparse.csr_matrix:
    """Symmetric neighbour weights between the components of one input.

    (D,): the previous and the next component (weight 1). (H, W): the 8 neighbours, weight 2 for the 4 that
    share an edge and 1 for the diagonal ones (ROAD's 1/6 and 1/12 once normalised). (C, H, W): the same within
    each channel, channels imputed independently.
    """
    shape = tuple(int(s) for s in x_shape)
    if len(shape) == 1:
        offsets, grid = [((1,), 1.0), ((-1,), 1.0)], shape
        channels = 1
    elif len(shape) in (2, 3):
        grid = shape[-2:]
        channels = 1 if len(shape) == 2 else shape[0]
        offsets = [((dr, dc), 2.0 if dr == 0 or dc == 0 else 1.0)
                   for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)]
    else:
        raise InputError(f"linear imputation needs inputs of shape (D,), (H, W) or (C, H, W); got {shape}. Use "
                         "replacement='mean' or 'baseline'")
    index = np.arange(int(np.prod(grid))).reshape(grid)
    rows, cols, weights = [], [], []
    for offset, weight in offsets:
        source = tuple(slice(max(0, -o), n - max(0, o)) for o, n in zip(offset, grid))
        target = tuple(slice(max(0, o), n - max(0, -o)) for o, n in zip(offset, grid))
        rows.append(index[source].ravel())
        cols.append(index[target].ravel())
        weights.append(np.full(rows[-1].size, weight))
    per_channel = int(np.prod(grid))
    row = np.concatenate([np.concatenate(rows) + c * per_channel for c in range(channels)])
    col = np.concatenate([np.concatenate(cols) + c * per_channel for c in range(channels)])
    weight = np.tile(np.concatenate(weights), channels)
    size = per_channel * channels
    return sparse.csr_matrix((weight, (row, col)), shape=(size, size))


class _Factor:
    """The imputation operator of one removal mask: v_R = A⁻¹ W_RK x_K (A = diag(d_R) − W_RR)."""

    def __init__(self, graph: sparse.csr_matrix, degree: np.ndarray, mask: np.ndarray) -> None:
        removed = np.flatnonzero(mask)
        kept = np.flatnonzero(~mask)
        self.removed = removed
        self.kept = kept
        to_removed = graph[removed]
        among = to_removed[:, removed]
        self.boundary = to_removed[:, kept].tocsr()
        self.solved = np.zeros(0, dtype=np.int64)
        self.isolated = removed
        self.lu = None
        self.bytes = 0
        if removed.size == 0:
            return
        # components of removed components that touch no kept component have no values to interpolate from
        _, labels = connected_components(among, directed=False)
        touches = np.zeros(labels.max() + 1, dtype=bool)
        np.logical_or.at(touches, labels, np.asarray(self.boundary.sum(axis=1)).ravel() > 0)
        solvable = touches[labels]
        self.solved = np.flatnonzero(solvable)
        self.isolated = removed[~solvable]
        if self.solved.size:
            system = (sparse.diags(degree[removed[self.solved]]) - among[self.solved][:, self.solved]).tocsc()
            self.lu = splu(system)
            self.boundary = self.boundary[self.solved]
        # SuperLU's own storage measured at about 2.4 times the 12 bytes per stored value of L and U
        self.bytes = 0 if self.lu is None else 36 * (self.lu.L.nnz + self.lu.U.nnz)

    def impute(self, x: np.ndarray, fallback: np.ndarray, columns: bool) -> np.ndarray:
        """(B, D) float64 inputs → the same with the removed components imputed (before noise); ``columns``
        solves sample by sample (single-threaded triangular solves) instead of all samples at once."""
        out = x.copy()
        if self.lu is not None:
            rhs = np.asfortranarray(self.boundary @ x[:, self.kept].T)
            if columns:
                solved = np.stack([self.lu.solve(rhs[:, i]) for i in range(rhs.shape[1])], axis=1)
            else:
                solved = self.lu.solve(rhs)
            out[:, self.removed[self.solved]] = solved.T
        if self.isolated.size:
            out[:, self.isolated] = fallback[self.isolated]
        return out


class LinearImputation:
    """Noisy linear imputation: every removed component is the weighted mean of its neighbours (removed ones
    included, so a removed patch is filled by the harmonic interpolation of its kept border), plus Gaussian
    noise of standard deviation ``noise`` keyed by (seed, sample index). Patches with no kept neighbour at all
    take the fallback value."""

    def __init__(self, x_shape: tuple[int, ...], fallback: torch.Tensor, noise: float, seed: int) -> None:
        self.graph = neighbour_graph(x_shape)
        self.degree = np.asarray(self.graph.sum(axis=1)).ravel()
        self.fallback = fallback.cpu().numpy()
        self.noise = float(noise)
        self.seed = int(seed)
        self.x_shape = x_shape
        self._factors: dict[int, _Factor] = {}
        self._cached_bytes = 0
        self._noise: tuple[np.ndarray, np.ndarray] | None = None
        self.device: torch.device | None = None
        self.dtype: torch.dtype | None = None

    def to(self, device: torch.device, dtype: torch.dtype) -> "LinearImputation":
        self.device, self.dtype = device, dtype
        return self

    def _factor(self, key: int, mask: np.ndarray) -> _Factor:
        """The factorisation of mask ``key``: kept from batch to batch while the cache has room (the masks come
        in the same order every batch, so evicting the oldest would only ever evict the next one needed)."""
        factor = self._factors.get(key)
        if factor is not None:
            return factor
        factor = _Factor(self.graph, self.degree, mask)
        if self._cached_bytes + factor.bytes <= _FACTOR_CACHE_BYTES:
            self._factors[key] = factor
            self._cached_bytes += factor.bytes
        return factor

    def noise_fields(self, indices: np.ndarray, size: int) -> np.ndarray:
        """(B, D) noise, one field per sample keyed by (seed, sample index): the same for every mask."""
        if self.noise == 0:
            return np.zeros((len(indices), size))
        if self._noise is not None and np.array_equal(self._noise[0], indices):
            return self._noise[1]  # the masks of one batch come in several calls
        fields = [torch.randn(size, generator=generator_for(self.seed, _NOISE_TAG, int(i)), dtype=torch.float64)
                  for i in indices]
        noise = self.noise * torch.stack(fields).numpy()
        self._noise = (np.array(indices), noise)
        return noise

    def apply(self, flat: torch.Tensor, masks: torch.Tensor, mask_ids: list[int], indices: np.ndarray) -> torch.Tensor:
        x = flat.detach().to(device="cpu", dtype=torch.float64).numpy()
        noise = self.noise_fields(indices, x.shape[1])
        masks_np = masks.cpu().numpy()
        out = np.empty((len(masks_np), *x.shape))
        with _blas_threads() as limited:
            for position, (key, mask) in enumerate(zip(mask_ids, masks_np)):
                imputed = self._factor(key, mask).impute(x, self.fallback, columns=not limited)
                imputed[:, mask] += noise[:, mask]
                out[position] = imputed
        return torch.as_tensor(out).to(device=flat.device, dtype=flat.dtype)

    def describe(self) -> dict[str, Any]:
        return {"kind": "linear", "noise": self.noise}


@contextlib.contextmanager
def _blas_threads() -> Iterator[bool]:
    """Limit the BLAS threads of the sparse solves to torch's thread count, if threadpoolctl is installed.

    SuperLU solves many right-hand sides at once with threaded BLAS calls; on a busy machine those threads
    were measured 17 times slower than one thread (1.26 s against 0.074 s for 256 samples of a 64 × 64 image).
    Yields whether the limit is in place; without it the caller solves sample by sample, which stays on one
    thread (0.18 s in the same measurement).
    """
    if threadpool_limits is None:
        yield False
        return
    with threadpool_limits(limits=torch.get_num_threads(), user_api="blas"):
        yield True
