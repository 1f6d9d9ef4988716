"""Per-sample Integrated Gradients (Sundararajan et al. 2017), with baseline sets.

IG_{n,i} = (1/M) Σ_b (x_{n,i} − b_i) ∫_0^1 ∂_i f(b + α(x_n − b)) dα, approximated by a quadrature rule.
Same meaning as Captum's ``IntegratedGradients`` for the same baseline, target, rule and steps, except that
igcorr's "trapezoid" is the unbiased composite rule (Captum's "riemann_trapezoid" equals it × (n−1)/n).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from igcorr._docs import fill_doc
from igcorr.attribution.base import PerSampleMethod, per_sample_baselines
from igcorr.paths.quadrature import rule as quadrature_rule
from igcorr.paths.straight import integrate_straight


@fill_doc
class IntegratedGradients(PerSampleMethod):
    """Integrated Gradients of one output per sample.

    Parameters
    ----------
    %(model)s
    %(score)s
    %(output)s
    first_layer : "auto", False, str or nn.Module
        The first-layer shortcut (exact; see ``igcorr.IGC`` and the many-outputs guide); False switches it off.
    """

    @fill_doc
    def attribute(self, inputs: torch.Tensor, baselines: Any = None, target: int | Sequence[int] | torch.Tensor | None = None,
                  n_steps: int = 50, method: str = "trapezoid", return_convergence_delta: bool = False,
                  chunk_points: int | None = None,
                  extra_inputs: dict[str, torch.Tensor] | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Attribute ``target`` of each input sample.

        Parameters
        ----------
        inputs : Tensor (n, *x_shape)
        %(sample_baselines)s
        %(target)s
        n_steps : int
            Quadrature nodes per path.
        method : str
            "trapezoid" (unbiased, default), "riemann_left", "riemann_right", "riemann_middle",
            "gausslegendre".
        return_convergence_delta : bool
            Also return Σ_i IG − (f(x) − mean_b f(b)) per sample, shape (n,).
        chunk_points : int, optional
            Path points per forward pass.
        %(extra_inputs)s

        Returns
        -------
        Tensor of the inputs' shape and dtype (and the delta, if asked).
        """
        rule = quadrature_rule(method, n_steps)
        with self._prepared(inputs, target, chunk_points=chunk_points, extra_inputs=extra_inputs) as call:
            stack = per_sample_baselines(baselines, call.x)
            integrals = integrate_straight(call.integrator, call.x, stack, rule, per_sample_output=call.per_sample,
                                           extras=call.extras)
        return self._returned(call, integrals, return_convergence_delta)
