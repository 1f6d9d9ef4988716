"""Targets of a dataset run: encoded per batch as float64 columns aligned with the attributed outputs."""

from __future__ import annotations

from typing import Any

import torch

from igcorr.data import DataSource
from igcorr.errors import InputError, ShapeError


def encode_targets(y: torch.Tensor, n_model_outputs: int, outputs: list[int]) -> torch.Tensor:
    """Targets of a batch as float64 (n, K) aligned with the attributed ``outputs``.

    * integer class labels of shape (n,) are one-hot encoded over the model's outputs;
    * float targets of shape (n,) are one output;
    * (n, K_model) targets are indexed by ``outputs``; (n, len(outputs)) targets are used as they are;
    * boolean targets are the values 0 and 1 (a binary target), not class labels.

    Targets whose magnitude would overflow or underflow the float64 statistics are refused (a correlation does
    not depend on the targets' scale: rescale them).
    """
    if y.dtype == torch.bool:
        y = y.to(torch.float64)
    if y.ndim == 1 and not y.is_floating_point():
        labels = y.to(torch.int64)
        if bool((labels < 0).any()) or bool((labels >= n_model_outputs).any()):
            bad = int(labels[(labels < 0) | (labels >= n_model_outputs)][0])
            raise InputError(
                f"class label {bad} is out of range for a model with {n_model_outputs} outputs; labels must be "
                f"in 0..{n_model_outputs - 1}"
            )
        y = torch.nn.functional.one_hot(labels, n_model_outputs)
    elif y.ndim == 1:
        y = y.unsqueeze(1)
    if y.ndim != 2:
        raise ShapeError(
            f"targets of a batch have shape {tuple(y.shape)}; give (N,) or (N, K) targets (one column per output)"
        )
    y = y.to(torch.float64)
    check_target_scale(y)
    if y.shape[1] == n_model_outputs:
        return y[:, outputs]
    if y.shape[1] == len(outputs):
        return y
    raise ShapeError(
        f"targets have {y.shape[1]} columns but the model has {n_model_outputs} outputs and {len(outputs)} are "
        "attributed; give one target column per model output or per attributed output"
    )


def all_targets(source: DataSource, n_model_outputs: int, outputs: list[int]) -> torch.Tensor:
    """Every sample's encoded targets (N, K), float64: direct for in-memory pairs, else one pass reading the data."""
    pair = source.in_memory_pair
    if pair is not None:
        return encode_targets(pair[1], n_model_outputs, outputs)
    return torch.cat([encode_targets(batch.y, n_model_outputs, outputs) for batch in source.batches()])


def target_columns(data: Any) -> int:
    """Number of target columns of a dataset: (N, K) → K, float (N,) → 1, class labels (N,) → max label + 1."""
    source = DataSource(data, 1)
    pair = source.in_memory_pair
    if pair is not None:
        y = pair[1]
    else:
        first = next(source.batches(0, 1), None)
        if first is None:
            raise InputError("the dataset is empty: there is nothing to attribute")
        y = first.y
    if y.ndim == 1 and not y.is_floating_point():
        if pair is None:
            raise InputError(
                "with model=None the number of classes of integer labels read from a Dataset or DataLoader is "
                "unknown; pass one-hot (N, K) targets, a model, or the data as an in-memory (X, Y) pair"
            )
        if len(y) == 0:
            raise InputError("the dataset is empty: there is nothing to attribute")
        if int(y.min()) < 0:
            raise InputError(f"class label {int(y.min())} is negative; labels must be 0, 1, ..., K − 1")
        return int(y.max()) + 1
    if y.ndim == 1:
        return 1
    if y.ndim == 2:
        return int(y.shape[1])
    raise ShapeError(f"targets have shape {tuple(y.shape)}; give (N,) or (N, K) targets (one column per output)")


#: target magnitudes outside [TINY_TARGET, HUGE_TARGET] make float64 variances overflow or vanish
HUGE_TARGET = 1e150
TINY_TARGET = 1e-150


def check_target_scale(y: torch.Tensor) -> None:
    """Refuse targets so large or so small that their variance is not representable in float64."""
    finite = y[torch.isfinite(y)]  # NaN and Inf are reported, with the sample, by the finiteness check
    if finite.numel() == 0:
        return
    largest = float(finite.abs().max())
    if largest > HUGE_TARGET or 0.0 < largest < TINY_TARGET:
        raise InputError(
            f"targets reach a magnitude of {largest:.3g}, whose square {'overflows' if largest > 1 else 'underflows'} "
            "float64: rescale them (e.g. divide by their standard deviation; a correlation does not depend on the "
            "targets' scale)"
        )
