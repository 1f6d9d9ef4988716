"""Per-sample Integrated Gradients (Sundararajan et al. 2017), with baseline sets.

IG_{n,i} = (1/M) Σ_b (x_{n,i} − b_i) ∫_0^1 ∂_i f(b + α(x_n − b)) dα, approximated by a quadrature rule.
Same meaning as Captum's ``IntegratedGradients`` for the same baseline, target, rule and steps, except that
igcorr's "trapezoid" is the unbiased composite rule (Captum's "riemann_trapezoid" equals it × (n−1)/n).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from igcorr import baselines as baseline_forms
from igcorr.data import as_tensor, check_finite
from igcorr.engine import Engine, ScoreLike, resolve_outputs
from igcorr.errors import InputError, ShapeError
from igcorr.quadrature import rule as quadrature_rule


class IntegratedGradients:
    """Integrated Gradients of one output per sample.

    Parameters
    ----------
    model : nn.Module or callable
        Maps (P, *x_shape) to (P, K) outputs (or (P,)).
    score : None, "softmax", "log_softmax" or callable
        The attributed quantity (raw output by default).
    """

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor], score: ScoreLike = None) -> None:
        self.engine = Engine(model, score)

    def attribute(self, inputs: torch.Tensor, baselines: Any = None, target: int | Sequence[int] | torch.Tensor | None = None,
                  n_steps: int = 50, method: str = "trapezoid", return_convergence_delta: bool = False,
                  chunk_points: int | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Attribute ``target`` of each input sample.

        Parameters
        ----------
        inputs : Tensor (n, *x_shape)
        baselines : None, float, Tensor or igcorr.baselines.Shared
            None: zero. A float: constant. A tensor of shape x_shape or (1, *x_shape): one baseline for all;
            (n, *x_shape): one baseline per sample (as in Captum); (n, M, *x_shape): M baselines per sample.
            ``igcorr.baselines.Shared(stack)`` with a stack (M, *x_shape): M baselines shared by all samples.
            With several baselines the attribution is the mean of IG over them.
        target : None, int, sequence of int or LongTensor (n,)
            Output to attribute, for all samples or per sample; None only for single-output models.
        n_steps : int
            Quadrature nodes per path.
        method : str
            "trapezoid" (unbiased, default), "riemann_left", "riemann_right", "riemann_middle",
            "gausslegendre".
        return_convergence_delta : bool
            Also return Σ_i IG − (f(x) − mean_b f(b)) per sample, shape (n,).
        chunk_points : int, optional
            Path points per forward pass.

        Returns
        -------
        Tensor of the inputs' shape and dtype (and the delta, if asked).
        """
        inputs = as_tensor(inputs, "inputs")
        if inputs.ndim < 1 or len(inputs) == 0:
            raise ShapeError("inputs must be a non-empty batch of shape (n, *x_shape)")
        check_finite(inputs, "input")
        if chunk_points is not None:
            self.engine.chunk_points = chunk_points
        rule = quadrature_rule(method, n_steps)
        with self.engine.frozen():
            x = self.engine.prepare_inputs(inputs)
            n_outputs = self.engine.n_model_outputs(x)
            outputs, per_sample = self._targets(target, n_outputs, len(x), x.device)
            stack = self._baselines(baselines, x)
            integrals = self.engine.integrate(x, stack, rule, outputs, per_sample_output=per_sample)
        attributions = integrals.attributions[:, 0].to(device=inputs.device, dtype=inputs.dtype)
        if not return_convergence_delta:
            return attributions
        return attributions, integrals.completeness_residual[:, 0].to(device=inputs.device, dtype=inputs.dtype)

    @staticmethod
    def _targets(target: Any, n_outputs: int, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
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

    @staticmethod
    def _baselines(baselines: Any, x: torch.Tensor) -> torch.Tensor:
        """Baselines as (n, M, *x_shape)."""
        x_shape = tuple(x.shape[1:])
        if isinstance(baselines, baseline_forms.FromData):
            raise InputError("per-sample IG takes explicit baselines; draw them from your data and pass a tensor")
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
