"""The commands of README.md and of every docs/*.md page run as printed, so the documentation
cannot drift from the code.

Every line of every ```bash block runs, README first and then the pages in ``PAGES`` order, in
one bash shell (``set -e``) inside a fresh "clone" folder whose sibling ``../shared/data`` is a
tiny synthetic MNIST root: the layout the README's ``make demo DATA=../shared/data`` assumes.
Nothing from the test's own environment tells ``pairflow`` where the data is ($PAIRFLOW_DATA is
removed) or puts it on PATH: the README's own set-up lines must, and a page's commands run in
the shell they set up, as a reader who followed the README types them. Then every ```python
block runs, in the same order, in the same folder.

A README command is changed in only the ways the table below lists, each one visible here:
flags appended where a command would train or evaluate for minutes (argparse keeps the last
value of a repeated flag, so the README's own flags stay in the command), ``make demo``
replaced by the command its Makefile recipe runs (checked against the Makefile), and the
venv's activation replaced by a PATH holding this Python's ``pairflow`` and ``torchrun``.
A README line no rule covers runs exactly as printed.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
# The docs pages whose blocks run after the README's, in this order: a later page may use the
# runs an earlier one trained (results.md compares runs/vae, which it trains itself, with the
# evaluated shipped model). Every docs/*.md page is listed (checked below).
PAGES: tuple[Path, ...] = tuple(
    REPO / "docs" / name
    for name in (
        "datasets.md",
        "cli.md",
        "conditional.md",
        "app.md",
        "distributed.md",
        "results.md",
        "likelihood.md",
        "speed.md",
        "architecture.md",
        "guidance.md",
        "models.md",
        "recipes.md",
        "tarflow.md",
        "tensorboard.md",
        "tutorial.md",
    )
)

TINY_TRAIN = (
    "--max-steps 2 --batch-size 8 --num-pairs 64 --test-pairs 16 --sample-n 4 --threads 1 "
    "--no-progress"
)
# README line (its start, after stripping) -> the line that runs instead (None: skipped, with
# the reason). First match wins.
REPLACE: tuple[tuple[str, str | None, str], ...] = (
    (
        "make demo DATA=../shared/data",
        '"$PYTHON" -m pairflow demo --data-dir ../shared/data --out runs/demo '
        "--max-steps 2 --test-pairs 16 --threads 1 --no-progress",
        "the Makefile recipe (checked below), minus the venv bootstrap, in tiny sizes",
    ),
    ("make test", None, "the test suite itself"),
    ("make lint", None, "ruff, run by CI beside the tests"),
    (". .venv/bin/activate", 'export PATH="$SHIM:$PATH"', "this Python's pairflow on PATH"),
    ('pip install -e ".[app]"', None, "installs packages (the test's Python has them or not)"),
)
# Python blocks not run: (text the block contains, why). Each is an example of the README or a
# page that cannot run as printed in a clone beside ../shared/data; fix it and drop the entry.
PYTHON_SKIP: tuple[tuple[str, str], ...] = ()
# Command start -> flags appended that make it return: a server runs until Ctrl-C, so its
# command line is only parsed (every flag it shows must exist).
SERVERS: tuple[str, ...] = ("pairflow app",)
# Command start -> flags appended (tiny sizes). Commands not listed run as printed.
APPEND: tuple[tuple[str, str], ...] = (
    ("pairflow train", TINY_TRAIN),
    ("torchrun --nproc_per_node 2 -m pairflow train", TINY_TRAIN),
    ("pairflow evaluate", "--num-pairs 16 --samples 32"),
)


def blocks_of(path: Path, language: str) -> list[str]:
    """The fenced code blocks of ``language`` in the Markdown file ``path``, in order."""
    text = path.read_text(encoding="utf-8")
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def readme_blocks(language: str) -> list[str]:
    """The fenced code blocks of ``language`` of the README, then of each page of ``PAGES``."""
    return [block for path in (README, *PAGES) for block in blocks_of(path, language)]


def runnable(line: str) -> str | None:
    """The line that runs for README line ``line`` (None: skipped), after the two tables."""
    stripped = line.strip()
    for start, replacement, _ in REPLACE:
        if stripped.startswith(start):
            return replacement
    command = stripped.split("#", 1)[0].rstrip() if " #" in stripped else stripped
    if command.startswith(SERVERS):
        return f"{command} --help"
    for start, extra in APPEND:
        if command.startswith(start):
            evaluate_with_samples = start != "pairflow evaluate" or "--samples" in command
            return f"{command} {extra}" if evaluate_with_samples else f"{command} --num-pairs 16"
    return stripped


def test_makefile_demo_recipe_is_the_substituted_command():
    recipe = re.search(r"^demo:.*\n\t(.+)$", (REPO / "Makefile").read_text(), flags=re.M)
    assert recipe is not None
    assert recipe.group(1).strip() == "$(PY) -m pairflow demo --data-dir $(DATA) --out $(OUT)"
    assert re.search(r"^OUT \?= runs/demo$", (REPO / "Makefile").read_text(), flags=re.M)


def test_every_docs_page_runs():
    """A new docs page joins PAGES, so its commands run too; a page named there exists."""
    assert sorted(PAGES) == sorted((REPO / "docs").glob("*.md"))
    assert blocks_of(README, "bash") and blocks_of(README, "python")
    with_commands = [page.name for page in PAGES if blocks_of(page, "bash")]
    assert {"cli.md", "datasets.md", "conditional.md", "results.md"} <= set(with_commands)


def test_every_readme_line_has_a_known_fate():
    """No command of the README or a page is silently dropped: only the table's rules skip a
    line."""
    lines = [line for block in readme_blocks("bash") for line in block.splitlines()]
    assert len(lines) >= 15
    skipped = [line for line in lines if line.strip() and runnable(line) is None]
    skippable = ("make test", "make lint", "pip install")
    assert all(line.strip().startswith(skippable) for line in skipped), skipped
    assert runnable("pairflow evaluate runs/ms --split test") == (
        "pairflow evaluate runs/ms --split test --num-pairs 16"
    )
    assert "--max-steps 2" in runnable("pairflow train --out runs/x  # a comment")


@pytest.fixture(scope="module")
def clone(tmp_path_factory, tiny_mnist_root) -> dict:
    """A clone folder beside ../shared/data (the tiny root), and a PATH shim for pairflow."""
    base = tmp_path_factory.mktemp("readme")
    (base / "shared").mkdir()
    (base / "shared" / "data").symlink_to(tiny_mnist_root, target_is_directory=True)
    work = base / "clone"
    work.mkdir()
    shim = base / "shim"
    shim.mkdir()
    for name, module in (("pairflow", "pairflow"), ("torchrun", "torch.distributed.run")):
        script = shim / name
        script.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m {module} "$@"\n')
        script.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "PAIRFLOW_DATA"}
    # No pairflow or torchrun on PATH until the README's activation line puts them there.
    env["PATH"] = os.pathsep.join(
        d
        for d in env.get("PATH", "").split(os.pathsep)
        if d and not (Path(d) / "pairflow").exists() and not (Path(d) / "torchrun").exists()
    )
    env["SHIM"] = str(shim)
    env["PYTHON"] = sys.executable  # the Makefile's $(PY)
    env.setdefault("OMP_NUM_THREADS", "1")
    src = str(REPO / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return {"work": work, "env": env}


@pytest.fixture(scope="module")
def readme_session(clone) -> subprocess.CompletedProcess:
    """The bash blocks of the README and the pages, run once in the clone (the python blocks
    use their runs)."""
    lines = ["set -euo pipefail", "TIMEFORMAT='  (%R s)'"]  # each command's seconds, to stderr
    for block in readme_blocks("bash"):
        for line in block.splitlines():
            command = runnable(line) if line.strip() else None
            if command:
                quoted = shlex.quote("$ " + command)
                lines += [f"echo {quoted}; echo {quoted} >&2", f"time {command}"]
    # Everything after the README's set-up lines runs with the README's data root, no other.
    assert any(line.startswith("time export PAIRFLOW_DATA=") for line in lines)
    return subprocess.run(
        ["bash", "-c", "\n".join(lines)],
        cwd=clone["work"],
        env=clone["env"],
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow
@pytest.mark.timeout(1500)  # ~2 minutes on an idle 2-core machine; the limit is for loaded ones
def test_readme_bash_blocks_run_as_printed(clone, readme_session):
    proc = readme_session
    assert proc.returncode == 0, f"{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    work = clone["work"]
    # Every file the README promises for the demo, under the name it gives (its
    # samples/epoch_NNN.png is not checked: a 2-step run stops before an epoch ends).
    promised = re.findall(r"`(runs/demo/[^`]+)`", README.read_text(encoding="utf-8"))
    assert len(promised) >= 8, promised
    for name in promised:
        pattern = re.sub(r"NNN+|NAME", "*", name)
        assert list(work.glob(pattern)), f"README promises {name}; the demo did not write it"
    assert "runs/demo/demo.png" in proc.stdout  # the demo lists what it wrote
    # The README's evaluate of a shipped model wrote its report where the README says.
    assert (work / "runs" / "pretrained-multiscale-cond" / "report.md").is_file()


@pytest.mark.slow
def test_readme_python_blocks_run(clone, readme_session):
    """Each ```python block, in a shell set up by the README's own set-up lines, after the
    bash blocks (so a block may load the runs they trained)."""
    assert readme_session.returncode == 0, "the bash blocks failed; see the test above"
    blocks = readme_blocks("python")
    assert blocks, "the README and its pages have no python block"
    setup = [
        runnable(line)
        for block in readme_blocks("bash")
        for line in block.splitlines()
        if line.strip().startswith((". .venv/bin/activate", "export "))
    ]
    assert len(setup) >= 2, setup
    for i, block in enumerate(blocks):
        if any(text in block for text, _ in PYTHON_SKIP):
            continue
        script = "\n".join(["set -euo pipefail", *setup, 'exec "$PYTHON" -c "$BLOCK"'])
        proc = subprocess.run(
            ["bash", "-c", script],
            cwd=clone["work"],
            env={**clone["env"], "BLOCK": block},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, f"python block {i}:\n{block}\n{proc.stderr[-4000:]}"
