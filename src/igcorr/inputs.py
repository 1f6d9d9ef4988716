"""Input layouts: how the inputs a model takes become the one float tensor that igcorr attributes.

igcorr's engine attributes a single floating tensor per sample. A layout maps a model's real inputs to it and
back, so every method, reducer, checkpoint and multi-process run works unchanged:

* :class:`SingleInput` (the default for one tensor): the identity;
* :class:`MultipleInputs` (chosen automatically when samples are tuples or dicts of tensors): every input is
  flattened and the flat vectors are concatenated; the model sees its inputs rebuilt from the slices, and the
  maps are split back per input (``result["name"]`` or ``result.input_maps()``);
* :class:`Embedded`: token or category ids are attributed in embedding space. The path runs between the
  embedded baseline and the embedded input; a forward hook replaces the output of the named embedding module
  by the path point (or the model takes the point by keyword, ``embeds=``), and each sample's attribution is
  reduced to one value per token (sum over the embedding dimensions by default, or any function applied per
  sample before the dataset reduction), per position or binned per token id (``per="id"``). Positions that a
  mask leaves out (padding) are held at the input along the path, so nothing is attributed to them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from igcorr._validation import check_choice, check_int, check_optional_positive_int
from igcorr.errors import InputError, ModelError, ShapeError
from igcorr.model import named_submodule


def is_structured(x: Any) -> bool:
    """Whether a raw input is several tensors (a tuple, list or dict) rather than one."""
    return isinstance(x, (tuple, list, Mapping))


def members(x: Any) -> list[tuple[str, Any]]:
    """(name, value) pairs of a structured input; tuple members are named input_0, input_1, ..."""
    if isinstance(x, Mapping):
        return [(str(name), value) for name, value in x.items()]
    return [(f"input_{i}", value) for i, value in enumerate(x)]


def rebuild(x: Any, values: list[Any]) -> Any:
    """A structure like ``x`` holding ``values`` in its members' order."""
    if isinstance(x, Mapping):
        return dict(zip(x.keys(), values))
    return type(x)(values) if isinstance(x, tuple) else list(values)


class InputLayout:
    """Base class: encode raw inputs to the attributed tensor, adapt the model, and name the maps."""

    #: per-input names and shapes of the maps, filled by :meth:`fit`
    names: list[str]
    shapes: list[tuple[int, ...]]

    def fit(self, raw: Any, model: Any) -> None:
        """Learn the layout from a few raw inputs (and the model, for embeddings)."""

    def encode(self, raw: Any) -> torch.Tensor:
        """Raw inputs of n samples → attributed tensor (n, *attributed_shape)."""
        raise NotImplementedError

    def extras(self, raw: Any) -> dict[str, torch.Tensor]:
        """Raw inputs of n samples → the inputs the model takes but that are not attributed, by name, each
        (n, ...); they reach ``wrap``'s callable as keyword arguments, the rows of each path point's sample."""
        return {}

    def wrap(self, model: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        """A callable ``f(attributed, **extras)`` that runs ``model`` on the rebuilt inputs."""
        return model

    def encode_baselines(self, baselines: Any) -> Any:
        """Per-input baselines (a tuple/dict) → a baseline tensor in attributed space; others pass through."""
        return baselines

    def reduce(self, attributions: torch.Tensor, extras: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Per-sample attributions (n, K, *attributed_shape) → what is reduced over the dataset; ``extras`` are
        the batch's inputs from :meth:`extras` (the dataset run passes them; None for a shape probe)."""
        return attributions

    def split(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Maps (K, *map_shape) → per-input maps {name: (K, *shape)}."""
        return {self.names[0]: flat}

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description for result metadata."""
        description = {"kind": type(self).__name__, "names": self.names, "shapes": [list(s) for s in self.shapes]}
        others = [name for name in getattr(self, "all_names", self.names) if name not in self.names]
        if others:
            description["not_attributed"] = others
        return description


class SingleInput(InputLayout):
    """One tensor per sample, attributed as it is."""

    def fit(self, raw: Any, model: Any) -> None:
        self.names, self.shapes = ["input"], [tuple(raw.shape[1:])]

    def encode(self, raw: Any) -> torch.Tensor:
        return raw


class MultipleInputs(InputLayout):
    """Several tensors per sample (tuple or dict), flattened and concatenated; the model gets them back.

    Parameters
    ----------
    attributed : sequence of str, optional
        The names of the inputs that are attributed (dict keys, or ``input_0``, ``input_1``, ... for tuples);
        the others (attention masks, token type ids, ...) go to the model unchanged, each path point with its
        sample's. Default: every input is attributed.
    """

    def __init__(self, attributed: Sequence[str] | None = None) -> None:
        if attributed is not None and (isinstance(attributed, str) or not all(isinstance(n, str) for n in attributed)
                                       or not attributed):
            raise InputError(f"attributed must be a non-empty list of input names, got {attributed!r}")
        self.attributed = None if attributed is None else list(attributed)

    def fit(self, raw: Any, model: Any) -> None:
        parts = members(raw)
        if not parts:
            raise InputError("a sample's inputs are an empty tuple/dict")
        self._template = raw
        self.all_names = [name for name, _ in parts]
        if self.attributed is not None:
            unknown = [name for name in self.attributed if name not in self.all_names]
            if unknown:
                raise InputError(f"attributed names {unknown} are not inputs of the samples; their inputs are "
                                 f"{self.all_names}")
        chosen = self.attributed or self.all_names
        parts = [(name, value) for name, value in parts if name in chosen]
        self.names = [name for name, _ in parts]
        self.shapes = [tuple(torch.as_tensor(value).shape[1:]) for _, value in parts]
        self.sizes = [int(np.prod(shape, dtype=np.int64)) for shape in self.shapes]
        dtypes = {torch.as_tensor(value).dtype for _, value in parts}
        if any(not dtype.is_floating_point for dtype in dtypes):
            raise InputError(
                f"inputs {self.names} have dtypes {sorted(map(str, dtypes))}; every attributed input must be "
                "floating point. Attribute token or category ids in embedding space with igcorr.inputs.Embedded, "
                "or leave them out of the attributed inputs (MultipleInputs(attributed=[...]))"
            )

    def extras(self, raw: Any) -> dict[str, torch.Tensor]:
        return {name: torch.as_tensor(value) for name, value in members(raw) if name not in self.names}

    def encode(self, raw: Any) -> torch.Tensor:
        parts = members(raw)
        if [name for name, _ in parts] != self.all_names:
            raise ShapeError(f"a sample has inputs {[n for n, _ in parts]}, earlier samples {self.all_names}")
        parts = [(name, value) for name, value in parts if name in self.names]
        tensors = [torch.as_tensor(value) for _, value in parts]
        for name, tensor, shape in zip(self.names, tensors, self.shapes):
            if tuple(tensor.shape[1:]) != shape:
                raise ShapeError(f"input {name!r} has shape {tuple(tensor.shape[1:])}, earlier samples {shape}")
        dtype = torch.promote_types(*[t.dtype for t in tensors]) if len(tensors) > 1 else tensors[0].dtype
        return torch.cat([t.reshape(len(t), -1).to(dtype) for t in tensors], dim=1)

    def _unflatten(self, flat: torch.Tensor) -> list[torch.Tensor]:
        pieces = flat.split(self.sizes, dim=-1)
        return [piece.reshape(*flat.shape[:-1], *shape) for piece, shape in zip(pieces, self.shapes)]

    def wrap(self, model: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        template = self._template

        def forward(flat: torch.Tensor, **extras: torch.Tensor) -> torch.Tensor:
            values = {**dict(zip(self.names, self._unflatten(flat))), **extras}
            if isinstance(template, Mapping):
                return model(**values)
            return model(*[values[name] for name in self.all_names])

        return forward

    def encode_baselines(self, baselines: Any) -> Any:
        if not is_structured(baselines):
            return baselines
        parts = members(baselines)
        if len(parts) != len(self.names):
            raise ShapeError(f"{len(parts)} baselines were given for {len(self.names)} inputs {self.names}")
        stacks = []
        counts = set()
        for (name, value), shape in zip(parts, self.shapes):
            if isinstance(value, (int, float)):
                value = torch.full(shape, float(value))
            tensor = torch.as_tensor(value, dtype=torch.get_default_dtype()) if not isinstance(value, torch.Tensor) \
                else value
            if tuple(tensor.shape) == shape:
                tensor = tensor.unsqueeze(0)
            if tuple(tensor.shape[1:]) != shape:
                raise ShapeError(f"the baseline of input {name!r} has shape {tuple(tensor.shape)}; give {shape} "
                                 f"or a stack (M, {', '.join(map(str, shape))})")
            counts.add(len(tensor))
            stacks.append(tensor)
        if len(counts - {1}) > 1:
            raise ShapeError(f"per-input baseline stacks have different counts {sorted(counts)}")
        count = max(counts)
        flat = torch.cat([s.expand(count, *s.shape[1:]).reshape(count, -1).to(stacks[0].dtype) for s in stacks], 1)
        return flat[0] if count == 1 else flat

    def split(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        flat = np.asarray(flat).reshape(len(flat), -1)
        bounds = np.cumsum([0] + self.sizes)
        return {name: flat[:, bounds[i] : bounds[i + 1]].reshape(len(flat), *shape)
                for i, (name, shape) in enumerate(zip(self.names, self.shapes))}


#: what an Embedded layout's map is indexed by
PER_CHOICES = ("position", "id")


class Embedded(InputLayout):
    """Token or category ids attributed in the space of an embedding module's output.

    Parameters
    ----------
    module : str or nn.Module
        The embedding module (a name from ``model.named_modules()``, e.g.
        ``"bert.embeddings.word_embeddings"``, or the module itself). Its output for a sample's ids is that
        sample's end of the path. With ``embeds=`` it may be a module outside the model (the eager embedding
        of a traced model, whose submodules cannot be called). The model still gets the real ids, so anything else it derives from them
        (position ids, a padding mask) stays the sample's own along the path.
    reduce : "sum", None or callable
        Per sample, attributions (n, K, L, E) become (n, K, L) by summing over the embedding dimensions
        ("sum", which keeps completeness), stay per dimension (None), or go through ``reduce`` (any function
        of (n, K, L, E) tensors, applied per sample before the dataset-wise reduction, e.g. an L2 norm).
    input : str, optional
        For samples that hold several inputs (a dict, or a tuple named ``input_0``, ``input_1``, ...): the name
        of the ids that are attributed (default ``"input_ids"`` for dicts, ``input_0`` for tuples). The other
        inputs (attention masks, token type ids, ...) go to the model unchanged, each path point with its
        sample's.
    mask : str, optional
        The name of a 0/1 input of the samples (e.g. ``"attention_mask"``) marking the positions that are
        attributed. Where it is 0 (padding) the path stays at the sample's own embedding, as if the baseline
        were the input there: nothing is attributed to those positions. The baseline then keeps each sample's
        padding, so for a model that reads padded positions its prediction varies between samples (the
        result's baseline term). The mask is still passed to the model.
    per : "position" or "id"
        What the map is indexed by: the positions of the sequence (default), or the vocabulary: per sample,
        the contributions of all positions holding an id are added into that id's bin, so the dataset map has
        one value per vocabulary entry and the same total (see :mod:`igcorr.text` for the top tokens and
        their counts).
    vocab_size : int, optional
        Number of ids for ``per="id"``; by default the ``num_embeddings`` of an ``nn.Embedding`` module.
    fixed_ids : sequence of int, optional
        Ids whose positions are held at the input like masked-out positions (e.g. ``[CLS]`` and ``[SEP]``): not
        attributed, whatever the baseline.
    embeds : str, optional
        The keyword by which the model takes the embedded inputs instead of the ids (``"inputs_embeds"`` for
        HuggingFace models). The path points are then passed to the model directly, without a forward hook,
        which is what TorchScript models (scripted or traced) need; the ids are not passed.

    Notes
    -----
    Baselines are given in embedding space: ``None`` is the zero vector at every position; for a padding-token
    baseline pass the embedded padding sequence, built by :func:`igcorr.text.token_baseline`.
    """

    def __init__(self, module: str | nn.Module,
                 reduce: str | Callable[[torch.Tensor], torch.Tensor] | None = "sum", input: str | None = None, *,
                 mask: str | None = None, per: str = "position", vocab_size: int | None = None,
                 fixed_ids: Sequence[int] | None = None, embeds: str | None = None) -> None:
        if not isinstance(module, (str, nn.Module)) or module == "":
            raise InputError(f"module must be an embedding module or its name in model.named_modules(), got "
                             f"{module!r}")
        if not (reduce is None or reduce == "sum" or callable(reduce)):
            raise InputError(f"reduce must be 'sum', None or a callable, got {reduce!r}")
        for value, name, what in ((input, "input", "the name of the ids among the sample's inputs"),
                                  (mask, "mask", "the name of the 0/1 mask among the sample's inputs"),
                                  (embeds, "embeds", "the keyword by which the model takes embeddings")):
            if value is not None and (not isinstance(value, str) or not value):
                raise InputError(f"{name} must be {what}, got {value!r}")
        check_choice(per, "per", PER_CHOICES)
        check_optional_positive_int(vocab_size, "vocab_size", hint="the number of token ids")
        if fixed_ids is not None and (isinstance(fixed_ids, (str, bytes)) or not isinstance(fixed_ids, Iterable)):
            raise InputError(f"fixed_ids must be a list of token ids, got {fixed_ids!r}")
        self.module_request = module
        self.reduce_request = reduce
        self.input_request = input
        self.mask = mask
        self.per = per
        self.vocab_request = vocab_size
        self.fixed_ids = None if fixed_ids is None else [
            check_int(i, "every entry of fixed_ids", minimum=0, hint="a token id") for i in fixed_ids]
        self.embeds = embeds
        self.module: nn.Module | None = None
        self._template: Any = None

    # ------------------------------------------------------------------ the ids and the kept positions
    def _ids(self, raw: Any) -> torch.Tensor:
        if self._template is None:
            return torch.as_tensor(raw)
        values = dict(members(raw))
        if list(values) != self.all_names:
            raise ShapeError(f"a sample has inputs {list(values)}, earlier samples {self.all_names}")
        return torch.as_tensor(values[self.input_name])

    def extras(self, raw: Any) -> dict[str, torch.Tensor]:
        """Every input of the samples, the ids included (the model gets the real ids with each path point, and
        the per-id reduction bins by them)."""
        if self._template is None:
            return {self.input_name: self._ids(raw)}
        self._ids(raw)  # checks the inputs' names
        return {name: torch.as_tensor(value) for name, value in members(raw)}

    def _kept(self, ids: torch.Tensor, extras: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        """Boolean (n, *id_shape): the positions that are attributed (None: all of them)."""
        keep = None
        if self.mask is not None:
            keep = extras[self.mask] != 0
            if tuple(keep.shape) != tuple(ids.shape):
                raise ShapeError(f"the mask {self.mask!r} has shape {tuple(keep.shape[1:])} per sample, the ids "
                                 f"{tuple(ids.shape[1:])}; it needs one entry per token")
        if self.fixed_ids:
            held = torch.isin(ids, torch.as_tensor(self.fixed_ids, dtype=ids.dtype, device=ids.device))
            keep = ~held if keep is None else keep & ~held
        return keep

    @staticmethod
    def _spread(keep: torch.Tensor, like: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """``keep`` (n, *id_shape) with singleton dimensions so that it broadcasts against ``like``, whose
        positions start at dimension ``1 + offset``."""
        shape = (len(keep),) + (1,) * offset + tuple(keep.shape[1:])
        return keep.reshape(shape + (1,) * (like.ndim - len(shape)))

    # ------------------------------------------------------------------ fitting
    def fit(self, raw: Any, model: Any) -> None:
        self._template = None
        if is_structured(raw):
            names = [name for name, _ in members(raw)]
            default = "input_ids" if isinstance(raw, Mapping) else "input_0"
            self.input_name = self.input_request or default
            if self.input_name not in names:
                raise InputError(f"the samples' inputs are {names}; name the token ids among them with "
                                 f"Embedded(..., input=<name>)")
            if self.mask is not None and (self.mask not in names or self.mask == self.input_name):
                raise InputError(f"mask={self.mask!r} is not one of the samples' other inputs {names}")
            if self.embeds is not None and not isinstance(raw, Mapping):
                raise InputError("embeds= passes the embeddings by keyword, so the samples must be dicts of named "
                                 "inputs, not tuples")
            self._template, self.all_names = raw, names
        else:
            for value, name in ((self.input_request, "input"), (self.mask, "mask")):
                if value is not None:
                    raise InputError(f"{name}={value!r} names one of several inputs, but the samples hold one "
                                     "tensor of ids")
            self.input_name = "input"
        ids = self._ids(raw)
        if ids.is_floating_point():
            raise InputError(f"Embedded expects integer ids, got dtype {ids.dtype}")
        if not isinstance(model, nn.Module):
            raise InputError("Embedded needs an nn.Module model holding the embedding module")
        if isinstance(model, torch.jit.ScriptModule) and self.embeds is None:
            raise ModelError("token attribution through the embedding module's output (Embedded) needs forward "
                             "hooks, which TorchScript modules (torch.jit.script or torch.jit.trace) do not run; "
                             "give a model that takes the embeddings by keyword with Embedded(..., embeds=<keyword>), "
                             "or pass the eager model")
        if isinstance(self.module_request, nn.Module):
            self.module = self.module_request
            if self.embeds is None and all(sub is not self.module for sub in model.modules()):
                raise InputError("the embedding module given is not part of the model")
        else:
            self.module = named_submodule(model, self.module_request, "embedding module")
        self.id_shape = tuple(ids.shape[1:])
        if self.mask is not None:
            self._kept(ids, dict(members(raw)))  # the mask's shape
        self.vocab_size = None
        if self.per == "id":
            self.vocab_size = self.vocab_request or getattr(self.module, "num_embeddings", None)
            if not isinstance(self.vocab_size, int):
                raise InputError("per='id' needs the number of token ids: pass Embedded(..., vocab_size=<int>) "
                                 "(it is read from nn.Embedding modules)")
            self._check_vocabulary(ids)
        try:
            embedded = self._embed(ids[:1])
        except RuntimeError as error:
            raise ModelError(f"the embedding module cannot embed the ids on its own ({error}); a submodule of a "
                             "traced model cannot be called: pass the eager embedding module with "
                             "Embedded(module, embeds=<keyword>)") from error
        self.embedded_shape = tuple(embedded.shape[1:])
        aligned = self.embedded_shape[:len(self.id_shape)] == self.id_shape
        if (self.mask is not None or self.fixed_ids or self.per == "id") and not aligned:
            raise InputError(f"the embedding module maps ids of shape {self.id_shape} to {self.embedded_shape}; "
                             "mask=, fixed_ids= and per='id' need one embedding per token")
        self.names, self.shapes = ["tokens"], [self.map_shape]

    def _check_vocabulary(self, ids: torch.Tensor) -> None:
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise InputError(f"token ids range from {int(ids.min())} to {int(ids.max())}, outside the vocabulary "
                             f"0 .. {self.vocab_size - 1} of the per-id map; give Embedded(..., vocab_size=...)")

    @property
    def map_shape(self) -> tuple[int, ...]:
        """Shape of one sample's map after the reduction."""
        probe = torch.zeros((1, 1) + self.embedded_shape, dtype=torch.float64)
        shape = tuple(self._reduce_embedding(probe).shape[2:])
        if self.per == "id":
            if shape[:len(self.id_shape)] != self.id_shape:
                raise InputError(f"per='id' needs a reduce that keeps the token positions {self.id_shape}; it gave "
                                 f"maps of shape {shape}")
            return (self.vocab_size,) + shape[len(self.id_shape):]
        return shape

    # ------------------------------------------------------------------ encoding and the model
    def encode(self, raw: Any) -> torch.Tensor:
        return self._embed(self._ids(raw))

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        if tuple(ids.shape[1:]) != getattr(self, "id_shape", tuple(ids.shape[1:])):
            raise ShapeError(f"ids of shape {tuple(ids.shape[1:])}, earlier samples {self.id_shape}")
        device = next((p.device for p in self.module.parameters()), ids.device)
        with torch.no_grad():
            return self.module(ids.to(device)).detach()

    def wrap(self, model: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        module = self.module
        template = self._template

        def forward(embedded: torch.Tensor, **extras: torch.Tensor) -> torch.Tensor:
            extras = dict(extras)
            ids = extras.pop(self.input_name)
            keep = self._kept(ids, extras)
            if self.embeds is not None:
                points = embedded
                if keep is not None:
                    with torch.no_grad():
                        own = module(ids)
                    points = torch.where(self._spread(keep, embedded), embedded, own)
                return model(**{**extras, self.embeds: points})

            def replace(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
                # the module's own output (for the real ids) where the positions are held at the input
                return embedded if keep is None else torch.where(self._spread(keep, embedded), embedded, output)

            handle = module.register_forward_hook(replace)
            try:
                if template is None:
                    return model(ids, **extras)
                values = {**extras, self.input_name: ids}
                if isinstance(template, Mapping):
                    return model(**values)
                return model(*[values[name] for name in self.all_names])
            finally:
                handle.remove()

        return forward

    # ------------------------------------------------------------------ maps
    def _reduce_embedding(self, attributions: torch.Tensor) -> torch.Tensor:
        if self.reduce_request is None:
            return attributions
        if self.reduce_request == "sum":
            return attributions.sum(dim=-1)
        reduced = self.reduce_request(attributions)
        if not isinstance(reduced, torch.Tensor) or tuple(reduced.shape[:2]) != tuple(attributions.shape[:2]):
            raise InputError("the reduce function must map (n, K, *embedded_shape) to (n, K, ...)")
        return reduced

    def reduce(self, attributions: torch.Tensor, extras: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Per-sample attributions (n, K, *embedded_shape) → (n, K, *map_shape): reduced over the embedding,
        zero at the positions that are not attributed, and binned by id for ``per="id"`` (which needs the
        batch's inputs, ``extras``)."""
        reduced = self._reduce_embedding(attributions)
        if extras is None or self.input_name not in extras:
            if self.per == "id":
                if bool((reduced != 0).any()):
                    raise InputError("per='id' maps need the batch's token ids: reduce(attributions, extras)")
                return reduced.new_zeros((len(reduced), reduced.shape[1]) + self.map_shape)
            return reduced
        ids = torch.as_tensor(extras[self.input_name]).to(reduced.device)
        keep = self._kept(ids, {name: torch.as_tensor(value).to(reduced.device) for name, value in extras.items()})
        positions = tuple(reduced.shape[2:2 + len(self.id_shape)]) == self.id_shape
        if keep is not None and positions:  # held positions have zero gradients: make their zeros exact
            reduced = reduced * self._spread(keep, reduced, offset=1).to(reduced.dtype)
        if self.per == "position":
            return reduced
        self._check_vocabulary(ids)
        n, k = reduced.shape[:2]
        rest = tuple(reduced.shape[2 + len(self.id_shape):])
        flat = reduced.reshape((n, k, -1) + rest)
        index = ids.reshape((n, 1, -1) + (1,) * len(rest)).expand_as(flat)
        return flat.new_zeros((n, k, self.vocab_size) + rest).scatter_add_(2, index, flat)

    def split(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        return {"tokens": flat}

    def describe(self) -> dict[str, Any]:
        reduce = self.reduce_request if isinstance(self.reduce_request, (str, type(None))) else \
            getattr(self.reduce_request, "__name__", "callable")
        return {"kind": "Embedded", "names": self.names, "shapes": [list(s) for s in self.shapes],
                "embedded_shape": list(self.embedded_shape), "reduce": reduce, "input": self.input_name,
                "mask": self.mask, "per": self.per, "vocab_size": self.vocab_size, "fixed_ids": self.fixed_ids,
                "embeds": self.embeds}


def choose_layout(raw: Any, requested: InputLayout | None) -> InputLayout:
    """The layout for data whose first inputs are ``raw``: the requested one, or single/multiple by form."""
    if requested is not None:
        if not isinstance(requested, InputLayout):
            raise InputError(f"inputs must be an igcorr.inputs layout (e.g. Embedded(...)), got {requested!r}")
        return requested
    return MultipleInputs() if is_structured(raw) else SingleInput()
