"""The synthetic benchmark runner and ``igcorr benchmark``: files, table columns, one finding at small N, errors.

Kept small (n of a few hundred, few quadrature steps) so the whole file runs in well under a minute.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from igcorr_examples.synthetic_runner import (REFERENCE_REGIONS, TABLE_COLUMNS, BenchmarkConfig, parse_experiments,
                                                run_experiment)
from igcorr.cli import main
from igcorr.errors import InputError

METHOD_KEYS = {"ground_truth", "ig_mean", "ig_std", "igac", "igc_function", "naive_correlation", "naive_ttest", "bsc"}


def small(**changes) -> BenchmarkConfig:
    """A configuration that runs in a few seconds."""
    settings = {"n": 200, "n_steps": 4, "progress": False, "n_train": 100, "epochs": 1}
    settings.update(changes)
    return BenchmarkConfig(**settings)


def test_cli_writes_figure_json_and_markdown(tmp_path, capsys):
    out = tmp_path / "out"
    status = main(["benchmark", "--experiment", "B", "--n", "200", "--steps", "4", "--baseline-draws", "2",
                   "--out", str(out), "--figures", str(tmp_path / "figures"), "--json", str(tmp_path / "all.json"),
                   "--no-progress"])
    printed = capsys.readouterr().out
    assert status == 0
    assert "wrote " in printed and "experiment B" in printed
    figure = tmp_path / "figures" / "experiment_B.png"
    assert figure.stat().st_size > 10_000
    report = json.loads((out / "experiment_B.json").read_text())
    combined = json.loads((tmp_path / "all.json").read_text())
    assert set(combined["experiments"]) == {"B"}
    assert combined["experiments"]["B"]["rows"] == report["rows"]

    keys = {row["key"] for row in report["rows"]}
    assert METHOD_KEYS | {"igc_shared"} <= keys
    assert report["rows"][0]["key"] == "ground_truth"
    reference, compared = REFERENCE_REGIONS["B"]
    for row in report["rows"]:
        assert set(TABLE_COLUMNS) <= set(row), row["method"]
        assert set(row["relative"]) == {f"{name}/{reference}" for name in compared}
        if row["key"] != "ground_truth":
            assert row["seconds"] >= 0
        if row["key"] in ("igac", "igc_function", "bsc", "igc_shared"):
            assert len(row["map_sum"]) == len(row["pearson_r"]) == 1

    markdown = (out / "experiment_B.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| method"))
    for column in ("seconds", "corr. with truth", "top_only/triple_overlap", "bottom_left_only/triple_overlap",
                   "bottom_right_only/triple_overlap", "Σ map", "Pearson r"):
        assert column in header
    assert "](../figures/experiment_B.png)" in markdown
    assert [draw["seed"] for draw in report["baseline_draws"]] == [0, 1]
    assert "| draw seed | per-sample draws | one shared draw |" in markdown

    # B at n = 200: IGC puts the most per pixel in the triple overlap (every single-disk ratio below 1)
    igc = next(row for row in report["rows"] if row["key"] == "igc_function")
    ratios = [igc["relative"][f"{name}_only/triple_overlap"] for name in ("top", "bottom_left", "bottom_right")]
    assert all(0 < ratio < 1 for ratio in ratios), ratios
    assert report["findings"][0]["holds"] is True


def test_experiment_a_igc_is_w_times_cw_and_beats_ig_mean():
    outcome = run_experiment("A", small())
    rows = {row["key"]: row for row in outcome.report["rows"]}
    igc, ig_mean = rows["igc_function"], rows["ig_mean"]
    assert igc["correlation_with_truth"] > 0.8
    assert igc["correlation_with_truth"] > ig_mean["correlation_with_truth"] + 0.3
    assert igc["region_means"]["negative_centre"] < 0 < igc["region_means"]["positive_surround"]
    # y is the model itself: IGC and IGaC coincide and sum to r = 1
    np.testing.assert_allclose(igc["pearson_r"], [1.0], atol=1e-9)
    np.testing.assert_allclose(igc["map_sum"], rows["igac"]["map_sum"], rtol=1e-9)
    assert abs(igc["map_sum"][0] - 1) < 0.05
    assert set(outcome.maps) >= {"ground truth", "IG mean", "IG std", "IGC (function)", "BSC (function, N/10)"}
    assert all(image.shape == (64, 64) for image in outcome.maps.values())
    assert all(finding["holds"] for finding in outcome.report["findings"])


def test_trained_network_and_four_output_experiment():
    outcome = run_experiment("D", small(n=100, trained=True))
    rows = {row["key"]: row for row in outcome.report["rows"]}
    assert {"igc_trained"} | METHOD_KEYS <= set(rows)
    assert len(rows["igc_function"]["map_sum"]) == 4 and len(rows["igc_trained"]["pearson_r"]) == 4
    assert outcome.report["training"]["kind"] == "mlp" and outcome.report["outputs_summed"] == 4
    assert outcome.results["igc_trained"].metadata["score"] is not None  # softmax probability attributed


def test_bad_input_is_refused_with_clear_messages(capsys):
    assert parse_experiments("all") == ["A", "B", "C", "D"]
    assert parse_experiments("c, a") == ["A", "C"]
    with pytest.raises(InputError, match="unknown experiment 'E'"):
        parse_experiments("E")
    with pytest.raises(InputError, match="n must be at least 50"):
        BenchmarkConfig(n=10).validate()
    with pytest.raises(InputError, match="model_kind"):
        BenchmarkConfig(model_kind="resnet").validate()
    with pytest.raises(InputError, match="one experiment letter"):
        run_experiment("AB", small())
    assert main(["benchmark", "--experiment", "E", "--no-progress"]) == 2
    assert "unknown experiment" in capsys.readouterr().err
    assert main(["benchmark", "--n", "5", "--no-progress"]) == 2
    with pytest.raises(InputError, match="BSC runs on the first 2 samples"):
        run_experiment("D", small(n=100, n_steps=2, bsc_fraction=0.02))
