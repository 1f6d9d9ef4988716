"""Exceptions raised by igcorr.

Every error that a user can cause is raised at the boundary as one of these, with a message that says what
was wrong and how to fix it. They subclass the matching built-in exception so that generic handlers still work.
"""

from __future__ import annotations


class IgcorrError(Exception):
    """Base class of all igcorr errors."""


class InputError(IgcorrError, ValueError):
    """Inputs, targets, baselines or arguments are invalid."""


class ShapeError(InputError):
    """A tensor has the wrong shape or does not match another one."""


class NonFiniteError(InputError):
    """NaN or infinite values were found in inputs, targets, baselines or gradients."""


class ConstantTargetError(InputError):
    """A target (or a prediction) is constant over the dataset, so its correlation is undefined."""


class ModelError(IgcorrError, RuntimeError):
    """The model cannot be attributed as given (wrong output shape, batch-dependent outputs, ...)."""


class ResultFileError(IgcorrError, OSError):
    """A saved result or checkpoint file is missing, truncated, corrupted or of another version."""
