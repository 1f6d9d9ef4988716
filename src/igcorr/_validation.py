"""Argument checks, declared once: every public entry point validates its arguments through these functions.

Each check returns the normalised value (a plain ``int``, ``float`` ...) or raises an :class:`InputError` (or a
subclass) whose message names the argument, what it got and what it accepts. A module-specific hint can be
appended with ``hint=``, e.g. ``check_int(steps, "steps", minimum=1, hint="the number of gradient steps")``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from igcorr.errors import InputError, NonFiniteError

_INTEGERS = (int, np.integer)
_NUMBERS = (int, float, np.integer, np.floating)


def _suffix(hint: str | None) -> str:
    return f" ({hint})" if hint else ""


def check_int(value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None,
              hint: str | None = None) -> int:
    """``value`` as an ``int`` (bools refused), optionally within [minimum, maximum]."""
    bound = ("a positive integer" if minimum == 1 else "an integer" if minimum is None
             else f"an integer >= {minimum}")
    if isinstance(value, bool) or not isinstance(value, _INTEGERS):
        raise InputError(f"{name} must be {bound}{_suffix(hint)}, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise InputError(f"{name} must be {bound}{_suffix(hint)}, got {value!r}")
    if maximum is not None and value > maximum:
        raise InputError(f"{name} must be an integer <= {maximum}{_suffix(hint)}, got {value!r}")
    return value


def check_positive_int(value: Any, name: str, *, hint: str | None = None) -> int:
    """``value`` as an ``int`` >= 1."""
    return check_int(value, name, minimum=1, hint=hint)


def check_optional_positive_int(value: Any, name: str, *, hint: str | None = None) -> int | None:
    """None, or ``value`` as an ``int`` >= 1."""
    return None if value is None else check_positive_int(value, name, hint=hint)


def check_seed(value: Any, name: str = "seed") -> int:
    """A random seed: any integer (bools refused)."""
    return check_int(value, name, hint="the seed of every random draw")


def check_number(value: Any, name: str, *, positive: bool = False, non_negative: bool = False,
                 hint: str | None = None) -> float:
    """``value`` as a finite ``float`` (bools refused), optionally > 0 or >= 0."""
    if isinstance(value, bool) or not isinstance(value, _NUMBERS) or not math.isfinite(float(value)):
        kind = "a positive number" if positive else "a non-negative number" if non_negative else "a finite number"
        raise InputError(f"{name} must be {kind}{_suffix(hint)}, got {value!r}")
    value = float(value)
    if positive and not value > 0:
        raise InputError(f"{name} must be a positive number{_suffix(hint)}, got {value!r}")
    if non_negative and value < 0:
        raise InputError(f"{name} must be a non-negative number{_suffix(hint)}, got {value!r}")
    return value


def check_fraction(value: Any, name: str, *, hint: str | None = None) -> float:
    """A number strictly between 0 and 1 (levels, quantiles, alpha)."""
    if isinstance(value, bool) or not isinstance(value, _NUMBERS):
        raise InputError(f"{name} must be a number strictly between 0 and 1{_suffix(hint)}, got {value!r}")
    if not 0.0 < float(value) < 1.0:  # also refuses NaN
        raise InputError(f"{name} must be strictly between 0 and 1{_suffix(hint)}, got {value!r}")
    return float(value)


def check_bool(value: Any, name: str, *, hint: str | None = None) -> bool:
    """A ``bool`` (numpy bools accepted)."""
    if not isinstance(value, (bool, np.bool_)):
        raise InputError(f"{name} must be True or False{_suffix(hint)}, got {value!r}")
    return bool(value)


def check_choice(value: Any, name: str, choices: Iterable[Any]) -> Any:
    """``value`` if it is one of ``choices`` (compared with ==)."""
    options = list(choices)
    if not any(value is option or (type(value) is type(option) and value == option) for option in options):
        listed = ", ".join(repr(option) for option in options)
        raise InputError(f"{name} must be one of {listed}; got {value!r}")
    return value


def check_finite(values: torch.Tensor, what: str, indices: Any = None) -> None:
    """Raise :class:`NonFiniteError` naming the samples where ``values`` (n, ...) holds NaN or Inf.

    ``indices`` gives the global index of each row (an int: the index of the first row; a sequence or tensor:
    one per row; None: rows are numbered from 0). Integer tensors are always finite.
    """
    if not values.is_floating_point() and not values.is_complex():
        return
    rows = values.reshape(values.shape[0], -1) if values.ndim else values.reshape(1, 1)
    bad = ~torch.isfinite(rows).all(dim=1)
    if not bool(bad.any()):
        return
    positions = torch.nonzero(bad).reshape(-1)[:5].cpu()
    if indices is None or isinstance(indices, _INTEGERS):
        samples = (positions + int(indices or 0)).tolist()
    else:
        samples = torch.as_tensor(np.asarray(indices.cpu() if isinstance(indices, torch.Tensor) else indices)
                                  )[positions].tolist()
    listed = ", ".join(str(sample) for sample in samples)
    raise NonFiniteError(
        f"{what} of sample {samples[0]} contains NaN or Inf (affected samples [{listed}]"
        f"{' and more' if int(bad.sum()) > len(samples) else ''}); remove or impute those samples, or check the "
        "model for divisions by zero, log of zero or overflow, before attributing"
    )
