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
    from pairflow.pretrained import list_pretrained, shipped_bpd_text

    proc = pairflow("sample", "--list-pretrained")
    lines = {line.split()[0]: line for line in proc.stdout.splitlines()}
    for name, meta in list_pretrained().items():
        # Its test bits/dim, a variational bound written as one ("<= ... (variational bound)").
        assert lines[name].endswith(f"test bits/dim {shipped_bpd_text(meta)}"), lines[name]


def test_training_sets_p_y_and_sampling_without_a_pair_draws_from_it(
    cond_run, tiny_mnist_root, tmp_path
):
    import torch

    from pairflow.data import PairedMNIST
    from pairflow.training import load_model

    model, _ = load_model(cond_run)
    counts = PairedMNIST(tiny_mnist_root, train=True, num_pairs=64, seed=0).pair_label_counts()
    counts = counts.flatten()  # (10, 10) [left, right] -> label 10 a + b
    torch.testing.assert_close(model.log_label_probs().exp(), counts.float() / counts.sum())
    out = tmp_path / "free.npz"
    proc = pairflow("sample", str(cond_run), "--n", "200", "--out", str(out))
    drawn = set(np.load(out)["labels"].tolist())
    seen = set(torch.nonzero(counts.flatten()).flatten().tolist())
    assert drawn <= seen and len(drawn) > 10  # 64 training pairs: at most 64 of 100 labels
    # label-free draws default to T = 0.8 (where their FD is best), given labels to 0.7
    assert "(temperature 0.8, the label-free default)" in proc.stdout
    images = {}
    for t in ("0.8", "0.7"):
        pairflow("sample", str(cond_run), "--n", "200", "--temperature", t,
                 "--out", str(tmp_path / f"t{t}.npz"))  # fmt: skip
        images[t] = np.load(tmp_path / f"t{t}.npz")["images"]
    assert np.array_equal(np.load(out)["images"], images["0.8"])
    assert not np.array_equal(images["0.8"], images["0.7"])
    asked = pairflow("sample", str(cond_run), "--pair", "37", "--n", "2",
                     "--out", str(tmp_path / "37.npz"))  # fmt: skip
    assert "(temperature 0.7, the default)" in asked.stdout


def test_evaluate_gives_the_exact_unconditional_bits_per_dim(cond_run, tiny_mnist_root):
    import json

    proc = pairflow("evaluate", str(cond_run), "--data-dir", str(tiny_mnist_root),
                    "--num-pairs", "4", "--marginal-pairs", "4")  # fmt: skip
    report = json.loads(proc.stdout[: proc.stdout.rindex("}") + 1])
    free = report["unconditional"]
    # log p(x) >= log p(y) + log p(x | y): the exact number is at most the bound, and more
    # than the given-label number minus the labels' bits (it sums over every label).
    assert free["num_pairs"] == 4 and free["label_passes"] == 100
    assert free["bits_per_dim"] <= free["bits_per_dim_upper_bound"] + 1e-9
    assert free["bits_per_dim_given_label"] == pytest.approx(report["bits_per_dim"], rel=1e-6)
    assert 0 <= report["classification"]["flow_accuracy"] <= 1
