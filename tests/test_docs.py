"""The documentation is executable: every python example runs, the documented commands work, the site builds.

* Each page's ```python blocks (docs/**/*.md and README.md) run in order in one namespace, in a temporary
  working directory, with a time limit per page. A fenced block whose first line is ``# <file name>`` (e.g.
  ``# mystudy.py`` or ``# study.toml``) is also written to that file first, so the page's commands can use it.
* The ``igcorr run`` / ``igcorr report`` command lines of the docs' ```bash blocks run through the CLI entry
  point in that directory.
* ``mkdocs build --strict`` succeeds (skipped when the ``docs`` extra is not installed), and the API reference
  names every public object of ``igcorr``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import igcorr

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md")) + [ROOT / "README.md"]
#: seconds one page's examples may take together (they are meant to take a few seconds)
PAGE_TIME_LIMIT = 60
FENCE = re.compile(r"^```([A-Za-z0-9_+-]*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
FILE_NAME = re.compile(r"#\s*([\w.-]+\.(?:py|toml|txt|csv))\s*$")
COMMANDS = ("igcorr run", "igcorr report")


def fenced_blocks(path: Path) -> list[tuple[str, str]]:
    """(language, code) of every fenced block of a markdown page, in order."""
    return [(language.lower(), code) for language, code in FENCE.findall(path.read_text(encoding="utf-8"))]


def named_files(blocks: list[tuple[str, str]]) -> dict[str, str]:
    """Blocks whose first line is ``# <file name>``: file name → content."""
    files = {}
    for _, code in blocks:
        first = code.split("\n", 1)[0].strip()
        match = FILE_NAME.fullmatch(first)
        if match:
            files[match.group(1)] = code
    return files


def command_lines(blocks: list[tuple[str, str]]) -> list[str]:
    """The ``igcorr run`` / ``igcorr report`` commands of the bash blocks (continuation lines joined)."""
    commands = []
    for language, code in blocks:
        if language not in ("bash", "sh", "console"):
            continue
        joined = re.sub(r"\\\n\s*", " ", code)
        for line in joined.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith(COMMANDS):
                commands.append(line)
    return commands


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


@contextlib.contextmanager
def time_limit(seconds: int, what: str) -> Iterator[None]:
    """Raise TimeoutError if the block takes longer than ``seconds`` (SIGALRM; main thread only)."""

    def expire(signum, frame):  # pragma: no cover - only on a regression
        raise TimeoutError(f"{what} took more than {seconds} s; documentation examples must stay small")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def isolated_state() -> Iterator[None]:
    """Run the examples on one thread and leave no trace of them: global random states, modules imported from
    the temporary directory, open figures. (Tiny models are fastest on one thread; several threads on shared,
    busy cores made these examples several times slower.)"""
    torch_state = torch.random.get_rng_state()
    numpy_state = np.random.get_state()
    modules = set(sys.modules)
    path = list(sys.path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.random.set_rng_state(torch_state)
        np.random.set_state(numpy_state)
        for name in set(sys.modules) - modules:
            module = sys.modules[name]
            if str(getattr(module, "__file__", "") or "").startswith(("/tmp", str(Path.cwd()))):
                del sys.modules[name]
        sys.path[:] = path
        import matplotlib.pyplot as plt

        plt.close("all")


EXAMPLE_PAGES = [page for page in PAGES if any(lang == "python" for lang, _ in fenced_blocks(page))]
COMMAND_PAGES = [page for page in PAGES if DOCS in page.parents and command_lines(fenced_blocks(page))]


def test_the_docs_have_examples():
    assert len(EXAMPLE_PAGES) >= 8, [relative(page) for page in EXAMPLE_PAGES]
    assert COMMAND_PAGES, "the command-line page should show runnable igcorr run / report commands"


@pytest.mark.parametrize("page", sorted(set(EXAMPLE_PAGES) | set(COMMAND_PAGES)), ids=relative)
def test_page_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    """The page's python blocks in order in one namespace, then (docs pages) its igcorr commands."""
    import matplotlib

    matplotlib.use("Agg")
    from igcorr.cli import main

    monkeypatch.chdir(tmp_path)
    blocks = fenced_blocks(page)
    for name, content in named_files(blocks).items():
        (tmp_path / name).write_text(content)
    namespace: dict = {"__name__": "__main__"}
    with isolated_state(), time_limit(PAGE_TIME_LIMIT, relative(page)):
        sys.path.insert(0, str(tmp_path))  # as for a script run from that folder: its modules are importable
        for number, (language, code) in enumerate(blocks):
            if language != "python":
                continue
            try:
                exec(compile(code, f"{relative(page)} (block {number + 1})", "exec"), namespace)
            except Exception as error:  # name the page and the block in the failure
                pytest.fail(f"{relative(page)}, block {number + 1} raised {type(error).__name__}: {error}\n\n{code}")
        if page in COMMAND_PAGES:
            for command in command_lines(blocks):
                arguments = shlex.split(command)[1:]
                if command.startswith("igcorr run"):
                    arguments.append("--no-progress")
                status = main(arguments)
                printed = capsys.readouterr()
                assert status == 0, f"`{command}` exited with {status}: {printed.err}"
                assert "wrote " in printed.out, command


def test_api_reference_names_every_public_object():
    reference = (DOCS / "api.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^::: igcorr\.([\w.]+)", reference, flags=re.M))
    missing = [name for name in igcorr.__all__ if name != "__version__" and name not in documented]
    assert not missing, f"docs/api.md has no `::: igcorr.<name>` entry for {missing}"


def test_every_page_is_in_the_navigation():
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = [str(page.relative_to(DOCS)) for page in sorted(DOCS.rglob("*.md"))]
    missing = [page for page in pages if page not in config]
    assert not missing, f"add {missing} to the nav of mkdocs.yml"


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None,
                    reason="the docs extra (mkdocs, mkdocstrings[python]) is not installed")
def test_site_builds_strictly(tmp_path: Path):
    completed = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
                               cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    for page in ("index.html", "api/index.html", "from_int_grad_corr/index.html"):
        assert (tmp_path / page).exists(), page
    api = (tmp_path / "api" / "index.html").read_text(encoding="utf-8")
    assert "igcorr.IGC" in api and "Parameters" in api
