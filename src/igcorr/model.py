"""The model adapter: the one place where igcorr touches the user's model.

Every method evaluates the model through a :class:`ModelAdapter`. It turns whatever the user passed (an
``nn.Module`` or a plain differentiable function) into a pure function of its inputs: parameters are frozen
and evaluation mode is used while attributing, then both are restored (:meth:`ModelAdapter.frozen`); the
output is checked and turned into the attributed scores (raw outputs, softmax, log-softmax or a callable);
the forward pass may run under autocast or ``torch.compile``; and the adapter answers the questions the rest
of the pipeline asks of a model (how many outputs, which device and dtype, does it treat samples
independently, does it end in a linear readout, how much memory does one input take).

An adapter holds settings only. Whatever one call decides (the readout in use, chunk sizes, the input
layout's forward) lives in objects of that call, so nothing leaks into the next one;
:meth:`ModelAdapter.with_forward` returns a new adapter for an input layout.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from igcorr._validation import check_choice
from igcorr.errors import IgcorrError, InputError, ModelError

ScoreLike = str | Callable[[torch.Tensor], torch.Tensor] | None
#: which part of a model's output is attributed: the output itself (None), a key or attribute name (dicts,
#: HuggingFace ``ModelOutput``), a position (tuples) or a callable
OutputSelector = str | int | Callable[[Any], torch.Tensor] | None
#: inputs the model takes besides the attributed one (attention masks, token type ids, ...), by keyword, each
#: with one row per sample or path point
Extras = dict[str, torch.Tensor]


def take_rows(extras: Extras | None, index: torch.Tensor | slice) -> Extras:
    """The rows ``index`` of every extra input (an empty dict for none)."""
    return {name: value[index] for name, value in (extras or {}).items()}


def describe_output(output: Any) -> str:
    """What a model returned, for error messages: the type and its fields, keys or length."""
    name = type(output).__name__
    if isinstance(output, Mapping):
        return f"a {name} with keys {list(output.keys())}"
    if isinstance(output, (tuple, list)):
        kinds = [type(item).__name__ for item in output]
        return f"a {name} of {len(output)} items ({', '.join(kinds)})"
    return f"a {name}"
SCORES = ("softmax", "log_softmax")
AUTOCAST_DTYPES = (None, "bfloat16", "float16")

#: modules whose forward differs between training and evaluation mode
_MODE_DEPENDENT = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._NormBase)


@dataclass(frozen=True)
class Readout:
    """A final ``nn.Linear`` whose inputs are attributed instead of its K outputs (then projected, exactly)."""

    layer: nn.Linear
    name: str

    @property
    def width(self) -> int:
        return self.layer.in_features

    def projection(self, outputs: torch.Tensor) -> torch.Tensor:
        """The readout's weights of the selected outputs (K, H), float64, checked to be finite."""
        projection = self.layer.weight.detach()[outputs].to(torch.float64)
        if not bool(torch.isfinite(projection).all()):
            raise ModelError(f"the weights of the readout layer {self.name!r} hold NaN or infinite values")
        return projection

    def project(self, integrals: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        """Map integrals over the readout's H inputs (n, H, D) to the selected outputs (n, K, D)."""
        return torch.einsum("kh,nhd->nkd", self.projection(outputs), integrals)


#: layer types the first-layer shortcut integrates through: affine maps whose transpose igcorr applies itself
#: (these exact types: a subclass may compute more than its weight says, e.g. a low-rank adapter)
FIRST_LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_INPUT_GRADIENTS = {1: torch.nn.grad.conv1d_input, 2: torch.nn.grad.conv2d_input, 3: torch.nn.grad.conv3d_input}


@dataclass(frozen=True)
class FirstLayer:
    """An affine first layer (``nn.Linear`` or a zero-padded convolution) that alone reads the model's input.

    Along a straight path its outputs are affine in α too, L(b + α(x − b)) = L(b) + α(L(x) − L(b)), so the
    rest of the model can be evaluated on points of the layer's output space, each path's weighted gradients
    summed there and mapped back through the layer's transpose once per path: exact (float rounding aside),
    and the layer's forward and backward passes leave the per-point work.

    Attributes
    ----------
    layer : nn.Module
    name : str
        Its name in the model.
    in_shape, out_shape : tuple of int
        What the layer reads per sample (the model's input, viewed to this shape) and what it produces.
    padding : tuple of int
        A convolution's zero padding per side (empty for a linear layer).
    """

    layer: nn.Module
    name: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    padding: tuple[int, ...] = ()

    @property
    def width(self) -> int:
        """Values the layer produces per sample."""
        return int(np.prod(self.out_shape, dtype=np.int64))

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """The layer's outputs (n, *out_shape) at model inputs ``x`` (n, ...), without gradients."""
        with torch.no_grad():
            return self.layer(x.reshape(len(x), *self.in_shape))

    def pullback(self, cotangents: torch.Tensor) -> torch.Tensor:
        """Cotangents on the layer's outputs (R, *out_shape) mapped through its transpose to the input, (R, D)
        (the vector-Jacobian product; the bias plays no part)."""
        rows = len(cotangents)
        layer = self.layer
        weight = layer.weight.detach()
        if isinstance(layer, nn.Linear):
            pulled = cotangents.reshape(rows, *self.out_shape) @ weight
        else:
            gradient_of_input = _CONV_INPUT_GRADIENTS[weight.ndim - 2]
            pulled = gradient_of_input((rows, *self.in_shape), weight, cotangents.reshape(rows, *self.out_shape),
                                       layer.stride, self.padding, layer.dilation, layer.groups)
        return pulled.reshape(rows, -1)

    @contextlib.contextmanager
    def substituted(self, outputs: torch.Tensor) -> Iterator[None]:
        """Within the block the layer returns (a copy of) ``outputs``, whatever it is given (its forward is
        skipped). A copy, so that an in-place operation after the layer (``ReLU(inplace=True)``) does not
        touch ``outputs``, the tensor the gradients are taken with respect to."""
        layer = self.layer
        layer.forward = lambda *_args, **_kwargs: outputs.clone()
        try:
            yield
        finally:
            del layer.forward


def _first_layer_padding(layer: nn.Module) -> tuple[int, ...] | None:
    """A layer's zero padding per side if the shortcut can transpose it (() for linear layers), else None."""
    if type(layer) is nn.Linear:
        return ()
    if type(layer) not in FIRST_LAYER_TYPES or layer.padding_mode != "zeros":
        return None
    if not isinstance(layer.padding, str):
        return tuple(int(p) for p in layer.padding)
    if layer.padding == "valid":
        return (0,) * len(layer.kernel_size)
    total = [d * (k - 1) for d, k in zip(layer.dilation, layer.kernel_size)]  # padding="same"
    return None if any(t % 2 for t in total) else tuple(t // 2 for t in total)


def model_device_dtype(model: Any) -> tuple[torch.device | None, torch.dtype | None]:
    """Device and floating dtype of the model's first floating parameter or buffer (None, None if none)."""
    if not isinstance(model, nn.Module):
        return None, None
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return None, None


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


def submodule_name(model: nn.Module, module: nn.Module, what: str) -> str:
    """The name of ``module`` in ``model`` (its first in ``named_modules()``), with a clear error if absent."""
    for name, sub in model.named_modules():
        if sub is module:
            return name
    raise InputError(f"the {what} module given is not part of the model")


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


class ModelAdapter:
    """A model as a pure function of its inputs, with the attributed score applied.

    Parameters
    ----------
    model : nn.Module or callable
        Maps a batch (P, *x_shape) to outputs (P, K_model) (or (P,) for one output).
    score : None, "softmax", "log_softmax" or callable
        What is attributed for each output: the raw output, its softmax probability, its log-probability, or
        ``score(output)`` returning (P, K') for any callable.
    readout : "auto", False, str or nn.Linear
        Linear-readout shortcut (see :meth:`find_readout`).
    first_layer : "auto", False, str or nn.Module
        First-layer shortcut (see :meth:`find_first_layer`).
    autocast : None, "bfloat16" or "float16"
        Run the forward pass (and so the backward pass) under ``torch.autocast`` in that dtype; scores leave
        the model in the input's dtype.
    compile : bool or dict
        Run the forward pass through ``torch.compile`` where the path integrals ask for it (a dict holds
        ``torch.compile``'s keyword arguments).
    accept_integer_inputs : bool
        Convert integer and boolean inputs to float64 instead of refusing them (for the methods that take no
        gradients).
    output : None, str, int or callable
        Which part of the model's output is attributed, applied before anything else looks at it: None for a
        model that returns a tensor; a key or attribute name (``"logits"`` of a HuggingFace ``ModelOutput`` or
        of a dict); a position in a returned tuple; or a callable ``output -> tensor``.
    """

    def __init__(self, model: Callable[..., torch.Tensor], score: ScoreLike = None, *, readout: Any = "auto",
                 first_layer: Any = "auto", autocast: str | None = None, compile: bool | dict = False,
                 accept_integer_inputs: bool = False, output: OutputSelector = None) -> None:
        if not callable(model):
            raise InputError(f"model must be a torch.nn.Module or a callable, got {type(model).__name__}")
        if score is not None and not callable(score) and score not in SCORES:
            raise InputError(f"score must be None, 'softmax', 'log_softmax' or a callable, got {score!r}")
        check_choice(autocast, "autocast", AUTOCAST_DTYPES)
        if not isinstance(compile, (bool, dict)):
            raise InputError(f"compile must be True, False or a dict of torch.compile options, got {compile!r}")
        if not (output is None or isinstance(output, (str, int)) and not isinstance(output, bool) or callable(output)):
            raise InputError(f"output must be None, a key or attribute name, a tuple position or a callable, got "
                             f"{output!r}")
        if not (readout in ("auto", False, None) or isinstance(readout, (str, nn.Linear))):
            raise InputError(f"readout must be 'auto', False, a module name or an nn.Linear, got {readout!r}")
        if not (first_layer in ("auto", False, None) or isinstance(first_layer, (str, nn.Module))):
            raise InputError(f"first_layer must be 'auto', False, a module name or a module, got {first_layer!r}")
        self.model = model
        #: what is evaluated on attributed tensors: the model, or the model behind an input layout
        self.forward: Callable[[torch.Tensor], Any] = model
        self.score = score
        self.readout_request = readout
        self.first_layer_request = first_layer
        self.autocast = autocast
        self.compile_options: dict | None = (dict(compile) if isinstance(compile, dict) else {}) if compile else None
        self.accept_integer_inputs = accept_integer_inputs
        self.output = output
        self._compiled: tuple[Callable, Callable] | None = None  # (compiled forward, the forward it compiles)
        self.device, self.dtype = model_device_dtype(model)
        if self.device is not None and self.device.type == "meta":
            raise ModelError("the model's parameters are on the meta device (allocated without values); load its "
                             "weights first, e.g. model.to_empty(device='cpu') then load_state_dict(...)")
        #: TorchScript modules (scripted or traced) do not run forward hooks
        self.scripted = isinstance(model, torch.jit.ScriptModule)

    @property
    def module(self) -> nn.Module | None:
        """The model if it is an ``nn.Module``."""
        return self.model if isinstance(self.model, nn.Module) else None

    def with_forward(self, forward: Callable[[torch.Tensor], Any]) -> "ModelAdapter":
        """The same adapter evaluating ``forward`` (e.g. the model behind an input layout) instead."""
        adapter = copy.copy(self)
        adapter.forward = forward
        adapter._compiled = None
        return adapter

    # ------------------------------------------------------------------ model state
    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Freeze parameters and use evaluation mode for the duration of the block, then restore both.

        A model left in training mode that holds dropout or normalisation layers (whose outputs would then be
        random or depend on the batch) triggers a warning; other models are switched silently, as the mode
        changes nothing.
        """
        module = self.module
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

    # ------------------------------------------------------------------ inputs
    def prepare_inputs(self, x: torch.Tensor, name: str = "inputs") -> torch.Tensor:
        """Move inputs to the model's device and floating dtype; integer and boolean inputs are refused
        (unless the adapter accepts them, for methods without gradients)."""
        if not x.is_floating_point():
            if not self.accept_integer_inputs:
                raise InputError(
                    f"{name} have dtype {x.dtype}; gradients need continuous inputs. Convert them to float (e.g. "
                    "x.float() / 255 for images), or attribute in embedding space for token or category ids"
                )
            x = x.to(torch.float64)
        return x.to(device=self.device or x.device, dtype=self.dtype or x.dtype)

    # ------------------------------------------------------------------ scores
    def _compiled_forward(self) -> Callable[[torch.Tensor], Any]:
        if self._compiled is None or self._compiled[1] is not self.forward:
            self._compiled = (torch.compile(self.forward, **self.compile_options), self.forward)
        return self._compiled[0]

    def call(self, points: torch.Tensor, extras: Extras | None = None, compiled: bool = False) -> Any:
        """The model's raw output at ``points`` (with the extra inputs of each point, by keyword)."""
        forward = self._compiled_forward() if compiled and self.compile_options is not None else self.forward
        if self.autocast is None:
            return forward(points, **extras) if extras else forward(points)
        with torch.autocast(device_type=points.device.type, dtype=getattr(torch, self.autocast)):
            return forward(points, **extras) if extras else forward(points)

    def select(self, output: Any) -> torch.Tensor:
        """The attributed part of a model's output (see ``output``); a clear error when it is not a tensor."""
        selector = self.output
        if selector is not None:
            try:
                if callable(selector):
                    output = selector(output)
                elif isinstance(selector, int):
                    output = output[selector]
                elif isinstance(output, Mapping) and selector in output:
                    output = output[selector]
                else:
                    output = getattr(output, selector)
            except (KeyError, IndexError, AttributeError, TypeError) as error:
                raise ModelError(f"output={selector!r} cannot be taken from what the model returned, "
                                 f"{describe_output(output)}: {error}") from error
        if not isinstance(output, torch.Tensor):
            hint = ("choose the attributed tensor with output=<key or attribute> (e.g. output='logits'), "
                    "output=<position>, or a callable")
            raise ModelError(f"the model must return a tensor, got {describe_output(output)}; {hint}")
        return output

    def scores(self, points: torch.Tensor, compiled: bool = False, extras: Extras | None = None) -> torch.Tensor:
        """All attributed scores (P, K_model) at ``points``, differentiable; ``compiled`` uses the compiled
        forward when compilation was asked for; ``extras`` are the points' other inputs."""
        output = self.select(self.call(points, extras, compiled))
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

    def evaluate(self, x: torch.Tensor, outputs: torch.Tensor, chunk: int = 512,
                 extras: Extras | None = None) -> torch.Tensor:
        """Attributed scores of the selected ``outputs`` at ``x``, shape (n, K), without gradients, evaluated
        ``chunk`` inputs at a time."""
        with torch.no_grad():
            return torch.cat([self.scores(x[begin:begin + chunk], extras=take_rows(extras, slice(begin, begin + chunk)))
                              [:, outputs] for begin in range(0, len(x), chunk)])

    def n_outputs(self, x: torch.Tensor, extras: Extras | None = None) -> int:
        """Number of scores the model produces, from a forward pass on one input.

        This is the first call of the model in a run: an error the model raises on the data is reported as a
        :class:`ModelError` that names the inputs it was given.
        """
        try:
            with torch.no_grad():
                return self.scores(x[:1], extras=take_rows(extras, slice(0, 1))).shape[1]
        except IgcorrError:
            raise
        except Exception as error:  # the user's model may raise anything; name the inputs it got
            raise ModelError(
                f"the model failed on the first sample (inputs of shape {tuple(x[:1].shape)}, dtype {x.dtype}, "
                f"device {x.device}): {type(error).__name__}: {error}. Check that the data has the shape, dtype and "
                "device the model expects"
            ) from error

    def check_batch_independence(self, x: torch.Tensor, extras: Extras | None = None) -> None:
        """Refuse models whose output for one sample depends on the other samples of its batch.

        Path points of many samples share a forward pass, so such a model (batch statistics, attention across
        the batch, ...) would give silently wrong attributions. Compares a joint forward of the given samples
        with separate ones.
        """
        if len(x) < 2:
            return
        with torch.no_grad():
            joint = self.scores(x, extras=extras)
            separate = torch.cat([self.scores(x[i : i + 1], extras=take_rows(extras, slice(i, i + 1)))
                                  for i in range(len(x))])
        low_precision = self.autocast is not None or x.dtype in (torch.float16, torch.bfloat16)
        tolerance = 2e-2 if low_precision else 1e-5 if x.dtype == torch.float32 else 1e-9
        finite = joint[torch.isfinite(joint)]  # non-finite outputs are reported by the finiteness checks
        scale = (float(finite.abs().max()) if finite.numel() else 0.0) + 1e-30
        if not torch.allclose(joint, separate, rtol=tolerance, atol=tolerance * scale, equal_nan=True):
            raise ModelError(
                "the model's output for a sample changes with the other samples in its batch (batch statistics, "
                "e.g. a custom normalisation over the batch, or layers mixing samples). Attribution evaluates many "
                "samples and path points per forward pass, so the model must treat samples independently: use "
                "running statistics (eval mode) or remove the batch coupling"
            )

    # ------------------------------------------------------------------ structure
    def submodule(self, name: str, what: str) -> nn.Module:
        """The model's submodule ``name``, with a clear error listing the names."""
        return named_submodule(self.model, name, what)

    def find_readout(self, x: torch.Tensor, n_outputs: int, extras: Extras | None = None) -> Readout | None:
        """The linear readout to attribute through, or None.

        When the model's output is an ``nn.Linear`` layer's output (or the named layer's), the raw outputs are
        attributed (``score=None``) and more outputs are attributed than the layer has inputs, IG of each of
        the H readout inputs can be computed and projected with the weights (exact; the bias cancels): H
        backward passes instead of K. "auto" detects such a layer; a name or module asks for it (and errors
        if it cannot be used); False disables the shortcut.
        """
        request = self.readout_request
        module = self.module
        if request in (False, None) or module is None:
            return None
        if self.scripted:
            if request != "auto":
                raise InputError("the readout shortcut needs forward hooks, which TorchScript modules do not run; "
                                 "pass readout=False, or the eager (not scripted) model")
            return None
        named = dict(module.named_modules())
        if isinstance(request, str) and request != "auto":
            if request not in named or not isinstance(named[request], nn.Linear):
                linear = [name for name, sub in named.items() if isinstance(sub, nn.Linear)]
                raise InputError(f"readout {request!r} is not an nn.Linear of the model; its linear layers: {linear}")
            candidates = {request: named[request]}
        elif isinstance(request, nn.Linear):
            candidates = {submodule_name(module, request, "readout"): request}
        else:
            candidates = {name: sub for name, sub in named.items() if isinstance(sub, nn.Linear)}
        if not candidates:
            return None
        output, executed = self.observe(candidates, x, extras)
        output = self.select(output)
        produced = {name: out for name, _, out in executed}
        final = [name for name, out in produced.items() if out is output]
        explicit = request != "auto"
        if not final:
            if explicit:
                raise InputError("the readout layer's output is not the model's output, so it cannot be projected")
            return None
        layer = candidates[final[-1]]
        if self.score is not None:
            if explicit:
                raise InputError("the readout shortcut needs raw outputs (score=None): a score is not linear")
            return None
        if not explicit and n_outputs <= layer.in_features:
            return None
        return Readout(layer, final[-1])

    def find_first_layer(self, x: torch.Tensor, extras: Extras | None = None) -> FirstLayer | None:
        """The affine first layer to integrate straight paths through (see :class:`FirstLayer`), or None.

        Usable when an ``nn.Linear`` or a zero-padded ``nn.Conv1d/2d/3d`` (those exact types, without forward
        hooks or a patched forward) reads the model's input itself (the input or a reshaping view of it, one
        row per sample, nothing computed before it), runs once per forward pass, and nothing else reads the
        input. The last is checked on two samples: with the layer's true outputs substituted, inputs of NaN,
        of zeros and of the other sample must give the same scores and the same gradients with respect to the
        layer's outputs as the true inputs (a read elsewhere, a comparison such as ``x == 0``, a branch on the
        input's values or a recomputation of the layer during the backward pass would change one of them).
        Not under ``torch.compile`` or autocast. "auto" detects such a layer; a name or module asks for it (and
        errors if it cannot be used); False disables the shortcut.
        """
        request = self.first_layer_request
        module = self.module
        if request in (False, None) or module is None:
            return None
        explicit = request != "auto"

        def refuse(reason: str) -> None:
            if explicit:
                raise InputError(f"the first-layer shortcut cannot be used: {reason}; pass first_layer='auto' or "
                                 "False")
            return None

        if self.scripted:
            return refuse("TorchScript modules do not run forward hooks")
        if self.compile_options is not None or self.autocast is not None:
            return refuse("it does not combine with compile or autocast")
        if isinstance(request, str) and request != "auto":
            candidates = {request: named_submodule(module, request, "first layer")}
        elif isinstance(request, nn.Module):
            candidates = {submodule_name(module, request, "first-layer"): request}
        else:
            candidates = {name: sub for name, sub in module.named_modules() if type(sub) in FIRST_LAYER_TYPES}
        if not candidates:
            return None
        probe = x[:2].clone(memory_format=torch.contiguous_format)
        probe_extras = take_rows(extras, slice(0, 2))
        calls: list[tuple[str, nn.Module, Any, Any]] = []

        def record(layer: nn.Module, inputs: tuple, out: Any, name: str) -> None:
            seen = inputs[0] if inputs else None
            calls.append((name, layer, seen, out.clone() if isinstance(out, torch.Tensor) else out))

        handles = [sub.register_forward_hook(lambda m, i, o, name=name: record(m, i, o, name))
                   for name, sub in candidates.items()]
        try:
            with torch.no_grad():
                reference = self.scores(probe, extras=probe_extras)
        finally:
            for handle in handles:
                handle.remove()
        reading = [(name, layer, seen, out) for name, layer, seen, out in calls
                   if isinstance(seen, torch.Tensor) and seen.data_ptr() == probe.data_ptr()
                   and seen.is_contiguous() and seen.numel() == probe.numel() and seen.dtype == probe.dtype
                   and seen.ndim > 0 and seen.shape[0] == len(probe)]
        if not reading:
            return refuse("no linear or convolution layer reads the model's input directly, one row per sample")
        name, layer, seen, out = reading[0]
        padding = _first_layer_padding(layer)
        if padding is None:
            return refuse(f"{name!r} is not an nn.Linear or a zero-padded convolution (subclasses are not used: "
                          "they may compute more than their weight)")
        if (layer._forward_hooks or layer._forward_pre_hooks or "forward" in layer.__dict__
                or layer.weight.device.type == "meta"):
            return refuse(f"{name!r} has forward hooks, a replaced forward or weights not in memory")
        if (sum(1 for _, called, _, _ in calls if called is layer) != 1 or not isinstance(out, torch.Tensor)
                or out.ndim == 0 or out.shape[0] != len(probe)):
            return refuse(f"{name!r} runs more than once per forward pass, or not once per sample")
        shortcut = FirstLayer(layer, name, tuple(seen.shape[1:]), tuple(out.shape[1:]), padding)
        if not self._reads_only_through(shortcut, out, probe, reference, probe_extras):
            return refuse(f"the model reads its input elsewhere than in {name!r}")
        return shortcut

    def _reads_only_through(self, shortcut: FirstLayer, layer_outputs: torch.Tensor, probe: torch.Tensor,
                            reference: torch.Tensor, extras: Extras) -> bool:
        """Whether the scores and their gradients with respect to the layer's (substituted) outputs stay the same
        whatever else the model is given as input (see :meth:`find_first_layer`). The model's buffers are
        restored afterwards, in case a forward pass on NaN changed them."""
        module = self.module
        saved = [(buffer, buffer.clone()) for buffer in module.buffers()] if module is not None else []
        generator = torch.Generator().manual_seed(0)
        mixing = torch.randn(reference.shape[1], generator=generator, dtype=torch.float64).to(reference)

        def through_layer(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            outputs = layer_outputs.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                with shortcut.substituted(outputs):
                    scores = self.scores(inputs, extras=extras)
                # outside the substitution, as in a run: a layer recomputed during the backward pass would show
                (gradient,) = torch.autograd.grad((scores * mixing).sum(), outputs, allow_unused=True)
            return scores.detach(), torch.zeros_like(outputs) if gradient is None else gradient

        def same(a: torch.Tensor, b: torch.Tensor) -> bool:
            scale = float(b.abs().max()) if b.numel() else 0.0
            return bool(np.isfinite(scale) and torch.allclose(a, b, rtol=1e-5, atol=1e-6 * scale + 1e-30))

        try:
            true_scores, true_gradient = through_layer(probe)
            if not same(true_scores, reference):
                return False
            for placeholder in (torch.full_like(probe, float("nan")), torch.zeros_like(probe), probe.flip(0)):
                scores, gradient = through_layer(placeholder)
                if not (same(scores, true_scores) and same(gradient, true_gradient)):
                    return False
            return True
        except Exception:  # a model that checks its input, for instance: it reads more than the layer does
            return False
        finally:
            with torch.no_grad():
                for buffer, value in saved:
                    buffer.copy_(value)

    def require_hooks(self, feature: str, instead: str) -> None:
        """Refuse a feature that needs forward hooks on a TorchScript model, saying what to use instead."""
        if self.scripted:
            raise ModelError(f"{feature} needs forward hooks, which TorchScript modules (torch.jit.script or "
                             f"torch.jit.trace) do not run; {instead}")

    def observe(self, modules: dict[str, nn.Module], x: torch.Tensor,
                extras: Extras | None = None) -> tuple[Any, list[tuple[str, nn.Module, Any]]]:
        """One forward pass without gradients on ``x[:1]``: the output and, in the order they ran, the
        (name, module, output) of each of the given submodules."""
        self.require_hooks("probing the model's layers", "pass the eager model")
        executed: list[tuple[str, nn.Module, Any]] = []
        handles = [sub.register_forward_hook(lambda m, _i, out, name=name: executed.append((name, m, out)))
                   for name, sub in modules.items()]
        try:
            with torch.no_grad():
                output = self.call(x[:1], take_rows(extras, slice(0, 1)))
        finally:
            for handle in handles:
                handle.remove()
        return output, executed

    def activation_bytes(self, x: torch.Tensor, extras: Extras | None = None) -> int:
        """Bytes of the leaf modules' outputs for one input like ``x[:1]`` (the activations a forward keeps)."""
        module = self.module
        if module is None or self.scripted:
            return 0  # the caller falls back to an estimate from the input size
        leaves = {name: sub for name, sub in module.named_modules() if not list(sub.children())}
        _, executed = self.observe(leaves, x, extras)
        sizes = [out.numel() * out.element_size() for _, _, out in executed if isinstance(out, torch.Tensor)]
        return sum(sizes)

    def describe_score(self) -> str:
        """Name of the score for metadata."""
        return describe_score(self.score)
