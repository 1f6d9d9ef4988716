"""`igcorr run` with user factories (flags and TOML config) and `igcorr report`."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

import igcorr
from igcorr.cli import main

USER_CODE = textwrap.dedent('''
    import torch
    from torch import nn

    def build_model():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2))

    def build_data():
        generator = torch.Generator().manual_seed(1)
        x = torch.randn(50, 6, generator=generator)
        return x, x[:, :2] + 0.3 * torch.randn(50, 2, generator=generator)
''')


@pytest.fixture
def user_package(tmp_path, monkeypatch):
    (tmp_path / "my_study.py").write_text(USER_CODE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("my_study", None)


def test_run_writes_result_figures_and_summary(user_package, capsys):
    out = user_package / "out"
    regions = user_package / "regions.npz"
    np.savez(regions, first=np.arange(6) < 3, second=np.arange(6) >= 3)
    code = main(["run", "--model", "my_study:build_model", "--data", "my_study:build_data", "--baselines", "4",
                 "--steps", "16", "--regions", str(regions), "--checkpoint", str(user_package / "run.ckpt"),
                 "--out", str(out), "--no-progress"])
    assert code == 0
    for name in ("result.npz", "maps.png", "diagnostics.png", "regions.csv", "regions.png", "summary.md"):
        assert (out / name).stat().st_size > 0, name
    result = igcorr.load(out / "result.npz")
    assert result.method == "igc" and result.metadata["parameters"]["n_steps"] == 16
    assert result.metadata["baselines"]["count"] == 4
    assert "| output | region |" in (out / "summary.md").read_text()
    assert (user_package / "run.ckpt").exists()

    redrawn = user_package / "redrawn"
    assert main(["report", str(out / "result.npz"), "--out", str(redrawn)]) == 0
    assert (redrawn / "maps.png").exists() and (redrawn / "summary.md").exists()


def test_run_from_a_config_file(user_package):
    config = user_package / "study.toml"
    out = user_package / "from_config"
    config.write_text(f'model = "my_study:build_model"\ndata = "my_study:build_data"\nsteps = 8\n'
                      f'baselines = "shared:5"\noutputs = "1"\nout = "{out}"\n')
    assert main(["run", "--config", str(config), "--seed", "3", "--no-progress"]) == 0
    result = igcorr.load(out / "result.npz")
    assert result.outputs == [1] and result.metadata["seed"] == 3
    assert result.metadata["baselines"]["shared"] is True
    np.testing.assert_allclose(result.map_sums, result.correlation, atol=1e-3)


def test_run_errors_are_reported_without_a_traceback(user_package, capsys):
    assert main(["run", "--model", "my_study", "--data", "my_study:build_data"]) == 2
    assert "PKG.MODULE:FACTORY" in capsys.readouterr().err
    assert main(["run", "--model", "my_study:missing", "--data", "my_study:build_data"]) == 2
    assert "no attribute 'missing'" in capsys.readouterr().err
    assert main(["run", "--model", "my_study:build_model"]) == 2
    assert "needs --data" in capsys.readouterr().err
    bad = user_package / "bad.toml"
    bad.write_text('modle = "x:y"\n')
    assert main(["run", "--config", str(bad)]) == 2
    assert "unknown option(s) ['modle']" in capsys.readouterr().err


def _one_line_error(capsys, command: str) -> str:
    """The stderr of a command that failed cleanly: exactly one line, in the CLI's error format."""
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"igcorr {command}: error: "), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


@pytest.mark.parametrize("flags, message", [
    (["--outputs", "0,abc"], "'abc' is not an integer"),
    (["--outputs", "1.5"], "'1.5' is not an integer"),
    (["--outputs", ","], "--outputs names no output"),
    (["--baselines", "shared:abc"], "shared:N needs a whole number N"),
    (["--baselines", "shared:"], "shared:N needs a whole number N"),
    (["--baselines", "shared:2.5"], "shared:N needs a whole number N"),
    (["--baselines", "abc"], "--baselines must be 'zero', N, 'shared:N' or a number, got 'abc'"),
    (["--baselines", "nan"], "a constant baseline must be a finite number"),
    (["--baselines", "shared:0"], "count must be a positive integer"),
])
def test_unreadable_option_values_are_one_line_errors(user_package, capsys, flags, message):
    code = main(["run", "--model", "my_study:build_model", "--data", "my_study:build_data",
                 "--out", str(user_package / "out"), "--no-progress", *flags])
    assert code == 2
    assert message in _one_line_error(capsys, "run")
    assert not (user_package / "out").exists()


@pytest.mark.parametrize("line, message", [
    ('steps = "abc"', "'steps' in study.toml must be an integer, got 'abc'"),
    ("steps = 8.5", "'steps' in study.toml must be an integer, got 8.5"),
    ("steps = true", "'steps' in study.toml must be an integer, got True"),
    ('tolerance = "small"', "'tolerance' in study.toml must be a finite number"),
    ("checkpoint_every = [1]", "'checkpoint_every' in study.toml must be a finite number"),
    ('outputs = "0,x"', "'x' is not an integer"),
    ('outputs = [0, "a"]', "every entry of 'outputs' in study.toml must be an integer"),
    ("outputs = []", "names no output"),
    ("out = 3", "'out' in study.toml must be a string, got 3"),
    ('method = "gradcam"', "'method' in study.toml must be one of"),
    ('score = "probability"', "'score' in study.toml must be one of"),
    ('estimator = "exact"', "'estimator' in study.toml must be one of"),
    ("baselines = true", "'baselines' in study.toml must be a string, got True"),
    ('baselines = "shared:x"', "shared:N needs a whole number N"),
])
def test_config_values_of_the_wrong_type_are_one_line_errors(user_package, capsys, line, message):
    config = user_package / "study.toml"
    config.write_text(f'model = "my_study:build_model"\ndata = "my_study:build_data"\n{line}\n')
    assert main(["run", "--config", str(config), "--no-progress", "--out", str(user_package / "out")]) == 2
    assert message in _one_line_error(capsys, "run").replace(str(user_package) + "/", "")


def test_config_values_are_read_like_the_command_line():
    from igcorr.cli import config_value

    assert config_value("steps", "16", "c.toml") == 16 and config_value("steps", 16, "c.toml") == 16
    assert config_value("tolerance", "1e-3", "c.toml") == 1e-3 and config_value("tolerance", 2, "c.toml") == 2.0
    assert config_value("outputs", "0, 2", "c.toml") == [0, 2] and config_value("outputs", [1], "c.toml") == [1]
    assert config_value("outputs", 1, "c.toml") == [1]
    assert config_value("baselines", 8, "c.toml") == "8" and config_value("baselines", 0.5, "c.toml") == "0.5"


def _bad_header_result(path):
    encoded = np.frombuffer(b'{"format_version": 1, "metadata": {}}', dtype=np.uint8)
    np.savez(path, maps=np.zeros((1, 3)), header=encoded)


@pytest.mark.parametrize("make, message", [
    (None, "no result file at"),
    (lambda path: path.write_text("not a result"), "is not a readable igcorr result"),
    (lambda path: path.write_bytes(b"PK\x03\x04 truncated"), "is not a readable igcorr result"),
    (lambda path: np.savez(path, maps=np.zeros((1, 3))), "not an igcorr result (no header or maps)"),
    (_bad_header_result, "field 'method' is missing"),
])
def test_report_on_a_missing_or_malformed_result(tmp_path, capsys, make, message):
    path = tmp_path / "result.npz"
    if make is not None:
        make(path)
    assert main(["report", str(path), "--out", str(tmp_path / "redrawn")]) == 2
    assert message in _one_line_error(capsys, "report")
    assert not (tmp_path / "redrawn").exists()


@pytest.mark.parametrize("make, message", [
    (None, "no regions file at"),
    (lambda path: path.write_text("1 0 1"), "cannot read the regions file"),
])
def test_report_with_unreadable_regions(tmp_path, capsys, make, message):
    result = igcorr.Result("igc", np.ones((1, 3)), metadata={"outputs": [0]})
    saved = result.save(tmp_path / "result.npz")
    regions = tmp_path / "regions.npy"
    if make is not None:
        make(regions)
    assert main(["report", str(saved), "--regions", str(regions), "--out", str(tmp_path / "redrawn")]) == 2
    assert message in _one_line_error(capsys, "report")


@pytest.mark.parametrize("make, message", [
    (None, "cannot read the weights file"),
    (lambda path: path.write_text("not weights"), "cannot read the weights file"),
    (lambda path: __import__("torch").save({"weight": __import__("torch").zeros(2)}, path), "do not fit the model"),
])
def test_unreadable_weights_are_one_line_errors(user_package, capsys, make, message):
    weights = user_package / "weights.pt"
    if make is not None:
        make(weights)
    code = main(["run", "--model", "my_study:build_model", "--data", "my_study:build_data",
                 "--weights", str(weights), "--out", str(user_package / "out"), "--no-progress"])
    assert code == 2
    assert message in _one_line_error(capsys, "run")


def test_a_decimal_baselines_value_is_a_documented_constant():
    from igcorr.baselines import FromData
    from igcorr.cli import build_parser, parse_baselines

    assert parse_baselines("8") == 8 and parse_baselines("8.0") == 8.0 and isinstance(parse_baselines("8.0"), float)
    assert parse_baselines("-1") == -1.0 and parse_baselines("zero") is None
    shared = parse_baselines("shared:3")
    assert isinstance(shared, FromData) and shared.shared and shared.count == 3
    run_parser = build_parser()._subparsers._group_actions[0].choices["run"]
    assert "8.0: a constant baseline" in " ".join(run_parser.format_help().split())
