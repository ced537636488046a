"""benchmarks/score_step_probe.py: the denoising step given to a flow trained without noise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from clitools import pairflow

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "score_step_probe.py"


def _probe(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def test_sigma_zero_is_the_flow_as_it_samples_and_a_step_changes_the_samples(
    tiny_mnist_root, tmp_path
):
    run = tmp_path / "run"
    pairflow(
        "train", "--preset", "seed", "--epochs", "1", "--batch-size", "16", "--num-pairs",
        "64", "--test-pairs", "32", "--data-dir", str(tiny_mnist_root), "--out", str(run),
        "--device", "cpu", "--precision", "fp32", "--sample-n", "4", "--no-progress",
        "--set", "hidden_features=16",
    )  # fmt: skip
    args = ("--model", run, "--samples", 64, "--data-dir", tiny_mnist_root, "--threads", 1)
    proc = _probe(*args, "--sigmas", 0, 1.0)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["rows"]
    assert [r["sigma"] for r in rows] == [0.0, 1.0]
    # sigma 0 judges the samples pairflow evaluate judges: same seed, same metrics
    evaluated = tmp_path / "eval"
    pairflow("evaluate", str(run), "--samples", "64", "--temperature", "0.7", "--data-dir",
             str(tiny_mnist_root), "--out", str(evaluated), "--num-pairs", "32",
             "--precision", "fp32")  # fmt: skip
    report = json.loads(next(evaluated.glob("*.json")).read_text())
    assert rows[0]["fd"] == round(report["metrics"]["fd"]["model"], 4)
    assert rows[1]["fd"] != rows[0]["fd"]  # the step moved the samples
    bad = _probe(*args, "--sigmas", -0.1)
    assert bad.returncode == 2 and "--sigmas must be >= 0" in bad.stderr
