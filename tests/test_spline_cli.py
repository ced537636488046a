"""``--set coupling=spline`` end to end on tiny data, for the specified MLP flow (``seed``) and
the multi-scale one: train, resume bit-exactly, sample, evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clitools import pairflow
from pairflow.flows import Coupling, RationalQuadraticSpline
from pairflow.training import load_checkpoint, load_model

TINY = {
    "seed": ["--set", "hidden_features=16"],
    "multiscale": ["--set", "hidden_channels=8", "--set", "num_blocks=1"],
}


def train_args(preset: str, root: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train", "--preset", preset, "--set", "coupling=spline", "--set", "spline_bins=4",
        "--batch-size", "16", "--num-pairs", "64", "--test-pairs", "16", "--data-dir", str(root),
        "--out", str(out), "--device", "cpu", "--precision", "fp32", "--sample-n", "4",
        "--threads", "1", "--no-progress", *TINY[preset], *extra,
    ]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["seed", "multiscale"])
def test_spline_couplings_train_resume_sample_and_evaluate(preset, tiny_mnist_root, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    pairflow(*train_args(preset, tiny_mnist_root, straight, "--epochs", "2"))
    pairflow(*train_args(preset, tiny_mnist_root, split, "--epochs", "1"))
    pairflow(*train_args(preset, tiny_mnist_root, split, "--epochs", "2", "--resume"))
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(split / "last.pt")
    assert a["step"] == b["step"] == 8 and a["model_config"]["coupling"] == "spline"
    for name, value in a["model"].items():  # resume is bit-exact
        assert torch.equal(value, b["model"][name]), name

    model, _ = load_model(split / "last.pt")
    splines = [m.map for m in model.modules() if isinstance(m, Coupling)]
    assert splines and all(isinstance(m, RationalQuadraticSpline) and m.bins == 4 for m in splines)
    records = [json.loads(x) for x in (split / "metrics.jsonl").read_text().splitlines()]
    test_bpd = [r["test_bpd"] for r in records if r["type"] == "test"]
    assert len(test_bpd) == 2 and test_bpd[1] < test_bpd[0]  # it learns

    npz = tmp_path / "samples.npz"
    pairflow("sample", str(split), "--n", "5", "--seed", "3", "--out", str(npz))
    images = np.load(npz)["images"]
    assert images.shape == (5, 28, 56) and images.dtype == np.uint8 and images.std() > 0

    report = tmp_path / "eval.json"
    pairflow("evaluate", str(split), "--data-dir", str(tiny_mnist_root), "--num-pairs", "16",
             "--out", str(report))  # fmt: skip
    result = json.loads(report.read_text())
    assert abs(result["bits_per_dim"] - test_bpd[1]) < 0.5  # the same model, other noise draws
