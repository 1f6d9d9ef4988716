"""The path integrator: the one chunked accumulation loop behind every gradient-path method.

A path (straight lines at quadrature or Monte-Carlo nodes, IG2's iterative gradient paths, straight lines
split at an internal layer) hands the integrator chunks of points. For each chunk the path runs the forward
pass and names the differentiated quantities, the tensor they are differentiated with respect to and the
factor each gradient is multiplied by (the path's displacement, or a layer's Jacobian-vector product); the
integrator takes the vector-Jacobian products of every attributed column with the chunk's quadrature weights
as cotangent, multiplies, and accumulates per sample in float64. Everything that is the same for every
path lives here: chunk sizes from the memory budget, the timing of the first chunks to pick the fastest chunk
size and output strategy (:class:`~igcorr.paths.budget.ChunkTuning`), the linear-readout shortcut and the
first layer that straight paths may be integrated through (:class:`~igcorr.model.FirstLayer`), the
batched-cotangent strategy, the finiteness check and the float64 accumulation.

An integrator belongs to one call: it is configured for the data and outputs of that call, so a chunk size
or readout chosen for one call never carries over to another.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from igcorr._validation import check_choice, check_optional_positive_int
from igcorr.errors import NonFiniteError
from igcorr.model import Extras, FirstLayer, ModelAdapter, Readout
from igcorr.paths.budget import CHUNK_CANDIDATES, DEFAULT_CHUNK_POINTS, ChunkTuning, MemoryBudget

OUTPUT_STRATEGIES = ("auto", "loop", "batched")
#: share of the memory budget the chunks of path points may take; the rest holds a batch's per-sample buffers
CHUNK_SHARE = 0.75


@dataclass
class PathIntegrals:
    """Integrated gradients of a batch and the model scores they explain (all float64, on the model's device).

    Attributes
    ----------
    attributions : Tensor (n, K, *shape)
        The integrals averaged over each sample's paths (``shape`` is the input's, or a layer's).
    predictions : Tensor (n, K)
        Attributed score at each input.
    baseline_predictions : Tensor (n, K)
        Attributed score averaged over each sample's path starts (baselines, or IG2's counterfactuals).
    attribution_variance : Tensor (n, K, *shape), optional
        Monte-Carlo estimators only: the estimated variance of each attribution (of the mean over the draws).
    steps : Tensor (n,), optional
        Adaptive quadrature only: the number of nodes each sample's paths needed.
    projection : Tensor (K, H), optional
        Set when the projection through a linear readout was left to the consumer
        (:attr:`PathIntegrator.defer_projection`): ``attributions`` are then the integrals over the readout's H
        inputs (n, H, *shape), and the attributions of output k are Σ_h projection[k, h] · attributions[:, h].
    """

    attributions: torch.Tensor
    predictions: torch.Tensor
    baseline_predictions: torch.Tensor
    attribution_variance: torch.Tensor | None = None
    steps: torch.Tensor | None = None
    projection: torch.Tensor | None = None

    @property
    def completeness_residual(self) -> torch.Tensor:
        """Σ_i IG − (f(x) − mean f(b)), shape (n, K): zero for exact quadrature."""
        total = self.attributions.flatten(start_dim=2).sum(dim=2)
        if self.projection is not None:
            total = total @ self.projection.T
        return total - (self.predictions - self.baseline_predictions)


@dataclass
class PathChunk:
    """A chunk of path points: the sample of each point, its quadrature weight (the cotangent of its
    vector-Jacobian product) and its position (P, *x_shape). Paths subclass it with what they need."""

    sample: torch.Tensor
    weights: torch.Tensor
    points: torch.Tensor


@dataclass
class Evaluation:
    """What a path's forward pass over a chunk gives the integrator.

    ``targets`` (P, J) are differentiated with respect to ``wrt`` (P, ...); each gradient, flattened to (P, F),
    is multiplied by ``factor`` (P, F) and accumulated (or handed to the path's :meth:`Path.contributions` when
    it needs more than a product). ``scores`` (P, K) are the attributed scores (detached).
    """

    targets: torch.Tensor
    scores: torch.Tensor
    wrt: torch.Tensor
    factor: torch.Tensor | None


class Path:
    """A family of integration paths for a batch of n samples.

    Subclasses say how to cut their points into chunks, how to evaluate a chunk and how to turn the
    accumulated sums into :class:`PathIntegrals`.
    """

    #: whether the integrals may be taken through a linear readout and projected (not when a single output is
    #: chosen per sample, nor when per-draw squares are needed)
    allows_readout: bool = True
    #: also accumulate the squares of every contribution (Monte-Carlo variances)
    accumulate_squares: bool = False
    #: what is named when the integrals are not finite
    description: str = "integration path"
    #: evaluate the forward pass through ``torch.compile`` when compilation was asked for
    compiled: bool = True

    n_samples: int
    n_columns: int

    def chunks(self, next_size: Callable[[], int]) -> Iterator[PathChunk]:
        """The chunks of points; ``next_size()`` is the number of points the next chunk should have."""
        raise NotImplementedError

    def evaluate(self, chunk: PathChunk, targets: "TargetFunction") -> Evaluation:
        """The forward pass over ``chunk`` (gradients enabled); ``targets(points, choice, extras)`` runs the
        model."""
        raise NotImplementedError

    def contributions(self, chunk: PathChunk, evaluation: Evaluation,
                      gradients: Iterable[tuple[int, torch.Tensor]]
                      ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """What the chunk adds to the integrals, from each column's cotangent-weighted gradients (j, (P, ...)):
        (j, the samples of the rows (R,), the rows (R, F) in float64). By default one row per point, the gradient
        times the factor."""
        size = len(chunk.sample)
        for j, gradient in gradients:
            yield j, chunk.sample, (gradient.reshape(size, -1) * evaluation.factor).to(torch.float64)

    def finish(self, integrals: torch.Tensor, squares: torch.Tensor | None) -> PathIntegrals:
        """PathIntegrals from the accumulated sums (n, K, F) (already projected through a readout)."""
        raise NotImplementedError


TargetFunction = Callable[..., tuple[torch.Tensor, torch.Tensor]]


class PathIntegrator:
    """Evaluates path integrals of a model's attributed outputs in chunks under a memory budget.

    Parameters
    ----------
    adapter : ModelAdapter
        The model.
    max_memory : int, optional
        Bytes the chunks of path points may take (activations, gradients and temporaries); default
        :func:`igcorr.paths.budget.default_memory_budget`.
    chunk_points : int, optional
        Path points per forward pass; by default the fastest per point among the sizes that fit
        ``max_memory``, found by timing the first chunks.
    output_strategy : {"auto", "loop", "batched"}
        How the vector-Jacobian products of several outputs are taken: one backward pass per output ("loop"),
        or all at once with batched cotangents ("batched"). "auto" times both on the first chunks.
    """

    def __init__(self, adapter: ModelAdapter, *, max_memory: int | None = None, chunk_points: int | None = None,
                 output_strategy: str = "auto") -> None:
        self.adapter = adapter
        self.budget = MemoryBudget.of(max_memory)
        self.fixed_chunk_points = check_optional_positive_int(chunk_points, "chunk_points")
        self.output_strategy = check_choice(output_strategy, "output_strategy", OUTPUT_STRATEGIES)
        self.chunk_points = self.fixed_chunk_points or DEFAULT_CHUNK_POINTS
        self.readout: Readout | None = None
        #: the affine first layer straight paths are integrated through (see FirstLayer), if any
        self.first_layer: FirstLayer | None = None
        self.outputs: torch.Tensor | None = None
        #: leave the readout projection to the consumer of the integrals (see PathIntegrals.projection): a dataset
        #: run whose reducer projects block by block of outputs sets it, so that a sample never holds K·D values
        self.defer_projection = False
        self._strategy: str | None = None if output_strategy == "auto" else output_strategy
        self._tuning: ChunkTuning | None = None
        self._readout_input: torch.Tensor | None = None

    # ------------------------------------------------------------------ configuration
    def configure(self, x: torch.Tensor, outputs: torch.Tensor, extras: Extras | None = None) -> None:
        """Resolve the readout and first-layer shortcuts and the chunk sizes for attributing ``outputs`` of
        inputs like ``x``.

        Raises
        ------
        InputError
            If the memory budget cannot hold a single path point.
        """
        self.outputs = outputs
        self.readout = self.adapter.find_readout(x, len(outputs), extras)
        first_layer = self.adapter.find_first_layer(x, extras)
        # a model that is one linear layer: its readout shortcut is the one that pays
        keep = first_layer is not None and (self.readout is None or first_layer.layer is not self.readout.layer)
        self.first_layer = first_layer if keep else None
        self._plan_chunks(self.budget.fraction(CHUNK_SHARE), x, extras)

    def limit_chunks(self, room: MemoryBudget, x: torch.Tensor, extras: Extras | None = None) -> None:
        """Keep the chunks within ``room`` (less than their share of the budget: what a run's state kept in
        memory leaves); a chunk size the user fixed stays.

        Raises
        ------
        InputError
            If ``room`` cannot hold a single path point.
        """
        if self.fixed_chunk_points is None:
            self._plan_chunks(MemoryBudget(min(room.bytes, self.budget.fraction(CHUNK_SHARE).bytes)), x, extras)

    @property
    def width(self) -> int:
        """Columns the path integrals are taken over: the readout's inputs, or the configured outputs."""
        return self.readout.width if self.readout is not None else len(self.outputs)

    def _plan_chunks(self, room: MemoryBudget, x: torch.Tensor, extras: Extras | None) -> None:
        width = self.width
        if self.fixed_chunk_points is not None:
            sizes = [self.fixed_chunk_points]
        else:
            largest = room.count(self.bytes_per_point(x, width, extras), "one path point (activations and gradients)")
            sizes = [size for size in CHUNK_CANDIDATES if size <= largest] or [largest]
        if self.output_strategy != "auto":
            strategies = [self.output_strategy]
        else:
            strategies = ["loop", "batched"] if width > 1 else ["loop"]
        self._tuning = ChunkTuning(sizes, strategies)
        self.chunk_points, self._strategy = self._tuning.choice()

    def bytes_per_point(self, x: torch.Tensor, n_vjp_outputs: int, extras: Extras | None = None) -> int:
        """Estimated memory of one path point: saved activations, its gradient outputs and temporaries."""
        element = x.element_size()
        features = int(np.prod(x.shape[1:], dtype=np.int64))
        if self.first_layer is not None:  # points and their gradients may live in the first layer's outputs
            features = max(features, self.first_layer.width)
        activations = max(self.adapter.activation_bytes(x, extras), 8 * features * element)
        # forward activations kept for backward, the backward's own temporaries of similar size, the point and
        # its gradient, and (batched strategy) one gradient per output
        return int(3 * activations + features * (3 * element + 8) + n_vjp_outputs * features * element)

    def next_chunk_size(self) -> int:
        """Points in the next chunk: the size being timed, else the chosen one."""
        trying = self._tuning.trying if self._tuning is not None else None
        return trying if trying is not None else self.chunk_points

    def describe(self) -> dict[str, Any]:
        """Settings for result metadata."""
        timings = self._tuning.describe() if self._tuning is not None else {}
        return {"chunk_points": self.chunk_points, "output_strategy": self._strategy or self.output_strategy,
                "microseconds_per_point": timings, "autocast": self.adapter.autocast,
                "compile": self.adapter.compile_options,
                "readout": None if self.readout is None else {"layer": self.readout.name, "width": self.readout.width},
                "first_layer": (None if self.first_layer is None
                                else {"layer": self.first_layer.name, "width": self.first_layer.width})}

    # ------------------------------------------------------------------ forward and backward
    def target_function(self, readout: Readout | None, compiled: bool = True) -> TargetFunction:
        """``f(points, choice, extras) -> (targets (P, J), scores (P, K) detached)``: the differentiated
        quantities are the selected scores (one column per sample if ``choice`` is given), or the readout's
        inputs; ``extras`` are the points' other model inputs."""
        outputs = self.outputs

        def targets(points: torch.Tensor, choice: torch.Tensor | None,
                    extras: Extras | None = None) -> tuple[torch.Tensor, torch.Tensor]:
            if readout is None:
                scores = self.adapter.scores(points, compiled, extras)[:, outputs]
                if choice is not None:
                    scores = scores.gather(1, choice.unsqueeze(1))
                return scores, scores.detach()
            # one bound method as the hook, so that a compiled forward sees the same hook every chunk
            handle = readout.layer.register_forward_hook(self._capture_readout_input)
            try:
                scores = self.adapter.scores(points, compiled, extras)[:, outputs]
                captured, self._readout_input = self._readout_input, None
            finally:
                handle.remove()
            return captured, scores.detach()

        return targets

    def _capture_readout_input(self, _module: Any, inputs: tuple[torch.Tensor, ...], _output: Any) -> None:
        self._readout_input = inputs[0]

    def vjps(self, targets: torch.Tensor, wrt: torch.Tensor, cotangent: torch.Tensor,
             strategy: str | None = None, keep_graph: bool = False) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield (j, cotangent-weighted gradient of targets[:, j] w.r.t. ``wrt``) for every column j, with the
        given output strategy (default: the chosen one); ``keep_graph`` leaves the graph for another pass.
        Columns that do not depend on ``wrt`` get zero gradients."""
        n_targets = targets.shape[1]
        strategy = strategy or self._strategy or "loop"
        if n_targets == 1 or strategy == "loop":
            for j in range(n_targets):
                (gradient,) = torch.autograd.grad(targets[:, j], wrt, grad_outputs=cotangent, allow_unused=True,
                                                  retain_graph=keep_graph or j < n_targets - 1)
                yield j, torch.zeros_like(wrt) if gradient is None else gradient
            return
        eye = torch.eye(n_targets, dtype=targets.dtype, device=targets.device)
        (gradients,) = torch.autograd.grad(targets, wrt, grad_outputs=eye.unsqueeze(1) * cotangent.view(1, -1, 1),
                                           retain_graph=keep_graph, is_grads_batched=True)
        yield from enumerate(gradients)

    def _batched_fits(self, targets: torch.Tensor, wrt: torch.Tensor) -> bool:
        """Whether one batched backward pass fits a quarter of the budget: its cotangents are (J, P, J) and its
        gradients (J, P, *shape), which grow with the square of the number of outputs J."""
        n_targets, n_points = targets.shape[1], wrt.shape[0]
        needed = n_targets * n_points * (n_targets + wrt[0].numel()) * wrt.element_size()
        return self.budget.fraction(CHUNK_SHARE / 3).fits(needed)

    def _timed_vjps(self, targets: torch.Tensor, wrt: torch.Tensor, cotangent: torch.Tensor,
                    tuning: ChunkTuning) -> tuple[list[torch.Tensor], dict[str, float]]:
        """The gradients with every strategy still in the running, timed; returns the first strategy's
        gradients and each strategy's seconds. A batched pass that does not fit the memory budget, fails or
        disagrees with the loop is dropped for the rest of the run."""
        def timed(strategy: str) -> tuple[list[torch.Tensor], float]:
            started = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # vmap over the backward pass warns about slow fallbacks
                gradients = [g for _, g in self.vjps(targets, wrt, cotangent, strategy, keep_graph=True)]
            return gradients, time.perf_counter() - started

        # the first strategy (the loop, or the one the user forced) is never dropped: its gradients are used
        first, *others = tuning.strategies
        reference, first_seconds = timed(first)
        seconds = {first: first_seconds}
        for strategy in others:
            if not self._batched_fits(targets, wrt):
                tuning.drop(strategy)
                continue
            try:
                gradients, seconds[strategy] = timed(strategy)
            except RuntimeError:
                tuning.drop(strategy)
                continue
            if not all(_agree(a, b) for a, b in zip(reference, gradients)):
                tuning.drop(strategy)
                del seconds[strategy]
        return reference, seconds

    # ------------------------------------------------------------------ the loop
    def integrate(self, path: Path, first_index: int = 0) -> PathIntegrals:
        """Integrate ``path`` (configured outputs), accumulating every chunk's contributions in float64.

        ``first_index`` is the global index of the path's first sample, for error messages.
        """
        readout = self.readout if path.allows_readout else None
        width = readout.width if readout is not None else path.n_columns
        targets_of = self.target_function(readout, compiled=path.compiled)
        integrals: torch.Tensor | None = None
        squares: torch.Tensor | None = None
        compiling = _keep_saved_tensors() if self.adapter.compile_options is not None else contextlib.nullcontext()
        with compiling, torch.enable_grad():
            for index, chunk in enumerate(path.chunks(self.next_chunk_size)):
                size = len(chunk.sample)
                if (index == 0 and self.fixed_chunk_points is None and self._tuning is not None
                        and size < (self._tuning.trying or 0)):
                    self._tuning.cap(size)  # the whole path is shorter than the size being timed: time it as is
                tuning = self._tuning if self._tuning is not None and self._tuning.trying == size else None
                started = time.perf_counter()
                evaluation = path.evaluate(chunk, targets_of)
                if tuning is not None:
                    comparing = time.perf_counter()
                    timed, backward_seconds = self._timed_vjps(evaluation.targets, evaluation.wrt, chunk.weights,
                                                               tuning)
                    # what every strategy shares excludes the timing itself (each strategy's passes and their
                    # comparison): a strategy tried and compared must not slow down the others' figures
                    comparing = time.perf_counter() - comparing
                    gradients: Any = enumerate(timed)
                else:
                    gradients = self.vjps(evaluation.targets, evaluation.wrt, chunk.weights)
                for j, rows, contribution in path.contributions(chunk, evaluation, gradients):
                    if integrals is None:
                        integrals = torch.zeros(path.n_samples, width, contribution.shape[1], dtype=torch.float64,
                                                device=contribution.device)
                        squares = torch.zeros_like(integrals) if path.accumulate_squares else None
                    integrals[:, j].index_add_(0, rows, contribution)
                    if squares is not None:
                        squares[:, j].index_add_(0, rows, contribution.square())
                if tuning is not None:
                    shared = time.perf_counter() - started - comparing
                    tuning.record(size, {name: shared + value for name, value in backward_seconds.items()})
                    self.chunk_points, self._strategy = tuning.choice()
        if integrals is None:
            raise NonFiniteError("nothing was integrated: the batch is empty")
        # checked before the projection: over the readout's H inputs, not the K outputs (the projection of
        # finite integrals by finite weights is finite)
        finite = torch.isfinite(integrals).flatten(1).all(dim=1)
        if not bool(finite.all()):
            bad = int(torch.nonzero(~finite)[0]) + first_index
            raise NonFiniteError(
                f"the gradients of sample {bad} are not finite (NaN or Inf) somewhere on its {path.description}; "
                "check the model for divisions by zero, log of zero or overflow in its dtype"
            )
        if readout is not None and self.defer_projection and squares is None:
            return replace(path.finish(integrals, squares), projection=readout.projection(self.outputs))
        if readout is not None:
            integrals = readout.project(integrals, self.outputs)
        return path.finish(integrals, squares)


def _agree(reference: torch.Tensor, other: torch.Tensor) -> bool:
    """Whether two strategies' gradients agree; non-finite gradients never do (the loop's are kept, and the
    integrator reports them)."""
    scale = float(reference.abs().max()) if reference.numel() else 0.0
    if not np.isfinite(scale):
        return False
    return bool(torch.allclose(reference, other, rtol=1e-4, atol=1e-6 * (scale + 1e-30)))


def _keep_saved_tensors() -> contextlib.AbstractContextManager:
    """Keep a compiled graph's saved activations alive across backward passes.

    The integrator takes one backward pass per output through the same forward graph (``retain_graph``), which
    compiled graphs refuse when their saved activations are donated to (freed by) the first backward pass.
    """
    try:
        import torch._functorch.config as functorch_config
    except ImportError:  # pragma: no cover - older torch without buffer donation
        return contextlib.nullcontext()
    if not hasattr(functorch_config, "donated_buffer"):  # pragma: no cover
        return contextlib.nullcontext()
    return functorch_config.patch(donated_buffer=False)
