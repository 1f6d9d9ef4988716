"""Writing a Result to an output folder: the saved result, figures and a markdown summary.

Used by ``igcorr run`` and ``igcorr report`` so that a run's folder and a folder redrawn later from the saved
result are the same.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from igcorr._files import atomic_write, check_writable
from igcorr.errors import InputError
from igcorr.result import Result

logger = logging.getLogger(__name__)


def write_report(result: Result, out_dir: str | Path, regions: Any = None, save_result: bool = True) -> dict[str, Path]:
    """Write ``result.npz`` (optional), ``maps.png``, ``diagnostics.png`` (methods with a completeness
    decomposition), ``regions.csv``/``regions.png`` (when ``regions`` are given) and ``summary.md``.

    Returns
    -------
    dict
        Name → path of every file written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from igcorr.plotting import plot_diagnostics, plot_region_bars

    out = check_writable(out_dir, "report")
    written: dict[str, Path] = {}

    def save_figure(name: str, figure: Any) -> None:
        written[name] = atomic_write(out / f"{name if name != 'regions_figure' else 'regions'}.png",
                                     lambda handle: figure.savefig(handle, format="png", dpi=120,
                                                                   bbox_inches="tight"), "figure")
        plt.close(figure)

    if save_result:
        written["result"] = result.save(out / "result.npz")
    save_figure("maps", result.plot(suptitle=f"{result.method.upper()} maps"))
    if "completeness_mean" in result.diagnostics:
        save_figure("diagnostics", plot_diagnostics(result))
    table = None
    if regions is not None:
        table = result.region_sums(regions)
        written["regions_csv"] = atomic_write(out / "regions.csv",
                                              lambda handle: handle.write(table.csv_text().encode("utf-8")), "region table")
        save_figure("regions_figure", plot_region_bars(table, title=f"{result.method.upper()} region sums"))
    written["summary"] = out / "summary.md"
    text = summary_markdown(result, table, written)
    atomic_write(written["summary"], lambda handle: handle.write(text.encode("utf-8")), "summary")
    logger.info("wrote %s", ", ".join(str(p) for p in written.values()))
    return written


def summary_markdown(result: Result, table: Any = None, written: dict[str, Path] | None = None) -> str:
    """Markdown summary: what was run, per-output diagnostics, region table and figure links."""
    meta = result.metadata
    lines = [f"# igcorr {result.method} result", ""]
    facts = {
        "samples": meta.get("n_samples"),
        "maps": f"{len(result.maps)} × {tuple(result.x_shape)}",
        "score": meta.get("score"),
        "baselines": meta.get("baselines"),
        "parameters": meta.get("parameters"),
        "seed": meta.get("seed"),
        "engine": meta.get("engine"),
        "run time (s)": None if meta.get("seconds") is None else round(float(meta["seconds"]), 2),
    }
    lines += [f"- {name}: {value}" for name, value in facts.items() if value is not None]
    lines += ["", "## Per output", "", result.summary(), ""]
    if result.extra_maps:
        lines += ["Extra maps: " + ", ".join(f"`{name}`" for name in sorted(result.extra_maps)), ""]
    if table is not None:
        lines += ["## Regions", "", table.to_markdown(), ""]
    for name, path in (written or {}).items():
        if path.suffix == ".png":
            lines.append(f"![{name}]({path.name})")
    lines.append("")
    return "\n".join(lines)


def load_regions(path: str | Path) -> Any:
    """Regions from a file: ``.npy`` (mask, stack or label map) or ``.npz`` (one named mask per array); which
    of the two is read from the file's content.

    Raises
    ------
    InputError
        If the file is missing or is not a readable ``.npy``/``.npz`` file of numeric arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no regions file at {path}")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.ndarray):  # an .npz archive: one named mask per array
            with loaded:
                return {name: loaded[name].astype(bool) for name in loaded.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise InputError(f"cannot read the regions file {path} (a .npy mask, stack or label map, or an .npz of "
                         f"named masks): {' '.join(str(error).split())}") from error
    return loaded
