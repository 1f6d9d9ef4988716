"""Internal-neuron attributions (Lundstrom, Huang & Razaviyayn, ICML 2022).

Split the model at a layer, f = h ∘ g with g: input → m units (the layer's output, captured by a forward hook)
and h the rest of the network. Along the straight IG path γ(t) = x′ + t(x − x′),

    C_{j,i} = (x_i − x′_i) ∫_0^1 ∂_j h(g(γ(t))) ∂_i g_j(γ(t)) dt,

so that Σ_j C_{j,i} = IG_i (chain rule), Σ_i C_{j,i} is the *conductance* of unit j, and for a region S of the
input the *region-to-neuron attribution* A_j^S = Σ_{i∈S} C_{j,i} says which units carry the attribution of S
(Σ_j A_j^S = Σ_{i∈S} IG_i). Neither needs the m × D matrix C: at every quadrature node one Jacobian-vector
product of g in the direction (x − x′) ⊙ 1_S gives (J_g v)_j = Σ_{i∈S} ∂_i g_j (x_i − x′_i) for all units at
once, and one backward pass through h alone gives ∂_j h; their elementwise product, integrated, is A^S
(conductance is S = everything).

The integrals themselves are taken by :mod:`igcorr.paths.layer` through the path integrator.

:class:`InternalNeurons` offers the per-sample attributions, their dataset-wise correlation (the IGC formula
applied to A^S: which units carry a region's share of the correlation) and an ablation utility.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from igcorr import baselines as baseline_forms
from igcorr._docs import fill_doc
from igcorr._validation import check_choice
from igcorr.attribution.base import PerSampleMethod, per_sample_baselines
from igcorr.attribution.integrated_gradients import IntegratedGradients
from igcorr.data import as_tensor
from igcorr.errors import InputError
from igcorr.model import OutputSelector, ScoreLike
from igcorr.paths.integrator import PathIntegrals
from igcorr.paths.layer import JVP_MODES, LayerCut, integrate_layer, region_mask
from igcorr.paths.quadrature import rule as quadrature_rule
from igcorr.result import Result

RANKINGS = ("region", "conductance")


@dataclass
class AblationCurve:
    """What :meth:`InternalNeurons.ablation_curve` returns (L ablation levels, m units).

    Attributes
    ----------
    counts : ndarray (L,) of int
        Number of units zeroed at each level (the first level is usually 0: the intact model).
    fractions : ndarray (L,)
        counts / m.
    inside : ndarray (L,)
        Attribution mass inside the region at each level: mean over samples of Σ_{i∈S} IG_i (``measure="ig"``)
        or Σ_{i∈S} IGC_i (``measure="igc"``).
    outside : ndarray (L,)
        The same outside the region.
    ranking : str
        "region" (units ranked by A^S), "conductance" (by conductance) or "custom".
    order : ndarray (m,) of int
        Flat unit indices from the first ablated to the last.
    unit_scores : ndarray (m,)
        The ranking scores (mean over samples), per flat unit index.
    measure : str
        "ig" or "igc".
    """

    counts: np.ndarray
    fractions: np.ndarray
    inside: np.ndarray
    outside: np.ndarray
    ranking: str
    order: np.ndarray
    unit_scores: np.ndarray
    measure: str


# ---------------------------------------------------------------------------------------------------- public API
@fill_doc
class InternalNeurons(PerSampleMethod):
    """Attributions to the units of an internal layer, and of input regions to those units.

    Parameters
    ----------
    %(model)s
    layer : str or nn.Module
        The layer whose output units are attributed (a submodule name or the module). Every path from the
        input to the output must pass through it (no skip connection around it), and it must run once per
        forward pass; both are checked.
    %(score)s
    %(output)s
    """

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor], layer: str | nn.Module,
                 score: ScoreLike = None, *, output: OutputSelector = None) -> None:
        super().__init__(model, score, output=output)
        self.output = output
        self.layer = layer
        self.cut = LayerCut(self.adapter, layer)
        self.model = model
        self.score = score

    # -- per sample
    def _per_sample(self, inputs: Any, region: Any, baselines: Any, target: Any, n_steps: int, method: str,
                    jvp: str, chunk_points: int | None,
                    extra_inputs: dict[str, torch.Tensor] | None) -> tuple[PathIntegrals, torch.Tensor]:
        jvp = check_choice(jvp, "jvp", JVP_MODES)
        rule = quadrature_rule(method, n_steps)
        with self._prepared(inputs, target, chunk_points=chunk_points, extra_inputs=extra_inputs) as call:
            mask = None if region is None else region_mask(region, call.x)
            self.cut.check(self.adapter, call.x, call.extras)
            stack = per_sample_baselines(baselines, call.x)
            integrals = integrate_layer(call.integrator, self.cut, call.x, stack, mask, rule,
                                        per_sample_output=call.per_sample, jvp=jvp, extras=call.extras)
        return integrals, call.inputs

    @fill_doc
    def conductance(self, inputs: Any, baselines: Any = None, target: Any = None, n_steps: int = 50,
                    method: str = "trapezoid", return_convergence_delta: bool = False, jvp: str = "forward",
                    chunk_points: int | None = None,
                    extra_inputs: dict[str, torch.Tensor] | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Conductance of every unit of the layer: Σ_i C_{j,i}, whose sum over units is the input-space IG total.

        Parameters
        ----------
        inputs : Tensor (n, *x_shape)
        %(sample_baselines)s
        %(target)s
        n_steps : int
            Quadrature nodes per path.
        method : str
            Quadrature rule ("trapezoid", "riemann_left", "riemann_right", "riemann_middle", "gausslegendre").
        return_convergence_delta : bool
            Also return Σ_j conductance_j − (f(x) − mean_b f(b)) per sample, shape (n,).
        jvp : {"forward", "double_backward"}
            How the Jacobian-vector product of g is taken (same result).
        chunk_points : int, optional
            Path points per forward pass.
        %(extra_inputs)s

        Returns
        -------
        Tensor (n, *layer_shape) in the inputs' dtype (and the delta, float64 (n,), if asked).
        """
        integrals, inputs = self._per_sample(inputs, None, baselines, target, n_steps, method, jvp, chunk_points,
                                             extra_inputs)
        values = integrals.attributions[:, 0].to(device=inputs.device, dtype=inputs.dtype)
        if not return_convergence_delta:
            return values
        return values, integrals.completeness_residual[:, 0].to(inputs.device)

    def region_attribution(self, inputs: Any, region: Any, baselines: Any = None, target: Any = None,
                           n_steps: int = 50, method: str = "trapezoid", jvp: str = "forward",
                           chunk_points: int | None = None,
                           extra_inputs: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Region-to-neuron attribution A_j^S = Σ_{i∈S} C_{j,i} of every unit j of the layer.

        Σ_j A_j^S = Σ_{i∈S} IG_i (same baselines, rule and steps), and A^S summed over a partition of the input
        into regions is the conductance. Cost per path point: one forward pass carrying the JVP of g in the
        direction (x − x′) ⊙ 1_S, and one backward pass through h.

        Parameters
        ----------
        inputs : Tensor (n, *x_shape)
        region : boolean Tensor x_shape or (n, *x_shape)
            The input region S (shared, or one per sample).
        baselines, target, n_steps, method, jvp, chunk_points, extra_inputs
            As for :meth:`conductance`.

        Returns
        -------
        Tensor (n, *layer_shape) in the inputs' dtype.
        """
        if region is None:
            raise InputError("region_attribution needs a region mask; for all inputs use conductance()")
        integrals, inputs = self._per_sample(inputs, region, baselines, target, n_steps, method, jvp, chunk_points,
                                             extra_inputs)
        return integrals.attributions[:, 0].to(device=inputs.device, dtype=inputs.dtype)

    # -- dataset-wise
    def region_correlation(self, data: Any, region: Any, baselines: Any = None, n_steps: int = 32,
                           method: str = "trapezoid", outputs: int | Sequence[int] | None = None,
                           batch_size: int | None = None, seed: int = 0, against: str = "targets",
                           progress: bool = False, jvp: str = "forward") -> Result:
        """Which units carry a region's share of the correlation over a dataset.

        The IGC formula applied to the per-sample region-to-neuron attributions:

            M_{k,j} = Cov_n(A^S_{n,k,j}, y_{n,k}) / (σ_y σ_ŷ),

        so that Σ_j M_{k,j} = Σ_{i∈S} IGC_{k,i} (the region's share of the correlation, with the same
        baselines, rule and seed) — IGC is linear in IG. With ``against="predictions"`` it is the IGaC analogue.

        Parameters
        ----------
        data : (X, Y) pair, Dataset or DataLoader
            As for :meth:`igcorr.IGC.attribute`.
        region : boolean tensor x_shape
            The input region S, shared by all samples.
        baselines : None, float, tensor, int or igcorr.baselines spec
            As for :meth:`igcorr.IGC.attribute` (an int M draws M dataset baselines per sample).
        n_steps, method
            Quadrature nodes and rule.
        outputs : None, int or list of int
            Which model outputs (after ``score``) to attribute; None for all.
        batch_size : int, optional
            Samples per batch (default 64).
        seed : int
            Seed of dataset baselines (draws keyed by sample index: independent of batch size).
        against : {"targets", "predictions"}
            Correlate with the targets (IGC) or with the model's own predictions (IGaC).
        progress : bool
            Show a progress bar.
        jvp : {"forward", "double_backward"}
            How the Jacobian-vector product of g is taken.

        Returns
        -------
        Result
            ``maps`` (K, *layer_shape); diagnostics (K,): ``correlation``, ``baseline_term``, ``map_sum``
            (= the region's Σ_{i∈S} IGC), ``target_std``, ``prediction_std``; metadata.
        """
        # the dataset layer sits above the per-sample methods and imports them, so it is imported here
        from igcorr.dataset.estimators import LayerRegion
        from igcorr.dataset.run import DatasetRun, EngineOptions, RunOptions
        from igcorr.reducers import CorrelationReducer

        check_choice(against, "against", ("targets", "predictions"))
        estimator = LayerRegion(self.layer, region, method, n_steps, check_choice(jvp, "jvp", JVP_MODES))
        quadrature_rule(method, n_steps)
        spec = baseline_forms.resolve(baselines)
        options = RunOptions(64 if batch_size is None else batch_size, seed, progress)
        name = "region_neuron_" + ("igc" if against == "targets" else "igac")
        outcome = DatasetRun(name, self.adapter, EngineOptions()).run(
            data, estimator=estimator, baselines=spec, outputs=outputs, options=options,
            make_reducer=lambda selected: CorrelationReducer(selected, against=against))
        computed, metadata = outcome.computed, outcome.metadata
        keep = ("correlation", "baseline_term", "map_sum", "target_std", "prediction_std")
        region_size = int(region_mask(region, torch.zeros(1, *outcome.x_shape), per_sample=False).sum())
        return Result(
            method=name,
            maps=computed.maps.reshape(len(outcome.outputs), *outcome.map_shape).cpu().numpy(),
            diagnostics={key: computed.diagnostics[key].cpu().numpy() for key in keep},
            metadata={**metadata, "layer": self.cut.name, "layer_shape": list(outcome.map_shape),
                      "region_size": region_size},
        )

    # -- ablation
    @contextlib.contextmanager
    def ablated(self, units: Any) -> Iterator[None]:
        """Within the block, the given units (flat indices into the layer's output) output zero."""
        units = torch.as_tensor(np.asarray(units, dtype=np.int64).reshape(-1))

        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
            keep = torch.ones(output[0].numel(), dtype=output.dtype, device=output.device)
            keep[units.to(output.device)] = 0
            return output * keep.view(output.shape[1:])

        handle = self.cut.module.register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    def ablation_curve(self, inputs: Any, region: Any, baselines: Any = None, target: Any = None,
                       counts: Sequence[int] | None = None, ranking: str | Any = "region", n_steps: int = 32,
                       method: str = "trapezoid", labels: Any = None) -> AblationCurve:
        """Zero the top units by a ranking and re-measure the attribution mass inside and outside the region.

        Units are ranked (descending) by their mean over the samples of A^S (``ranking="region"``), of their
        conductance (``"conductance"``), or by given scores; for each count c the first c units are zeroed by a
        forward hook on the layer and the attribution is recomputed: IG of each sample (the mass is the mean over
        samples of Σ_{i∈S} IG_i and Σ_{i∉S} IG_i), or with ``labels`` the dataset-wise IGC of the samples
        (the mass is Σ_{i∈S} IGC_i, Σ_{i∉S} IGC_i).

        Parameters
        ----------
        inputs : Tensor (n, *x_shape)
        region : boolean tensor x_shape (or (n, *x_shape) for IG)
            The region S.
        baselines : None, float, Tensor
            As for :meth:`conductance`; with ``labels``, any ``baselines`` form of :meth:`igcorr.IGC.attribute`.
        target : int, sequence of int or LongTensor (n,)
            Output to attribute (an int with ``labels``); None only for single-output models.
        counts : sequence of int, optional
            Numbers of units to zero; default 0, 10 %, 20 %, ..., 100 % of the units.
        ranking : "region", "conductance" or array (m,)
            How units are ordered for ablation.
        n_steps, method
            Quadrature of every IG / IGC evaluation.
        labels : Tensor (n,) or (n, K), optional
            Targets of the samples: measure IGC instead of IG.

        Returns
        -------
        AblationCurve
        """
        if isinstance(ranking, str) and ranking not in RANKINGS:
            raise InputError(f"ranking must be 'region', 'conductance' or an array of unit scores, got {ranking!r}")
        if labels is not None and not (isinstance(target, (int, np.integer)) and not isinstance(target, bool)):
            raise InputError("with labels (IGC measurement) target must be one output index (an int)")
        if isinstance(ranking, str):
            if isinstance(baselines, (int, np.integer, baseline_forms.BaselineSpec)) and not isinstance(baselines, bool):
                raise InputError("units are ranked with per-sample attributions, which take explicit baselines (None, "
                                 "a float or a tensor); with dataset baselines pass the ranking scores yourself "
                                 "(e.g. region_correlation(...).maps[0].ravel())")
            scores_per_sample = (self.region_attribution(inputs, region, baselines, target, n_steps, method)
                                 if ranking == "region" else self.conductance(inputs, baselines, target, n_steps, method))
            unit_scores = scores_per_sample.to(torch.float64).reshape(len(scores_per_sample), -1).mean(dim=0)
            name = ranking
        else:
            unit_scores = as_tensor(ranking, "ranking").to(torch.float64).reshape(-1)
            name = "custom"
        n_units = len(unit_scores)
        order = torch.argsort(unit_scores, descending=True, stable=True).cpu().numpy()
        if counts is None:
            counts = sorted({int(round(f * n_units)) for f in np.linspace(0.0, 1.0, 11)})
        counts_array = np.asarray(list(counts), dtype=np.int64)
        if counts_array.ndim != 1 or len(counts_array) == 0 or bool((counts_array < 0).any()) \
                or bool((counts_array > n_units).any()):
            raise InputError(f"counts must be numbers of units between 0 and {n_units}, got {list(counts)!r}")
        inputs = as_tensor(inputs, "inputs")
        inside, outside = [], []
        for count in counts_array:
            with self.ablated(order[:count]):
                if labels is None:
                    attributions = IntegratedGradients(self.model, self.score, output=self.output).attribute(
                        inputs, baselines, target, n_steps=n_steps, method=method).to(torch.float64)
                    mask = region_mask(region, attributions).to(attributions.device)
                    flat, flat_mask = attributions.reshape(len(inputs), -1), mask.reshape(len(inputs), -1)
                    inside.append(float((flat * flat_mask).sum(dim=1).mean()))
                    outside.append(float((flat * ~flat_mask).sum(dim=1).mean()))
                else:
                    from igcorr.dataset.methods import IGC  # the dataset layer imports this module

                    result = IGC(self.model, self.score, output=self.output).attribute(
                        (inputs, labels), baselines=baselines, n_steps=n_steps, method=method,
                        outputs=[int(target)], progress=False)
                    mask = region_mask(region, torch.as_tensor(result.maps), per_sample=False)[0].cpu().numpy()
                    inside.append(float(result.maps[0][mask].sum()))
                    outside.append(float(result.maps[0][~mask].sum()))
        return AblationCurve(counts=counts_array, fractions=counts_array / n_units, inside=np.asarray(inside),
                             outside=np.asarray(outside), ranking=name, order=order,
                             unit_scores=unit_scores.cpu().numpy(), measure="ig" if labels is None else "igc")
