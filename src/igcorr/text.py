"""Text models: baselines in embedding space, token counts and the tokens that carry the correlation.

A dataset-wise map of a text model is computed with :class:`igcorr.inputs.Embedded`, either per position or
per token id (``per="id"``). This module holds what comes around it:

* :func:`token_baseline` builds the baseline in embedding space from one token (padding, ``[MASK]``) or the
  zero vector;
* :func:`token_counts` counts how often each id occurs at the attributed positions of a dataset;
* :func:`top_tokens` and :func:`plot_top_tokens` rank the vocabulary by its share of the correlation, with the
  counts, :func:`tokens_markdown` writes them as a table and :func:`write_top_tokens` writes both to a folder.

Choosing the baseline
---------------------
The baseline is the "no information" input the path starts from; each token's attribution is its effect
against it. Three choices are common, all built by :func:`token_baseline`:

* **the padding token** (``token_id=pad_id``): the sequence the model sees where there is no text. It is the
  usual choice for classifiers fine-tuned on padded batches, and the default of the examples;
* **the mask token** (``token_id=mask_id``): for models pre-trained by masked language modelling, a token whose
  identity is unknown, which those models have seen at every position;
* **the zero vector** (``token_id=None``): the library's default baseline. No token embeds to it, so it lies off
  the inputs the model was trained on; it is still a valid reference, and cheap.

Whatever the baseline, positions left out by ``Embedded(..., mask=...)`` (padding) and ids listed in
``fixed_ids`` (e.g. ``[CLS]``, ``[SEP]``) are held at the input along the path and carry nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from igcorr._files import atomic_write, check_writable
from igcorr._validation import check_choice, check_int, check_positive_int
from igcorr.data import DataSource
from igcorr.errors import InputError, ShapeError
from igcorr.inputs import InputLayout, is_structured, members
from igcorr.result import Result

#: orders of :func:`top_tokens`: by absolute value (default), largest positive first, most negative first
ORDERS = ("absolute", "positive", "negative")

Vocabulary = Sequence[str] | Mapping[int, str] | Callable[[int], str] | None


def token_baseline(embedding: nn.Module, length: int | Sequence[int], token_id: int | None = None) -> torch.Tensor:
    """The baseline of an :class:`~igcorr.inputs.Embedded` layout: a sequence of one token, embedded.

    Parameters
    ----------
    embedding : nn.Module
        The embedding module of the layout (e.g. ``model.bert.embeddings.word_embeddings``).
    length : int or sequence of int
        The shape of one sample's ids (the padded sequence length).
    token_id : int, optional
        The token repeated at every position: the padding token, the mask token, ...; None gives the zero
        vector (the default baseline of every method).

    Returns
    -------
    Tensor (*length, E)
        Detached, on the module's device and in its dtype; pass it as ``baselines=``.
    """
    if not isinstance(embedding, nn.Module):
        raise InputError(f"embedding must be the embedding module (an nn.Module), got {type(embedding).__name__}")
    shape = (check_positive_int(length, "length", hint="the padded sequence length"),) \
        if not isinstance(length, Sequence) else tuple(check_positive_int(n, "every entry of length") for n in length)
    parameter = next(iter(embedding.parameters()), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    ids = torch.full((1,) + shape, 0 if token_id is None else check_int(token_id, "token_id", minimum=0),
                     dtype=torch.long, device=device)
    with torch.no_grad():
        embedded = embedding(ids)[0].detach()
    return torch.zeros_like(embedded) if token_id is None else embedded


def ids_shape(data: Any, input: str | None = None) -> tuple[int, ...]:
    """The shape of one sample's ids in ``data`` (for :func:`token_baseline`).

    ``input`` names the ids among the samples' inputs (default ``"input_ids"`` for dicts, ``input_0`` for
    tuples; ignored when a sample is one tensor of ids).
    """
    raw = DataSource(data, 1).raw_head(1)
    if is_structured(raw):
        parts = dict(members(raw))
        name = input or ("input_ids" if isinstance(raw, Mapping) else "input_0")
        if name not in parts:
            raise InputError(f"the samples' inputs are {list(parts)}; {name!r} is not among them")
        raw = parts[name]
    return tuple(torch.as_tensor(raw).shape[1:])


def _layout_settings(result: Result) -> dict[str, Any]:
    """The Embedded layout recorded in a per-id result's metadata."""
    layout = result.metadata.get("inputs") or {}
    if layout.get("kind") != "Embedded" or layout.get("per") != "id":
        raise InputError("this result has no per-id map; compute it with inputs=Embedded(..., per='id')")
    return layout


class _Ids(InputLayout):
    """Reads the ids (and the masking inputs) of a dataset, without a model."""

    def __init__(self, input: str, mask: str | None) -> None:
        self.input, self.mask = input, mask

    def _parts(self, raw: Any) -> dict[str, Any]:
        if not is_structured(raw):
            if self.mask is not None:
                raise InputError(f"mask={self.mask!r} names one of several inputs, but the samples hold one tensor")
            return {self.input: raw}
        parts = dict(members(raw))
        for name in (self.input, self.mask):
            if name is not None and name not in parts:
                raise InputError(f"the samples' inputs are {list(parts)}; {name!r} is not among them")
        return parts

    def encode(self, raw: Any) -> torch.Tensor:
        ids = torch.as_tensor(self._parts(raw)[self.input])
        if ids.is_floating_point():
            raise InputError(f"token ids must be integers, got dtype {ids.dtype}")
        return ids

    def extras(self, raw: Any) -> dict[str, torch.Tensor]:
        return {} if self.mask is None else {"mask": torch.as_tensor(self._parts(raw)[self.mask])}


def token_counts(data: Any, vocab_size: int, *, input: str = "input_ids", mask: str | None = None,
                 fixed_ids: Sequence[int] | None = None, batch_size: int = 1024) -> np.ndarray:
    """How often each id occurs at the attributed positions of a dataset.

    Parameters
    ----------
    data : (X, Y) pair, Dataset or DataLoader
        As given to the method; X holds the ids, or dicts/tuples of inputs among which ``input`` names them.
    vocab_size : int
        Number of ids.
    input : str
        The name of the ids among the samples' inputs (ignored when a sample is one tensor of ids).
    mask : str, optional
        The name of the 0/1 mask among the samples' inputs: positions where it is 0 are not counted.
    fixed_ids : sequence of int, optional
        Ids that are not counted (held at the input, as in ``Embedded(..., fixed_ids=...)``).
    batch_size : int
        Samples read at a time.

    Returns
    -------
    ndarray of int64 (vocab_size,)
        Occurrences over the dataset.
    """
    vocab_size = check_positive_int(vocab_size, "vocab_size", hint="the number of token ids")
    held = [check_int(i, "every entry of fixed_ids", minimum=0) for i in (fixed_ids or [])]
    source = DataSource(data, check_positive_int(batch_size, "batch_size"))
    source.layout = _Ids(input, mask)
    counts = torch.zeros(vocab_size, dtype=torch.int64)
    for batch in source.batches():
        ids = batch.x.to(torch.int64)
        keep = torch.ones_like(ids, dtype=torch.bool)
        if mask is not None:
            keep = torch.as_tensor(batch.extras["mask"]) != 0
            if keep.shape != ids.shape:
                raise ShapeError(f"the mask {mask!r} has shape {tuple(keep.shape[1:])} per sample, the ids "
                                 f"{tuple(ids.shape[1:])}")
        if held:
            keep &= ~torch.isin(ids, torch.as_tensor(held, dtype=torch.int64))
        kept = ids[keep]
        if kept.numel() and (int(kept.min()) < 0 or int(kept.max()) >= vocab_size):
            raise InputError(f"token ids range from {int(kept.min())} to {int(kept.max())}, outside the "
                             f"vocabulary 0 .. {vocab_size - 1}")
        counts += torch.bincount(kept, minlength=vocab_size)
    return counts.numpy()


def result_token_counts(result: Result, data: Any, batch_size: int = 1024) -> np.ndarray:
    """:func:`token_counts` with the settings of the per-id result's layout (ids, mask, fixed ids)."""
    layout = _layout_settings(result)
    name = layout.get("input") or "input_ids"
    return token_counts(data, int(layout["vocab_size"]), input=name, mask=layout.get("mask"),
                        fixed_ids=layout.get("fixed_ids"), batch_size=batch_size)


@dataclass(frozen=True)
class TokenShare:
    """One vocabulary entry's share of the correlation.

    Attributes
    ----------
    id : int
        The token id.
    token : str
        Its text (from ``vocabulary``), or ``"id <n>"``.
    value : float
        Its entry of the per-id map: the part of the correlation it carries (the map sums to the correlation
        plus the baseline term).
    count : int or None
        Its occurrences at attributed positions of the dataset (None when no counts were given).
    """

    id: int
    token: str
    value: float
    count: int | None

    @property
    def per_occurrence(self) -> float:
        """``value / count`` (NaN for a token that never occurs or without counts)."""
        return self.value / self.count if self.count else float("nan")


def _token_text(token_id: int, vocabulary: Vocabulary) -> str:
    if vocabulary is None:
        return f"id {token_id}"
    if callable(vocabulary):
        text = vocabulary(token_id)
    elif isinstance(vocabulary, Mapping):
        text = vocabulary.get(token_id, f"id {token_id}")
    else:
        text = vocabulary[token_id] if token_id < len(vocabulary) else f"id {token_id}"
    return str(text)


def top_tokens(result: Result, data: Any = None, *, counts: np.ndarray | None = None, output: int | None = None,
               k: int = 20, order: str = "absolute", vocabulary: Vocabulary = None) -> list[TokenShare]:
    """The vocabulary entries that carry most of the correlation, with their counts.

    Parameters
    ----------
    result : Result
        A per-id result (``inputs=Embedded(..., per="id")``).
    data : (X, Y) pair, Dataset or DataLoader, optional
        The data of the run, to count the tokens (with the run's ids, mask and fixed ids).
    counts : ndarray (vocab_size,), optional
        Counts already computed (:func:`token_counts`); neither ``data`` nor ``counts``: no counts.
    output : int, optional
        The model output whose map is ranked (one of ``result.outputs``; default the first).
    k : int
        Number of tokens.
    order : "absolute", "positive" or "negative"
        Rank by the absolute value (default), largest positive values first, or most negative first.
    vocabulary : sequence of str, dict or callable, optional
        The text of each id (e.g. ``tokenizer.convert_ids_to_tokens``).

    Returns
    -------
    list of TokenShare
        Best first. Tokens that never occur at an attributed position (count 0; without counts, a value of
        exactly 0) are left out.
    """
    layout = _layout_settings(result)
    check_choice(order, "order", ORDERS)
    k = check_positive_int(k, "k", hint="the number of tokens")
    if output is None:
        row = 0
    else:
        output = check_int(output, "output")
        if output not in result.outputs:
            raise InputError(f"output {output} is not among the result's outputs {result.outputs}")
        row = result.outputs.index(output)
    values = np.asarray(result.maps[row], dtype=np.float64)
    if values.ndim != 1:
        raise InputError(f"the per-id map has shape {values.shape}; ranking tokens needs one value per id "
                         "(Embedded(..., reduce='sum'))")
    if counts is None and data is not None:
        counts = result_token_counts(result, data)
    if counts is not None:
        counts = np.asarray(counts)
        if counts.shape != values.shape:
            raise ShapeError(f"counts has shape {counts.shape}, the per-id map {values.shape} "
                             f"(vocab_size {layout['vocab_size']})")
    key = {"absolute": -np.abs(values), "positive": -values, "negative": values}[order]
    ranked = [int(i) for i in np.argsort(key, kind="stable")
              if (counts[i] > 0 if counts is not None else values[i] != 0)]
    return [TokenShare(i, _token_text(i, vocabulary), float(values[i]), None if counts is None else int(counts[i]))
            for i in ranked[:k]]


def tokens_markdown(shares: Sequence[TokenShare]) -> str:
    """A markdown table of :func:`top_tokens`' rows: rank, token, id, value, count, value per occurrence."""
    lines = ["| rank | token | id | share of r | count | per occurrence |", "|---:|---|---:|---:|---:|---:|"]
    for rank, share in enumerate(shares, 1):
        count = "" if share.count is None else str(share.count)
        per = "" if share.count is None else f"{share.per_occurrence:+.3g}"
        token = share.token.replace("|", "\\|")
        lines.append(f"| {rank} | {token} | {share.id} | {share.value:+.4f} | {count} | {per} |")
    return "\n".join(lines)


def plot_top_tokens(result: Result, data: Any = None, *, counts: np.ndarray | None = None,
                    output: int | None = None, k: int = 20, order: str = "absolute", vocabulary: Vocabulary = None,
                    title: str | None = None) -> Any:
    """Horizontal bars of the top tokens' shares of the correlation, labelled with their counts.

    The arguments are those of :func:`top_tokens`; returns the matplotlib figure (close it after saving).
    """
    import matplotlib.pyplot as plt

    shares = top_tokens(result, data, counts=counts, output=output, k=k, order=order, vocabulary=vocabulary)
    figure, axis = plt.subplots(figsize=(6.0, 0.9 + 0.28 * max(len(shares), 1)))
    positions = np.arange(len(shares))[::-1]
    values = [share.value for share in shares]
    colours = ["tab:red" if value >= 0 else "tab:blue" for value in values]
    axis.barh(positions, values, color=colours)
    labels = [share.token if share.count is None else f"{share.token}  (×{share.count})" for share in shares]
    axis.set_yticks(positions)
    axis.set_yticklabels(labels, fontsize=8)
    axis.axvline(0.0, color="black", linewidth=0.8)
    axis.set_xlabel("share of the correlation (per-id IGC)")
    total = float(np.sum(result.maps[0 if output is None else result.outputs.index(output)]))
    axis.set_title(title or f"top {len(shares)} tokens; the whole vocabulary sums to {total:.3f}", fontsize=9)
    figure.tight_layout()
    return figure


def write_top_tokens(result: Result, data: Any, out_dir: str | Path, *, k: int = 20, order: str = "absolute",
                     vocabulary: Vocabulary = None) -> dict[str, Path]:
    """Write ``tokens.png`` (:func:`plot_top_tokens`) and ``tokens.md`` (:func:`tokens_markdown`) of every output
    of a per-id result into ``out_dir``; returns {name: path} of the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = check_writable(out_dir, "token table")
    counts = result_token_counts(result, data)
    sections = []
    figures = []
    for output in result.outputs:
        shares = top_tokens(result, counts=counts, output=output, k=k, order=order, vocabulary=vocabulary)
        sections += [f"## Output {output}", "", tokens_markdown(shares), ""]
        figures.append(plot_top_tokens(result, counts=counts, output=output, k=k, order=order,
                                       vocabulary=vocabulary, title=f"output {output}: top {k} tokens"))
    written = {}
    for position, figure in enumerate(figures):
        name = "tokens" if position == 0 else f"tokens_output{result.outputs[position]}"
        written[name] = atomic_write(out / f"{name}.png", lambda handle, figure=figure: figure.savefig(
            handle, format="png", dpi=120, bbox_inches="tight"), "figure")
        plt.close(figure)
    text = "\n".join(["# Tokens that carry the correlation", "",
                       "Per-id IGC: each token's share of the correlation (the whole vocabulary sums to the "
                       "correlation plus the baseline term), with its count at attributed positions.", ""] + sections)
    written["tokens_table"] = atomic_write(out / "tokens.md", lambda handle: handle.write(text.encode("utf-8")),
                                           "token table")
    return written
