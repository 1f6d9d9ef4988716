"""IG2's iterative gradient paths (Zhuo & Ge, TPAMI 2024), integrated by the path integrator.

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

The pairs of a batch walk their paths together, a chunk of pairs at a time: every step is one chunk of points
for the integrator, whose forward pass also yields the representation (through a forward hook) and the
gradient of the distance that moves the points to the next step.
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

from igcorr._validation import check_number, check_positive_int
from igcorr.data import as_tensor
from igcorr.errors import InputError, ModelError, ShapeError
from igcorr.model import Extras, ModelAdapter, named_submodule, take_rows
from igcorr.paths.integrator import Evaluation, Path, PathChunk, PathIntegrals, PathIntegrator, TargetFunction

#: default number of path steps k
DEFAULT_STEPS = 100
#: with step_size="auto", each pair's path length k·η is this multiple of its distance ‖x − x^r‖₂
AUTO_PATH_LENGTH = 2.0


def check_steps(steps: Any) -> int:
    """Validate the number of path steps k (an integer ≥ 1)."""
    return check_positive_int(steps, "steps", hint="the number of gradient steps of the path")


def check_step_size(step_size: Any) -> float | str:
    """Validate η: a positive finite number, or "auto" (k·η = 2‖x − x^r‖₂ for each pair)."""
    if isinstance(step_size, str) and step_size == "auto":
        return step_size
    return check_number(step_size, "step_size", positive=True, hint="η, in input units, or 'auto'")


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




def check_eps(eps: Any) -> float:
    """Validate ε of the gradient normalisation (a small positive number)."""
    return check_number(eps, "eps", positive=True, hint="a small positive number")


@dataclass
class GradChunk(PathChunk):
    """One step of a chunk of pairs: which pairs, the step, each pair's explained output and the current and
    goal representations; ``moved`` receives the next step's positions."""

    pair: torch.Tensor
    step: int
    choice: torch.Tensor | None
    goal: torch.Tensor
    gamma: torch.Tensor
    extras: Extras
    moved: torch.Tensor | None = None


class GradPath(Path):
    """The GradPaths of all (sample, reference) pairs of a batch.

    Parameters
    ----------
    adapter : ModelAdapter
    representation : Representation
        r(·), resolved for the model.
    x : Tensor (n, *x_shape)
    references : Tensor (n, R, *x_shape)
    outputs : LongTensor (K,)
        Scores to attribute (the same path serves all of them).
    steps, step_size, clip, eps
        k, η (a number or "auto"), the (lo, hi) bounds, and the ε of the gradient normalisation.
    per_sample_output : LongTensor (n,), optional
        Attribute only column ``per_sample_output[i]`` for sample i (K = 1 in the result).
    return_path : bool
        Keep every point of every path.

    After integration, ``counterfactuals`` (n, R, *x_shape), ``counterfactual_predictions`` (n, R, K),
    ``distances`` (n, R, k + 1) and ``path`` (n, R, k + 1, *x_shape) or None describe the walk.
    """

    description = "IG2 path"
    compiled = False

    def __init__(self, adapter: ModelAdapter, representation: "Representation", x: torch.Tensor,
                 references: torch.Tensor, outputs: torch.Tensor, *, steps: int, step_size: float | str,
                 clip: tuple[Any, Any] | None = None, per_sample_output: torch.Tensor | None = None,
                 return_path: bool = False, eps: float = 1e-12, extras: Extras | None = None) -> None:
        n, n_references = references.shape[:2]
        self.extras = extras or {}
        self.adapter, self.representation, self.outputs = adapter, representation, outputs
        self.x, self.references = x, references
        self.x_shape = tuple(x.shape[1:])
        self.features = int(np.prod(self.x_shape, dtype=np.int64))
        self.n_samples, self.n_references, self.steps = n, n_references, steps
        self.n_columns = 1 if per_sample_output is not None else len(outputs)
        self.allows_readout = per_sample_output is None
        self.choice = per_sample_output.to(x.device) if per_sample_output is not None else None
        self.eps = eps
        dev = x.device
        self.n_pairs = n * n_references
        self.pair_sample = torch.arange(n, device=dev).repeat_interleave(n_references)
        self.flat_x = x.reshape(n, self.features)
        self.flat_references = references.reshape(self.n_pairs, self.features)
        if step_size == "auto":
            lengths = (self.flat_x[self.pair_sample] - self.flat_references).to(torch.float64).norm(dim=1)
            self.eta = (AUTO_PATH_LENGTH * lengths / steps).to(x.dtype).unsqueeze(1)
        else:
            self.eta = torch.full((self.n_pairs, 1), float(step_size), dtype=x.dtype, device=dev)
        self.bounds = _clip_tensors(clip, x)
        self.predictions = torch.zeros(n, self.n_columns, dtype=torch.float64, device=dev)
        self.endpoint_scores = torch.zeros(self.n_pairs, self.n_columns, dtype=torch.float64, device=dev)
        self.flat_distances = torch.zeros(self.n_pairs, steps + 1, dtype=torch.float64, device=dev)
        self.endpoints = torch.empty(self.n_pairs, self.features, dtype=x.dtype, device=dev)
        self.points = (torch.empty(self.n_pairs, steps + 1, self.features, dtype=x.dtype, device=dev)
                       if return_path else None)

    def chunks(self, next_size: Callable[[], int]) -> Iterator[GradChunk]:
        dev, x_shape = self.x.device, self.x_shape
        begin = 0
        while begin < self.n_pairs:
            pair = torch.arange(begin, min(begin + next_size(), self.n_pairs), device=dev)
            begin += len(pair)
            sample, size = self.pair_sample[pair], len(pair)
            choice = self.choice[sample] if self.choice is not None else None
            extras = take_rows(self.extras, sample)
            _, goal = self.representation.evaluate(self.adapter, self.flat_references[pair].reshape(size, *x_shape),
                                                   self.outputs, choice, extras)
            gamma = self.flat_x[sample].clone()
            ones = torch.ones(size, dtype=self.x.dtype, device=dev)
            for step in range(self.steps):
                points = gamma.reshape(size, *x_shape).detach().requires_grad_(True)
                chunk = GradChunk(sample, ones, points, pair, step, choice, goal, gamma, extras)
                yield chunk
                gamma = chunk.moved
            scores, current = self.representation.evaluate(self.adapter, gamma.reshape(size, *x_shape),
                                                           self.outputs, choice, extras)
            self.endpoint_scores[pair] = scores.to(torch.float64)
            self.flat_distances[pair, self.steps] = (current - goal).to(torch.float64).square().sum(dim=1).sqrt()
            self.endpoints[pair] = gamma
            if self.points is not None:
                self.points[pair, self.steps] = gamma

    def evaluate(self, chunk: GradChunk, targets: TargetFunction) -> Evaluation:
        points, size = chunk.points, len(chunk.sample)
        differentiated, scores, current = self.representation.forward(targets, points, chunk.choice, chunk.extras)
        distance = (current - chunk.goal).square().sum(dim=1)
        (pull,) = torch.autograd.grad(distance.sum(), points, retain_graph=True, allow_unused=True)
        if chunk.step == 0:
            first = chunk.pair % self.n_references == 0
            self.predictions[chunk.sample[first]] = scores[first].to(torch.float64)
        self.flat_distances[chunk.pair, chunk.step] = distance.detach().to(torch.float64).sqrt()
        if pull is None:
            pull = torch.zeros_like(points)
        pull = pull.reshape(size, self.features)
        norm = pull.to(torch.float64).norm(dim=1, keepdim=True)
        moved = chunk.gamma - self.eta[chunk.pair] * (pull / (norm + self.eps).to(self.x.dtype))
        if self.bounds is not None:
            moved = torch.minimum(torch.maximum(moved, self.bounds[0]), self.bounds[1])
        if self.points is not None:
            self.points[chunk.pair, chunk.step] = chunk.gamma
        chunk.moved = moved.detach()
        return Evaluation(differentiated, scores, points, (chunk.gamma - moved).detach())

    def finish(self, integrals: torch.Tensor, squares: torch.Tensor | None) -> PathIntegrals:
        n, n_references = self.n_samples, self.n_references
        per_pair = self.endpoint_scores.reshape(n, n_references, self.n_columns)
        self.counterfactuals = self.endpoints.reshape(n, n_references, *self.x_shape)
        self.counterfactual_predictions = per_pair
        self.distances = self.flat_distances.reshape(n, n_references, self.steps + 1)
        self.path = None if self.points is None else self.points.reshape(n, n_references, self.steps + 1,
                                                                         *self.x_shape)
        return PathIntegrals(integrals.div_(n_references).reshape(n, integrals.shape[1], *self.x_shape),
                             self.predictions, per_pair.mean(dim=1))


def integrate_grad_path(integrator: PathIntegrator, representation: "Representation", x: torch.Tensor,
                        references: torch.Tensor, *, steps: int, step_size: float | str,
                        clip: tuple[Any, Any] | None = None, per_sample_output: torch.Tensor | None = None,
                        return_path: bool = False, eps: float = 1e-12, first_index: int = 0,
                        extras: Extras | None = None) -> tuple[PathIntegrals, GradPath]:
    """IG2 of a batch along its GradPaths (configured outputs); returns the integrals and the walked path."""
    path = GradPath(integrator.adapter, representation, x, references, integrator.outputs, steps=steps,
                    step_size=step_size, clip=clip, per_sample_output=per_sample_output, return_path=return_path,
                    eps=eps, extras=extras)
    return integrator.integrate(path, first_index=first_index), path


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

    def resolve(self, adapter: ModelAdapter, probe: torch.Tensor) -> None:
        """Find the last linear layer for ``"auto"`` (one forward pass on ``probe``)."""
        if self.function is None:
            adapter.require_hooks("an IG2 representation taken from a layer",
                                  "pass representation= a callable x → r(x), or the eager model")
        if not self.use_input or self.module is not None:
            return
        linear = {name: sub for name, sub in self._model.named_modules() if isinstance(sub, nn.Linear)}
        _, executed = adapter.observe(linear, probe)
        if not executed:
            raise InputError("representation='auto' takes the input of the model's last nn.Linear, but the model "
                             "runs none; name the representation layer or pass a callable x → r(x)")
        self.description, self.module = f"input of {executed[-1][0]}", executed[-1][1]

    def resolved(self, adapter: ModelAdapter, probe: torch.Tensor) -> "Representation":
        """A copy resolved for ``adapter`` on inputs like ``probe`` (this object stays as configured)."""
        copy = Representation.__new__(Representation)
        copy.__dict__.update(self.__dict__)
        copy.resolve(adapter, probe)
        return copy

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

    def forward(self, targets_of: TargetFunction, points: torch.Tensor, choice: torch.Tensor | None,
                extras: Extras | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One forward pass: (differentiated targets (P, J), attributed scores (P, K), r(points) (P, m))."""
        if self.function is not None:
            targets, scores = targets_of(points, choice, extras)
            return targets, scores, _flat_representation(self.function(points), len(points))
        with self._captured() as store:
            targets, scores = targets_of(points, choice, extras)
        return targets, scores, self._single(store)

    def evaluate(self, adapter: ModelAdapter, points: torch.Tensor, outputs: torch.Tensor,
                 choice: torch.Tensor | None, extras: Extras | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Without gradients: (attributed scores (P, K), r(points) (P, m))."""
        with torch.no_grad():
            if self.function is not None:
                representation = _flat_representation(self.function(points), len(points))
                scores = adapter.scores(points, extras=extras)[:, outputs]
            else:
                with self._captured() as store:
                    scores = adapter.scores(points, extras=extras)[:, outputs]
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


