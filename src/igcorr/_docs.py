"""Docstring fragments shared by many functions, written once.

A docstring holds a placeholder line ``%(name)s`` where a shared parameter block goes; :func:`fill_doc`
replaces it with the fragment of that name, indented like the placeholder line.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T", bound=Callable)

FRAGMENTS = {
    "model": """model : nn.Module or callable
    Maps a batch (P, *x_shape) to outputs (P, K_model) (or (P,) for one output). A parameter-free module or a
    plain differentiable function works too; device and dtype are then taken from the data.""",
    "score": """score : None, "softmax", "log_softmax" or callable
    What is attributed for each output: the raw output (default), its softmax probability, its log-probability,
    or ``score(output)`` (P, K') for a callable. For classifiers the IGC paper attributes the probability.""",
    "output": """output : None, str, int or callable
    Which part of the model's output is attributed, taken before anything else looks at it: None for a model
    that returns a tensor; a key or attribute name (``"logits"`` of a HuggingFace ``ModelOutput`` or of a
    dict); a position in a returned tuple; or a callable ``output -> tensor``.""",
    "extra_inputs": """extra_inputs : dict of Tensor, optional
    Inputs the model takes besides the attributed one, by keyword, one row per sample (attention masks,
    token type ids, ...). They are not attributed: every path point of a sample gets the sample's own.""",
    "data": """data : (X, Y) pair, Dataset or DataLoader
    X of shape (N, *x_shape); Y of shape (N, K) or (N,). A float (N,) target is one output; integer (N,) class
    labels are one-hot encoded over the model's outputs (classification).""",
    "outputs": """outputs : None, int or list of int
    Which model outputs (after ``score``) to attribute; None for all.""",
    "batch_size": """batch_size : int, optional
    Samples per batch; by default chosen so that a batch's attributions and baselines take at most a quarter
    of the memory budget (and 128 MiB). Results do not depend on it beyond float rounding.""",
    "seed": """seed : int
    Seed of every random draw (dataset baselines, orderings, Monte-Carlo nodes), keyed by sample index, so
    results do not depend on batch size.""",
    "progress": """progress : bool
    Show a progress bar.""",
    "sample_baselines": """baselines : None, float, Tensor or igcorr.baselines.Shared
    None: zero. A float: constant. A tensor of shape x_shape or (1, *x_shape): one baseline for all;
    (n, *x_shape): one baseline per sample (as in Captum); (n, M, *x_shape): M baselines per sample.
    ``igcorr.baselines.Shared(stack)`` with a stack (M, *x_shape): M baselines shared by all samples. With
    several baselines the attribution is the mean over them.""",
    "target": """target : None, int, sequence of int or LongTensor (n,)
    Output to attribute, for all samples or per sample; None only for single-output models.""",
}

_PLACEHOLDER = re.compile(r"^(?P<indent>[ \t]*)%\((?P<name>\w+)\)s[ \t]*$", re.MULTILINE)


def fill_doc(obj: T) -> T:
    """Replace every placeholder line ``%(name)s`` of ``obj.__doc__`` by the fragment ``name``.

    Raises
    ------
    KeyError
        If a placeholder names no fragment (a programming error, found when the module is imported).
    """
    if obj.__doc__:
        def expand(match: re.Match) -> str:
            indent = match.group("indent")
            return "\n".join(indent + line if line else line for line in FRAGMENTS[match.group("name")].splitlines())

        obj.__doc__ = _PLACEHOLDER.sub(expand, obj.__doc__)
    return obj
