"""Rows of evaluation results written as one CSV file and one markdown table."""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from igcorr._files import atomic_write
from igcorr.errors import InputError

__all__ = ["markdown_table", "write_table"]


def _columns(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None) -> list[str]:
    if columns is not None:
        return list(columns)
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(key, None)
    return list(seen)


def _cell(value: Any, digits: int, missing: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "0" if value == 0 else f"{value:.{digits}g}"
    if isinstance(value, (list, tuple)):
        return "/".join(_cell(item, digits, missing) for item in value)
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, *, digits: int = 3,
                   headers: dict[str, str] | None = None) -> str:
    """A markdown table of ``rows`` (dicts); missing values are "—", floats have ``digits`` significant digits.

    Parameters
    ----------
    rows : sequence of dict
        One dict per row.
    columns : sequence of str, optional
        Keys to show, in order (default: every key, in order of first appearance).
    digits : int
        Significant digits of floats.
    headers : dict of str → str, optional
        Column titles for some keys (default: the key).
    """
    names = _columns(rows, columns)
    titles = [(headers or {}).get(name, name) for name in names]
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(names)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(name), digits, "—") for name in names) + " |")
    return "\n".join(lines) + "\n"


def write_table(rows: Sequence[dict[str, Any]], path: str | os.PathLike, columns: Sequence[str] | None = None, *,
                digits: int = 4, title: str | None = None, headers: dict[str, str] | None = None) -> dict[str, Path]:
    """Write ``rows`` as ``<path>.csv`` (full precision) and ``<path>.md`` (a markdown table).

    Parameters
    ----------
    rows : sequence of dict
        One dict per row (e.g. ``Faithfulness.table()`` rows merged with other scores).
    path : path
        File name without suffix (a ``.csv`` or ``.md`` suffix is dropped); folders are created.
    columns : sequence of str, optional
        Keys to write, in order (default: every key).
    digits : int
        Significant digits in the markdown table.
    title : str, optional
        A heading line above the markdown table.
    headers : dict of str → str, optional
        Markdown column titles for some keys.

    Returns
    -------
    dict
        ``{"csv": Path, "markdown": Path}``.
    """
    if not rows:
        raise InputError("there are no rows to write")
    stem = Path(path)
    if stem.suffix in (".csv", ".md"):
        stem = stem.with_suffix("")
    names = _columns(rows, columns)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(names)
    for row in rows:
        writer.writerow(["" if row.get(name) is None else (repr(row[name]) if isinstance(row[name], float)
                                                           else _cell(row[name], 17, "")) for name in names])
    text = (f"# {title}\n\n" if title else "") + markdown_table(rows, names, digits=digits, headers=headers)
    csv_path = atomic_write(stem.with_suffix(".csv"), lambda handle: handle.write(buffer.getvalue().encode()),
                            "table")
    md_path = atomic_write(stem.with_suffix(".md"), lambda handle: handle.write(text.encode()), "table")
    return {"csv": csv_path, "markdown": md_path}
