"""Baselines: the reference points that integrated-gradient paths start from.

Every form resolves to a :class:`BaselineSpec`, which produces, for a batch of samples, a tensor of shape
(n, M, *x_shape): M baselines per sample. Forms:

* ``None`` or a float: one constant baseline (``None`` is zero);
* :class:`Shared`: one or M explicit baselines used for every sample;
* :class:`FromData`: M baselines drawn from the dataset, either one set shared by all samples
  (``shared=True``: exact completeness, Σ map = r) or redrawn for every sample (the default: the paper's
  setting, which averages out the bias a small shared set gives a nonlinear model).

Draws are keyed by the run's seed and the sample's global index, so they do not depend on batch size,
chunking, sharding or resumption.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from igcorr._validation import check_bool, check_finite, check_number, check_positive_int
from igcorr.data import DataSource, as_tensor
from igcorr.errors import InputError, ShapeError
from igcorr.seeding import generator_for, keyed_integers


class BaselineSpec:
    """Base class: how to obtain M baselines for each sample."""

    #: number of baselines per sample
    count: int = 1
    #: whether every sample uses the same baselines (then Σ IGC equals Pearson r exactly)
    shared: bool = True

    def prepare(self, x_shape: tuple[int, ...], source: DataSource | None, seed: int) -> None:
        """Validate against the input shape and fix any random draws; called once before a run."""

    def for_samples(self, indices: np.ndarray, x: torch.Tensor) -> torch.Tensor:
        """Baselines for the samples ``x`` (global ``indices``), shape (n, M, *x_shape), x's dtype and device."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description for result metadata."""
        raise NotImplementedError


class Constant(BaselineSpec):
    """One baseline with every component equal to ``value`` (zero by default)."""

    def __init__(self, value: float = 0.0) -> None:
        self.value = check_number(value, "a constant baseline", hint="the value of every component")

    def for_samples(self, indices: np.ndarray, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, self.value).unsqueeze(1)

    def describe(self) -> dict[str, Any]:
        return {"kind": "constant", "value": self.value, "count": 1, "shared": True}


class Shared(BaselineSpec):
    """Explicit baselines shared by all samples: a tensor of shape x_shape (one) or (M, *x_shape) (M)."""

    def __init__(self, baselines: Any) -> None:
        self.tensor = as_tensor(baselines, "baselines")
        if not self.tensor.is_floating_point():
            self.tensor = self.tensor.to(torch.get_default_dtype())
        check_finite(self.tensor.reshape(1, -1), "baselines")
        self._stack: torch.Tensor | None = None

    def prepare(self, x_shape: tuple[int, ...], source: DataSource | None, seed: int) -> None:
        if tuple(self.tensor.shape) == x_shape:
            self._stack = self.tensor.unsqueeze(0)
        elif tuple(self.tensor.shape[1:]) == x_shape and len(self.tensor) >= 1:
            self._stack = self.tensor
        else:
            raise ShapeError(
                f"baselines of shape {tuple(self.tensor.shape)} do not fit inputs of shape {x_shape}: pass one "
                f"baseline of shape {x_shape} or a stack of M baselines of shape (M, {', '.join(map(str, x_shape))})"
            )
        self.count = len(self._stack)

    def for_samples(self, indices: np.ndarray, x: torch.Tensor) -> torch.Tensor:
        if self._stack is None:
            self.prepare(tuple(x.shape[1:]), None, 0)
        stack = self._stack.to(device=x.device, dtype=x.dtype)
        return stack.unsqueeze(0).expand(len(x), *stack.shape)

    def describe(self) -> dict[str, Any]:
        return {"kind": "explicit", "count": int(self.count), "shared": True}


class FromData(BaselineSpec):
    """M baselines drawn (with replacement) from the dataset's inputs.

    Parameters
    ----------
    count : int
        Baselines per sample (M).
    shared : bool
        False (default): a fresh draw for every sample, keyed by (seed, sample index). True: one set of M
        distinct samples shared by all samples, which makes Σ IGC = Pearson r exact.
    at_most_dataset_size : bool
        Refuse more baselines than the dataset has samples (always true for a shared set). Monte-Carlo runs,
        which draw one baseline per evaluation point, turn it off.
    """

    def __init__(self, count: int, shared: bool = False, *, at_most_dataset_size: bool = True) -> None:
        self.count = check_positive_int(count, "count", hint="the number of dataset baselines per sample")
        self.shared = check_bool(shared, "shared", hint="one set of dataset baselines for all samples")
        self.at_most_dataset_size = at_most_dataset_size or self.shared
        self._source: DataSource | None = None
        self._n_samples = 0
        self._seed = 0
        self._shared_stack: torch.Tensor | None = None
        self.shared_indices: np.ndarray | None = None

    def prepare(self, x_shape: tuple[int, ...], source: DataSource | None, seed: int) -> None:
        if source is None or not source.has_random_access:
            raise InputError(
                "baselines drawn from the data need random access to the samples; pass an (X, Y) pair or a "
                "map-style Dataset, or pass explicit baselines"
            )
        self._source, self._n_samples, self._seed = source, len(source), int(seed)
        if self._n_samples == 0:
            raise InputError("the dataset is empty: there is nothing to draw baselines from")
        if self.at_most_dataset_size and self.count > self._n_samples:
            raise InputError(
                f"{self.count} dataset baselines were requested but the dataset has only {self._n_samples} "
                f"samples; ask for at most {self._n_samples}"
            )
        if self.shared:
            order = torch.randperm(self._n_samples, generator=generator_for(self._seed, 0x5BA5E))
            self.shared_indices = np.sort(order[: self.count].numpy())
            self._shared_stack = source.inputs_at(self.shared_indices)
            _check_drawn(self._shared_stack, self.shared_indices)

    def for_samples(self, indices: np.ndarray, x: torch.Tensor) -> torch.Tensor:
        if self._source is None:
            raise InputError("FromData baselines must be prepared with the dataset before use")
        if self._shared_stack is not None:
            stack = self._shared_stack.to(device=x.device, dtype=x.dtype)
            return stack.unsqueeze(0).expand(len(x), *stack.shape)
        draws = keyed_integers(self._seed, self._n_samples, np.asarray(indices)[:, None], np.arange(self.count)[None])
        drawn = self._source.inputs_at(draws.reshape(-1))
        _check_drawn(drawn, draws.reshape(-1))
        return drawn.to(device=x.device, dtype=x.dtype).reshape(len(x), self.count, *x.shape[1:])

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {"kind": "dataset", "count": self.count, "shared": self.shared}
        if self.shared_indices is not None:
            described["indices"] = [int(i) for i in self.shared_indices]
        return described


class Resampled(BaselineSpec):
    """``count`` draws per sample, uniformly with replacement, from the baselines another spec gives it.

    Used by the Monte-Carlo estimator to give every evaluation point its own baseline from a shared set.
    """

    def __init__(self, inner: BaselineSpec, count: int) -> None:
        self.inner = inner
        self.count = check_positive_int(count, "count", hint="draws per sample from the baselines")
        self.shared = False
        self._seed = 0

    def prepare(self, x_shape: tuple[int, ...], source: DataSource | None, seed: int) -> None:
        self.inner.prepare(x_shape, source, seed)
        self._seed = int(seed)

    def for_samples(self, indices: np.ndarray, x: torch.Tensor) -> torch.Tensor:
        pool = self.inner.for_samples(indices, x)
        choice = keyed_integers(self._seed, pool.shape[1], np.asarray(indices)[:, None], np.arange(self.count)[None],
                                0x5A3B)
        rows = torch.arange(len(x), device=x.device).unsqueeze(1)
        return pool[rows, torch.as_tensor(choice, device=x.device)]

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "resampled_per_point": self.count}


def per_point_draws(spec: BaselineSpec, n_points: int) -> BaselineSpec:
    """The baselines of a Monte-Carlo run with ``n_points`` evaluations per sample: one baseline per point.

    Dataset baselines redrawn per sample become ``n_points`` fresh dataset draws; any other set (a constant,
    explicit baselines, one shared dataset draw) is sampled with replacement at every point.
    """
    if isinstance(spec, FromData) and not spec.shared:
        return FromData(n_points, shared=False, at_most_dataset_size=False)
    return Resampled(spec, n_points)


def _check_drawn(drawn: torch.Tensor, dataset_indices: np.ndarray) -> None:
    """Baselines drawn from the data must be finite; name the dataset sample that is not."""
    check_finite(drawn, "input (drawn as a baseline)", np.asarray(dataset_indices).reshape(-1))


class PerInput(BaselineSpec):
    """Baselines of a multi-input model given per input (a tuple or dict matching the inputs), turned into the
    attributed space by the data's input layout; shared by all samples."""

    def __init__(self, baselines: Any) -> None:
        self.per_input = baselines
        self._shared: Shared | None = None

    def prepare(self, x_shape: tuple[int, ...], source: DataSource | None, seed: int) -> None:
        layout = getattr(source, "layout", None)
        if layout is None:
            raise InputError("per-input baselines need data with several inputs per sample")
        self._shared = Shared(layout.encode_baselines(self.per_input))
        self._shared.prepare(x_shape, source, seed)
        self.count = self._shared.count

    def for_samples(self, indices: np.ndarray, x: torch.Tensor) -> torch.Tensor:
        if self._shared is None:
            raise InputError("per-input baselines must be prepared with the dataset before use")
        return self._shared.for_samples(indices, x)

    def describe(self) -> dict[str, Any]:
        return {"kind": "per_input", "count": int(self.count), "shared": True}


def resolve(baselines: Any) -> BaselineSpec:
    """Turn the ``baselines`` argument of a dataset-wise method into a :class:`BaselineSpec`.

    ``None`` → zero; a float → :class:`Constant`; a tensor/array → :class:`Shared`; an int M →
    ``FromData(M)`` (per-sample draws); a tuple or dict (one entry per input of a multi-input model) →
    :class:`PerInput`; a :class:`BaselineSpec` is returned as is.
    """
    if baselines is None:
        return Constant(0.0)
    if isinstance(baselines, BaselineSpec):
        return baselines
    if isinstance(baselines, bool):
        raise InputError("baselines must be None, a float, a tensor, an int or a BaselineSpec, not a bool")
    if isinstance(baselines, (int, np.integer)):
        return FromData(int(baselines))
    if isinstance(baselines, (float, np.floating)):
        return Constant(float(baselines))
    if isinstance(baselines, (torch.Tensor, np.ndarray)):
        return Shared(baselines)
    if isinstance(baselines, (tuple, list, dict)):
        return PerInput(baselines)
    raise InputError(
        "baselines must be None (zero), a float, a tensor of one or M baselines, an int M (draws from the "
        f"data) or an igcorr.baselines spec; got {type(baselines).__name__}"
    )
