"""The base class of the per-sample methods (Integrated Gradients, Baseline Shapley, IG2, internal neurons).

Every per-sample method takes a batch of inputs and a ``target`` and returns attributions in the inputs' dtype
and device. :class:`PerSampleMethod` holds what they share: the model adapter, the prologue (input checks,
freezing the model, device and dtype, target resolution, a path integrator configured for this call only)
and the epilogue (casting back, convergence delta). A method file holds one public class that says what is
integrated.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from igcorr import baselines as baseline_forms
from igcorr._docs import fill_doc
from igcorr._validation import check_finite
from igcorr.data import as_tensor
from igcorr.errors import InputError, ShapeError
from igcorr.model import Extras, ModelAdapter, OutputSelector, ScoreLike, resolve_outputs
from igcorr.paths.integrator import PathIntegrals, PathIntegrator


@dataclass
class PreparedCall:
    """One call of a per-sample method after its prologue: the inputs as given, the inputs on the model's
    device and dtype, the attributed ``outputs`` (K,), each sample's column (``per_sample``, or None when
    every sample uses all K), a path integrator configured for this call, and the samples' extra inputs."""

    inputs: torch.Tensor
    x: torch.Tensor
    outputs: torch.Tensor
    per_sample: torch.Tensor | None
    integrator: PathIntegrator
    extras: Extras


@fill_doc
class PerSampleMethod:
    """Base of the per-sample attribution methods.

    Parameters
    ----------
    %(model)s
    %(score)s
    %(output)s
    first_layer : "auto", False, str or nn.Module
        The first-layer shortcut of straight paths (see ``igcorr.IGC``); False switches it off.
    """

    def __init__(self, model: Callable[..., torch.Tensor], score: ScoreLike = None, *,
                 output: OutputSelector = None, first_layer: Any = "auto") -> None:
        self.adapter = ModelAdapter(model, score, output=output, first_layer=first_layer)

    @contextlib.contextmanager
    def _prepared(self, inputs: Any, target: Any, *, chunk_points: int | None = None,
                  default_target: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
                  extra_inputs: Any = None) -> Iterator[PreparedCall]:
        """The shared prologue; the model stays frozen for the duration of the block.

        ``default_target(x, n_outputs)`` gives the targets used when ``target`` is None and the model has
        several outputs (otherwise None is only accepted for single-output models).
        """
        inputs = checked_inputs(inputs)
        with self.adapter.frozen():
            x = self.adapter.prepare_inputs(inputs)
            extras = checked_extra_inputs(extra_inputs, len(x), x.device)
            n_outputs = self.adapter.n_outputs(x, extras)
            if target is None and default_target is not None and n_outputs > 1:
                target = default_target(x, n_outputs, extras)
            outputs, per_sample = resolve_targets(target, n_outputs, len(x), x.device)
            integrator = PathIntegrator(self.adapter, chunk_points=chunk_points)
            integrator.configure(x, outputs, extras)
            yield PreparedCall(inputs, x, outputs, per_sample, integrator, extras)

    @staticmethod
    def _returned(call: PreparedCall, integrals: PathIntegrals, return_convergence_delta: bool,
                  delta_dtype: torch.dtype | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The shared epilogue: attributions of the one attributed column per sample in the inputs' dtype and
        device, and (if asked) the convergence delta Σ attributions − (f(x) − mean f(b)) per sample (in
        ``delta_dtype``, default the inputs')."""
        inputs = call.inputs
        attributions = integrals.attributions[:, 0].to(device=inputs.device, dtype=inputs.dtype)
        if not return_convergence_delta:
            return attributions
        delta = integrals.completeness_residual[:, 0].to(device=inputs.device, dtype=delta_dtype or inputs.dtype)
        return attributions, delta


def checked_inputs(inputs: Any) -> torch.Tensor:
    """A non-empty, finite batch of inputs (n, *x_shape) as a tensor."""
    inputs = as_tensor(inputs, "inputs")
    if inputs.ndim < 1 or len(inputs) == 0:
        raise ShapeError("inputs must be a non-empty batch of shape (n, *x_shape)")
    check_finite(inputs, "input")
    return inputs.detach()


def checked_extra_inputs(extra_inputs: Any, n: int, device: torch.device) -> Extras:
    """The ``extra_inputs`` argument: a dict of keyword inputs of the model, one row per sample, on ``device``."""
    if extra_inputs is None:
        return {}
    if not isinstance(extra_inputs, dict) or not all(isinstance(name, str) for name in extra_inputs):
        raise InputError("extra_inputs must be a dict of keyword arguments of the model, e.g. "
                         f"{{'attention_mask': mask}}, got {type(extra_inputs).__name__}")
    extras = {}
    for name, value in extra_inputs.items():
        tensor = as_tensor(value, f"extra_inputs[{name!r}]").detach()
        if tensor.ndim == 0 or len(tensor) != n:
            raise ShapeError(f"extra_inputs[{name!r}] has shape {tuple(tensor.shape)}; it needs one row per sample "
                             f"({n})")
        extras[name] = tensor.to(device)
    return extras


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
