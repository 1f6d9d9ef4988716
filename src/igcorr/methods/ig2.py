"""IG2: Integrated Gradients on the iterative gradient path (Zhuo & Ge, TPAMI 2024).

The path of a (sample, reference) pair starts at the sample x and descends the distance between the model's
representation of the current point and that of the reference x^r (a counterfactual, usually a sample of
another class):

    γ_0 = x,    u_j = ∇_γ ‖r(γ_j) − r(x^r)‖² / (‖∇_γ ‖r(γ_j) − r(x^r)‖²‖₂ + ε),
    γ_{j+1} = clip(γ_j − η u_j, lo, hi),    GradCF = γ_k.

The attribution is the left Riemann sum of the gradient of the explained output along that path, with the true
(post-clipping) displacement, averaged over the references:

    IG2_i = (1/R) Σ_r Σ_{j<k} ∂_i f(γ_j) (γ_{j,i} − γ_{j+1,i}),

so that Σ_i IG2_i ≈ f(x) − (1/R) Σ_r f(GradCF_r), with an error that shrinks with η. The explained output is
chosen at x and kept for the whole path.

All (sample, reference) pairs of a batch walk their paths together: every step is one batched forward pass
(which also yields the representation, through a forward hook) and the vector-Jacobian products of the
distance and of the explained outputs. Pairs are processed in chunks of the engine's ``chunk_points``.

:class:`IG2` is the per-sample method; :class:`IG2Path` runs the dataset-wise methods (IGC, IGaC,
IGMoments) on IG2 attributions, with the GradCF endpoints in the place of the baselines.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from igcorr import baselines as baseline_forms
from igcorr.data import DataSource, as_tensor, check_finite
from igcorr.engine import Engine, PathIntegrals, ScoreLike, named_submodule
from igcorr.errors import InputError, ModelError, NonFiniteError, ShapeError
from igcorr.methods.common import resolve_targets
from igcorr.seeding import keyed_permutation, keyed_uint64

#: default number of path steps k
DEFAULT_STEPS = 100
#: with step_size="auto", each pair's path length k·η is this multiple of its distance ‖x − x^r‖₂
AUTO_PATH_LENGTH = 2.0
#: tag mixed into the seed of reference draws, so that they never coincide with other keyed draws
_REFERENCE_TAG = 0x1C2_4EF5


# ---------------------------------------------------------------------------------------------------- results
@dataclass
class IG2Attribution:
    """What :meth:`IG2.attribute` returns (n samples, R references, k steps).

    Attributes
    ----------
    attributions : Tensor (n, *x_shape)
        IG2 averaged over the references, in the inputs' dtype and device.
    counterfactuals : Tensor (n, R, *x_shape)
        The GradCF endpoints γ_k of every (sample, reference) path.
    completeness_residual : Tensor (n,), float64
        Σ_i IG2_i − (f(x) − mean_r f(GradCF_r)); shrinks with the step size.
    targets : LongTensor (n,)
        The explained output of each sample (chosen at x).
    predictions : Tensor (n,), float64
        f(x) for the explained output.
    counterfactual_predictions : Tensor (n, R), float64
        f(GradCF_r) for the explained output.
    distances : Tensor (n, R, k + 1), float64
        ‖r(γ_j) − r(x^r)‖₂ along every path: check that it has plateaued (else lengthen the path, k·η).
    path : Tensor (n, R, k + 1, *x_shape), optional
        The points γ_0 = x, ..., γ_k (only with ``return_path=True``).
    """

    attributions: torch.Tensor
    counterfactuals: torch.Tensor
    completeness_residual: torch.Tensor
    targets: torch.Tensor
    predictions: torch.Tensor
    counterfactual_predictions: torch.Tensor
    distances: torch.Tensor
    path: torch.Tensor | None = None


@dataclass
class _Walk:
    """Everything a batch of GradPaths produced (float64 unless noted)."""

    integrals: PathIntegrals          # attributions (n, K, *x_shape), f(x) (n, K), mean_r f(GradCF) (n, K)
    counterfactuals: torch.Tensor     # (n, R, *x_shape), model dtype
    counterfactual_predictions: torch.Tensor  # (n, R, K)
    distances: torch.Tensor           # (n, R, k + 1)
    path: torch.Tensor | None         # (n, R, k + 1, *x_shape), model dtype


# ---------------------------------------------------------------------------------------------------- representation
class Representation:
    """The representation r(·) whose distance to the reference's drives the path.

    Parameters
    ----------
    spec : None, "auto", str, nn.Module or callable
        None / "auto": the input of the last ``nn.Linear`` the model executes (the usual choice: the features
        the final classifier reads). A string: the output of the model's submodule of that name. A module:
        its output. Any other callable: ``spec(points)`` evaluated separately, mapping (P, *x_shape) to
        (P, ...).
    model : callable
        The model (needed to resolve names and to find the last linear layer).
    """

    def __init__(self, spec: Any, model: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.function: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.module: nn.Module | None = None
        self.use_input = False
        self.description = ""
        if spec is None or (isinstance(spec, str) and spec == "auto"):
            if not isinstance(model, nn.Module):
                raise InputError("representation='auto' needs an nn.Module model; pass a module, a module name or a "
                                 "callable x → r(x)")
            self.use_input, self.description = True, "auto"
        elif isinstance(spec, str):
            self.module, self.description = named_submodule(model, spec, "representation"), spec
        elif isinstance(spec, nn.Module):
            if isinstance(model, nn.Module) and not any(sub is spec for sub in model.modules()):
                raise InputError("the representation module is not a submodule of the model; pass one of its "
                                 "layers (or its name), or a callable x → r(x)")
            self.module, self.description = spec, type(spec).__name__
        elif callable(spec):
            self.function = spec
            self.description = getattr(spec, "__name__", type(spec).__name__)
        else:
            raise InputError(f"representation must be None/'auto', a module name, a module or a callable, got "
                             f"{type(spec).__name__}")
        self._model = model

    def resolve(self, engine: Engine, probe: torch.Tensor) -> None:
        """Find the last linear layer for ``"auto"`` (one forward pass on ``probe``)."""
        if not self.use_input or self.module is not None:
            return
        executed: list[tuple[str, nn.Module]] = []
        handles = [sub.register_forward_hook(lambda m, _i, _o, name=name: executed.append((name, m)))
                   for name, sub in self._model.named_modules() if isinstance(sub, nn.Linear)]
        try:
            with torch.no_grad():
                engine._scores(probe[:1])
        finally:
            for handle in handles:
                handle.remove()
        if not executed:
            raise InputError("representation='auto' takes the input of the model's last nn.Linear, but the model "
                             "runs none; name the representation layer or pass a callable x → r(x)")
        self.description, self.module = f"input of {executed[-1][0]}", executed[-1][1]

    @contextlib.contextmanager
    def _captured(self) -> Iterator[list[torch.Tensor]]:
        store: list[torch.Tensor] = []

        def hook(_module: nn.Module, inputs: tuple, output: Any) -> None:
            value = inputs[0] if self.use_input else output
            if not isinstance(value, torch.Tensor):
                raise ModelError(f"the representation ({self.description}) is a {type(value).__name__}, not a "
                                 "tensor; pick a layer that produces one tensor, or pass a callable x → r(x)")
            store.append(value.clone())  # a copy, so that later in-place operations cannot change it

        handle = self.module.register_forward_hook(hook)  # type: ignore[union-attr]
        try:
            yield store
        finally:
            handle.remove()

    def _single(self, store: list[torch.Tensor]) -> torch.Tensor:
        if len(store) != 1:
            raise ModelError(
                f"the representation layer ({self.description}) ran {len(store)} times in one forward pass; it must "
                "run exactly once: choose another layer or pass a callable x → r(x)"
            )
        return store[0].reshape(len(store[0]), -1)

    def forward(self, engine: Engine, points: torch.Tensor, outputs: torch.Tensor,
                choice: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One forward pass: (differentiated targets (P, J), attributed scores (P, K), r(points) (P, m))."""
        if self.function is not None:
            targets, scores = engine._gradient_targets(points, outputs, choice)
            return targets, scores, _flat_representation(self.function(points), len(points))
        with self._captured() as store:
            targets, scores = engine._gradient_targets(points, outputs, choice)
        return targets, scores, self._single(store)

    def evaluate(self, engine: Engine, points: torch.Tensor, outputs: torch.Tensor,
                 choice: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Without gradients: (attributed scores (P, K), r(points) (P, m))."""
        with torch.no_grad():
            if self.function is not None:
                representation = _flat_representation(self.function(points), len(points))
                scores = engine._scores(points)[:, outputs]
            else:
                with self._captured() as store:
                    scores = engine._scores(points)[:, outputs]
                representation = self._single(store)
        if choice is not None:
            scores = scores.gather(1, choice.unsqueeze(1))
        return scores, representation


def _flat_representation(value: Any, n_points: int) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.ndim < 1 or len(value) != n_points:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ModelError(f"the representation callable returned {shape} for {n_points} points; it must return a "
                         "tensor (P, ...) with one row per point")
    return value.reshape(n_points, -1)


# ---------------------------------------------------------------------------------------------------- validation
def check_steps(steps: Any) -> int:
    """Validate the number of path steps k (an integer ≥ 1)."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise InputError(f"steps must be an integer >= 1 (the number of gradient steps of the path), got {steps!r}")
    return int(steps)


def check_step_size(step_size: Any) -> float | str:
    """Validate η: a positive finite number, or "auto" (k·η = 2‖x − x^r‖₂ for each pair)."""
    if isinstance(step_size, str) and step_size == "auto":
        return step_size
    if (isinstance(step_size, bool) or not isinstance(step_size, (int, float, np.floating, np.integer))
            or not np.isfinite(step_size) or not step_size > 0):
        raise InputError(f"step_size must be a positive number (η, in input units) or 'auto', got {step_size!r}")
    return float(step_size)


def check_clip(clip: Any) -> tuple[Any, Any] | None:
    """Validate ``clip``: None or a pair (lo, hi) of numbers or tensors broadcastable to one sample, lo < hi."""
    if clip is None:
        return None
    if isinstance(clip, (str, bytes)) or not isinstance(clip, (tuple, list)) or len(clip) != 2:
        raise InputError(f"clip must be None or a pair (lo, hi), got {clip!r}")
    low, high = (as_tensor(bound, "clip bound").to(torch.float64) for bound in clip)
    if not bool(torch.isfinite(low).all()) or not bool(torch.isfinite(high).all()):
        raise InputError("clip bounds must be finite; use None for no clipping")
    try:
        ordered = bool((low < high).all())
    except RuntimeError as error:
        raise ShapeError(f"the clip bounds of shapes {tuple(low.shape)} and {tuple(high.shape)} do not broadcast") from error
    if not ordered:
        raise InputError(f"clip must satisfy lo < hi everywhere, got lo={clip[0]!r}, hi={clip[1]!r}")
    return clip[0], clip[1]


def _clip_tensors(clip: tuple[Any, Any] | None, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Bounds as flat (1, D) tensors in x's dtype and device."""
    if clip is None:
        return None
    x_shape, features = tuple(x.shape[1:]), x[0].numel()
    bounds = []
    for bound in clip:
        tensor = as_tensor(bound, "clip bound").to(device=x.device, dtype=x.dtype)
        try:
            bounds.append(tensor.expand(x_shape).reshape(1, features))
        except RuntimeError as error:
            raise ShapeError(f"a clip bound of shape {tuple(tensor.shape)} does not broadcast to one sample's shape "
                             f"{x_shape}") from error
    flat = x.reshape(len(x), features)
    if bool(((flat < bounds[0]) | (flat > bounds[1])).any()):
        warnings.warn("some inputs lie outside the clip range: their first path step jumps onto it, which the "
                      "left Riemann sum approximates poorly; clip the inputs or widen the range", UserWarning,
                      stacklevel=4)
    return bounds[0], bounds[1]


def reference_stack(references: Any, x: torch.Tensor) -> torch.Tensor:
    """Interpret explicit references as a stack (n, R, *x_shape).

    Parameters
    ----------
    references : Tensor
        x_shape (one reference for all), (R, *x_shape) (R references shared by all samples) or
        (n, R, *x_shape) (R references per sample).
    x : Tensor (n, *x_shape)
    """
    if references is None:
        raise InputError("IG2 needs references (counterfactual samples, e.g. of other classes): pass a tensor "
                         "(R, *x_shape) or (n, R, *x_shape); igcorr.methods.ig2.select_references draws them")
    tensor = as_tensor(references, "references")
    if not tensor.is_floating_point():
        raise InputError(f"references have dtype {tensor.dtype}; pass float tensors like the inputs")
    check_finite(tensor.reshape(1, -1), "references")
    tensor = tensor.to(device=x.device, dtype=x.dtype)
    x_shape, shape = tuple(x.shape[1:]), tuple(tensor.shape)
    if shape == x_shape:
        return tensor.expand(len(x), 1, *x_shape)
    if len(shape) == len(x_shape) + 1 and shape[1:] == x_shape and shape[0] >= 1:
        return tensor.unsqueeze(0).expand(len(x), *shape)
    if len(shape) == len(x_shape) + 2 and shape[0] == len(x) and shape[2:] == x_shape and shape[1] >= 1:
        return tensor
    raise ShapeError(f"references of shape {shape} do not fit inputs of shape {tuple(x.shape)}: give {x_shape}, "
                     f"(R, *x_shape) shared by all samples, or (n, R, *x_shape) = ({len(x)}, R, ...) per sample")


# ---------------------------------------------------------------------------------------------------- the path
def grad_path_integrals(engine: Engine, representation: Representation, x: torch.Tensor, references: torch.Tensor,
                        outputs: torch.Tensor, *, steps: int, step_size: float | str,
                        clip: tuple[Any, Any] | None = None, per_sample_output: torch.Tensor | None = None,
                        return_path: bool = False, eps: float = 1e-12, first_index: int = 0) -> _Walk:
    """Walk the GradPaths of all (sample, reference) pairs and integrate the gradients of ``outputs`` along them.

    Parameters
    ----------
    engine : Engine
        Evaluates the model; must be inside ``engine.frozen()`` and configured for ``outputs``.
    representation : Representation
        r(·), resolved for the model.
    x : Tensor (n, *x_shape)
    references : Tensor (n, R, *x_shape)
    outputs : LongTensor (K,)
        Scores to attribute (the same path serves all of them).
    steps, step_size, clip, eps
        k, η (a number or "auto"), the (lo, hi) bounds, and the ε of the gradient normalisation.
    per_sample_output : LongTensor (n,), optional
        Attribute only ``outputs[per_sample_output[i]]`` for sample i (K = 1 in the result).
    return_path : bool
        Keep every point of every path.
    first_index : int
        Global index of the first sample (for error messages).
    """
    n, n_references = references.shape[:2]
    x_shape = tuple(x.shape[1:])
    features = int(np.prod(x_shape, dtype=np.int64))
    dev = x.device
    readout = engine.readout if per_sample_output is None else None
    n_outputs = 1 if per_sample_output is not None else len(outputs)
    width = readout.in_features if readout is not None else n_outputs
    n_pairs = n * n_references
    pair_sample = torch.arange(n, device=dev).repeat_interleave(n_references)
    flat_x = x.reshape(n, features)
    flat_references = references.reshape(n_pairs, features)
    if step_size == "auto":
        lengths = (flat_x[pair_sample] - flat_references).to(torch.float64).norm(dim=1)
        eta = (AUTO_PATH_LENGTH * lengths / steps).to(x.dtype).unsqueeze(1)
    else:
        eta = torch.full((n_pairs, 1), float(step_size), dtype=x.dtype, device=dev)
    bounds = _clip_tensors(clip, x)
    integrals = torch.zeros(n, width, features, dtype=torch.float64, device=dev)
    predictions = torch.zeros(n, n_outputs, dtype=torch.float64, device=dev)
    endpoint_scores = torch.zeros(n_pairs, n_outputs, dtype=torch.float64, device=dev)
    distances = torch.zeros(n_pairs, steps + 1, dtype=torch.float64, device=dev)
    endpoints = torch.empty(n_pairs, features, dtype=x.dtype, device=dev)
    path = torch.empty(n_pairs, steps + 1, features, dtype=x.dtype, device=dev) if return_path else None
    choice_of_sample = per_sample_output.to(dev) if per_sample_output is not None else None
    saved_readout, engine.readout = engine.readout, readout
    try:
        for begin in range(0, n_pairs, engine.chunk_points):
            pair = torch.arange(begin, min(begin + engine.chunk_points, n_pairs), device=dev)
            sample, size = pair_sample[pair], len(pair)
            choice = choice_of_sample[sample] if choice_of_sample is not None else None
            _, goal = representation.evaluate(engine, flat_references[pair].reshape(size, *x_shape), outputs, choice)
            gamma = flat_x[sample].clone()
            ones = torch.ones(size, dtype=x.dtype, device=dev)
            for step in range(steps):
                points = gamma.reshape(size, *x_shape).detach().requires_grad_(True)
                with torch.enable_grad():
                    targets, scores, current = representation.forward(engine, points, outputs, choice)
                    distance = (current - goal).square().sum(dim=1)
                    (pull,) = torch.autograd.grad(distance.sum(), points, retain_graph=True, allow_unused=True)
                    gradients = list(engine._vjps(targets, points, ones))
                if step == 0:
                    first = pair % n_references == 0
                    predictions[sample[first]] = scores[first].to(torch.float64)
                distances[pair, step] = distance.detach().to(torch.float64).sqrt()
                if pull is None:
                    pull = torch.zeros_like(points)
                pull = pull.reshape(size, features)
                norm = pull.to(torch.float64).norm(dim=1, keepdim=True)
                moved = gamma - eta[pair] * (pull / (norm + eps).to(x.dtype))
                if bounds is not None:
                    moved = torch.minimum(torch.maximum(moved, bounds[0]), bounds[1])
                displacement = (gamma - moved).to(torch.float64)
                for column, gradient in gradients:
                    integrals[:, column].index_add_(0, sample, gradient.reshape(size, features).to(torch.float64)
                                                    * displacement)
                if path is not None:
                    path[pair, step] = gamma
                gamma = moved.detach()
            scores, current = representation.evaluate(engine, gamma.reshape(size, *x_shape), outputs, choice)
            endpoint_scores[pair] = scores.to(torch.float64)
            distances[pair, steps] = (current - goal).to(torch.float64).square().sum(dim=1).sqrt()
            endpoints[pair] = gamma
            if path is not None:
                path[pair, steps] = gamma
    finally:
        engine.readout = saved_readout
    if readout is not None:
        projection = readout.weight.detach()[outputs].to(torch.float64)
        integrals = torch.einsum("kh,nhd->nkd", projection, integrals)
    integrals /= n_references
    finite = torch.isfinite(integrals).flatten(1).all(dim=1)
    if not bool(finite.all()):
        bad = int(torch.nonzero(~finite)[0]) + first_index
        raise NonFiniteError(f"the gradients of sample {bad} are not finite (NaN or Inf) somewhere on its IG2 path; "
                             "check the model for divisions by zero, log of zero or overflow in its dtype")
    per_pair = endpoint_scores.reshape(n, n_references, n_outputs)
    return _Walk(
        integrals=PathIntegrals(integrals.reshape(n, n_outputs, *x_shape), predictions, per_pair.mean(dim=1)),
        counterfactuals=endpoints.reshape(n, n_references, *x_shape),
        counterfactual_predictions=per_pair,
        distances=distances.reshape(n, n_references, steps + 1),
        path=None if path is None else path.reshape(n, n_references, steps + 1, *x_shape),
    )


# ---------------------------------------------------------------------------------------------------- per sample
class IG2:
    """Integrated Gradients on the iterative gradient path (IG2) of one output per sample.

    Parameters
    ----------
    model : nn.Module or callable
        Maps (P, *x_shape) to (P, K) outputs (or (P,)).
    representation : None, "auto", str, nn.Module or callable
        The representation r(·) the path pulls towards the reference's: a module name or a module (its output,
        captured by a forward hook during the model's own forward pass), a callable x → r(x), or None/"auto"
        for the input of the model's last ``nn.Linear`` (the paper's choice).
    score : None, "softmax", "log_softmax" or callable
        The attributed quantity (raw output by default).

    Examples
    --------
    >>> explainer = IG2(model, representation="classifier.1", score="softmax")      # doctest: +SKIP
    >>> refs = select_references(x_train, y_train, model(x).argmax(1), k=4, seed=0)  # doctest: +SKIP
    >>> result = explainer.attribute(x, refs, steps=100, clip=(0.0, 1.0))            # doctest: +SKIP
    >>> result.attributions.shape, result.completeness_residual.abs().max()          # doctest: +SKIP
    """

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor], representation: Any = None,
                 score: ScoreLike = None) -> None:
        self.engine = Engine(model, score)
        self.representation = Representation(representation, model)

    def attribute(self, inputs: torch.Tensor, references: Any, target: Any = None, steps: int = DEFAULT_STEPS,
                  step_size: float | str = "auto", clip: tuple[Any, Any] | None = None, return_path: bool = False,
                  eps: float = 1e-12, chunk_points: int | None = None) -> IG2Attribution:
        """Attribute ``target`` of each input along its GradPaths towards the references.

        Parameters
        ----------
        inputs : Tensor (n, *x_shape)
        references : Tensor
            x_shape (one reference), (R, *x_shape) (R references shared by all samples) or (n, R, *x_shape)
            (R references per sample, e.g. from :func:`select_references`).
        target : None, int, sequence of int or LongTensor (n,)
            Output to explain, for all samples or per sample. None: the only output of a single-output model,
            else each sample's predicted class (argmax of the score at x). Either way it is fixed at x for the
            whole path.
        steps : int
            Gradient steps k of each path (≥ 1).
        step_size : float or "auto"
            η, the length of each step in input units. "auto": for each pair η = 2‖x − x^r‖₂ / k, so that the
            path could cover twice the straight distance (check ``distances`` for a plateau).
        clip : None or (lo, hi)
            Valid input range (numbers or tensors broadcastable to one sample); every step is clipped to it.
        return_path : bool
            Keep every path point in the result (memory n·R·(k + 1)·D).
        eps : float
            ε of the gradient normalisation u = g / (‖g‖₂ + ε).
        chunk_points : int, optional
            Pairs advanced together per forward pass (default: from the engine's memory budget).

        Returns
        -------
        IG2Attribution
            ``attributions`` (n, *x_shape), ``counterfactuals`` (n, R, *x_shape), ``completeness_residual``
            (n,), the explained ``targets``, predictions and path distances.

        Raises
        ------
        InputError, ShapeError
            Invalid steps, step size, clip range, target, or references that do not fit the inputs.
        """
        inputs = as_tensor(inputs, "inputs")
        if inputs.ndim < 1 or len(inputs) == 0:
            raise ShapeError("inputs must be a non-empty batch of shape (n, *x_shape)")
        check_finite(inputs, "input")
        steps = check_steps(steps)
        step_size = check_step_size(step_size)
        clip = check_clip(clip)
        if not isinstance(return_path, (bool, np.bool_)):
            raise InputError(f"return_path must be True or False, got {return_path!r}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            raise InputError(f"eps must be a small positive number, got {eps!r}")
        if chunk_points is not None:
            self.engine.fixed_chunk_points = chunk_points
        with self.engine.frozen():
            x = self.engine.prepare_inputs(inputs)
            stack = reference_stack(references, x)
            n_outputs = self.engine.n_model_outputs(x)
            if target is None and n_outputs > 1:
                target = self.engine.scores(x, torch.arange(n_outputs, device=x.device)).argmax(dim=1)
            outputs, per_sample = resolve_targets(target, n_outputs, len(x), x.device)
            self.engine.configure(x, outputs)
            self.representation.resolve(self.engine, x)
            walk = grad_path_integrals(self.engine, self.representation, x, stack, outputs, steps=steps,
                                       step_size=step_size, clip=clip, per_sample_output=per_sample,
                                       return_path=bool(return_path), eps=float(eps))
        chosen = outputs[per_sample] if per_sample is not None else outputs.expand(len(x))
        back = {"device": inputs.device, "dtype": inputs.dtype}
        return IG2Attribution(
            attributions=walk.integrals.attributions[:, 0].to(**back),
            counterfactuals=walk.counterfactuals.to(**back),
            completeness_residual=walk.integrals.completeness_residual[:, 0].to(inputs.device),
            targets=chosen.to(inputs.device),
            predictions=walk.integrals.predictions[:, 0].to(inputs.device),
            counterfactual_predictions=walk.counterfactual_predictions[:, :, 0].to(inputs.device),
            distances=walk.distances.to(inputs.device),
            path=None if walk.path is None else walk.path.to(**back),
        )


# ---------------------------------------------------------------------------------------------------- references
def _class_ids(labels: torch.Tensor, name: str) -> np.ndarray:
    """Class id per row: integer labels (N,) as they are, scores or one-hot rows (N, K) by argmax."""
    labels = as_tensor(labels, name)
    if labels.ndim == 2:
        return labels.argmax(dim=1).cpu().numpy().astype(np.int64)
    if labels.ndim == 1 and not labels.is_floating_point():
        return labels.cpu().numpy().astype(np.int64)
    raise ShapeError(f"{name} must be integer class labels (N,) or one score/one-hot row per sample (N, K); got "
                     f"dtype {labels.dtype} and shape {tuple(labels.shape)}")


def draw_reference_indices(classes: np.ndarray | None, predicted: np.ndarray | None, sample_indices: np.ndarray,
                           k: int, seed: int, n_data: int, exclude_self: bool = False) -> np.ndarray:
    """Indices of k distinct references per sample, keyed by (seed, sample index).

    Parameters
    ----------
    classes : int64 array (N,), optional
        Class of every candidate; with ``predicted``, only candidates of another class than the sample's
        predicted class are drawn. None: any candidate.
    predicted : int64 array (n,), optional
        Predicted class of each sample.
    sample_indices : int64 array (n,)
        Global index of each sample (the key of its draw: independent of batching).
    k : int
        References per sample.
    seed : int
        Seed of the draws.
    n_data : int
        Number of candidates N.
    exclude_self : bool
        Never draw the sample itself (when the samples are part of the candidates and ``classes`` is None).

    Returns
    -------
    int64 array (n, k)
    """
    seed = int(keyed_uint64(seed, _REFERENCE_TAG))
    sample_indices = np.asarray(sample_indices, dtype=np.int64)
    drawn = np.empty((len(sample_indices), k), dtype=np.int64)
    positions = np.arange(k)[None]
    if classes is None or predicted is None:
        pool = n_data - 1 if exclude_self else n_data
        if k > pool:
            raise InputError(f"{k} references per sample were requested but only {pool} candidates exist; ask for "
                             f"at most {pool}")
        picks = keyed_permutation(seed, sample_indices[:, None], positions, pool)
        if exclude_self:
            picks = picks + (picks >= sample_indices[:, None])
        return picks
    for label in np.unique(predicted):
        rows = np.flatnonzero(predicted == label)
        candidates = np.flatnonzero(classes != label)
        if k > len(candidates):
            raise InputError(f"{k} references of another class than {int(label)} were requested but the data hold "
                             f"only {len(candidates)}; ask for fewer references or pass them explicitly")
        drawn[rows] = candidates[keyed_permutation(seed, sample_indices[rows, None], positions, len(candidates))]
    return drawn


def select_references(data_x: Any, data_y: Any, predictions_or_labels: Any, k: int, seed: int = 0,
                      indices: Any = None, return_indices: bool = False
                      ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Draw k counterfactual references per sample: data samples whose label differs from its predicted class.

    The draw for a sample is a pure function of (seed, its index), so it does not depend on which batch the
    sample is explained in; the k references of a sample are distinct.

    Parameters
    ----------
    data_x : Tensor (N, *x_shape)
        Candidate references (e.g. the training inputs).
    data_y : Tensor (N,) of class labels, (N, K) one-hot/scores, or None
        Their labels; None draws from all candidates regardless of class.
    predictions_or_labels : Tensor (n,) of classes or (n, K) of scores
        The predicted class (argmax for scores) of each sample to explain.
    k : int
        References per sample.
    seed : int
        Seed of the draws.
    indices : array (n,), optional
        Global indices of the samples (the keys of their draws); default 0..n − 1.
    return_indices : bool
        Also return the (n, k) indices into ``data_x``.

    Returns
    -------
    Tensor (n, k, *x_shape)
        References (same dtype and device as ``data_x``), ready for :meth:`IG2.attribute`; and the indices.
    """
    data_x = as_tensor(data_x, "data_x")
    if data_x.ndim < 1 or len(data_x) == 0:
        raise ShapeError("data_x must be a non-empty stack of candidate references (N, *x_shape)")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k must be a positive integer (references per sample), got {k!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InputError(f"seed must be an integer, got {seed!r}")
    predicted = _class_ids(predictions_or_labels, "predictions_or_labels")
    classes = None
    if data_y is not None:
        classes = _class_ids(data_y, "data_y")
        if len(classes) != len(data_x):
            raise ShapeError(f"data_x has {len(data_x)} samples but data_y has {len(classes)} labels")
    sample_indices = np.arange(len(predicted)) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
    if len(sample_indices) != len(predicted):
        raise ShapeError(f"indices has {len(sample_indices)} entries for {len(predicted)} samples")
    chosen = draw_reference_indices(classes, predicted, sample_indices, int(k), int(seed), len(data_x))
    references = data_x[torch.as_tensor(chosen.reshape(-1))].reshape(len(predicted), int(k), *data_x.shape[1:])
    if return_indices:
        return references, torch.as_tensor(chosen)
    return references


class OtherClassReferences(baseline_forms.BaselineSpec):
    """Dataset-wise IG2 references: ``count`` samples drawn per sample from the dataset, of another class.

    For class labels (integer (N,) or one-hot (N, K) targets), the draws exclude the sample's predicted class
    (argmax of the model's scores at x); for continuous targets they are any other samples. Draws are keyed by
    (seed, sample index) and distinct within a sample. The dataset's labels are read once before the run (a
    pass over a map-style Dataset's items).

    Parameters
    ----------
    count : int
        References per sample (R).
    """

    shared = False

    def __init__(self, count: int) -> None:
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
            raise InputError(f"the number of references must be a positive integer, got {count!r}")
        self.count = int(count)
        self._source: DataSource | None = None
        self._classes: np.ndarray | None = None
        self._seed = 0

    def prepare(self, x_shape: tuple[int, ...], source: DataSource | None, seed: int) -> None:
        if source is None or not source.has_random_access:
            raise InputError("references drawn from the data need random access to the samples; pass an (X, Y) "
                             "pair or a map-style Dataset, or pass explicit references (a tensor)")
        self._source, self._seed = source, int(seed)
        labels = _all_labels(source)
        self._classes = None
        if labels.ndim == 1 and not labels.is_floating_point():
            self._classes = labels.cpu().numpy().astype(np.int64)
        elif labels.ndim == 2 and labels.shape[1] > 1 and bool(((labels == 0) | (labels == 1)).all()) \
                and bool((labels.sum(dim=1) == 1).all()):
            self._classes = labels.argmax(dim=1).cpu().numpy().astype(np.int64)
        pool = len(source) - (1 if self._classes is None else 0)
        if self.count > pool:
            raise InputError(f"{self.count} references per sample were requested but the dataset offers {pool}")

    def for_samples(self, indices: np.ndarray, x: torch.Tensor, predicted: torch.Tensor | None = None) -> torch.Tensor:
        """References (n, R, *x_shape) for samples ``x`` with global ``indices`` and predicted classes (n,)."""
        if self._source is None:
            raise InputError("OtherClassReferences must be prepared with the dataset before use")
        if self._classes is not None and predicted is None:
            raise InputError("references of another class need each sample's predicted class")
        chosen = draw_reference_indices(
            self._classes, None if predicted is None else predicted.cpu().numpy().astype(np.int64),
            np.asarray(indices), self.count, self._seed, len(self._source), exclude_self=self._classes is None)
        drawn = self._source.inputs_at(chosen.reshape(-1))
        check_finite(drawn, "a reference input")
        return drawn.to(device=x.device, dtype=x.dtype).reshape(len(x), self.count, *x.shape[1:])

    def describe(self) -> dict[str, Any]:
        return {"kind": "ig2_references", "count": self.count, "shared": False,
                "rule": "another class than the predicted one" if self._classes is not None else "other samples"}


def _all_labels(source: DataSource) -> torch.Tensor:
    """Every target of a random-access source (an in-memory pair directly; a Dataset item by item)."""
    pair = getattr(source, "_pair", None)
    if pair is not None:
        return pair[1]
    return torch.cat([batch.y for batch in source.batches()])


# ---------------------------------------------------------------------------------------------------- dataset-wise
@dataclass(frozen=True)
class IG2Path:
    """IG2 as the per-sample attribution of the dataset-wise methods (``IGC(...).attribute(..., path=IG2Path())``).

    The path of every (sample, reference) pair is the GradPath, and the GradCF endpoints take the place of the
    baselines: the reducers receive IG2 attributions, f(x) and mean_r f(GradCF_r), so Σ_i IGC_{k,i} =
    ρ(ŷ_k, y_k) + baseline_term_k (−Cov_n(mean_r f_k(GradCF_r), y_k)/(σ_y σ_ŷ)) up to the IG2 completeness error.
    The references come from the method's ``baselines`` argument: an int R draws R samples of another class
    than the sample's predicted one (:class:`OtherClassReferences`), a tensor (R, *x_shape) gives references
    shared by all samples, any ``igcorr.baselines`` spec is used as it is. All K attributed outputs share one
    path per pair.

    Parameters
    ----------
    representation : None, "auto", str, nn.Module or callable
        As for :class:`IG2`.
    steps : int
        Gradient steps k per path.
    step_size : float or "auto"
        η (see :meth:`IG2.attribute`).
    clip : None or (lo, hi)
        Valid input range.
    eps : float
        ε of the gradient normalisation.
    """

    representation: Any = None
    steps: int = DEFAULT_STEPS
    step_size: float | str = "auto"
    clip: tuple[Any, Any] | None = None
    eps: float = 1e-12

    def __post_init__(self) -> None:
        check_steps(self.steps)
        check_step_size(self.step_size)
        check_clip(self.clip)
        if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float)) or not self.eps > 0:
            raise InputError(f"eps must be a small positive number, got {self.eps!r}")

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable settings for result metadata."""
        representation = self.representation
        if not (representation is None or isinstance(representation, str)):
            representation = type(representation).__name__
        return {"path": "ig2", "representation": representation, "steps": int(self.steps),
                "step_size": self.step_size if isinstance(self.step_size, str) else float(self.step_size),
                "clip": None if self.clip is None else [_describe_bound(b) for b in self.clip]}

    def integrals(self, engine: Engine, x: torch.Tensor, indices: np.ndarray, context: dict[str, Any]) -> PathIntegrals:
        """IG2 of a batch for the dataset-wise run loop: attributions (n, K, *x_shape), f(x), mean_r f(GradCF)."""
        representation = context.get("ig2_representation")
        if representation is None:
            representation = Representation(self.representation, engine.model)
            representation.resolve(engine, x)
            context["ig2_representation"] = representation
        spec = context["baselines"]
        if isinstance(spec, OtherClassReferences):
            predicted = engine.scores(x, torch.arange(context["n_model_outputs"], device=x.device)).argmax(dim=1)
            references = spec.for_samples(indices, x, predicted)
        else:
            references = spec.for_samples(indices, x)
        walk = grad_path_integrals(engine, representation, x, references, context["outputs"], steps=self.steps,
                                   step_size=self.step_size, clip=self.clip, eps=self.eps,
                                   first_index=int(indices[0]))
        return walk.integrals


def _describe_bound(bound: Any) -> Any:
    return float(bound) if isinstance(bound, (int, float, np.floating, np.integer)) else "tensor"


def ig2_context(path: Any, baselines: Any, n_steps: Any = None, tolerance: Any = None,
                estimator: str = "quadrature") -> tuple[dict[str, Any], dict[str, Any]]:
    """Context and metadata parameters of a dataset-wise run on IG2 attributions.

    Parameters
    ----------
    path : "ig2" or IG2Path
        "ig2" is ``IG2Path()`` with its defaults.
    baselines : int, tensor or igcorr.baselines spec
        The references (see :class:`IG2Path`).
    n_steps, tolerance, estimator
        The dataset method's quadrature options, which do not apply to IG2 (refused unless left at defaults).
    """
    if isinstance(path, str) and path == "ig2":
        path = IG2Path()
    if not isinstance(path, IG2Path):
        raise InputError(f"path must be None/'straight' (IG), 'ig2' or an igcorr.IG2Path, got {path!r}")
    if n_steps is not None or tolerance is not None or estimator != "quadrature":
        raise InputError("n_steps, tolerance and estimator set the straight-line quadrature; with an IG2 path set "
                         "IG2Path(steps=..., step_size=...) instead")
    if baselines is None:
        raise InputError("an IG2 path needs references: pass baselines=R (R samples of another class drawn per "
                         "sample) or a tensor of references (R, *x_shape)")
    if isinstance(baselines, (int, np.integer)) and not isinstance(baselines, bool):
        spec: baseline_forms.BaselineSpec = OtherClassReferences(int(baselines))
    else:
        spec = baseline_forms.resolve(baselines)
    return {"baselines": spec, "ig2": path}, path.describe()
