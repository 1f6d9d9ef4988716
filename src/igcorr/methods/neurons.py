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

The JVP is taken in forward mode (``torch.autograd.forward_ad``: the layer's tangent is read in the hook, and
the layer's output is handed to h as a fresh leaf, so the backward pass never re-enters g), or with the
double-backward trick (J v = ∂/∂u ⟨J^T u, v⟩) for modules without forward-mode formulas.

:class:`InternalNeurons` offers the per-sample attributions, their dataset-wise correlation (the IGC formula
applied to A^S: which units carry a region's share of the correlation) and an ablation utility.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.autograd.forward_ad as fwad
from torch import nn

from igcorr import baselines as baseline_forms
from igcorr.data import Batch, DataSource, as_tensor, check_finite
from igcorr.engine import (Engine, PathIntegrals, ScoreLike, describe_score, named_submodule, path_chunks,
                           resolve_outputs)
from igcorr.errors import InputError, ModelError, NonFiniteError, ShapeError
from igcorr.methods.common import per_sample_baselines, resolve_targets
from igcorr.methods.integrated_gradients import IntegratedGradients
from igcorr.quadrature import Rule
from igcorr.quadrature import rule as quadrature_rule
from igcorr.reducers import CorrelationReducer, SampleBatch
from igcorr.result import Result
from igcorr.runner import run_reduction

JVP_MODES = ("forward", "double_backward")
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


# ---------------------------------------------------------------------------------------------------- the layer cut
class _LayerCut:
    """Hooks that split the model at ``layer`` into g (up to the layer's output) and h (the rest)."""

    def __init__(self, model: Any, layer: Any) -> None:
        if isinstance(layer, str):
            self.module, self.name = named_submodule(model, layer, "layer"), layer
        elif isinstance(layer, nn.Module):
            if isinstance(model, nn.Module) and not any(sub is layer for sub in model.modules()):
                raise InputError("the layer is not a submodule of the model; pass one of its modules or its name")
            self.module, self.name = layer, type(layer).__name__
        else:
            raise InputError(f"layer must be a submodule name or an nn.Module, got {type(layer).__name__}")

    @contextlib.contextmanager
    def split(self, mode: str | None) -> Iterator[dict[str, Any]]:
        """While active, the layer's output is replaced by a detached leaf (the input of h).

        ``store`` receives ``leaf`` (requires grad), ``output`` (g's output with its graph; mode
        "double_backward") and ``tangent`` (J_g v; mode "forward"), and counts the calls.
        """
        store: dict[str, Any] = {"calls": 0}

        def hook(_module: nn.Module, _inputs: tuple, output: Any) -> torch.Tensor:
            if not isinstance(output, torch.Tensor):
                raise ModelError(f"layer {self.name} returns a {type(output).__name__}, not a tensor; choose a layer "
                                 "with one tensor output")
            store["calls"] += 1
            if mode == "forward":
                primal, tangent = fwad.unpack_dual(output)
                store["tangent"] = torch.zeros_like(primal) if tangent is None else tangent.detach().clone()
            else:
                primal = output
                store["output"] = output
            leaf = primal.detach().clone().requires_grad_(True)
            store["leaf"] = leaf
            return leaf

        handle = self.module.register_forward_hook(hook)
        try:
            yield store
        finally:
            handle.remove()
        if store["calls"] > 1:
            raise ModelError(f"layer {self.name} ran {store['calls']} times in one forward pass; the split f = h ∘ g "
                             "needs a layer that runs once: choose another layer")

    def check(self, engine: Engine, x: torch.Tensor) -> None:
        """Refuse layers that are skipped or bypassed: the output must depend on the input only through them."""
        points = x[:1].detach().clone().requires_grad_(True)
        with torch.enable_grad(), self.split(None) as store:
            scores = engine._scores(points)
        if store["calls"] == 0:
            raise ModelError(f"layer {self.name} did not run in the model's forward pass; choose a layer the model uses")
        bypass, through = torch.autograd.grad(scores.sum(), (points, store["leaf"]), allow_unused=True)
        if bypass is not None and bool((bypass != 0).any()):
            raise ModelError(
                f"the model's output depends on the input other than through layer {self.name} (e.g. a skip "
                "connection around it), so f ≠ h ∘ g and unit attributions would not add up to IG; choose a layer "
                "that every path from the input to the output passes through"
            )
        if through is None:
            raise ModelError(f"the model's output does not depend on layer {self.name}")


# ---------------------------------------------------------------------------------------------------- the integral
def _jvp_and_gradients(engine: Engine, cut: _LayerCut, points: torch.Tensor, tangent: torch.Tensor,
                       outputs: torch.Tensor, choice: torch.Tensor | None, cotangent: torch.Tensor,
                       mode: str) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """At P points: (J_g·tangent (P, *layer), [∂h/∂unit weighted by cotangent, per column], scores (P, J))."""
    if mode == "forward":
        with warnings.catch_warnings():
            # torch builds its forward-AD decompositions with torch.jit.script on first use, which warns
            warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=DeprecationWarning)
            with fwad.dual_level(), torch.enable_grad(), cut.split("forward") as store:
                scores = engine._scores(fwad.make_dual(points, tangent))[:, outputs]
        jvp = store["tangent"]
    else:
        points = points.detach().requires_grad_(True)
        with torch.enable_grad(), cut.split("double_backward") as store:
            scores = engine._scores(points)[:, outputs]
            output = store["output"]
            probe = torch.zeros_like(output, requires_grad=True)
            (transposed,) = torch.autograd.grad(output, points, grad_outputs=probe, create_graph=True)
            (jvp,) = torch.autograd.grad(transposed, probe, grad_outputs=tangent, allow_unused=True)
        if jvp is None:  # g is constant near these points
            jvp = torch.zeros_like(output)
    if choice is not None:
        scores = scores.gather(1, choice.unsqueeze(1))
    leaf = store["leaf"]
    gradients = []
    for column in range(scores.shape[1]):
        with torch.enable_grad():
            (gradient,) = torch.autograd.grad(scores[:, column], leaf, grad_outputs=cotangent,
                                              retain_graph=column < scores.shape[1] - 1, allow_unused=True)
        gradients.append(torch.zeros_like(leaf) if gradient is None else gradient)
    return jvp.detach(), gradients, scores.detach()


def layer_path_integrals(engine: Engine, cut: _LayerCut, x: torch.Tensor, baselines: torch.Tensor,
                         region: torch.Tensor | None, rule: Rule, outputs: torch.Tensor,
                         per_sample_output: torch.Tensor | None = None, jvp: str = "forward",
                         first_index: int = 0) -> PathIntegrals:
    """Region-to-neuron attributions A^S (conductance for ``region=None``) of a batch.

    Parameters
    ----------
    engine : Engine
        Evaluates the model; must be inside ``engine.frozen()``.
    cut : _LayerCut
        The layer splitting f = h ∘ g.
    x : Tensor (n, *x_shape)
    baselines : Tensor (n, M, *x_shape)
    region : BoolTensor (n, *x_shape), optional
        The input region S of each sample; None for all inputs (conductance).
    rule : Rule
        Quadrature nodes and weights on [0, 1].
    outputs : LongTensor (K,)
        Scores to attribute.
    per_sample_output : LongTensor (n,), optional
        Attribute only ``outputs[per_sample_output[i]]`` for sample i (K = 1 in the result).
    jvp : {"forward", "double_backward"}
        How the Jacobian-vector product of g is taken.

    Returns
    -------
    PathIntegrals
        ``attributions`` (n, K, *layer_shape) float64 averaged over the baselines, ``predictions`` f(x) (n, K)
        and ``baseline_predictions`` mean_b f(b) (n, K).
    """
    n, n_baselines = baselines.shape[:2]
    n_outputs = 1 if per_sample_output is not None else len(outputs)
    features = x[0].numel()
    dev = x.device
    alphas = torch.as_tensor(rule.nodes, dtype=x.dtype, device=dev)
    weights = torch.as_tensor(rule.weights, dtype=x.dtype, device=dev)
    flat_region = None if region is None else region.reshape(n, features).to(x.dtype)
    choice_of_sample = per_sample_output.to(dev) if per_sample_output is not None else None
    integrals: torch.Tensor | None = None
    layer_shape: tuple[int, ...] = ()
    for chunk in path_chunks(x, baselines, alphas, engine.chunk_points):
        point, node, sample, deltas, points = chunk.point, chunk.node, chunk.sample, chunk.deltas, chunk.points
        direction = deltas if flat_region is None else deltas * flat_region[sample]
        choice = choice_of_sample[sample] if choice_of_sample is not None else None
        jvp_values, gradients, _ = _jvp_and_gradients(engine, cut, points, direction.reshape(points.shape), outputs,
                                                      choice, weights[node], jvp)
        if integrals is None:
            layer_shape = tuple(jvp_values.shape[1:])
            integrals = torch.zeros(n, n_outputs, jvp_values[0].numel(), dtype=torch.float64, device=dev)
        flat_jvp = jvp_values.reshape(len(point), -1).to(torch.float64)
        for column, gradient in enumerate(gradients):
            integrals[:, column].index_add_(0, sample, gradient.reshape(len(point), -1).to(torch.float64) * flat_jvp)
    if integrals is None:
        raise InputError("nothing to attribute: the batch is empty")
    integrals /= n_baselines
    finite = torch.isfinite(integrals).flatten(1).all(dim=1)
    if not bool(finite.all()):
        bad = int(torch.nonzero(~finite)[0]) + first_index
        raise NonFiniteError(f"the layer attributions of sample {bad} are not finite (NaN or Inf); check the model "
                             "for divisions by zero, log of zero or overflow in its dtype")
    predictions = engine.scores(x, outputs).to(torch.float64)
    baseline_scores = engine.scores(baselines.reshape(n * n_baselines, *x.shape[1:]), outputs).to(torch.float64)
    if choice_of_sample is not None:
        predictions = predictions.gather(1, choice_of_sample.unsqueeze(1))
        baseline_scores = baseline_scores.gather(1, choice_of_sample.repeat_interleave(n_baselines).unsqueeze(1))
    return PathIntegrals(integrals.reshape(n, n_outputs, *layer_shape), predictions,
                         baseline_scores.reshape(n, n_baselines, n_outputs).mean(dim=1))


# ---------------------------------------------------------------------------------------------------- validation
def region_mask(region: Any, x: torch.Tensor, per_sample: bool = True) -> torch.Tensor:
    """The region S as a boolean tensor (n, *x_shape).

    Parameters
    ----------
    region : bool (or 0/1) tensor or array
        x_shape (one region for all samples) or, if ``per_sample``, (n, *x_shape).
    x : Tensor (n, *x_shape)
    """
    mask = as_tensor(region, "region")
    if mask.dtype != torch.bool:
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise InputError("region must be a boolean mask (or 0/1 values) of the input's shape")
        mask = mask != 0
    x_shape, shape = tuple(x.shape[1:]), tuple(mask.shape)
    mask = mask.to(x.device)
    if shape == x_shape:
        return mask.expand(len(x), *x_shape)
    if per_sample and shape == (len(x),) + x_shape:
        return mask
    forms = f"{x_shape}" + (f" or (n, *x_shape) = {(len(x),) + x_shape}" if per_sample else "")
    raise ShapeError(f"region of shape {shape} does not fit inputs of shape {tuple(x.shape)}: give {forms}")


def _check_jvp(jvp: Any) -> str:
    if jvp not in JVP_MODES:
        raise InputError(f"jvp must be 'forward' (forward-mode AD) or 'double_backward', got {jvp!r}")
    return jvp


# ---------------------------------------------------------------------------------------------------- public API
class InternalNeurons:
    """Attributions to the units of an internal layer, and of input regions to those units.

    Parameters
    ----------
    model : nn.Module or callable
        Maps (P, *x_shape) to (P, K) outputs (or (P,)).
    layer : str or nn.Module
        The layer whose output units are attributed (a submodule name or the module). Every path from the
        input to the output must pass through it (no skip connection around it), and it must run once per
        forward pass; both are checked.
    score : None, "softmax", "log_softmax" or callable
        The attributed quantity (raw output by default).
    """

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor], layer: str | nn.Module,
                 score: ScoreLike = None) -> None:
        self.engine = Engine(model, score)
        self.cut = _LayerCut(model, layer)
        self.model = model
        self.score = score

    # -- per sample
    def _per_sample(self, inputs: Any, region: Any, baselines: Any, target: Any, n_steps: int, method: str,
                    jvp: str, chunk_points: int | None) -> tuple[PathIntegrals, torch.Tensor]:
        inputs = as_tensor(inputs, "inputs")
        if inputs.ndim < 1 or len(inputs) == 0:
            raise ShapeError("inputs must be a non-empty batch of shape (n, *x_shape)")
        check_finite(inputs, "input")
        jvp = _check_jvp(jvp)
        rule = quadrature_rule(method, n_steps)
        if chunk_points is not None:
            self.engine.fixed_chunk_points = chunk_points
        with self.engine.frozen():
            x = self.engine.prepare_inputs(inputs)
            mask = None if region is None else region_mask(region, x)
            n_outputs = self.engine.n_model_outputs(x)
            outputs, per_sample = resolve_targets(target, n_outputs, len(x), x.device)
            self.engine.configure(x, outputs)
            self.cut.check(self.engine, x)
            stack = per_sample_baselines(baselines, x)
            integrals = layer_path_integrals(self.engine, self.cut, x, stack, mask, rule, outputs,
                                             per_sample_output=per_sample, jvp=jvp)
        return integrals, inputs

    def conductance(self, inputs: Any, baselines: Any = None, target: Any = None, n_steps: int = 50,
                    method: str = "trapezoid", return_convergence_delta: bool = False, jvp: str = "forward",
                    chunk_points: int | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Conductance of every unit of the layer: Σ_i C_{j,i}, whose sum over units is the input-space IG total.

        Parameters
        ----------
        inputs : Tensor (n, *x_shape)
        baselines : None, float, Tensor or igcorr.baselines.Shared
            As for :meth:`igcorr.IntegratedGradients.attribute` (mean over several baselines).
        target : None, int, sequence of int or LongTensor (n,)
            Output to attribute, for all samples or per sample; None only for single-output models.
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

        Returns
        -------
        Tensor (n, *layer_shape) in the inputs' dtype (and the delta, float64 (n,), if asked).
        """
        integrals, inputs = self._per_sample(inputs, None, baselines, target, n_steps, method, jvp, chunk_points)
        values = integrals.attributions[:, 0].to(device=inputs.device, dtype=inputs.dtype)
        if not return_convergence_delta:
            return values
        return values, integrals.completeness_residual[:, 0].to(inputs.device)

    def region_attribution(self, inputs: Any, region: Any, baselines: Any = None, target: Any = None,
                           n_steps: int = 50, method: str = "trapezoid", jvp: str = "forward",
                           chunk_points: int | None = None) -> torch.Tensor:
        """Region-to-neuron attribution A_j^S = Σ_{i∈S} C_{j,i} of every unit j of the layer.

        Σ_j A_j^S = Σ_{i∈S} IG_i (same baselines, rule and steps), and A^S summed over a partition of the input
        into regions is the conductance. Cost per path point: one forward pass carrying the JVP of g in the
        direction (x − x′) ⊙ 1_S, and one backward pass through h.

        Parameters
        ----------
        inputs : Tensor (n, *x_shape)
        region : boolean Tensor x_shape or (n, *x_shape)
            The input region S (shared, or one per sample).
        baselines, target, n_steps, method, jvp, chunk_points
            As for :meth:`conductance`.

        Returns
        -------
        Tensor (n, *layer_shape) in the inputs' dtype.
        """
        if region is None:
            raise InputError("region_attribution needs a region mask; for all inputs use conductance()")
        integrals, inputs = self._per_sample(inputs, region, baselines, target, n_steps, method, jvp, chunk_points)
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
        from igcorr.dataset_methods import encode_targets  # deferred: dataset_methods imports this package

        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise InputError(f"seed must be an integer, got {seed!r}")
        if against not in ("targets", "predictions"):
            raise InputError(f"against must be 'targets' or 'predictions', got {against!r}")
        jvp = _check_jvp(jvp)
        rule = quadrature_rule(method, n_steps)
        spec = baseline_forms.resolve(baselines)
        started = time.perf_counter()
        layer_shape: list[int] = []
        source = DataSource(data, 64 if batch_size is None else batch_size)
        if source.has_length and len(source) < 2:
            raise InputError("a correlation over samples needs at least two samples")
        with self.engine.frozen():
            probe = self.engine.prepare_inputs(source.head(4))
            x_shape = tuple(probe.shape[1:])
            mask = region_mask(region, probe, per_sample=False)[:1]
            n_model_outputs = self.engine.n_model_outputs(probe)
            self.engine.check_batch_independence(probe)
            selected = resolve_outputs(outputs, n_model_outputs)
            output_index = torch.as_tensor(selected, dtype=torch.int64, device=probe.device)
            self.engine.configure(probe, output_index)
            self.cut.check(self.engine, probe)
            spec.prepare(x_shape, source, int(seed))

            def step(batch: Batch) -> SampleBatch:
                x = self.engine.prepare_inputs(batch.x)
                if tuple(x.shape[1:]) != x_shape:
                    raise ShapeError(f"sample {batch.start} has shape {tuple(x.shape[1:])} but earlier samples "
                                     f"have {x_shape}")
                indices = np.arange(batch.start, batch.start + len(x))
                integrals = layer_path_integrals(self.engine, self.cut, x, spec.for_samples(indices, x),
                                                 mask.expand(len(x), *x_shape), rule, output_index, jvp=jvp,
                                                 first_index=batch.start)
                layer_shape[:] = integrals.attributions.shape[2:]
                return SampleBatch(indices=torch.as_tensor(indices, device=x.device), inputs=x,
                                   targets=encode_targets(batch.y, n_model_outputs, selected).to(x.device),
                                   attributions=integrals.attributions, predictions=integrals.predictions,
                                   baseline_predictions=integrals.baseline_predictions)

            reducer, seen = run_reduction(source, lambda: CorrelationReducer(selected, against=against), step,
                                          progress=progress, description="REGION-NEURON", device=probe.device)
        computed = reducer.compute()
        keep = ("correlation", "baseline_term", "map_sum", "target_std", "prediction_std")
        name = "region_neuron_" + ("igc" if against == "targets" else "igac")
        return Result(
            method=name,
            maps=computed.maps.reshape(len(selected), *layer_shape).cpu().numpy(),
            diagnostics={name: computed.diagnostics[name].cpu().numpy() for name in keep},
            metadata={"method": name, "outputs": selected,
                      "n_model_outputs": n_model_outputs, "n_samples": seen, "x_shape": list(x_shape),
                      "layer": self.cut.name, "layer_shape": list(layer_shape), "score": describe_score(self.score),
                      "seed": int(seed), "region_size": int(mask.sum()), "baselines": spec.describe(),
                      "parameters": {"n_steps": len(rule.nodes), "method": method, "jvp": jvp},
                      "seconds": time.perf_counter() - started},
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
                    attributions = IntegratedGradients(self.model, self.score).attribute(
                        inputs, baselines, target, n_steps=n_steps, method=method).to(torch.float64)
                    mask = region_mask(region, attributions).to(attributions.device)
                    flat, flat_mask = attributions.reshape(len(inputs), -1), mask.reshape(len(inputs), -1)
                    inside.append(float((flat * flat_mask).sum(dim=1).mean()))
                    outside.append(float((flat * ~flat_mask).sum(dim=1).mean()))
                else:
                    from igcorr.dataset_methods import IGC  # deferred: dataset_methods imports this package

                    result = IGC(self.model, self.score).attribute(
                        (inputs, labels), baselines=baselines, n_steps=n_steps, method=method,
                        outputs=[int(target)], progress=False)
                    mask = region_mask(region, torch.as_tensor(result.maps), per_sample=False)[0].cpu().numpy()
                    inside.append(float(result.maps[0][mask].sum()))
                    outside.append(float(result.maps[0][~mask].sum()))
        return AblationCurve(counts=counts_array, fractions=counts_array / n_units, inside=np.asarray(inside),
                             outside=np.asarray(outside), ranking=name, order=order,
                             unit_scores=unit_scores.cpu().numpy(), measure="ig" if labels is None else "igc")
