"""The reducer protocol, and reducer state that is declared once.

A reducer consumes per-sample quantities batch by batch (``update``), combines exactly with another reducer
that saw other samples (``merge``), can be emptied (``reset``), exposes its state as a dict of tensors
(``state_dict`` / ``load_state_dict``) and turns it into maps and per-output diagnostics (``compute``).
Chunked, resumed and multi-process runs are therefore the same computation as one pass, up to float64 rounding.

Declared state
--------------
Only ``update`` and ``compute`` are written by hand. Everything else follows from a declaration that every
:class:`Accumulator` (reducers and the helper accumulators they are built from) makes once, in ``__init__``::

    self.add_config("outputs", outputs)                     # must agree for a merge or a load
    self.add_state("count", 0, combine="sum")               # a Python int (saved as an int64 0-d tensor)
    self.add_state("largest", None, combine="max")          # a tensor, allocated by the first update
    self.add_state("x_shape", None, combine="same", kind="shape")
    self.add_state("scalars", CoMoment())                   # a nested accumulator
    self.add_joint_state({"count": 0, "mean_a": None, "mean_b": None, "comoment": None},
                         combine=chan_combine)              # pieces combined together

A *combine rule* says how the state of this accumulator and that of another one (other samples) become the
state of both: ``"sum"``, ``"max"``, ``"or"``, ``"same"`` (must agree, e.g. the input shape), a function
``(mine, theirs) -> value`` for one piece, or a function ``(mine: dict, theirs: dict) -> dict`` for a joint
state such as Chan et al.'s pairwise update of a co-moment. From the declaration the base class derives

* ``merge(other)``: checks that ``other`` has the same configuration, then combines every declaration in the
  order it was made (so declare the pieces that only check, like ``"same"``, first);
* ``fold(**summary)``: combines a batch summary into the state with the very rule a merge uses, which is what
  most ``update`` methods do after summarising their batch;
* ``reset()``: every piece back to its default, nested accumulators reset;
* ``state_dict()``: ``config.<name>`` for each configuration entry, one key per piece, ``<child>.<key>`` for
  nested accumulators. The key set is fixed by the declaration: a piece not allocated yet is saved as
  :func:`unset` (an empty uint8 tensor, a dtype no real piece has). The tensors are the live state, not
  copies (updates may change them in place): serialise them at once or clone them;
* ``load_state_dict(state)``: refuses, with :class:`StateDictError` (a :class:`~igcorr.errors.ResultFileError`
  that is also an :class:`~igcorr.errors.InputError`), a state with missing or unexpected keys, malformed
  pieces, or another configuration; otherwise restores copies of the saved tensors.

Numerics: every piece is float64 (or int64 / bool); co-moments combine by Chan's pairwise update, so the
result does not depend on batching beyond float64 rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from igcorr.errors import InputError, ResultFileError, ShapeError


class StateDictError(ResultFileError, InputError):
    """A saved reducer state that does not belong to the reducer loading it: missing or unexpected keys,
    malformed pieces or another configuration (a checkpoint written by another version or another run, or
    altered)."""


@dataclass
class SampleBatch:
    """Per-sample quantities handed to reducers (float64 tensors on the model's device).

    Attributes
    ----------
    indices : LongTensor (n,)
        Global sample indices.
    inputs : Tensor (n, *x_shape)
    targets : Tensor (n, K)
    attributions : Tensor (n, K, *x_shape), optional
        Per-sample attributions (IG, Baseline Shapley, ...) for methods that use them.
    predictions : Tensor (n, K), optional
        Attributed score at each input.
    baseline_predictions : Tensor (n, K), optional
        Attributed score averaged over each sample's baselines.
    attribution_variance : Tensor (n, K, *x_shape), optional
        Monte-Carlo estimators: the variance of each per-sample attribution estimate.
    steps : Tensor (n,), optional
        Adaptive quadrature: quadrature nodes each sample needed.
    projection : Tensor (K, H), optional
        Many outputs behind a linear readout, for reducers that project block by block of outputs
        (:attr:`Reducer.projects_readout`): ``attributions`` are then (n, H, *x_shape) integrals over the
        readout's H inputs, and output k's attributions are Σ_h projection[k, h] · attributions[:, h].
    """

    indices: torch.Tensor
    inputs: torch.Tensor
    targets: torch.Tensor
    attributions: torch.Tensor | None = None
    predictions: torch.Tensor | None = None
    baseline_predictions: torch.Tensor | None = None
    attribution_variance: torch.Tensor | None = None
    steps: torch.Tensor | None = None
    projection: torch.Tensor | None = None


@dataclass
class Computed:
    """What a reducer computes, as float64 tensors: the main maps (K, D) (or (K, *x_shape) where the reducer
    knows the input shape; None when only regions are kept), named extra maps of the same shape, per-output
    diagnostics (K,) and per-region statistics (K, R)."""

    maps: object
    extra_maps: dict = field(default_factory=dict)
    diagnostics: dict = field(default_factory=dict)
    regions: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------
# unset pieces and combine rules
# ----------------------------------------------------------------------------------------------------------
_UNSET_DTYPE = torch.uint8


def unset() -> torch.Tensor:
    """The saved form of a piece that is not allocated yet (before the first sample): an empty uint8 tensor."""
    return torch.zeros(0, dtype=_UNSET_DTYPE)


def is_unset(value: Any) -> bool:
    """Whether a saved tensor is the :func:`unset` marker."""
    return isinstance(value, torch.Tensor) and value.dtype == _UNSET_DTYPE and value.numel() == 0


def _copy(value: Any) -> Any:
    return value.clone() if isinstance(value, torch.Tensor) else value


def _beside(value: Any, like: Any) -> Any:
    """``value`` on the device of ``like`` (tensors only)."""
    if isinstance(value, torch.Tensor) and isinstance(like, torch.Tensor) and value.device != like.device:
        return value.to(like.device)
    return value


def combine_sum(mine: Any, theirs: Any) -> Any:
    """Sum of two states (a missing one counts as zero)."""
    if theirs is None:
        return mine
    if mine is None:
        return _copy(theirs)
    return mine + _beside(theirs, mine)


def combine_max(mine: Any, theirs: Any) -> Any:
    """Elementwise maximum of two states (a missing one is ignored)."""
    if theirs is None:
        return mine
    if mine is None:
        return _copy(theirs)
    return torch.maximum(mine, _beside(theirs, mine))


def combine_or(mine: Any, theirs: Any) -> Any:
    """Elementwise logical or of two boolean states (a missing one is ignored)."""
    if theirs is None:
        return mine
    if mine is None:
        return _copy(theirs)
    return mine | _beside(theirs, mine)


def _combine_same(name: str, error: type[Exception]) -> Callable[[Any, Any], Any]:
    """A rule for a piece that both states must agree on (e.g. the input shape); a missing one is ignored."""

    def same(mine: Any, theirs: Any) -> Any:
        if theirs is None:
            return mine
        if mine is None:
            return _copy(theirs)
        equal = torch.equal(mine, _beside(theirs, mine)) if isinstance(mine, torch.Tensor) else mine == theirs
        if not equal:
            raise error(f"cannot merge states with different {name}: {theirs} and {mine}")
        return mine

    return same


_NAMED_RULES: dict[str, Callable[[Any, Any], Any]] = {"sum": combine_sum, "max": combine_max, "or": combine_or}


def chan_combine(mine: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """Chan et al.'s pairwise update of (count, mean_a, mean_b, comoment): exact and numerically stable.

    ``comoment`` = Σ_n (a_n − ā)(b_n − b̄) over each side's samples; the combined co-moment adds the two and
    the correction δ_a δ_b n_1 n_2 / (n_1 + n_2) for the difference of the means.
    """
    n = theirs["count"]
    if n == 0:
        return mine
    if mine["count"] == 0:
        return {name: _copy(value) for name, value in theirs.items()}
    like = mine["mean_a"]
    mean_a, mean_b, comoment = (_beside(theirs[name], like) for name in ("mean_a", "mean_b", "comoment"))
    count = mine["count"]
    total = count + n
    delta_a, delta_b = mean_a - mine["mean_a"], mean_b - mine["mean_b"]
    return {
        "count": total,
        "mean_a": mine["mean_a"] + delta_a * (n / total),
        "mean_b": mine["mean_b"] + delta_b * (n / total),
        "comoment": mine["comoment"] + comoment + delta_a * delta_b * (count * n / total),
    }


# ----------------------------------------------------------------------------------------------------------
# declarations
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Piece:
    name: str
    default: Any
    kind: str  # "tensor", "int" or "shape"
    dtype: torch.dtype


@dataclass(frozen=True)
class _Joint:
    """Pieces combined by one rule (a single piece is a joint state of one)."""

    pieces: tuple[_Piece, ...]
    combine: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class _Nested:
    name: str
    accumulator: "Accumulator"


@dataclass(frozen=True)
class _Config:
    value: torch.Tensor
    label: str
    rtol: float
    shown: bool


_KINDS = ("tensor", "int", "shape")


def _as_config_tensor(value: Any) -> torch.Tensor:
    tensor = torch.as_tensor(value).detach().cpu()
    if tensor.is_floating_point():
        return tensor.to(torch.float64)
    if tensor.is_complex():
        raise TypeError("configuration values are real numbers")
    return tensor.to(torch.int64)


def _show(tensor: torch.Tensor) -> str:
    return str(tensor.tolist()) if tensor.numel() <= 8 else f"a tensor of shape {tuple(tensor.shape)}"


class Accumulator:
    """Something whose state is declared once (see the module docstring); ``merge``, ``fold``, ``reset``,
    ``state_dict`` and ``load_state_dict`` are derived from the declaration."""

    #: what the object is called in messages ("permutation reducer"); the class name by default
    kind: str = ""

    def __init__(self) -> None:
        self._declarations: list[_Joint | _Nested] = []
        self._configuration: dict[str, _Config] = {}
        self._keys: set[str] = set()

    # -- declaring ------------------------------------------------------------------------------------------
    def _claim(self, key: str) -> None:
        if not hasattr(self, "_declarations"):
            raise TypeError(f"{type(self).__name__}.__init__ must call super().__init__() before declaring state")
        if key in self._keys or key == "config":
            raise TypeError(f"{type(self).__name__} declares {key!r} twice")
        self._keys.add(key)

    def _piece(self, name: str, default: Any, kind: str | None, dtype: torch.dtype) -> _Piece:
        if not name.isidentifier():
            raise TypeError(f"a state piece needs an identifier as its name, got {name!r}")
        if kind is None:
            kind = "int" if isinstance(default, int) else "shape" if isinstance(default, tuple) else "tensor"
        if kind not in _KINDS:
            raise TypeError(f"kind must be one of {_KINDS}, got {kind!r}")
        self._claim(name)
        setattr(self, name, _copy(default))
        return _Piece(name, _copy(default), kind, dtype)

    def add_state(self, name: str, default: Any = None, combine: str | Callable[[Any, Any], Any] = "sum", *,
                  kind: str | None = None, dtype: torch.dtype = torch.float64) -> None:
        """Declare one piece of state, or a nested accumulator.

        Parameters
        ----------
        name : str
            Attribute that holds the piece (and its key in :meth:`state_dict`).
        default : None, int, tuple, tensor or Accumulator
            The empty state (None: a tensor allocated by the first update). An :class:`Accumulator` declares a
            nested accumulator, which merges, resets and saves itself (under ``name.``); ``combine`` is then
            ignored, and a name that is not an identifier (``"low.0"``) is allowed, without an attribute.
        combine : {"sum", "max", "or", "same"} or callable
            How this piece of two states combine; a callable takes (mine, theirs) and returns the combination
            (it may update ``mine`` in place). A missing (None) side is ignored by the named rules.
        kind : {"tensor", "int", "shape"}, optional
            What the piece holds: a tensor, a Python int (e.g. a count; default for int defaults) or a tuple
            of ints (an input shape); saved as tensors in every case.
        dtype : torch.dtype
            Dtype a loaded tensor piece is converted to (float64, or bool for masks).
        """
        if isinstance(default, Accumulator):
            self._claim(name)
            if name.isidentifier():
                setattr(self, name, default)
            self._declarations.append(_Nested(name, default))
            return
        piece = self._piece(name, default, kind, dtype)
        if combine == "same":
            rule = _combine_same(name, ShapeError if piece.kind == "shape" else InputError)
        elif isinstance(combine, str):
            if combine not in _NAMED_RULES:
                raise TypeError(f"combine must be one of sum, max, or, same or a callable, got {combine!r}")
            rule = _NAMED_RULES[combine]
        elif callable(combine):
            rule = combine
        else:
            raise TypeError(f"combine must be one of sum, max, or, same or a callable, got {combine!r}")
        self._declarations.append(_Joint((piece,), lambda mine, theirs, rule=rule, name=name:
                                         {name: rule(mine[name], theirs[name])}))

    def add_joint_state(self, defaults: Mapping[str, Any],
                        combine: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]], *,
                        kinds: Mapping[str, str] | None = None, dtype: torch.dtype = torch.float64) -> None:
        """Declare pieces that combine together, e.g. count, means and co-moment (:func:`chan_combine`).

        ``combine(mine, theirs)`` receives two dicts name → value and returns the combined dict (it may update
        the tensors of ``mine`` in place).
        """
        kinds = dict(kinds or {})
        pieces = tuple(self._piece(name, default, kinds.get(name), dtype) for name, default in defaults.items())
        self._declarations.append(_Joint(pieces, combine))

    def add_config(self, name: str, value: Any, *, label: str | None = None, rtol: float = 0.0,
                   shown: bool = True) -> None:
        """Declare a configuration entry: a state can only be merged with, or loaded into, an object whose
        entries agree (exactly, or to ``rtol`` for floats). Saved as ``config.<name>``; ``label`` names it in
        messages; ``shown`` prints the differing values."""
        if not hasattr(self, "_configuration"):
            raise TypeError(f"{type(self).__name__}.__init__ must call super().__init__() before declaring state")
        if name in self._configuration:
            raise TypeError(f"{type(self).__name__} declares the configuration {name!r} twice")
        self._configuration[name] = _Config(_as_config_tensor(value), label or name, float(rtol), shown)

    # -- derived behaviour ----------------------------------------------------------------------------------
    def _kind(self) -> str:
        return self.kind or type(self).__name__

    def _config_differences(self, values: Mapping[str, torch.Tensor], saved: bool) -> list[str]:
        differences = []
        for name, entry in self._configuration.items():
            theirs = values[name].detach().cpu()
            if theirs.shape != entry.value.shape:
                same = False
            elif entry.rtol:
                same = bool(torch.allclose(theirs.to(torch.float64), entry.value.to(torch.float64), rtol=entry.rtol,
                                           atol=0.0))
            else:
                same = torch.equal(theirs.to(entry.value.dtype), entry.value)
            if not same:
                detail = ""
                if entry.shown:
                    where = "in the saved state" if saved else "in the other"
                    detail = f" ({_show(theirs)} {where}, {_show(entry.value)} here)"
                differences.append(f"other {entry.label}{detail}")
        return differences

    def merge(self, other: "Accumulator") -> None:
        """Fold the state of ``other`` (same type and configuration, other samples) into this one.

        The configurations of this object and of its nested accumulators are all checked before anything
        changes. A combine rule that refuses (``"same"`` pieces that differ, overlapping samples) stops the merge
        where it is, so such pieces are declared before the pieces they protect.
        """
        self._check_mergeable(other)
        self._merge_checked(other)

    def _nested(self) -> dict[str, "Accumulator"]:
        return {d.name: d.accumulator for d in self._declarations if isinstance(d, _Nested)}

    def _check_mergeable(self, other: "Accumulator") -> None:
        if type(other) is not type(self):
            raise InputError(f"cannot merge a {type(other).__name__} into a {type(self).__name__}")
        differences = self._config_differences({name: entry.value for name, entry in other._configuration.items()},
                                               saved=False)
        if differences:
            labels = [entry.label for entry in self._configuration.values()]
            listed = ", ".join(labels[:-1]) + (" and " if len(labels) > 1 else "") + labels[-1]
            raise InputError(
                f"can only merge {self._kind()}s built with the same {listed}; the other one has "
                + "; ".join(differences)
            )
        mine, theirs = self._nested(), other._nested()
        if list(mine) != list(theirs):
            raise InputError(f"cannot merge a {self._kind()} with parts {list(theirs)} into one with {list(mine)}")
        for name, part in mine.items():
            part._check_mergeable(theirs[name])

    def _merge_checked(self, other: "Accumulator") -> None:
        theirs_nested = other._nested()
        for declaration in self._declarations:
            if isinstance(declaration, _Nested):
                declaration.accumulator._merge_checked(theirs_nested[declaration.name])
            else:
                theirs = {piece.name: getattr(other, piece.name) for piece in declaration.pieces}
                self._combine(declaration, theirs)

    def _combine(self, declaration: _Joint, theirs: dict[str, Any]) -> None:
        mine = {piece.name: getattr(self, piece.name) for piece in declaration.pieces}
        for name, value in declaration.combine(mine, theirs).items():
            setattr(self, name, value)

    def fold(self, **summary: Any) -> None:
        """Combine a summary of new samples (values of declared pieces) into the state, by the declared rules.

        Every joint state named in ``summary`` must be given completely.
        """
        used = set()
        for declaration in self._declarations:
            if isinstance(declaration, _Nested):
                continue
            names = [piece.name for piece in declaration.pieces]
            given = [name for name in names if name in summary]
            if not given:
                continue
            if len(given) != len(names):
                raise TypeError(f"fold needs all of {names} together, got {given}")
            self._combine(declaration, {name: summary[name] for name in names})
            used.update(names)
        unknown = sorted(set(summary) - used)
        if unknown:
            raise TypeError(f"{type(self).__name__} declares no state {unknown}")

    def reset(self) -> None:
        """Forget every sample: each piece back to its default, nested accumulators reset."""
        for declaration in self._declarations:
            if isinstance(declaration, _Nested):
                declaration.accumulator.reset()
            else:
                for piece in declaration.pieces:
                    setattr(self, piece.name, _copy(piece.default))

    def state_keys(self) -> list[str]:
        """The keys of :meth:`state_dict`, fixed by the declaration."""
        keys = [f"config.{name}" for name in self._configuration]
        for declaration in self._declarations:
            if isinstance(declaration, _Nested):
                keys.extend(f"{declaration.name}.{key}" for key in declaration.accumulator.state_keys())
            else:
                keys.extend(piece.name for piece in declaration.pieces)
        return keys

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The complete state as named tensors (float64, int64 or bool; :func:`unset` for unallocated pieces)."""
        state = {f"config.{name}": entry.value for name, entry in self._configuration.items()}
        for declaration in self._declarations:
            if isinstance(declaration, _Nested):
                state.update({f"{declaration.name}.{key}": value
                              for key, value in declaration.accumulator.state_dict().items()})
            else:
                for piece in declaration.pieces:
                    state[piece.name] = _encode(piece, getattr(self, piece.name))
        return state

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore (copies of) a state produced by :meth:`state_dict` of an object with the same configuration.

        Raises
        ------
        StateDictError
            Keys are missing or unexpected, a piece is malformed, or the state has another configuration.
            Nothing is changed then.
        """
        if not isinstance(state, Mapping):
            raise StateDictError(f"a {self._kind()} state must be a dict of tensors, got {type(state).__name__}")
        expected = self.state_keys()
        missing = [key for key in expected if key not in state]
        unexpected = sorted(str(key) for key in set(state) - set(expected))
        if missing or unexpected:
            parts = ([f"missing keys {missing}"] if missing else []) + (
                [f"unexpected keys {unexpected}"] if unexpected else [])
            raise StateDictError(
                f"the saved state is not a state of this {self._kind()} ({'; '.join(parts)}): it was written by "
                "another version of igcorr, for another method, or altered"
            )
        assignments: list[tuple[Accumulator, str, Any]] = []
        self._parse(state, "", assignments)
        for owner, name, value in assignments:
            setattr(owner, name, value)

    def _parse(self, state: Mapping[str, torch.Tensor], prefix: str,
               assignments: list[tuple["Accumulator", str, Any]]) -> None:
        """Check the configuration and decode every piece (into ``assignments``) without changing anything."""
        saved_config = {}
        for name in self._configuration:
            value = state[f"{prefix}config.{name}"]
            if not isinstance(value, torch.Tensor):
                raise StateDictError(f"{prefix}config.{name} of the saved state is not a tensor")
            saved_config[name] = value
        differences = self._config_differences(saved_config, saved=True)
        if differences:
            where = f" (part {prefix[:-1]})" if prefix else ""
            raise StateDictError(
                f"the saved {self._kind()} state{where} was made with another configuration: " + "; ".join(differences)
            )
        for declaration in self._declarations:
            if isinstance(declaration, _Nested):
                declaration.accumulator._parse(state, f"{prefix}{declaration.name}.", assignments)
            else:
                for piece in declaration.pieces:
                    assignments.append((self, piece.name, _decode(piece, state[prefix + piece.name], prefix + piece.name)))


def _encode(piece: _Piece, value: Any) -> torch.Tensor:
    if value is None:
        return unset()
    if piece.kind == "int":
        return torch.tensor(int(value), dtype=torch.int64)
    if piece.kind == "shape":
        return torch.tensor(tuple(value), dtype=torch.int64)
    return value


def _decode(piece: _Piece, value: Any, key: str) -> Any:
    if not isinstance(value, torch.Tensor):
        raise StateDictError(f"{key} of the saved state is not a tensor but {type(value).__name__}")
    if is_unset(value):
        if piece.kind == "int":
            raise StateDictError(f"{key} of the saved state is empty; it must be an integer")
        return None
    if piece.kind in ("int", "shape"):
        integral = not (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool)
        if not integral or value.ndim != (0 if piece.kind == "int" else 1):
            raise StateDictError(
                f"{key} of the saved state must be an integer {'scalar' if piece.kind == 'int' else 'vector'}, got "
                f"dtype {value.dtype} and shape {tuple(value.shape)}"
            )
        return int(value) if piece.kind == "int" else tuple(int(v) for v in value.tolist())
    return value.detach().to(dtype=piece.dtype).clone()


# ----------------------------------------------------------------------------------------------------------
# the reducer protocol and the shared accumulators
# ----------------------------------------------------------------------------------------------------------
class Reducer(Accumulator):
    """Base class of streaming, mergeable dataset statistics: subclasses declare their state (see the module
    docstring) and write :meth:`update` and :meth:`compute`."""

    #: whether :meth:`update` accepts batches whose attributions are left unprojected through a linear readout
    #: (:attr:`SampleBatch.projection`)
    projects_readout = False

    def update(self, batch: SampleBatch) -> None:
        """Fold one batch of samples into the state."""
        raise NotImplementedError

    def compute(self) -> Computed:
        """Maps and diagnostics from the current state."""
        raise NotImplementedError


def outputs_config(outputs: list[Any]) -> torch.Tensor:
    """The attributed outputs as a configuration entry (their indices; their number if they are not integers)."""
    try:
        return torch.tensor([int(output) for output in outputs], dtype=torch.int64)
    except (TypeError, ValueError):
        return torch.tensor(len(outputs), dtype=torch.int64)


class CoMoment(Accumulator):
    """Streaming means and co-moment of two broadcastable quantities a and b.

    Keeps ``count``, ``mean_a``, ``mean_b`` and ``comoment`` = Σ_n (a_n − ā)(b_n − b̄) (elementwise, broadcast),
    one joint state combined by :func:`chan_combine` (Chan et al.'s pairwise update), which is exact and
    numerically stable, so the result does not depend on how the samples were batched beyond float64 rounding.
    """

    kind = "co-moment"

    def __init__(self) -> None:
        super().__init__()
        self.add_joint_state({"count": 0, "mean_a": None, "mean_b": None, "comoment": None}, combine=chan_combine)

    def update(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """Add samples: ``a`` of shape (n, *A) and ``b`` of shape (n, *B), A and B broadcastable."""
        n = a.shape[0]
        if n == 0:
            return
        a, b = a.to(torch.float64), b.to(torch.float64)
        mean_a, mean_b = a.mean(dim=0), b.mean(dim=0)
        comoment = ((a - mean_a) * (b - mean_b)).sum(dim=0)
        self.fold(count=n, mean_a=mean_a, mean_b=mean_b, comoment=comoment)

    def covariance(self) -> torch.Tensor:
        """Population covariance (divided by the count)."""
        if self.count == 0:
            raise InputError("no samples were seen: the dataset is empty")
        return self.comoment / self.count


class SumAndMax(Accumulator):
    """Streaming sum (``total``) and maximum (``largest``) over samples of a per-sample quantity (n, *shape)."""

    kind = "sum and maximum"

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", None, combine="sum")
        self.add_state("largest", None, combine="max")

    def update(self, values: torch.Tensor) -> None:
        """Add the samples ``values`` (n, *shape)."""
        if len(values) == 0:
            return
        values = values.to(torch.float64)
        self.fold(total=values.sum(dim=0), largest=values.max(dim=0).values)
