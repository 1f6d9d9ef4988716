"""Argument normalisation shared by the per-sample methods (Integrated Gradients, Baseline Shapley).

Both methods take the same ``target`` and ``baselines`` forms, so they are interpreted in one place.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from igcorr import baselines as baseline_forms
from igcorr.data import as_tensor, check_finite
from igcorr.engine import resolve_outputs
from igcorr.errors import InputError, ShapeError


def checked_inputs(inputs: Any) -> torch.Tensor:
    """A non-empty, finite batch of inputs (n, *x_shape) as a tensor."""
    inputs = as_tensor(inputs, "inputs")
    if inputs.ndim < 1 or len(inputs) == 0:
        raise ShapeError("inputs must be a non-empty batch of shape (n, *x_shape)")
    check_finite(inputs, "input")
    return inputs


def resolve_targets(target: Any, n_outputs: int, n: int,
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Interpret the ``target`` argument of a per-sample method.

    Parameters
    ----------
    target : None, int, sequence of int or LongTensor (n,)
        Output to attribute, for all samples or one per sample; None only for single-output models.
    n_outputs : int
        Number of scores the model (with its score function) produces.
    n : int
        Number of samples.
    device : torch.device
        Device of the returned index tensors.

    Returns
    -------
    outputs : LongTensor (K,)
        Scores to evaluate: the one target, or all ``n_outputs`` when targets differ per sample.
    per_sample : LongTensor (n,) or None
        For per-sample targets, the position in ``outputs`` of each sample's target.
    """
    if target is None:
        if n_outputs != 1:
            raise InputError(f"the model has {n_outputs} outputs: pass target=<index> (or one index per sample)")
        return torch.zeros(1, dtype=torch.int64, device=device), None
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        return torch.as_tensor(resolve_outputs(int(target), n_outputs), device=device), None
    indices = as_tensor(target, "target").reshape(-1)
    if indices.is_floating_point() or len(indices) != n:
        raise ShapeError(f"target must be an int or {n} integer indices (one per sample), got {tuple(indices.shape)}")
    resolved = [resolve_outputs(int(t), n_outputs)[0] for t in indices.tolist()]
    return torch.arange(n_outputs, device=device), torch.as_tensor(resolved, device=device)


def per_sample_baselines(baselines: Any, x: torch.Tensor) -> torch.Tensor:
    """Interpret the ``baselines`` argument of a per-sample method as a stack of shape (n, M, *x_shape).

    Parameters
    ----------
    baselines : None, float, Tensor or igcorr.baselines.Shared
        None: zero. A float: constant. A tensor of shape x_shape or (1, *x_shape): one baseline for all;
        (n, *x_shape): one baseline per sample; (n, M, *x_shape): M baselines per sample.
        ``igcorr.baselines.Shared(stack)`` with a stack (M, *x_shape): M baselines shared by all samples.
    x : Tensor (n, *x_shape)
        The inputs (their dtype and device are used for the baselines).

    Returns
    -------
    Tensor (n, M, *x_shape)
    """
    x_shape = tuple(x.shape[1:])
    if isinstance(baselines, baseline_forms.FromData):
        raise InputError("per-sample attribution takes explicit baselines; draw them from your data and pass a tensor")
    if baselines is None or isinstance(baselines, (float, int, baseline_forms.BaselineSpec)) and not isinstance(baselines, bool):
        spec = baseline_forms.resolve(float(baselines) if isinstance(baselines, int) else baselines)
        spec.prepare(x_shape, None, 0)
        return spec.for_samples(np.arange(len(x)), x)
    tensor = as_tensor(baselines, "baselines")
    check_finite(tensor.reshape(1, -1), "baselines")
    tensor = tensor.to(device=x.device, dtype=x.dtype)
    shape = tuple(tensor.shape)
    if shape == x_shape:
        return tensor.expand(len(x), 1, *x_shape)
    if shape == (1,) + x_shape:
        return tensor.unsqueeze(0).expand(len(x), 1, *x_shape)
    if shape == (len(x),) + x_shape:
        return tensor.unsqueeze(1)
    if len(shape) == len(x_shape) + 2 and shape[0] == len(x) and shape[2:] == x_shape:
        return tensor
    raise ShapeError(
        f"baselines of shape {shape} do not fit inputs of shape {tuple(x.shape)}: give {x_shape}, "
        f"(1, *x_shape), (n, *x_shape), (n, M, *x_shape), or igcorr.baselines.Shared(stack of (M, *x_shape))"
    )
