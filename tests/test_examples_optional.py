"""The library does not depend on its examples: igcorr never imports igcorr_examples or scikit-learn, and the
commands that run the examples name the extra to install when an optional package is missing."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "src" / "igcorr"

IMPORT_EVERYTHING = """
import importlib, pkgutil, sys
import igcorr
names = [info.name for info in pkgutil.walk_packages(igcorr.__path__, "igcorr.") if info.name != "igcorr.cli"]
for name in names:
    importlib.import_module(name)
print(len(names), "sklearn" in sys.modules, "igcorr_examples" in sys.modules)
import igcorr.cli
print("sklearn" in sys.modules, "igcorr_examples" in sys.modules)
"""


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300)


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module that a source file imports, at module level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_importing_the_library_loads_neither_the_examples_nor_scikit_learn(tmp_path):
    completed = run_python(IMPORT_EVERYTHING, tmp_path)
    assert completed.returncode == 0, completed.stderr
    library_line, cli_line = completed.stdout.split("\n")[:2]
    count, sklearn_loaded, examples_loaded = library_line.split()
    assert int(count) > 10, "pkgutil found too few igcorr modules"
    assert (sklearn_loaded, examples_loaded) == ("False", "False"), library_line
    # the command line imports the examples only inside the commands that run them
    assert cli_line.split() == ["False", "False"], cli_line


def test_only_the_command_line_refers_to_the_examples_package():
    offenders = []
    for path in sorted(LIBRARY.rglob("*.py")):
        names = imported_modules(path)
        if "sklearn" in names or ("igcorr_examples" in names and path != LIBRARY / "cli.py"):
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"these library modules import igcorr_examples or sklearn: {offenders}"


def test_the_examples_package_is_installed_next_to_the_library(tmp_path):
    completed = run_python("import igcorr_examples; print(igcorr_examples.__file__)", tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert Path(completed.stdout.strip()).parent == ROOT / "src" / "igcorr_examples"


@pytest.mark.parametrize(("blocked", "arguments", "package", "extra"), [
    ("sklearn", ["demo", "--epochs", "1", "--no-progress"], "scikit-learn", "examples"),
    ("nilearn", ["example", "fmri-decoding", "--no-progress"], "nilearn", "neuro"),
])
def test_a_missing_optional_package_is_a_one_line_error(tmp_path, blocked, arguments, package, extra):
    # sys.modules[name] = None makes `import name` fail as if the package were not installed
    code = (f"import sys; sys.modules[{blocked!r}] = None\n"
            f"from igcorr.cli import main\n"
            f"sys.exit(main({arguments + ['--out', str(tmp_path / 'out')]!r}))")
    completed = run_python(code, tmp_path)
    assert completed.returncode == 2, completed.stdout + completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert lines[0].startswith(f"igcorr {arguments[0]}: error:"), lines[0]
    assert package in lines[0] and f'pip install "igcorr[{extra}]"' in lines[0], lines[0]
    assert not (tmp_path / "out").exists(), "the command should stop before doing any work"
