"""Straight paths split at an internal layer: the integrals behind internal-neuron attributions.

Split the model at a layer, f = h ∘ g with g: input → m units (the layer's output, captured by a forward hook)
and h the rest of the network. Along the straight path γ(t) = x′ + t(x − x′), the attribution of a region S
of the input to unit j is

    A_j^S = ∫_0^1 ∂_j h(g(γ(t))) (J_g(γ(t)) ((x − x′) ⊙ 1_S))_j dt,

so at every node one Jacobian-vector product of g in the direction (x − x′) ⊙ 1_S gives the factor for all
units at once, and one backward pass through h alone gives ∂_j h. The JVP is taken in forward mode
(``torch.autograd.forward_ad``: the layer's tangent is read in the hook, and the layer's output is handed to h
as a fresh leaf, so the backward pass never re-enters g), or with the double-backward trick
(J v = ∂/∂u ⟨J^T u, v⟩) for modules without forward-mode formulas. The chunks are those of
:class:`~igcorr.paths.straight.StraightPath`; only the evaluation differs.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.autograd.forward_ad as fwad
from torch import nn

from igcorr._validation import check_choice
from igcorr.data import as_tensor
from igcorr.errors import InputError, ModelError, ShapeError
from igcorr.model import Extras, ModelAdapter, take_rows
from igcorr.paths.integrator import Evaluation, PathIntegrals, PathIntegrator, TargetFunction
from igcorr.paths.quadrature import Rule
from igcorr.paths.straight import StraightChunk, StraightPath, scores_of

JVP_MODES = ("forward", "double_backward")


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



class LayerCut:
    """Hooks that split the model at ``layer`` into g (up to the layer's output) and h (the rest)."""

    def __init__(self, adapter: ModelAdapter, layer: Any) -> None:
        adapter.require_hooks("splitting the model at a layer (internal neurons)", "pass the eager model")
        model = adapter.model
        if isinstance(layer, str):
            self.module, self.name = adapter.submodule(layer, "layer"), layer
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

    def check(self, adapter: ModelAdapter, x: torch.Tensor, extras: Extras | None = None) -> None:
        """Refuse layers that are skipped or bypassed: the output must depend on the input only through them."""
        points = x[:1].detach().clone().requires_grad_(True)
        with torch.enable_grad(), self.split(None) as store:
            scores = adapter.scores(points, extras=take_rows(extras, slice(0, 1)))
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


class LayerCutPath(StraightPath):
    """Straight paths whose gradients are taken at a layer and weighted by the layer's JVP along the path.

    Parameters
    ----------
    cut : LayerCut
        The layer splitting f = h ∘ g.
    region : BoolTensor (n, *x_shape), optional
        The input region S of each sample; None for all inputs (conductance).
    jvp : {"forward", "double_backward"}
        How the Jacobian-vector product of g is taken.
    Other parameters as for :class:`~igcorr.paths.straight.StraightPath` (scores are always evaluated).
    """

    allows_readout = False
    compiled = False

    def __init__(self, adapter_scores: Callable[[torch.Tensor, Extras], torch.Tensor], cut: LayerCut,
                 x: torch.Tensor, baselines: torch.Tensor, region: torch.Tensor | None, rule: Rule, n_outputs: int,
                 per_sample_output: torch.Tensor | None = None, jvp: str = "forward",
                 extras: Extras | None = None) -> None:
        super().__init__(adapter_scores, x, baselines, rule, n_outputs, per_sample_output=per_sample_output,
                         extras=extras)
        self.allows_readout = False
        self.description = f"path through layer {cut.name}"
        self.cut = cut
        self.jvp = check_choice(jvp, "jvp", JVP_MODES)
        self.endpoint_scores = False  # scores come from separate forward passes (the layer hook is active)
        self.flat_region = None if region is None else region.reshape(len(x), -1).to(x.dtype)

    def evaluate(self, chunk: StraightChunk, targets: TargetFunction) -> Evaluation:
        direction = chunk.deltas if self.flat_region is None else chunk.deltas * self.flat_region[chunk.sample]
        tangent = direction.reshape(chunk.points.shape)
        if self.jvp == "forward":
            with warnings.catch_warnings():
                # torch builds its forward-AD decompositions with torch.jit.script on first use, which warns
                warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=DeprecationWarning)
                with fwad.dual_level(), self.cut.split("forward") as store:
                    differentiated, scores = targets(fwad.make_dual(chunk.points, tangent), chunk.choice,
                                                     chunk.extras)
            jvp = store["tangent"]
        else:
            points = chunk.points.detach().requires_grad_(True)
            with self.cut.split("double_backward") as store:
                differentiated, scores = targets(points, chunk.choice, chunk.extras)
                output = store["output"]
                probe = torch.zeros_like(output, requires_grad=True)
                (transposed,) = torch.autograd.grad(output, points, grad_outputs=probe, create_graph=True)
                (jvp,) = torch.autograd.grad(transposed, probe, grad_outputs=tangent, allow_unused=True)
            if jvp is None:  # g is constant near these points
                jvp = torch.zeros_like(output)
        leaf = store["leaf"]
        self.attribution_shape = tuple(leaf.shape[1:])
        return Evaluation(differentiated, scores, leaf, jvp.detach().reshape(len(chunk.sample), -1))


def integrate_layer(integrator: PathIntegrator, cut: LayerCut, x: torch.Tensor, baselines: torch.Tensor,
                    region: torch.Tensor | None, rule: Rule, *, per_sample_output: torch.Tensor | None = None,
                    jvp: str = "forward", first_index: int = 0, extras: Extras | None = None) -> PathIntegrals:
    """Region-to-neuron attributions A^S (conductance for ``region=None``) of a batch, (n, K, *layer_shape)."""
    path = LayerCutPath(scores_of(integrator), cut, x, baselines, region, rule, len(integrator.outputs),
                        per_sample_output=per_sample_output, jvp=jvp, extras=extras)
    return integrator.integrate(path, first_index=first_index)
