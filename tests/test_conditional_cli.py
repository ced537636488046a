"""Conditional sampling from the command line: --pair, --grid, labels in .npz, label errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from clitools import pairflow


@pytest.fixture(scope="module")
def cond_run(tmp_path_factory, tiny_mnist_root):
    out = tmp_path_factory.mktemp("cond") / "run"
    pairflow(
        "train", "--preset", "seed", "--conditional", "--epochs", "1", "--batch-size", "16",
        "--num-pairs", "64", "--test-pairs", "32", "--data-dir", str(tiny_mnist_root),
        "--out", str(out), "--device", "cpu", "--precision", "fp32", "--sample-n", "4",
        "--no-progress", "--set", "hidden_features=16",
    )  # fmt: skip
    return out


def test_pairs_are_drawn_as_asked_and_labelled_in_npz(cond_run, tmp_path):
    out = tmp_path / "s.npz"
    pairflow("sample", str(cond_run), "--pair", "37,05,99", "--n", "4", "--out", str(out))
    data = np.load(out)
    assert data["images"].shape == (12, 28, 56)
    assert data["labels"].tolist() == [37] * 4 + [5] * 4 + [99] * 4


def test_the_label_changes_the_sample(cond_run, tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    pairflow("sample", str(cond_run), "--pair", "11", "--n", "3", "--seed", "1", "--out", str(a))
    pairflow("sample", str(cond_run), "--pair", "88", "--n", "3", "--seed", "1", "--out", str(b))
    assert not np.array_equal(np.load(a)["images"], np.load(b)["images"])


def test_grid_is_the_10x10_table_of_all_pairs(cond_run, tmp_path):
    out = tmp_path / "grid.npz"
    pairflow("sample", str(cond_run), "--grid", "--out", str(out))
    assert np.load(out)["labels"].tolist() == list(range(100))
    png = tmp_path / "grid.png"
    pairflow("sample", str(cond_run), "--grid", "--out", str(png))
    with Image.open(png) as img:
        assert img.width > 10 * 56 and img.height > 10 * 28


@pytest.mark.parametrize("pair", ["137", "ab", "-1", "3x", ""])
def test_bad_pair_labels_exit_2(cond_run, pair, tmp_path):
    proc = pairflow("sample", str(cond_run), "--pair", pair, "--out", str(tmp_path / "x.png"),
                    check=False)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "is not a digit pair" in proc.stderr and "Traceback" not in proc.stderr


def test_list_pretrained_names_each_shipped_model(tmp_path):
    from pairflow.pretrained import list_pretrained

    proc = pairflow("sample", "--list-pretrained")
    for name in list_pretrained():
        assert name in proc.stdout
