"""Data adapters: every accepted form of dataset becomes a stream of (start index, x, y) batches.

Accepted forms
--------------
* an ``(X, Y)`` pair of tensors or numpy arrays with the same first dimension;
* a map-style ``torch.utils.data.Dataset`` whose items are ``(x, y)`` pairs;
* a ``torch.utils.data.DataLoader``: over a map-style dataset it is read in the dataset's index order whatever
  its sampler does (shuffling changes nothing; a subset sampler's samples are read in sorted order), with
  the loader's batch size, collate function and workers; over an iterable dataset, in the order it yields;
* an iterable-style dataset yielding ``(x, y)`` pairs.

Samples are numbered 0, 1, ... in that order, and every random draw of a run is keyed by that number, so a
shuffling loader gives the same maps as a sequential one. Only a sampler that draws a different set of samples
at every pass (with replacement, weighted, or a custom sampler) has no such order: its samples are read in the
order of one draw, and such a source cannot be resumed from a checkpoint (``resumable`` is False). Random
access (needed to draw baselines from the data) is available for pairs, map-style datasets and DataLoaders over
a map-style dataset.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import (DataLoader, Dataset, IterableDataset, RandomSampler, SequentialSampler,
                              SubsetRandomSampler)
from torch.utils.data.dataloader import default_collate

# check_finite is also imported from here by older callers; it is the shared check of igcorr._validation
from igcorr._validation import check_finite, check_positive_int
from igcorr.errors import InputError, ShapeError
from igcorr.inputs import is_structured, members, rebuild


#: input magnitude above which a warning says the values would dominate the maps
EXTREME_INPUT = 1e12


@dataclass
class Batch:
    """A batch read from a data source: samples ``start .. start + len(x) - 1``, their attributed inputs, their
    targets, and the model inputs that are not attributed (``extras``, by keyword, one row per sample)."""

    start: int
    x: torch.Tensor
    y: torch.Tensor
    extras: dict = field(default_factory=dict)


def as_tensor(value: Any, name: str) -> torch.Tensor:
    """Convert an array-like to a tensor, with a clear error for anything else."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray) or np.isscalar(value) or isinstance(value, (list, tuple)):
        try:
            return torch.as_tensor(np.asarray(value))
        except (TypeError, ValueError) as error:
            raise InputError(f"{name} could not be converted to a tensor: {error}") from error
    raise InputError(f"{name} must be a torch.Tensor or numpy array, got {type(value).__name__}")


class DataSource:
    """Uniform, validated access to a dataset of (x, y) pairs.

    Parameters
    ----------
    data : pair, Dataset, DataLoader or iterable dataset
        See the module docstring.
    batch_size : int, optional
        Samples per batch for pairs and datasets (ignored for a DataLoader, whose batches are kept).
    """

    def __init__(self, data: Any, batch_size: int = 64) -> None:
        self.batch_size = check_positive_int(batch_size, "batch_size", hint="samples per batch")
        self._pair: tuple[torch.Tensor, torch.Tensor] | None = None
        self._dataset: Dataset | None = None
        self._loader: DataLoader | None = None
        self._iterable: Any = None
        #: dataset indices of the samples in reading order (DataLoaders over map-style datasets)
        self._order: np.ndarray | None = None
        #: whether every pass reads the same samples in the same order (needed to resume a checkpoint)
        self.resumable = True
        self._warned_extreme = False
        if isinstance(data, DataLoader):
            self._loader = data
            if not isinstance(data.dataset, IterableDataset):
                self._dataset = data.dataset
                self._order, self.resumable = _canonical_order(data)
        elif isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data, Dataset):
            y = as_tensor(data[1], "Y")
            x = _as_raw(_samples_or_inputs(data[0], y), "X")
            if y.ndim == 0 or any(part.ndim == 0 for part in _parts(x)):
                raise ShapeError("X and Y must have a first dimension indexing the samples")
            lengths = {len(part) for part in _parts(x)}
            if lengths != {len(y)}:
                raise ShapeError(
                    f"X has {sorted(lengths)[0] if len(lengths) == 1 else sorted(lengths)} samples but Y has "
                    f"{len(y)}; pass one target row per input sample"
                )
            self._pair = (x, y)
        elif isinstance(data, IterableDataset):
            self._iterable = data
        elif isinstance(data, Dataset) or (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
            self._dataset = data
        else:
            raise InputError(
                "data must be an (X, Y) pair of tensors/arrays, a torch Dataset of (x, y) items, or a "
                f"DataLoader; got {type(data).__name__}"
            )

    #: how raw inputs become the attributed tensor (set by the method once it has seen the data)
    layout: Any = None

    def encode(self, raw: Any) -> torch.Tensor:
        """Raw inputs of a batch → the attributed tensor (through the layout, if one is set)."""
        if self.layout is not None:
            return self.layout.encode(raw)
        if is_structured(raw):
            raise InputError("samples hold several inputs; they need an input layout (set by the method)")
        return as_tensor(raw, "x")

    def __len__(self) -> int:
        """Number of samples, if the source knows it (raises TypeError otherwise)."""
        if self._pair is not None:
            return len(_parts(self._pair[0])[0])
        if self._order is not None:
            return len(self._order)
        if self._dataset is not None:
            return len(self._dataset)
        raise TypeError("this data source has no known length")

    @property
    def has_length(self) -> bool:
        """Whether ``len(source)`` is known before reading the data."""
        return self._pair is not None or self._dataset is not None

    @property
    def in_memory_pair(self) -> tuple[Any, torch.Tensor] | None:
        """The (X, Y) pair of in-memory data, or None for datasets and loaders (read only by streaming)."""
        return self._pair

    @property
    def has_random_access(self) -> bool:
        """Whether individual inputs can be fetched by index (needed for baselines drawn from the data)."""
        return self._pair is not None or self._dataset is not None

    def inputs_at(self, indices: Sequence[int] | np.ndarray) -> torch.Tensor:
        """Inputs of the samples at ``indices`` stacked as a tensor of shape (len(indices), *x_shape)."""
        return self.encode(self.raw_inputs_at(indices))

    def raw_inputs_at(self, indices: Sequence[int] | np.ndarray) -> Any:
        """Like :meth:`inputs_at`, before the layout's encoding."""
        if self._pair is not None:
            return _take(self._pair[0], torch.as_tensor(np.asarray(indices, dtype=np.int64)))
        if self._dataset is not None:
            items = [_split_item(self._dataset[self._dataset_index(int(i))], int(i))[0]
                     for i in np.asarray(indices).reshape(-1)]
            return _stack(items)
        raise InputError(
            "baselines drawn from the data need random access to the samples; pass an (X, Y) pair or a "
            "map-style Dataset instead of an iterable dataset, or pass explicit baselines"
        )

    def _warn_extreme(self, x: torch.Tensor, position: int) -> None:
        """Warn once about input values so large that they would dominate every map (unconverted units or
        sentinel values such as 1e30 for missing data)."""
        if self._warned_extreme or not x.is_floating_point() or x.numel() == 0:
            return
        largest = x.detach().abs().reshape(len(x), -1).amax(dim=1)
        if bool((largest > EXTREME_INPUT).any()):
            self._warned_extreme = True
            sample = int(torch.nonzero(largest > EXTREME_INPUT)[0]) + position
            warnings.warn(
                f"input values reach {float(largest.max()):.3g} (first at sample {sample}); attributions scale with "
                "the inputs, so such values dominate the maps. Check the data for unconverted units or sentinel "
                "values standing for missing data", UserWarning, stacklevel=4)

    def _dataset_index(self, position: int) -> int:
        return int(self._order[position]) if self._order is not None else position

    def head(self, n: int) -> torch.Tensor:
        """The first (up to) ``n`` inputs, encoded and validated; InputError for an empty dataset."""
        x = self.encode(self.raw_head(n)).detach()
        check_finite(x, "input")
        return x

    def extras(self, raw: Any) -> dict[str, torch.Tensor]:
        """The inputs of a raw batch that the model takes but that are not attributed (through the layout)."""
        if self.layout is None:
            return {}
        return {name: value.detach() for name, value in self.layout.extras(raw).items()}

    def raw_head(self, n: int) -> Any:
        """The first (up to) ``n`` raw inputs; InputError for an empty dataset."""
        if self.has_random_access:
            x = self.raw_inputs_at(np.arange(min(n, len(self)))) if len(self) else None
        else:
            first = next(self._raw_batches(0, None), None)
            x = None if first is None else _slice(_as_raw(first[0], "x"), 0, n)
        if x is None or len(_parts(x)[0]) == 0:
            raise InputError("the dataset is empty: there is nothing to attribute")
        return x

    def batches(self, start: int = 0, stop: int | None = None) -> Iterator[Batch]:
        """Yield validated batches in sample order, covering samples ``start`` to ``stop`` − 1 (or the end)."""
        position = start
        for x, y in self._raw_batches(start, stop):
            raw = _as_raw(x, "x")
            x, y = self.encode(raw).detach(), as_tensor(y, "y").detach()
            extras = self.extras(raw)
            if len(x) != len(y):
                raise ShapeError(f"a batch holds {len(x)} inputs but {len(y)} targets (from sample {position})")
            check_finite(x, "input", position)
            check_finite(y, "target", position)
            self._warn_extreme(x, position)
            yield Batch(position, x, y, extras)
            position += len(x)

    def _raw_batches(self, start: int, stop: int | None) -> Iterator[tuple[Any, Any]]:
        if self._pair is not None:
            x_all, y_all = self._pair
            end = len(self) if stop is None else min(stop, len(self))
            for begin in range(start, end, self.batch_size):
                finish = min(begin + self.batch_size, end)
                yield _slice(x_all, begin, finish), y_all[begin:finish]
            return
        if self._order is not None:
            yield from self._ordered_batches(start, stop)
            return
        if self._loader is not None:
            position = 0
            for item in self._loader:
                x, y = _split_item(item, position)
                x, size = _as_raw(x, "x"), len(y)
                first, last = max(start - position, 0), size if stop is None else min(size, stop - position)
                position += size
                if first < last:
                    yield _slice(x, first, last), y[first:last]
                if stop is not None and position >= stop:
                    return
            return
        if self._dataset is not None:
            end = len(self._dataset) if stop is None else min(stop, len(self._dataset))
            items: Iterator[tuple[int, Any]] = ((i, self._dataset[i]) for i in range(start, end))
        else:
            items = enumerate(itertools.islice(self._iterable, start, stop), start)
        chunk: list[tuple[Any, Any]] = []
        for index, item in items:
            chunk.append(_split_item(item, index))
            if len(chunk) == self.batch_size:
                yield _collate(chunk)
                chunk = []
        if chunk:
            yield _collate(chunk)


    def _ordered_batches(self, start: int, stop: int | None) -> Iterator[tuple[Any, Any]]:
        """The samples ``start .. stop - 1`` of a DataLoader over a map-style dataset, in canonical order, read
        through a loader with the original's batch size, collate function and workers."""
        loader, order = self._loader, self._order
        end = len(order) if stop is None else min(stop, len(order))
        reader = DataLoader(loader.dataset, batch_size=loader.batch_size or self.batch_size,
                            sampler=order[start:end].tolist(), collate_fn=loader.collate_fn,
                            num_workers=loader.num_workers, pin_memory=loader.pin_memory,
                            worker_init_fn=loader.worker_init_fn, multiprocessing_context=loader.multiprocessing_context,
                            timeout=loader.timeout)
        position = start
        for item in reader:
            x, y = _split_item(item, position)
            position += len(y)
            yield x, y


def _canonical_order(loader: DataLoader) -> tuple[np.ndarray, bool]:
    """Dataset indices a DataLoader over a map-style dataset covers, in a reading order that does not depend on
    its shuffling, and whether every pass covers the same samples."""
    sampler = loader.sampler
    n = len(loader.dataset)
    if isinstance(sampler, (SequentialSampler, RandomSampler)) and not getattr(sampler, "replacement", False) \
            and len(sampler) == n:
        order, fixed = np.arange(n), True
    elif isinstance(sampler, SubsetRandomSampler):
        order, fixed = np.sort(np.asarray(list(sampler.indices), dtype=np.int64)), True
    else:  # a sampler that may draw another set of samples each pass: read one draw as it comes
        order, fixed = np.asarray(list(sampler), dtype=np.int64), False
    if loader.drop_last and loader.batch_size:
        dropped = len(order) % loader.batch_size
        fixed = fixed and (dropped == 0 or isinstance(sampler, SequentialSampler))
        order = order[: len(order) - dropped]
    return order, fixed


def _samples_or_inputs(x: Any, y: torch.Tensor) -> Any:
    """X given as a Python list or tuple: several inputs (each with one row per sample), or one row per sample
    (a list of rows or of per-sample arrays), which is stacked."""
    if not isinstance(x, (list, tuple)) or y.ndim == 0:
        return x
    n = len(y)
    parts_are_inputs = len(x) > 0 and all(isinstance(part, (torch.Tensor, np.ndarray)) and part.ndim > 0
                                          and len(part) == n for part in x)
    if parts_are_inputs or len(x) != n:
        return x
    if all(isinstance(part, (torch.Tensor, np.ndarray)) for part in x):
        return stack_samples(list(x), "X")
    return as_tensor(x, "X")


def _split_item(item: Any, index: int) -> tuple[Any, Any]:
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise InputError(
            f"each item (or batch) of the data must be an (x, y) pair; item {index} is a {type(item).__name__}"
            + (f" of length {len(item)}" if isinstance(item, (tuple, list)) else "")
        )
    return item[0], item[1]


def _collate(items: list[tuple[Any, Any]]) -> tuple[Any, torch.Tensor]:
    xs, ys = zip(*items)
    return _stack(list(xs)), stack_samples(ys, "targets")


def _as_raw(x: Any, name: str) -> Any:
    """A batch of raw inputs: one tensor, or a tuple/list/dict of tensors."""
    if is_structured(x):
        return rebuild(x, [as_tensor(value, f"{name}[{key}]") for key, value in members(x)])
    return as_tensor(x, name)


def _parts(x: Any) -> list[torch.Tensor]:
    return [value for _, value in members(x)] if is_structured(x) else [x]


def _slice(x: Any, begin: int, end: int) -> Any:
    return rebuild(x, [value[begin:end] for value in _parts(x)]) if is_structured(x) else x[begin:end]


def _take(x: Any, index: torch.Tensor) -> Any:
    return rebuild(x, [value[index] for value in _parts(x)]) if is_structured(x) else x[index]


def _stack(items: list[Any]) -> Any:
    """Stack per-sample raw inputs (tensors, or tuples/dicts of tensors) into a batch."""
    if items and is_structured(items[0]):
        names = [name for name, _ in members(items[0])]
        columns = [[dict(members(item))[name] for item in items] for name in names]
        return rebuild(items[0], [stack_samples(column, f"inputs[{name}]") for name, column in zip(names, columns)])
    return stack_samples(items, "inputs")


def stack_samples(values: Sequence[Any], name: str) -> torch.Tensor:
    """Stack per-sample arrays into a batch, refusing samples of different shapes with a clear message."""
    tensors = [as_tensor(v, name) for v in values]
    shapes = sorted({tuple(t.shape) for t in tensors})
    if len(shapes) > 1:
        raise ShapeError(f"the {name} of the samples have different shapes {shapes}; all must have the same shape")
    return default_collate(tensors)
