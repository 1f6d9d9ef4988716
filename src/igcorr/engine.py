"""The gradient engine: integrated gradients for a batch of samples and baselines.

For n samples with M baselines each and a quadrature rule of S nodes, the engine evaluates the n·M·S path
points in chunks: one forward pass per chunk, then the vector-Jacobian products of the attributed outputs (a
loop of backward passes or one batched pass), with the quadrature weights as the cotangent so that the returned gradient is already weighted.
Each weighted gradient times its path's displacement (x − b) is accumulated per sample in float64 and averaged
over the baselines. The chunk size (within a memory budget) and the output strategy are chosen by timing the
first chunks of a run (:class:`ChunkTuning`). When the model ends in a linear readout narrower than the number of attributed outputs,
the readout's inputs are attributed instead and projected (exact). Nothing leaves the model's device.

The model is used as a pure function during attribution: its parameters are frozen (no parameter gradient is
ever computed) and restored afterwards, and the model runs in evaluation mode, then gets its modes back. A
model left in training mode that holds dropout or normalisation layers (whose outputs would then be random or
depend on the batch) triggers a warning; other models are switched silently, as the mode changes nothing.
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
from torch import nn

from igcorr.errors import InputError, ModelError, NonFiniteError, ShapeError
from igcorr.quadrature import Rule
from igcorr.quadrature import rule as quadrature_rule

ScoreLike = str | Callable[[torch.Tensor], torch.Tensor] | None
SCORES = ("softmax", "log_softmax")

#: modules whose forward differs between training and evaluation mode
_MODE_DEPENDENT = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._NormBase)

#: path points per forward pass before the engine is configured for a model
DEFAULT_CHUNK_POINTS = 512
#: chunk sizes timed on the first chunks of a run (those within the memory budget); the fastest per point is
#: kept. The best size depends on the model and the machine's caches: 256 for a 28×28 CNN, 512 for a 64×64 MLP,
#: with up to 3× between the best and the worst on a 2-core CPU
CHUNK_CANDIDATES = (128, 256, 512, 1024, 2048)


@dataclass
class PathChunk:
    """One chunk of path points: for each point its global index, (sample, baseline) path, node, sample,
    displacement x − b (P, D) and position b + α(x − b) (P, *x_shape)."""

    point: torch.Tensor
    path: torch.Tensor
    node: torch.Tensor
    sample: torch.Tensor
    deltas: torch.Tensor
    points: torch.Tensor


def path_chunks(x: torch.Tensor, baselines: torch.Tensor, alphas: torch.Tensor,
                chunk_points: int | Callable[[], int], point_alphas: torch.Tensor | None = None) -> Iterator[PathChunk]:
    """The n·M·S points of the straight paths from ``baselines`` (n, M, *x_shape) to ``x`` (n, *x_shape) at the
    nodes ``alphas`` (S,), flattened in (sample, baseline, node) order and cut into chunks of ``chunk_points``
    (or of the size that callable returns when the next chunk is cut). ``point_alphas`` (n·M·S,) gives every
    point its own α instead (Monte-Carlo paths)."""
    n, n_baselines = baselines.shape[:2]
    n_steps = len(alphas)
    flat_x = x.reshape(n, -1)
    flat_baselines = baselines.reshape(n * n_baselines, -1)
    total_points = n * n_baselines * n_steps
    begin = 0
    while begin < total_points:
        size = chunk_points() if callable(chunk_points) else chunk_points
        point = torch.arange(begin, min(begin + size, total_points), device=x.device)
        begin += size
        path, node = point // n_steps, point % n_steps
        sample = path // n_baselines
        starts = flat_baselines[path]
        deltas = flat_x[sample] - starts
        alpha = point_alphas[point] if point_alphas is not None else alphas[node]
        points = (starts + alpha.unsqueeze(1) * deltas).reshape(len(point), *x.shape[1:])
        yield PathChunk(point, path, node, sample, deltas, points)


@dataclass
class PathIntegrals:
    """Integrated gradients of a batch and the model scores they explain (all float64, on the model's device).

    Attributes
    ----------
    attributions : Tensor (n, K, *x_shape)
        IG averaged over each sample's M baselines.
    predictions : Tensor (n, K)
        Attributed score at each input.
    baseline_predictions : Tensor (n, K)
        Attributed score averaged over each sample's baselines.
    attribution_variance : Tensor (n, K, *x_shape), optional
        Monte-Carlo estimators only: the estimated variance of each attribution (of the mean over the draws).
    steps : Tensor (n,), optional
        Adaptive quadrature only: the number of nodes each sample's paths needed.
    """

    attributions: torch.Tensor
    predictions: torch.Tensor
    baseline_predictions: torch.Tensor
    attribution_variance: torch.Tensor | None = None
    steps: torch.Tensor | None = None

    @property
    def completeness_residual(self) -> torch.Tensor:
        """Σ_i IG − (f(x) − mean f(b)), shape (n, K): zero for exact quadrature."""
        total = self.attributions.flatten(start_dim=2).sum(dim=2)
        return total - (self.predictions - self.baseline_predictions)


class ChunkTuning:
    """Chooses the chunk size and the output strategy with the lowest time per path point by timing real chunks.

    The first chunk is a warm-up (allocator growth, kernel selection); then the candidate sizes are timed on
    one chunk each, smallest first, with every output strategy still in the running. The trial stops at the
    first size slower per point than the one before (the time per point falls while chunks amortise the
    per-pass overheads, then rises once the activations leave the caches), and the batched strategy leaves the
    running once it is more than ``DROP_RATIO`` times slower than the loop: its cost relative to the loop
    grows with the chunk (its cotangents are J × P × J), so it does not come back at larger sizes. Timed
    chunks are real work: a run that ends before the trial is over has lost nothing but the batched passes.
    """

    DROP_RATIO = 1.25
    SIZE_MARGIN = 1.10

    def __init__(self, sizes: Sequence[int], strategies: Sequence[str]) -> None:
        self.sizes = list(sizes)
        self.strategies = list(strategies)
        decided = len(self.sizes) == 1 and len(self.strategies) == 1
        self.queue: list[int] = [] if decided else [self.sizes[0], *self.sizes]
        self.warmed_up = False
        self.seconds_per_point: dict[tuple[int, str], float] = {}

    @property
    def trying(self) -> int | None:
        """The chunk size being timed, or None once the trial is over."""
        return self.queue[0] if self.queue else None

    def drop(self, strategy: str) -> None:
        """Take a strategy out of the running (it does not fit in memory or disagrees with the others)."""
        if strategy in self.strategies and len(self.strategies) > 1:
            self.strategies.remove(strategy)
            self.seconds_per_point = {key: v for key, v in self.seconds_per_point.items() if key[1] != strategy}

    def record(self, size: int, seconds: dict[str, float]) -> None:
        """Seconds each strategy took for a chunk of ``size`` points (forward pass and accumulation included)."""
        self.queue.pop(0)
        if not self.warmed_up:
            self.warmed_up = True
            return
        for strategy, value in seconds.items():
            self.seconds_per_point[(size, strategy)] = value / size
        fastest = min(value / size for value in seconds.values())
        if "batched" in seconds and "loop" in seconds and seconds["batched"] > self.DROP_RATIO * seconds["loop"]:
            self.drop("batched")
        smaller = [key for key in self.seconds_per_point if key[0] < size]
        if smaller and fastest > min(self.seconds_per_point[key] for key in smaller):
            self.queue.clear()

    def choice(self) -> tuple[int, str]:
        """The smallest chunk size within ``SIZE_MARGIN`` of the fastest per point measured so far, with its
        faster strategy; the largest size before any measurement.

        A single timed chunk flatters large chunks: in a long run, their big temporaries are allocated and
        freed again every chunk (page faults, system time), which the first chunks do not show. On a 28×28
        CNN, 512 points timed 2 % faster per point than 256 on one chunk but ran 1.6× slower over the run.
        """
        if not self.seconds_per_point:
            return self.sizes[-1], self.strategies[0]
        fastest = min(self.seconds_per_point.values())
        size = min(size for (size, _), value in self.seconds_per_point.items() if value <= self.SIZE_MARGIN * fastest)
        return min(((s, strategy) for s, strategy in self.seconds_per_point if s == size),
                   key=self.seconds_per_point.__getitem__)

    def describe(self) -> dict[str, float]:
        """Measured microseconds per point, keyed "size strategy"."""
        return {f"{size} {strategy}": round(value * 1e6, 2)
                for (size, strategy), value in sorted(self.seconds_per_point.items())}


def model_device_dtype(model: nn.Module) -> tuple[torch.device | None, torch.dtype | None]:
    """Device and floating dtype of the model's first floating parameter or buffer (None, None if none)."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return None, None


def available_memory() -> int:
    """Bytes of memory available to this process (MemAvailable on Linux; 8 GiB if it cannot be read)."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2**30


def default_memory_budget() -> int:
    """Default ``max_memory``: a quarter of the available memory, at most 4 GiB."""
    return int(min(4 * 2**30, available_memory() // 4))


class Engine:
    """Evaluates scores and integrated gradients of ``model`` for selected outputs.

    Parameters
    ----------
    model : nn.Module or callable
        Maps a batch (P, *x_shape) to outputs (P, K_model) (or (P,) for one output).
    score : None, "softmax", "log_softmax" or callable
        What is attributed for each output: the raw output, its softmax probability, its log-probability, or
        ``score(output)`` returning (P, K') for any callable.
    chunk_points : int, optional
        Path points per forward pass; by default the fastest per point among the sizes that fit
        ``max_memory``, found by timing the first chunks (``metadata["engine"]["microseconds_per_point"]``).
    max_memory : int, optional
        Bytes the path-point chunks may take (activations, gradients and temporaries); default
        :func:`default_memory_budget`. The model, the data, the per-batch attribution buffers and fixed
        framework workspaces come on top (about 0.1 GB for a small CNN in the tests).
    output_strategy : {"auto", "loop", "batched"}
        How the vector-Jacobian products of several outputs are taken: one backward pass per output ("loop"),
        or all at once with batched cotangents ("batched", vmap over the backward pass). "auto" times both on
        the first chunks, along with the chunk sizes, and keeps the faster; the results are identical.
    readout : "auto", False, str or nn.Linear
        Linear-readout shortcut: when the model's output is an ``nn.Linear`` layer's output (or the named
        layer's), the raw outputs are attributed, and more outputs are attributed than the layer has inputs,
        IG of each of the H readout inputs is computed and projected with the weights (exact; the bias cancels):
        H backward passes instead of K. "auto" detects it; False disables it.
    autocast : None, "bfloat16" or "float16"
        Run the model's forward (and so its backward) under ``torch.autocast`` in that dtype; scores and
        gradients return in the input's dtype and are accumulated in float64. Off by default: whether it is
        faster depends on the hardware's low-precision support, and it costs accuracy (0.3 % relative error on
        a small CNN's maps in the tests).
    compile : bool or dict
        Run the model's forward pass (and so its backward pass) through ``torch.compile`` during the path
        integrals; a dict is passed to ``torch.compile`` as keyword arguments (e.g. ``{"backend":
        "aot_eager"}``, ``{"mode": "max-autotune"}``). Off by default: compiling costs seconds to minutes
        up front, and on the CPU benchmarks of ``docs/speed.md`` compiling did not pay. The last,
        smaller chunk of a run triggers one recompilation for its shape.
    """

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor], score: ScoreLike = None,
                 chunk_points: int | None = None, max_memory: int | None = None, output_strategy: str = "auto",
                 readout: Any = "auto", autocast: str | None = None, compile: bool | dict = False) -> None:
        if not callable(model):
            raise InputError(f"model must be a torch.nn.Module or a callable, got {type(model).__name__}")
        if score is not None and not callable(score) and score not in SCORES:
            raise InputError(f"score must be None, 'softmax', 'log_softmax' or a callable, got {score!r}")
        for name, value in (("chunk_points", chunk_points), ("max_memory", max_memory)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        if autocast not in (None, "bfloat16", "float16"):
            raise InputError(f"autocast must be None, 'bfloat16' or 'float16', got {autocast!r}")
        self.autocast = autocast
        if not isinstance(compile, (bool, dict)):
            raise InputError(f"compile must be True, False or a dict of torch.compile options, got {compile!r}")
        self.compile_options: dict | None = (dict(compile) if isinstance(compile, dict) else {}) if compile else None
        self._compiled: tuple[Callable, Callable] | None = None  # (compiled forward, the forward it compiles)
        self._readout_input: torch.Tensor | None = None
        if output_strategy not in ("auto", "loop", "batched"):
            raise InputError(f"output_strategy must be 'auto', 'loop' or 'batched', got {output_strategy!r}")
        if not (readout in ("auto", False, None) or isinstance(readout, (str, nn.Linear))):
            raise InputError(f"readout must be 'auto', False, a module name or an nn.Linear, got {readout!r}")
        self.model = model
        #: what is evaluated on attributed tensors: the model, or the model behind an input layout
        self.forward: Callable[[torch.Tensor], torch.Tensor] = model
        self.score = score
        self.fixed_chunk_points = int(chunk_points) if chunk_points is not None else None
        self.chunk_points = self.fixed_chunk_points or DEFAULT_CHUNK_POINTS
        self.max_memory = int(max_memory) if max_memory is not None else None
        self.output_strategy = output_strategy
        self.readout_request = readout
        self.readout: nn.Linear | None = None
        self.readout_name: str | None = None
        self._strategy: str | None = None if output_strategy == "auto" else output_strategy
        self._tuning: ChunkTuning | None = None
        module = model if isinstance(model, nn.Module) else None
        self.device, self.dtype = model_device_dtype(module) if module is not None else (None, None)
    # ------------------------------------------------------------------ model state
    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Freeze parameters and use evaluation mode for the duration of the block, then restore both."""
        module = self.model if isinstance(self.model, nn.Module) else None
        if module is None:
            yield
            return
        modes = {sub: sub.training for sub in module.modules()}
        flags = [(p, p.requires_grad) for p in module.parameters()]
        mode_dependent = [type(sub).__name__ for sub in module.modules()
                          if sub.training and isinstance(sub, _MODE_DEPENDENT)]
        if mode_dependent:
            warnings.warn(
                f"the model is in training mode and contains {sorted(set(mode_dependent))}; igcorr switches it to "
                "eval() for attribution (dropout and batch statistics would make attributions random and "
                "batch-dependent) and restores the mode afterwards. Call model.eval() to silence this warning",
                UserWarning,
                stacklevel=4,
            )
        try:
            module.eval()
            for parameter, _ in flags:
                parameter.requires_grad_(False)
            yield
        finally:
            for parameter, flag in flags:
                parameter.requires_grad_(flag)
            for sub, mode in modes.items():
                sub.training = mode

    # ------------------------------------------------------------------ inputs and outputs
    def prepare_inputs(self, x: torch.Tensor, name: str = "inputs") -> torch.Tensor:
        """Move inputs to the model's device and floating dtype; integer and boolean inputs are refused."""
        if not x.is_floating_point():
            raise InputError(
                f"{name} have dtype {x.dtype}; gradients need continuous inputs. Convert them to float (e.g. "
                "x.float() / 255 for images), or attribute in embedding space for token or category ids"
            )
        return x.to(device=self.device or x.device, dtype=self.dtype or x.dtype)

    def n_model_outputs(self, x: torch.Tensor) -> int:
        """Number of scores the model produces, from a forward pass on (a few of) the inputs."""
        with torch.no_grad():
            return self._scores(x[:1]).shape[1]

    def check_batch_independence(self, x: torch.Tensor) -> None:
        """Refuse models whose output for one sample depends on the other samples of its batch.

        Path points of many samples share a forward pass, so such a model (batch statistics, attention across
        the batch, ...) would give silently wrong attributions. Compares a joint forward of up to four samples
        with separate ones.
        """
        if len(x) < 2:
            return
        with torch.no_grad():
            joint = self._scores(x)
            separate = torch.cat([self._scores(x[i : i + 1]) for i in range(len(x))])
        low_precision = self.autocast is not None or x.dtype in (torch.float16, torch.bfloat16)
        tolerance = 2e-2 if low_precision else 1e-5 if x.dtype == torch.float32 else 1e-9
        scale = float(joint.abs().max()) + 1e-30
        if not torch.allclose(joint, separate, rtol=tolerance, atol=tolerance * scale):
            raise ModelError(
                "the model's output for a sample changes with the other samples in its batch (batch statistics, "
                "e.g. a custom normalisation over the batch, or layers mixing samples). Attribution evaluates many "
                "samples and path points per forward pass, so the model must treat samples independently: use "
                "running statistics (eval mode) or remove the batch coupling"
            )

    def _compiled_forward(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """``self.forward`` through ``torch.compile``, compiled again only if the forward was replaced."""
        if self._compiled is None or self._compiled[1] is not self.forward:
            self._compiled = (torch.compile(self.forward, **self.compile_options), self.forward)
        return self._compiled[0]

    def _scores(self, points: torch.Tensor, compiled: bool = False) -> torch.Tensor:
        forward = self._compiled_forward() if compiled and self.compile_options is not None else self.forward
        if self.autocast is None:
            output = forward(points)
        else:
            with torch.autocast(device_type=points.device.type, dtype=getattr(torch, self.autocast)):
                output = forward(points)
        if not isinstance(output, torch.Tensor):
            raise ModelError(f"the model must return a tensor, got {type(output).__name__}")
        if self.autocast is not None:
            output = output.to(points.dtype)  # scores and their gradients leave the model in the input's dtype
        if output.ndim == 1:
            output = output.unsqueeze(1)
        if output.ndim != 2 or output.shape[0] != points.shape[0]:
            raise ModelError(
                f"the model returned shape {tuple(output.shape)} for a batch of {points.shape[0]}; it must return "
                "(batch, outputs) or (batch,). Wrap it to flatten or select its outputs"
            )
        if self.score is None:
            return output
        if self.score == "softmax":
            return torch.softmax(output, dim=1)
        if self.score == "log_softmax":
            return torch.log_softmax(output, dim=1)
        scored = self.score(output)
        if not isinstance(scored, torch.Tensor) or scored.ndim not in (1, 2) or scored.shape[0] != points.shape[0]:
            shape = tuple(scored.shape) if isinstance(scored, torch.Tensor) else type(scored).__name__
            raise ModelError(
                f"the score callable returned {shape} for a batch of {points.shape[0]}; it must return a tensor "
                "of shape (batch, outputs) or (batch,)"
            )
        return scored.unsqueeze(1) if scored.ndim == 1 else scored

    def scores(self, x: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        """Attributed scores of the selected ``outputs`` at ``x``, shape (n, K), without gradients."""
        with torch.no_grad():
            return torch.cat([self._scores(part)[:, outputs] for part in x.split(self.chunk_points)])

    # ------------------------------------------------------------------ configuration
    def configure(self, x: torch.Tensor, outputs: torch.Tensor) -> None:
        """Resolve the readout shortcut and the chunk size for attributing ``outputs`` of inputs like ``x``.

        Raises
        ------
        InputError
            If ``max_memory`` cannot hold a single path point.
        """
        self.readout, self.readout_name = self._find_readout(x, len(outputs))
        width = self.readout.in_features if self.readout is not None else len(outputs)
        if self.fixed_chunk_points is not None:
            sizes = [self.fixed_chunk_points]
        else:
            budget = self.max_memory or default_memory_budget()
            per_point = self._bytes_per_point(x, width)
            if per_point > budget:
                raise InputError(
                    f"max_memory={budget} bytes is too small: one path point needs about {per_point} bytes of "
                    f"activations and gradients; raise max_memory to at least {per_point * 4}"
                )
            largest = int(budget // per_point)
            sizes = [size for size in CHUNK_CANDIDATES if size <= largest] or [largest]
        if self.output_strategy != "auto":
            strategies = [self.output_strategy]
        else:
            strategies = ["loop", "batched"] if width > 1 else ["loop"]
        self._tuning = ChunkTuning(sizes, strategies)
        self.chunk_points, self._strategy = self._tuning.choice()

    def _next_chunk_size(self) -> int:
        trying = self._tuning.trying if self._tuning is not None else None
        return trying if trying is not None else self.chunk_points

    def describe(self) -> dict[str, Any]:
        """Engine settings for result metadata."""
        timings = self._tuning.describe() if self._tuning is not None else {}
        return {"chunk_points": self.chunk_points, "output_strategy": self._strategy or self.output_strategy,
                "microseconds_per_point": timings, "autocast": self.autocast, "compile": self.compile_options,
                "readout": None if self.readout is None else
                {"layer": self.readout_name, "width": self.readout.in_features}}

    def _find_readout(self, x: torch.Tensor, n_outputs: int) -> tuple[nn.Linear | None, str | None]:
        request = self.readout_request
        if request in (False, None) or not isinstance(self.model, nn.Module):
            return None, None
        named = dict(self.model.named_modules())
        if isinstance(request, str) and request != "auto":
            if request not in named or not isinstance(named[request], nn.Linear):
                linear = [name for name, sub in named.items() if isinstance(sub, nn.Linear)]
                raise InputError(f"readout {request!r} is not an nn.Linear of the model; its linear layers: {linear}")
            candidates = {request: named[request]}
        elif isinstance(request, nn.Linear):
            names = [name for name, sub in named.items() if sub is request]
            if not names:
                raise InputError("the readout module given is not part of the model")
            candidates = {names[0]: request}
        else:
            candidates = {name: sub for name, sub in named.items() if isinstance(sub, nn.Linear)}
        if not candidates:
            return None, None
        produced: dict[str, torch.Tensor] = {}
        handles = [sub.register_forward_hook(lambda _m, _i, out, name=name: produced.__setitem__(name, out))
                   for name, sub in candidates.items()]
        try:
            with torch.no_grad():
                output = self.forward(x[:1])
        finally:
            for handle in handles:
                handle.remove()
        final = [name for name, out in produced.items() if out is output]
        explicit = request != "auto"
        if not final:
            if explicit:
                raise InputError("the readout layer's output is not the model's output, so it cannot be projected")
            return None, None
        layer = candidates[final[-1]]
        if self.score is not None:
            if explicit:
                raise InputError("the readout shortcut needs raw outputs (score=None): a score is not linear")
            return None, None
        if not explicit and n_outputs <= layer.in_features:
            return None, None
        return layer, final[-1]

    def _bytes_per_point(self, x: torch.Tensor, n_vjp_outputs: int) -> int:
        """Estimated memory of one path point: saved activations, its gradient outputs and temporaries."""
        element = x.element_size()
        features = int(np.prod(x.shape[1:], dtype=np.int64))
        activations = 0
        if isinstance(self.model, nn.Module):
            sizes: list[int] = []
            handles = [sub.register_forward_hook(
                lambda _m, _i, out: sizes.append(out.numel() * out.element_size() if isinstance(out, torch.Tensor) else 0))
                for sub in self.model.modules() if not list(sub.children())]
            try:
                with torch.no_grad():
                    self.forward(x[:1])
            finally:
                for handle in handles:
                    handle.remove()
            activations = sum(sizes)
        activations = max(activations, 8 * features * element)
        # forward activations kept for backward, the backward's own temporaries of similar size, the point and
        # its gradient, and (batched strategy) one gradient per output
        return int(3 * activations + features * (3 * element + 8) + n_vjp_outputs * features * element)

    # ------------------------------------------------------------------ integrated gradients
    def _gradient_targets(self, points: torch.Tensor, outputs: torch.Tensor, choice: torch.Tensor | None,
                          compiled: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward pass: (differentiated quantities (P, J), attributed scores (P, K) detached); ``compiled``
        uses the compiled forward if compilation was asked for."""
        if self.readout is None:
            scores = self._scores(points, compiled)[:, outputs]
            if choice is not None:
                scores = scores.gather(1, choice.unsqueeze(1))
            return scores, scores.detach()
        # one bound method as the hook, so that a compiled forward sees the same hook every chunk (no recompiles)
        handle = self.readout.register_forward_hook(self._capture_readout_input)
        try:
            scores = self._scores(points, compiled)[:, outputs]
            captured, self._readout_input = self._readout_input, None
        finally:
            handle.remove()
        return captured, scores.detach()

    def _capture_readout_input(self, _module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: Any) -> None:
        self._readout_input = inputs[0]

    def _vjps(self, targets: torch.Tensor, points: torch.Tensor, cotangent: torch.Tensor,
              strategy: str | None = None, keep_graph: bool = False) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield (j, cotangent-weighted gradient of targets[:, j] w.r.t. points) for every column j, with the
        given output strategy (default: the engine's); ``keep_graph`` leaves the graph for another pass."""
        n_targets = targets.shape[1]
        strategy = strategy or self._strategy or "loop"
        if n_targets == 1 or strategy == "loop":
            for j in range(n_targets):
                (gradient,) = torch.autograd.grad(targets[:, j], points, grad_outputs=cotangent,
                                                  retain_graph=keep_graph or j < n_targets - 1)
                yield j, gradient
            return
        eye = torch.eye(n_targets, dtype=targets.dtype, device=targets.device)
        (gradients,) = torch.autograd.grad(targets, points, grad_outputs=eye.unsqueeze(1) * cotangent.view(1, -1, 1),
                                           retain_graph=keep_graph, is_grads_batched=True)
        yield from enumerate(gradients)

    def _batched_fits(self, targets: torch.Tensor, points: torch.Tensor) -> bool:
        """Whether one batched backward pass fits the memory budget: its cotangents are (J, P, J) and its
        gradients (J, P, *x_shape), which grow with the square of the number of outputs J."""
        n_targets, n_points = targets.shape[1], points.shape[0]
        needed = n_targets * n_points * (n_targets + points[0].numel()) * points.element_size()
        return needed <= (self.max_memory or default_memory_budget()) // 4

    def _timed_vjps(self, targets: torch.Tensor, points: torch.Tensor, cotangent: torch.Tensor,
                    tuning: ChunkTuning) -> tuple[list[torch.Tensor], dict[str, float]]:
        """The gradients with every strategy still in the running, timed; returns the first strategy's
        gradients and each strategy's seconds. A batched pass that does not fit the memory budget, fails or
        disagrees with the loop is dropped for the rest of the run."""
        def timed(strategy: str) -> tuple[list[torch.Tensor], float]:
            started = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # vmap over the backward pass warns about slow fallbacks
                gradients = [g for _, g in self._vjps(targets, points, cotangent, strategy, keep_graph=True)]
            return gradients, time.perf_counter() - started

        # the first strategy (the loop, or the one the user forced) is never dropped: its gradients are used
        first, *others = tuning.strategies
        reference, first_seconds = timed(first)
        seconds = {first: first_seconds}
        for strategy in others:
            if not self._batched_fits(targets, points):
                tuning.drop(strategy)
                continue
            try:
                gradients, seconds[strategy] = timed(strategy)
            except RuntimeError:
                tuning.drop(strategy)
                continue
            if not all(torch.allclose(a, b, rtol=1e-4, atol=1e-6 * float(a.abs().max() + 1e-30))
                       for a, b in zip(reference, gradients)):
                tuning.drop(strategy)
                del seconds[strategy]
        return reference, seconds

    def integrate(self, x: torch.Tensor, baselines: torch.Tensor, rule: Rule, outputs: torch.Tensor,
                  per_sample_output: torch.Tensor | None = None, first_index: int = 0,
                  path_alphas: torch.Tensor | None = None, with_scores: bool = True) -> PathIntegrals:
        """Integrated gradients of ``x`` from its baselines.

        The n·M·S path points (sample, baseline, node) are evaluated in flat chunks of ``chunk_points``; each
        point's weighted gradient times its path's displacement (x − b) is accumulated per sample in float64.

        Parameters
        ----------
        x : Tensor (n, *x_shape)
        baselines : Tensor (n, M, *x_shape)
        rule : Rule
            Quadrature nodes and weights on [0, 1].
        outputs : LongTensor (K,)
            Indices of the scores to attribute.
        per_sample_output : LongTensor (n,), optional
            Instead of all K outputs, attribute for sample j only ``outputs[per_sample_output[j]]`` (K = 1 in
            the result); one vector-Jacobian product per point instead of K.
        first_index : int
            Global index of the first sample, used in error messages.
        path_alphas : Tensor (n, M), optional
            Monte-Carlo estimation: each path is a single point at its own α (the rule must have one node of
            weight 1); the result then carries the variance of each sample's mean over its M draws.
        with_scores : bool
            False skips the extra forward passes that rules without end nodes need for f(x) and f(b) (their
            predictions are then zero); used when refining integrals whose scores are already known.
        """
        n, n_baselines = baselines.shape[:2]
        if tuple(baselines.shape[2:]) != tuple(x.shape[1:]) or len(baselines) != len(x):
            raise ShapeError(f"baselines of shape {tuple(baselines.shape)} do not match inputs {tuple(x.shape)}")
        if path_alphas is not None and (len(rule.nodes) != 1 or tuple(path_alphas.shape) != (n, n_baselines)):
            raise ShapeError("Monte-Carlo paths need a one-node rule and one α per (sample, baseline)")
        # the variance of projected attributions is not the projection of variances: no readout shortcut then
        readout = self.readout if per_sample_output is None and path_alphas is None else None
        saved_readout, self.readout = self.readout, readout
        compiling = _keep_saved_tensors() if self.compile_options is not None else contextlib.nullcontext()
        try:
            with compiling:
                return self._integrate(x, baselines, rule, outputs, per_sample_output, first_index, path_alphas,
                                       with_scores)
        finally:
            self.readout = saved_readout

    def _integrate(self, x: torch.Tensor, baselines: torch.Tensor, rule: Rule, outputs: torch.Tensor,
                   per_sample_output: torch.Tensor | None, first_index: int,
                   path_alphas: torch.Tensor | None, with_scores: bool) -> PathIntegrals:
        n, n_baselines = baselines.shape[:2]
        n_steps = len(rule.nodes)
        n_outputs = 1 if per_sample_output is not None else len(outputs)
        width = self.readout.in_features if self.readout is not None else n_outputs
        features = int(np.prod(x.shape[1:], dtype=np.int64))
        dev = x.device
        alphas = torch.as_tensor(rule.nodes, dtype=x.dtype, device=dev)
        weights = torch.as_tensor(rule.weights, dtype=x.dtype, device=dev)
        integrals = torch.zeros(n, width, features, dtype=torch.float64, device=dev)
        squares = torch.zeros_like(integrals) if path_alphas is not None else None
        flat_alphas = path_alphas.reshape(-1).to(dtype=x.dtype, device=dev) if path_alphas is not None else None
        endpoint_scores = rule.includes_endpoints
        predictions = torch.zeros(n, n_outputs, dtype=torch.float64, device=dev)
        baseline_predictions = torch.zeros(n, n_outputs, dtype=torch.float64, device=dev)
        choice_of_sample = per_sample_output.to(dev) if per_sample_output is not None else None
        with torch.enable_grad():
            for chunk in path_chunks(x, baselines, alphas, self._next_chunk_size, flat_alphas):
                point, path, node, sample, deltas, points = (chunk.point, chunk.path, chunk.node, chunk.sample,
                                                             chunk.deltas, chunk.points)
                tuning = self._tuning if self._tuning is not None and self._tuning.trying == len(point) else None
                started = time.perf_counter()
                points.requires_grad_(True)
                choice = choice_of_sample[sample] if choice_of_sample is not None else None
                targets, scores = self._gradient_targets(points, outputs, choice, compiled=True)
                cotangent = weights[node]
                if tuning is not None:
                    timed, backward_seconds = self._timed_vjps(targets, points, cotangent, tuning)
                    gradients: Any = enumerate(timed)
                else:
                    gradients = self._vjps(targets, points, cotangent)
                for j, gradient in gradients:
                    contribution = (gradient.reshape(len(point), features) * deltas).to(torch.float64)
                    integrals[:, j].index_add_(0, sample, contribution)
                    if squares is not None:
                        squares[:, j].index_add_(0, sample, contribution.square())
                if endpoint_scores:
                    scores = scores.to(torch.float64)
                    at_baseline = node == 0
                    baseline_predictions.index_add_(0, sample[at_baseline], scores[at_baseline])
                    at_input = (node == n_steps - 1) & (path % n_baselines == 0)
                    predictions.index_add_(0, sample[at_input], scores[at_input])
                if tuning is not None:
                    shared = time.perf_counter() - started - sum(backward_seconds.values())
                    tuning.record(len(point), {name: shared + value for name, value in backward_seconds.items()})
                    self.chunk_points, self._strategy = tuning.choice()
        if not endpoint_scores and with_scores:
            pair_sample = torch.arange(n, device=dev).repeat_interleave(n_baselines)
            flat_scores = self.scores(baselines.reshape(n * n_baselines, *x.shape[1:]), outputs).double()
            input_scores = self.scores(x, outputs).double()
            if choice_of_sample is not None:
                flat_scores = flat_scores.gather(1, choice_of_sample[pair_sample].unsqueeze(1))
                input_scores = input_scores.gather(1, choice_of_sample.unsqueeze(1))
            baseline_predictions.index_add_(0, pair_sample, flat_scores)
            predictions = input_scores
        integrals /= n_baselines
        baseline_predictions /= n_baselines
        variance = None
        if squares is not None:
            spread = (squares / n_baselines - integrals.square()).clamp(min=0)
            variance = (spread / max(n_baselines - 1, 1)).reshape(n, n_outputs, *x.shape[1:])
        if self.readout is not None:
            projection = self.readout.weight.detach()[outputs].to(torch.float64)
            integrals = torch.einsum("kh,nhd->nkd", projection, integrals)
        finite = torch.isfinite(integrals).flatten(1).all(dim=1)
        if not bool(finite.all()):
            bad = int(torch.nonzero(~finite)[0]) + first_index
            raise NonFiniteError(
                f"the gradients of sample {bad} are not finite (NaN or Inf) somewhere on its integration path; "
                "check the model for divisions by zero, log of zero or overflow in its dtype"
            )
        return PathIntegrals(integrals.reshape(n, n_outputs, *x.shape[1:]), predictions, baseline_predictions,
                             attribution_variance=variance)


    def integrate_adaptive(self, x: torch.Tensor, baselines: torch.Tensor, outputs: torch.Tensor, tolerance: float,
                           start_steps: int = 9, max_steps: int = 1025, first_index: int = 0) -> PathIntegrals:
        """Integrated gradients refined per sample until the completeness residual is below ``tolerance``.

        Starts with the trapezoid rule on ``start_steps`` nodes; samples whose largest |Σ IG − (f(x) − mean
        f(b))| over the outputs exceeds ``tolerance`` get their intervals halved, reusing every node already
        evaluated (the refined trapezoid is the mean of the coarse trapezoid and the midpoint rule), until they
        pass or would need more than ``max_steps`` nodes. Samples that never pass are kept at the finest rule
        reached, with a warning. The nodes each sample needed are returned in ``steps``.
        """
        coarse = self.integrate(x, baselines, quadrature_rule("trapezoid", start_steps), outputs,
                                first_index=first_index)
        attributions = coarse.attributions.clone()
        steps = torch.full((len(x),), start_steps, dtype=torch.int64, device=x.device)
        explained = coarse.predictions - coarse.baseline_predictions
        pending = _residual_exceeds(attributions, explained, tolerance)
        intervals = start_steps - 1
        while bool(pending.any()) and 2 * intervals + 1 <= max_steps:
            chosen = torch.nonzero(pending).reshape(-1)
            midpoints = self.integrate(x[chosen], baselines[chosen], quadrature_rule("riemann_middle", intervals),
                                       outputs, first_index=first_index, with_scores=False)
            attributions[chosen] = 0.5 * (attributions[chosen] + midpoints.attributions)
            intervals *= 2
            steps[chosen] = intervals + 1
            pending = torch.zeros_like(pending)
            pending[chosen] = _residual_exceeds(attributions[chosen], explained[chosen], tolerance)
        if bool(pending.any()):
            warnings.warn(
                f"{int(pending.sum())} sample(s) from index {first_index} did not reach the completeness tolerance "
                f"{tolerance:g} within max_steps={max_steps} nodes; raise max_steps or the tolerance",
                UserWarning, stacklevel=3,
            )
        return PathIntegrals(attributions, coarse.predictions, coarse.baseline_predictions, steps=steps)


def _keep_saved_tensors() -> contextlib.AbstractContextManager:
    """Keep a compiled graph's saved activations alive across backward passes.

    The engine takes one backward pass per output through the same forward graph (``retain_graph``), which
    compiled graphs refuse when their saved activations are donated to (freed by) the first backward pass.
    """
    try:
        import torch._functorch.config as functorch_config
    except ImportError:  # pragma: no cover - older torch without buffer donation
        return contextlib.nullcontext()
    if not hasattr(functorch_config, "donated_buffer"):  # pragma: no cover
        return contextlib.nullcontext()
    return functorch_config.patch(donated_buffer=False)


def _residual_exceeds(attributions: torch.Tensor, explained: torch.Tensor, tolerance: float) -> torch.Tensor:
    """(n,) whether any output's |Σ_i IG − explained| exceeds ``tolerance``."""
    residual = attributions.flatten(start_dim=2).sum(dim=2) - explained
    return (residual.abs() > tolerance).any(dim=1)


def named_submodule(model: Any, name: str, what: str) -> nn.Module:
    """The submodule ``name`` of ``model`` (a ``named_modules()`` name), with a clear error listing the names."""
    if not isinstance(model, nn.Module):
        raise InputError(f"a {what} given by name ({name!r}) needs an nn.Module model; pass the module itself")
    named = dict(model.named_modules())
    if name not in named or name == "":
        names = [n for n in named if n]
        raise InputError(f"the model has no submodule {name!r}; its submodules are {names[:40]}"
                         + (" ..." if len(names) > 40 else ""))
    return named[name]


def resolve_outputs(outputs: int | Sequence[int] | None, n_model_outputs: int) -> list[int]:
    """Validate the ``outputs`` argument against the model's number of scores; returns a list of indices."""
    if outputs is None:
        return list(range(n_model_outputs))
    if isinstance(outputs, (int, np.integer)) and not isinstance(outputs, bool):
        selected = [int(outputs)]
    else:
        try:
            selected = [int(o) for o in outputs]  # type: ignore[union-attr]
        except (TypeError, ValueError) as error:
            raise InputError(f"outputs must be None, an int or a list of ints, got {outputs!r}") from error
    if not selected:
        raise InputError("outputs is empty: give at least one output index, or None for all")
    for index in selected:
        if not -n_model_outputs <= index < n_model_outputs:
            raise InputError(
                f"output index {index} is out of range: the model (with its score) has {n_model_outputs} outputs"
            )
    normalised = [index % n_model_outputs for index in selected]
    if len(set(normalised)) != len(normalised):
        raise InputError(f"outputs {selected} contain duplicates")
    return normalised


def describe_score(score: ScoreLike) -> str:
    """Name of the score for metadata."""
    if score is None:
        return "output"
    if isinstance(score, str):
        return score
    return getattr(score, "__name__", type(score).__name__)
