"""The correlation reducer behind IGC, IGaC and BSC.

For per-sample attributions A_{n,k,i} whose sum over i is f_k(x_n) − f̄_k(B_n), the map

    M_{k,i} = Cov_n(A_{·,k,i}, t_{·,k}) / (σ_t σ_ŷ)

sums to ρ(ŷ_k, t_k) − Cov_n(f̄_k(B_n), t_k)/(σ_t σ_ŷ). With t the targets this is IGC (or BSC for Baseline
Shapley attributions); with t the model's own predictions it is IGaC, whose map sums to ≈ 1.
"""

from __future__ import annotations

import mmap
import tempfile
from collections.abc import Iterator

import numpy as np
import torch

from igcorr._validation import check_choice
from igcorr.errors import ConstantTargetError, InputError
from igcorr.reducers.base import CoMoment, Computed, Reducer, SampleBatch, SumAndMax, outputs_config

#: a standard deviation this small relative to the mean magnitude counts as constant
_CONSTANT_TOLERANCE = 1e-12


def check_not_constant(std: torch.Tensor, mean: torch.Tensor, what: str, outputs: list[int]) -> None:
    """Raise ConstantTargetError if any output's standard deviation vanishes.

    Targets are judged relative to their own scale (targets in small units are not constant); the model's
    scores relative to max(|mean|, 1), so that rounding noise around a constant score counts as constant.
    """
    floor = 0.0 if what == "target" else 1.0
    constant = (std == 0) | (std <= _CONSTANT_TOLERANCE * torch.clamp(mean.abs(), min=floor))
    if bool(constant.any()):
        names = [outputs[int(k)] for k in torch.nonzero(constant).reshape(-1)]
        raise ConstantTargetError(
            f"the {what} of output(s) {names} is constant over the dataset, so its correlation is undefined; "
            "drop those outputs (outputs=...) or use data in which they vary"
        )


#: bytes that one block of outputs of the map co-moment's update takes: its temporaries (two (n, rows, D) arrays
#: and four (rows, D) ones) and, on disk, the block's resident rows of the two stored pieces
BLOCK_BYTES = 32 * 2**20


class DiskArray:
    """A float64 array in an unnamed temporary file (removed by the system when the array is freed), mapped
    into memory.

    The pages a block of rows touched are handed back to the system with :meth:`release` (written to the file
    when the system needs the memory, never lost), so the process keeps only the block it works on resident.

    Parameters
    ----------
    shape : tuple of int
    directory : path, optional
        Folder of the file (default: the system's temporary folder, ``TMPDIR``).
    """

    def __init__(self, shape: tuple[int, ...], directory: str | None = None) -> None:
        self.shape = tuple(int(n) for n in shape)
        nbytes = 8 * max(1, int(np.prod(self.shape, dtype=np.int64)))
        try:
            with tempfile.TemporaryFile(dir=directory, prefix="igcorr-maps-") as handle:
                handle.truncate(nbytes)
                self._map = mmap.mmap(handle.fileno(), nbytes)  # keeps its own descriptor of the file
        except OSError as error:
            raise InputError(f"cannot hold {nbytes / 2**20:.0f} MiB of maps on disk in "
                             f"{directory or tempfile.gettempdir()}: {error.strerror or error}; free space there or "
                             "point TMPDIR at a folder with space") from error
        self.row_bytes = nbytes // max(1, self.shape[0])
        self.tensor = torch.from_numpy(np.frombuffer(self._map, dtype=np.float64).reshape(self.shape))

    def release(self, rows: slice) -> None:
        """Drop rows ``rows`` from this process's resident memory (their values stay in the file)."""
        if not hasattr(mmap, "MADV_DONTNEED"):  # pragma: no cover - systems without madvise
            return
        start = (rows.start or 0) * self.row_bytes
        stop = min(rows.stop if rows.stop is not None else self.shape[0], self.shape[0]) * self.row_bytes
        first = start - start % mmap.PAGESIZE
        if stop > first:
            self._map.madvise(mmap.MADV_DONTNEED, first, stop - first)


def _rows_per_block(n: int, width: int, block_bytes: int | None = None) -> int:
    """Outputs per block such that a block's (2n + 6) float64 arrays of (rows, width) take ``block_bytes``."""
    return max(1, (block_bytes or BLOCK_BYTES) // (8 * (2 * max(1, n) + 6) * max(1, width)))


class MapMoment(CoMoment):
    """The co-moment of every map component with its output's target: a :class:`CoMoment` whose update runs
    block by block of outputs, in place.

    The arithmetic is that of :func:`~igcorr.reducers.base.chan_combine` element for element, so the state is
    the one a CoMoment would hold, but the temporaries are one block of outputs instead of whole (n, K, D)
    batches and K·D states. With :meth:`store_on_disk` the two K·D pieces (``mean_a``, ``comoment``) live in
    :class:`DiskArray` files and only the block being updated stays in memory; pieces that arrive in memory
    (a loaded checkpoint, a merge) are moved back to disk at the next update.
    """

    def __init__(self) -> None:
        super().__init__()
        self.on_disk = False
        self.block_bytes = BLOCK_BYTES
        self._files: dict[str, DiskArray] = {}

    def store_on_disk(self, block_bytes: int | None = None) -> None:
        """Keep the K·D pieces in files on disk from now on, updating blocks of outputs whose temporaries take
        about ``block_bytes`` (default :data:`BLOCK_BYTES`)."""
        self.on_disk = True
        if block_bytes is not None:
            self.block_bytes = max(1, int(block_bytes))

    def _file(self, name: str, shape: tuple[int, ...]) -> DiskArray:
        store = self._files.get(name)
        if store is None or store.shape != tuple(shape):
            store = self._files[name] = DiskArray(shape)
        return store

    def _own(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """The piece ``name`` where it belongs (in memory, or in its file, copied there block by block if it
        arrived in memory), allocated if missing."""
        current = getattr(self, name)
        if not self.on_disk or like.device.type != "cpu":
            if current is None:
                current = torch.empty(shape, dtype=torch.float64, device=like.device)
                setattr(self, name, current)
            return current
        store = self._file(name, shape)
        if current is not None and current.data_ptr() != store.tensor.data_ptr():
            step = _rows_per_block(1, int(np.prod(shape[1:], dtype=np.int64)), self.block_bytes)
            for start in range(0, shape[0], step):
                rows = slice(start, start + step)
                store.tensor[rows] = current[rows]
                store.release(rows)
        setattr(self, name, store.tensor)
        return store.tensor

    def _release(self, rows: slice) -> None:
        for store in self._files.values():
            if self.on_disk:
                store.release(rows)

    def update(self, a: torch.Tensor, b: torch.Tensor, projection: torch.Tensor | None = None) -> None:
        """Add samples: ``a`` (n, K, D) and ``b`` (n, K, 1); with ``projection`` (K, H), ``a`` is (n, H, D) and
        the outputs' attributions are projection @ a, computed block by block of outputs so that no (n, K, D)
        array is ever held."""
        n = a.shape[0]
        if n == 0:
            return
        a, b = a.to(torch.float64), b.to(torch.float64)
        shape = tuple(a.shape[1:]) if projection is None else (projection.shape[0], a.shape[2])
        mean_a, comoment = self._own("mean_a", shape, a), self._own("comoment", shape, a)
        first, count = self.count == 0, self.count
        total = count + n
        batch_mean_b = b.mean(dim=0)
        delta_b = None if first else batch_mean_b - self.mean_b
        blocks = (self._blocks(a, b, batch_mean_b, shape) if projection is None
                  else self._projected_blocks(a, b, batch_mean_b, projection))
        for rows, part_mean, part_comoment in blocks:
            if first:
                mean_a[rows] = part_mean
                comoment[rows] = part_comoment
            else:  # chan_combine, element for element, in place
                delta_a = part_mean - mean_a[rows]
                mean_a[rows].add_(delta_a, alpha=n / total)
                target = comoment[rows]
                target.add_(part_comoment)
                target.addcmul_(delta_a, delta_b[rows], value=count * n / total)
            self._release(rows)
        self.mean_b = batch_mean_b if first else self.mean_b + delta_b * (n / total)
        self.count = total

    def _blocks(self, a: torch.Tensor, b: torch.Tensor, mean_b: torch.Tensor,
                shape: tuple[int, ...]) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
        """(rows, the batch's mean of a, its co-moment with b) block by block of outputs."""
        step = _rows_per_block(a.shape[0], int(np.prod(shape[1:], dtype=np.int64)), self.block_bytes)
        for start in range(0, shape[0], step):
            rows = slice(start, start + step)
            part = a[:, rows]
            part_mean = part.mean(dim=0)
            yield rows, part_mean, ((part - part_mean) * (b[:, rows] - mean_b[rows])).sum(dim=0)

    def _projected_blocks(self, a: torch.Tensor, b: torch.Tensor, mean_b: torch.Tensor,
                          projection: torch.Tensor) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
        """The same for a = projection @ integrals: the mean is projection @ (the integrals' mean), and as the
        centred b sums to zero over the batch, the co-moment of output k is projection[k] @ Σ_n (b_nk − b̄_k)
        integrals_n, one matrix product per block (no (n, rows, D) temporaries)."""
        n, width, features = a.shape
        flat, mean_integrals = a.reshape(n, width * features), a.mean(dim=0)
        centred = (b - mean_b)[..., 0]  # (n, K)
        step = max(1, self.block_bytes // (2 * 8 * width * features))
        for start in range(0, projection.shape[0], step):
            rows = slice(start, start + step)
            weights = projection[rows]
            weighted = (centred[:, rows].T @ flat).reshape(-1, width, features)  # Σ_n (b − b̄) integrals_n
            yield rows, weights @ mean_integrals, torch.bmm(weights.unsqueeze(1), weighted).squeeze(1)

    def scaled_covariance(self, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """comoment / count / scale (per output), and its sum over the components of each output; computed block
        by block, into a file on disk when the state is stored there."""
        if self.count == 0:
            raise InputError("no samples were seen: the dataset is empty")
        source = self.comoment
        shape = tuple(source.shape)
        on_disk = self.on_disk and source.device.type == "cpu"
        result = DiskArray(shape) if on_disk else None
        maps = result.tensor if result is not None else torch.empty_like(source)
        sums = torch.empty(shape[0], dtype=torch.float64, device=source.device)
        step = _rows_per_block(1, int(np.prod(shape[1:], dtype=np.int64)), self.block_bytes)
        for start in range(0, shape[0], step):
            rows = slice(start, start + step)
            maps[rows] = source[rows] / self.count / scale[rows].reshape(-1, *[1] * (len(shape) - 1))
            sums[rows] = maps[rows].reshape(len(maps[rows]), -1).sum(dim=1)
            self._release(rows)
            if result is not None:
                result.release(rows)
        return maps, sums


class CorrelationReducer(Reducer):
    """Streaming Cov(attribution, t)/(σ_t σ_ŷ) with the completeness decomposition.

    Parameters
    ----------
    outputs : list of int
        Model output indices (for messages).
    against : {"targets", "predictions"}
        t = the targets (IGC, BSC) or the attributed predictions themselves (IGaC).
    """

    kind = "correlation reducer"
    projects_readout = True

    def __init__(self, outputs: list[int], against: str = "targets") -> None:
        super().__init__()
        self.outputs = list(outputs)
        self.against = check_choice(against, "against", ("targets", "predictions"))
        self.add_config("outputs", outputs_config(self.outputs))
        self.add_config("against", int(self.against == "predictions"))
        self.add_state("attribution_target", MapMoment())
        # columns: prediction, target, mean baseline prediction; their full (3, 3) co-moment per output
        self.add_state("scalars", CoMoment())
        # |Σ_i A − (ŷ − f̄(B))| per sample and output: the quadrature error
        self.add_state("residuals", SumAndMax())
        # Monte-Carlo error: Σ_n v_n t_n², Σ_n v_n t_n, Σ_n v_n with v the variance of each sample's estimate
        self.add_state("variance_sums", None, combine="sum")
        # adaptive quadrature: the nodes each sample needed
        self.add_state("steps", SumAndMax())

    def store_maps_on_disk(self, block_bytes: int | None = None) -> None:
        """Keep the K·D state of the maps (and the maps computed from it) in files on disk, for maps larger
        than the memory budget (see :class:`MapMoment`)."""
        self.attribution_target.store_on_disk(block_bytes)

    def update(self, batch: SampleBatch) -> None:
        if batch.attributions is None or batch.predictions is None or batch.baseline_predictions is None:
            raise InputError("the correlation reducer needs attributions, predictions and baseline predictions")
        target = batch.predictions if self.against == "predictions" else batch.targets
        attributions = batch.attributions.flatten(start_dim=2)
        self.attribution_target.update(attributions, target.unsqueeze(2), batch.projection)
        columns = torch.stack([batch.predictions, target, batch.baseline_predictions], dim=2)
        self.scalars.update(columns.unsqueeze(3), columns.unsqueeze(2))
        totals = attributions.sum(dim=2)
        if batch.projection is not None:
            totals = totals @ batch.projection.T
        self.residuals.update((totals - (batch.predictions - batch.baseline_predictions)).abs())
        if batch.attribution_variance is not None:
            variance = batch.attribution_variance.flatten(start_dim=2).to(torch.float64)
            powers = torch.stack([target.square(), target, torch.ones_like(target)], dim=0).unsqueeze(3)
            self.fold(variance_sums=(powers * variance.unsqueeze(0)).sum(dim=1))
        if batch.steps is not None:
            self.steps.update(batch.steps)

    def compute(self) -> Computed:
        covariance = self.scalars.covariance()
        means = self.scalars.mean_a[..., 0]
        prediction_std = covariance[:, 0, 0].clamp(min=0).sqrt()
        target_std = covariance[:, 1, 1].clamp(min=0).sqrt()
        what = "prediction" if self.against == "predictions" else "target"
        check_not_constant(target_std, means[:, 1], what, self.outputs)
        check_not_constant(prediction_std, means[:, 0], "model's attributed score", self.outputs)
        scale = target_std * prediction_std
        maps, map_sums = self.attribution_target.scaled_covariance(scale)
        correlation = covariance[:, 0, 1] / scale
        baseline_term = -covariance[:, 2, 1] / scale
        count = self.scalars.count
        diagnostics = {
            "correlation": correlation,
            "baseline_term": baseline_term,
            "map_sum": map_sums,
            "completeness_mean": self.residuals.total / count,
            "completeness_max": self.residuals.largest,
            "target_std": target_std,
            "prediction_std": prediction_std,
        }
        extra_maps = {}
        if self.variance_sums is not None:
            # Var(map_i) = Σ_n (t_n − t̄)² v_{n,i} / (N σ_t σ_ŷ)², expanded in the three accumulated sums
            mean_target = self.attribution_target.mean_b
            squares, linear, plain = self.variance_sums
            spread = (squares - 2 * mean_target * linear + mean_target.square() * plain).clamp(min=0)
            extra_maps["standard_error"] = spread.sqrt() / (count * scale.unsqueeze(1))
        if self.steps.total is not None:
            diagnostics["steps_mean"] = (self.steps.total / count).expand(len(self.outputs)).clone()
            diagnostics["steps_max"] = self.steps.largest.expand(len(self.outputs)).clone()
        return Computed(maps=maps, extra_maps=extra_maps, diagnostics=diagnostics)
