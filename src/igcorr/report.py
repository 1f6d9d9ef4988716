"""Writing a Result to an output folder: the saved result, figures, brain images and a markdown summary.

Used by ``igcorr run`` and ``igcorr report`` so that a run's folder and a folder redrawn later from the saved
result are the same.
"""

from __future__ import annotations

import csv
import io
import logging
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from igcorr._files import atomic_write, check_writable
from igcorr.errors import InputError, ShapeError
from igcorr.result import Result

logger = logging.getLogger(__name__)

#: most maps drawn in maps.png (and rows of the per-output table of summary.md); with more outputs, those with
#: the largest correlation are drawn and every output's diagnostics go to outputs.csv
MAX_DRAWN_MAPS = 12
MAX_SUMMARY_ROWS = 50
#: most outputs shown in glass_brain.png
MAX_GLASS_BRAINS = 6


def write_report(result: Result, out_dir: str | Path, regions: Any = None, save_result: bool = True, *,
                 mask: Any = None, mask_name: str | None = None) -> dict[str, Path]:
    """Write ``result.npz`` (optional), ``maps.png``, ``diagnostics.png`` (methods with a completeness
    decomposition), ``regions.csv``/``regions.png``, ``summary.md``, and with a brain ``mask`` the NIfTI maps
    with their JSON sidecars and ``glass_brain.png``.

    Parameters
    ----------
    result : Result
    out_dir : path
    regions : regions, optional
        Regions summed in the region table. Without them, the regions the run tested (``permutations`` or
        ``bootstrap`` with ``regions``) are used; when they are the tested regions, the table carries their
        p-values (``p_value``, ``p_fwe``, ``q_value``) and intervals (``low``, ``high``, ``se``).
    save_result : bool
        Also write ``result.npz``.
    mask : NIfTI image or path, or a fitted nilearn masker, optional
        The brain mask the inputs were taken from (voxel vectors in its C order): the maps and the per-voxel
        extra maps are written as NIfTI images (:func:`igcorr.neuro.write_maps`) and drawn on glass brains.
    mask_name : str, optional
        How the NIfTI sidecars name the mask.

    Returns
    -------
    dict
        Name → path of every file written.

    Raises
    ------
    ShapeError
        If ``mask`` does not have one voxel per input component (checked before anything is written).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from igcorr.plotting import plot_diagnostics, plot_region_bars

    out = check_writable(out_dir, "report")
    if mask is not None:
        from igcorr.neuro import check_voxels, is_masker

        if not is_masker(mask):
            check_voxels(int(np.prod(result.x_shape, dtype=np.int64)), mask, "the maps")
    written: dict[str, Path] = {}

    def save_figure(name: str, figure: Any) -> None:
        written[name] = atomic_write(out / f"{name if name != 'regions_figure' else 'regions'}.png",
                                     lambda handle: figure.savefig(handle, format="png", dpi=120,
                                                                   bbox_inches="tight"), "figure")
        plt.close(figure)

    if save_result:
        written["result"] = result.save(out / "result.npz")
        if result.saves_maps_beside():
            from igcorr.result import maps_path

            written["result_maps"] = maps_path(written["result"])
    drawn = drawn_outputs(result)
    title = f"{result.method.upper()} maps" + ("" if len(drawn) == len(result.maps) else
                                              f" ({len(drawn)} of {len(result.maps)} outputs: the largest r)")
    save_figure("maps", result.plot(outputs=drawn, suptitle=title))
    if "completeness_mean" in result.diagnostics:
        save_figure("diagnostics", plot_diagnostics(result))
    if len(result.maps) > MAX_SUMMARY_ROWS:
        written["outputs_csv"] = atomic_write(out / "outputs.csv", lambda handle: handle.write(
            outputs_csv(result).encode("utf-8")), "per-output table")
    table = region_table(result, regions)
    if table is not None:
        text = table.csv_text()
        written["regions_csv"] = atomic_write(out / "regions.csv", lambda handle: handle.write(text.encode("utf-8")),
                                              "region table")
        tested = "p_fwe" in table.columns
        save_figure("regions_figure", plot_region_bars(
            table, p_value="p_fwe" if tested else "p_value",
            title=f"{result.method.upper()} region sums" + (" (intervals: bootstrap; *: family-wise p < 0.05)"
                                                          if tested else "")))
    if mask is not None:
        from igcorr.neuro import write_maps
        from igcorr.plotting import plot_glass_brains

        written.update(write_maps(result, mask, out, mask_name=mask_name,
                                  source="result.npz" if save_result or (out / "result.npz").exists() else None))
        glass = [output for output in drawn][:MAX_GLASS_BRAINS]
        save_figure("glass_brain", plot_glass_brains(result, mask, outputs=glass,
                                                     title=f"{result.method.upper()} maps on the brain"))
    written["summary"] = out / "summary.md"
    text = summary_markdown(result, table, written)
    atomic_write(written["summary"], lambda handle: handle.write(text.encode("utf-8")), "summary")
    logger.info("wrote %s", ", ".join(str(p) for p in written.values()))
    return written


def drawn_outputs(result: Result, most: int = MAX_DRAWN_MAPS) -> list[int]:
    """The outputs whose maps a report draws: all of them, or the ``most`` with the largest correlation."""
    outputs = result.outputs
    if len(outputs) <= most:
        return list(outputs)
    correlation = result.diagnostics.get("correlation")
    if correlation is None:
        return list(outputs[:most])
    order = np.argsort(-np.nan_to_num(np.asarray(correlation, dtype=np.float64), nan=-np.inf), kind="stable")
    return [outputs[int(row)] for row in sorted(order[:most])]


def region_table(result: Result, regions: Any = None) -> Any:
    """The region table of a report: the given regions, with the run's inference columns when they are the
    regions the run tested; without regions, the tested regions (None if the run tested none)."""
    tested = "masks" in result.region_inference
    if regions is None:
        return result.region_sums() if tested else None
    if tested:
        from igcorr.regions import as_region_masks

        names, masks = as_region_masks(regions, result.x_shape)
        kept = (result.metadata.get("inference") or {}).get("regions") or []
        if list(names) == list(kept) and np.array_equal(masks, result.region_inference["masks"].astype(bool)):
            return result.region_sums()
    return result.region_sums(regions)


def outputs_csv(result: Result) -> str:
    """Every output's Σ map and diagnostics as CSV text (one row per output)."""
    names = [name for name, values in result.diagnostics.items() if np.shape(values) == (len(result.maps),)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["output", "map_sum", *names])
    sums = np.asarray(result.diagnostics["map_sum"]) if "map_sum" in result.diagnostics else result.map_sums
    for row, output in enumerate(result.outputs):
        writer.writerow([output, repr(float(sums[row]))]
                        + [repr(float(np.asarray(result.diagnostics[name])[row])) for name in names])
    return buffer.getvalue()


def summary_markdown(result: Result, table: Any = None, written: dict[str, Path] | None = None) -> str:
    """Markdown summary: what was run, per-output diagnostics, region table, brain images and figure links."""
    meta = result.metadata
    lines = [f"# igcorr {result.method} result", ""]
    facts = {
        "samples": meta.get("n_samples"),
        "maps": f"{len(result.maps)} × {tuple(result.x_shape)}",
        "score": meta.get("score"),
        "baselines": meta.get("baselines"),
        "parameters": meta.get("parameters"),
        "inference": _inference_text(meta.get("inference")),
        "seed": meta.get("seed"),
        "engine": meta.get("engine"),
        "maps stored": "on disk (memory-mapped)" if meta.get("maps_storage") == "disk" else None,
        "run time (s)": None if meta.get("seconds") is None else round(float(meta["seconds"]), 2),
    }
    lines += [f"- {name}: {value}" for name, value in facts.items() if value is not None]
    lines += ["", "## Per output", ""]
    if len(result.maps) > MAX_SUMMARY_ROWS:
        lines += [_many_outputs_text(result), ""]
    else:
        lines += [result.summary(), ""]
    if result.extra_maps:
        lines += ["Extra maps: " + ", ".join(f"`{name}`" for name in sorted(result.extra_maps)), ""]
    if table is not None:
        heading = "## Regions" + (" (tested: permutation p-values and bootstrap intervals computed in the run)"
                                  if {"p_value", "low"} & set(table.columns) else "")
        lines += [heading, "", table.to_markdown(), ""]
    images = [path for name, path in (written or {}).items() if name.startswith("nifti")]
    if images:
        lines += ["## Brain images", "",
                  "One volume per output (in the order of the outputs above); each image has a JSON sidecar "
                  "with the method and its parameters.", ""]
        lines += [f"- `{path.name}`" for path in images] + [""]
    for name, path in (written or {}).items():
        if path.suffix == ".png":
            lines.append(f"![{name}]({path.name})")
    lines.append("")
    return "\n".join(lines)


def _inference_text(inference: Any) -> str | None:
    if not isinstance(inference, dict):
        return None
    parts = []
    if inference.get("permutations"):
        parts.append(f"{inference['permutations']} permutations")
    if inference.get("bootstrap"):
        parts.append(f"{inference['bootstrap']} bootstrap replicates ({float(inference.get('level', 0.95)):.0%} "
                     "intervals)")
    if inference.get("regions"):
        parts.append(f"regions tested: {', '.join(inference['regions'])}")
    return "; ".join(parts) or None


def _many_outputs_text(result: Result) -> str:
    """Quantiles of the per-output diagnostics and the outputs with the largest correlation (the table of every
    output is outputs.csv)."""
    rows = ["| diagnostic | min | 5 % | median | 95 % | max |", "|---|---|---|---|---|---|"]
    named = {"Σ map": np.asarray(result.diagnostics.get("map_sum", result.map_sums))}
    named.update({name: np.asarray(values) for name, values in result.diagnostics.items()
                  if name in ("correlation", "baseline_term", "completeness_mean", "completeness_max")})
    for name, values in named.items():
        q = np.nanpercentile(values.astype(np.float64), [0, 5, 50, 95, 100])
        rows.append(f"| {name} | " + " | ".join(f"{value:.4g}" for value in q) + " |")
    top = drawn_outputs(result, 10)
    return (f"{len(result.maps)} outputs (every output's row is in `outputs.csv`).\n\n" + "\n".join(rows)
            + "\n\nOutputs with the largest correlation: " + ", ".join(str(o) for o in top))


def load_regions(path: str | Path, mask: Any = None) -> Any:
    """Regions from a file: ``.npy`` (mask, stack or label map), ``.npz`` (one named mask per array), or a NIfTI
    label atlas (``.nii``/``.nii.gz``, 0 = background).

    A NIfTI atlas is read at the voxels of ``mask`` (a brain mask on its grid: inputs that are voxel vectors in
    the mask's C order), one region per label with a voxel inside the mask; without a mask it is an integer label
    map over 3-D inputs of the atlas's shape. Region names come from a BIDS-style table beside the atlas
    (``<atlas>.tsv`` with ``index`` and ``name`` columns), else ``label_<v>``; a label the table names without
    any voxel inside the mask is an error (an empty region).

    Raises
    ------
    InputError
        If the file is missing or is not a readable ``.npy``/``.npz`` file of numeric arrays or NIfTI atlas.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no regions file at {path}")
    if path.name.endswith((".nii", ".nii.gz")):
        return _atlas_regions(path, mask)
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.ndarray):  # an .npz archive: one named mask per array
            with loaded:
                return {name: loaded[name].astype(bool) for name in loaded.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise InputError(f"cannot read the regions file {path} (a .npy mask, stack or label map, an .npz of "
                         f"named masks, or a NIfTI label atlas): {' '.join(str(error).split())}") from error
    return loaded


def _atlas_names(path: Path) -> dict[int, str] | None:
    """Label names from ``<atlas>.tsv`` beside a NIfTI atlas (columns ``index`` and ``name``), if there is one."""
    stem = path.name[: -len(".nii.gz")] if path.name.endswith(".nii.gz") else path.stem
    table = path.with_name(stem + ".tsv")
    if not table.is_file():
        return None
    try:
        rows = list(csv.DictReader(table.read_text(encoding="utf-8").splitlines(), delimiter="\t"))
        return {int(row["index"]): str(row["name"]) for row in rows if int(row["index"]) != 0}
    except (KeyError, ValueError, TypeError) as error:
        raise InputError(f"cannot read the label table {table}: it needs tab-separated columns 'index' (integer "
                         f"labels) and 'name' ({error})") from error


def _atlas_regions(path: Path, mask: Any) -> Any:
    from igcorr.neuro import atlas_regions, load_image

    names = _atlas_names(path)
    try:
        atlas = load_image(str(path))
    except Exception as error:  # nibabel's errors for unreadable images are of several types
        raise InputError(f"cannot read the regions atlas {path}: {' '.join(str(error).split())}") from error
    if mask is not None:
        return atlas_regions(atlas, mask, names)
    labels = np.asarray(atlas.dataobj)
    if labels.ndim != 3:
        raise ShapeError(f"the atlas {path} must be a 3-D label image, got shape {labels.shape}")
    if labels.dtype.kind == "f":
        if not np.isfinite(labels).all() or (labels != np.rint(labels)).any():
            raise InputError(f"the atlas {path} is not a label atlas: it holds values that are not whole numbers")
    labels = np.rint(labels).astype(np.int64)
    if (labels < 0).any():
        raise InputError(f"the atlas {path} holds negative labels; labels are whole numbers >= 0 (0 = background)")
    present = set(np.unique(labels).tolist()) - {0}
    if not present:
        raise InputError(f"the atlas {path} holds no label (all voxels are 0)")
    if names:
        empty = sorted(set(names) - present)
        if empty:
            raise InputError(f"atlas label(s) {empty} named in the label table have no voxel: empty regions cannot "
                             "be tested; remove them from the table")
        return {names.get(label, f"label_{label}"): labels == label for label in sorted(present)}
    return labels
