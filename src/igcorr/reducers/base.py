"""The reducer protocol and the streaming co-moment every dataset statistic is built from.

A reducer consumes per-sample quantities batch by batch (``update``), combines exactly with another reducer
that saw other samples (``merge``), exposes its state as a dict of tensors (``state_dict`` /
``load_state_dict``) and turns it into maps and per-output diagnostics (``compute``). Chunked, resumed and
multi-process runs are therefore the same computation as one pass, up to float64 rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from igcorr.errors import InputError


@dataclass
class SampleBatch:
    """Per-sample quantities handed to reducers (float64 tensors on the model's device).

    Attributes
    ----------
    indices : LongTensor (n,)
        Global sample indices.
    inputs : Tensor (n, *x_shape)
    targets : Tensor (n, K)
    attributions : Tensor (n, K, *x_shape), optional
        Per-sample attributions (IG, Baseline Shapley, ...) for methods that use them.
    predictions : Tensor (n, K), optional
        Attributed score at each input.
    baseline_predictions : Tensor (n, K), optional
        Attributed score averaged over each sample's baselines.
    attribution_variance : Tensor (n, K, *x_shape), optional
        Monte-Carlo estimators: the variance of each per-sample attribution estimate.
    steps : Tensor (n,), optional
        Adaptive quadrature: quadrature nodes each sample needed.
    """

    indices: torch.Tensor
    inputs: torch.Tensor
    targets: torch.Tensor
    attributions: torch.Tensor | None = None
    predictions: torch.Tensor | None = None
    baseline_predictions: torch.Tensor | None = None
    attribution_variance: torch.Tensor | None = None
    steps: torch.Tensor | None = None


@dataclass
class Computed:
    """What a reducer computes: the main maps (K, D), named extra maps (K, D), per-output diagnostics (K,) and
    per-region statistics (K, R) (tensors or arrays)."""

    maps: object
    extra_maps: dict = field(default_factory=dict)
    diagnostics: dict = field(default_factory=dict)
    regions: dict = field(default_factory=dict)


class Reducer:
    """Base class of streaming, mergeable dataset statistics."""

    def update(self, batch: SampleBatch) -> None:
        """Fold one batch of samples into the state."""
        raise NotImplementedError

    def merge(self, other: "Reducer") -> None:
        """Fold the state of ``other`` (same configuration, other samples) into this one."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The complete state as named tensors (float64 or int64)."""
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore a state produced by :meth:`state_dict`."""
        raise NotImplementedError

    def compute(self) -> Computed:
        """Maps and diagnostics from the current state."""
        raise NotImplementedError


class CoMoment:
    """Streaming means and co-moment of two broadcastable quantities a and b.

    Keeps ``count``, ``mean_a``, ``mean_b`` and ``comoment`` = Σ_n (a_n − ā)(b_n − b̄) (elementwise, broadcast).
    Batches are combined with Chan et al.'s pairwise update, which is exact and numerically stable, so the
    result does not depend on how the samples were batched beyond float64 rounding.
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean_a: torch.Tensor | None = None
        self.mean_b: torch.Tensor | None = None
        self.comoment: torch.Tensor | None = None

    def update(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """Add samples: ``a`` of shape (n, *A) and ``b`` of shape (n, *B), A and B broadcastable."""
        n = a.shape[0]
        if n == 0:
            return
        a, b = a.to(torch.float64), b.to(torch.float64)
        mean_a, mean_b = a.mean(dim=0), b.mean(dim=0)
        comoment = ((a - mean_a) * (b - mean_b)).sum(dim=0)
        self._combine(n, mean_a, mean_b, comoment)

    def merge(self, other: "CoMoment") -> None:
        """Fold another co-moment (other samples) into this one."""
        if other.count:
            self._combine(other.count, other.mean_a, other.mean_b, other.comoment)

    def _combine(self, n: int, mean_a: torch.Tensor, mean_b: torch.Tensor, comoment: torch.Tensor) -> None:
        if self.count == 0:
            self.count, self.mean_a, self.mean_b, self.comoment = n, mean_a.clone(), mean_b.clone(), comoment.clone()
            return
        total = self.count + n
        delta_a, delta_b = mean_a - self.mean_a, mean_b - self.mean_b
        self.comoment = self.comoment + comoment + delta_a * delta_b * (self.count * n / total)
        self.mean_a = self.mean_a + delta_a * (n / total)
        self.mean_b = self.mean_b + delta_b * (n / total)
        self.count = total

    def covariance(self) -> torch.Tensor:
        """Population covariance (divided by the count)."""
        if self.count == 0:
            raise InputError("no samples were seen: the dataset is empty")
        return self.comoment / self.count

    def state_dict(self, prefix: str) -> dict[str, torch.Tensor]:
        """State tensors under ``prefix``."""
        state = {f"{prefix}count": torch.tensor(self.count, dtype=torch.int64)}
        if self.count:
            state.update({f"{prefix}mean_a": self.mean_a, f"{prefix}mean_b": self.mean_b,
                          f"{prefix}comoment": self.comoment})
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor], prefix: str) -> None:
        """Restore from :meth:`state_dict` output."""
        self.count = int(state[f"{prefix}count"])
        if self.count:
            self.mean_a = state[f"{prefix}mean_a"].to(torch.float64)
            self.mean_b = state[f"{prefix}mean_b"].to(torch.float64)
            self.comoment = state[f"{prefix}comoment"].to(torch.float64)


class SumAndMax:
    """Streaming sum and maximum over samples of a per-sample quantity (n, *shape); mergeable."""

    def __init__(self) -> None:
        self.total: torch.Tensor | None = None
        self.largest: torch.Tensor | None = None

    def update(self, values: torch.Tensor) -> None:
        """Add the samples ``values`` (n, *shape)."""
        if len(values) == 0:
            return
        values = values.to(torch.float64)
        self._combine(values.sum(dim=0), values.max(dim=0).values)

    def merge(self, other: "SumAndMax") -> None:
        """Fold another accumulator (other samples) into this one."""
        if other.total is not None:
            self._combine(other.total, other.largest)

    def _combine(self, total: torch.Tensor, largest: torch.Tensor) -> None:
        if self.total is None:
            self.total, self.largest = total.clone(), largest.clone()
        else:
            self.total, self.largest = self.total + total, torch.maximum(self.largest, largest)

    def state_dict(self, prefix: str) -> dict[str, torch.Tensor]:
        """State tensors under ``prefix`` (empty before any sample)."""
        return {} if self.total is None else {f"{prefix}sum": self.total, f"{prefix}max": self.largest}

    def load_state_dict(self, state: dict[str, torch.Tensor], prefix: str) -> None:
        """Restore from :meth:`state_dict` output."""
        self.total, self.largest = state.get(f"{prefix}sum"), state.get(f"{prefix}max")
