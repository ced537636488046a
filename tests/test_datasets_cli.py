"""Every command that reads data, end to end on tiny data of each dataset.

MNIST and Fashion-MNIST are synthetic IDX files in their torchvision folders; CIFAR-10 is an
archive written in the real format (``cifar-10-python.tar.gz``, read without extraction).
The commands run in this process (``pairflow.cli.main``), as a user's shell would run them.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pairflow.cli import main

SHAPES = {"mnist": (1, 28, 56), "fashion-mnist": (1, 28, 56), "cifar10": (3, 32, 64)}


def tiny_train_args(root, out, dataset, *extra):
    return [
        "train", "--dataset", dataset, "--preset", "multiscale", "--epochs", "1",
        "--batch-size", "8", "--num-pairs", "16", "--test-pairs", "8", "--data-dir", str(root),
        "--out", str(out), "--device", "cpu", "--precision", "fp32", "--sample-n", "4",
        "--threads", "1", "--no-progress", "--set", "hidden_channels=4", "--set", "num_blocks=1",
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def runs(roots, tmp_path_factory):
    """One tiny flow per dataset, trained by ``pairflow train --dataset D``."""
    out = {}
    for dataset in SHAPES:
        out[dataset] = tmp_path_factory.mktemp("runs") / dataset
        assert main(tiny_train_args(roots[dataset], out[dataset], dataset)) == 0
    return out


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("dataset", list(SHAPES))
def test_data_train_evaluate_sample(dataset, roots, runs, tmp_path, capsys):
    root, run = roots[dataset], runs[dataset]
    code, out, _ = cli(capsys, "data", "--dataset", dataset, "--root", root, "--json",
                       "--preview", tmp_path / "p.png")  # fmt: skip
    info = json.loads(out)
    assert code == 0 and info["dataset"] == dataset
    assert info["image_shape"][0] == SHAPES[dataset][0]
    with Image.open(tmp_path / "p.png") as png:
        assert png.mode == ("RGB" if dataset == "cifar10" else "L")

    saved = json.loads((run / "config.json").read_text())
    assert saved["dataset"] == dataset and saved["layout"] == "pair"
    code, out, _ = cli(capsys, "evaluate", run, "--data-dir", root, "--num-pairs", "8",
                       "--device", "cpu", "--out", tmp_path / "e.json")  # fmt: skip
    report = json.loads((tmp_path / "e.json").read_text())
    assert code == 0 and report["dataset"] == report["trained_on"] == dataset
    assert report["num_pairs"] == 8 and np.isfinite(report["bits_per_dim"])

    npz = tmp_path / "s.npz"
    assert cli(capsys, "sample", run, "--n", "3", "--out", npz, "--device", "cpu")[0] == 0
    images = np.load(npz)["images"]
    c, h, w = SHAPES[dataset]
    assert images.shape == ((3, h, w) if c == 1 else (3, c, h, w)) and images.dtype == np.uint8


def test_cifar_single_layout_and_its_preset(roots, tmp_path, capsys):
    run = tmp_path / "single"
    assert main(tiny_train_args(roots["cifar10"], run, "cifar10", "--layout", "single")) == 0
    assert json.loads((run / "config.json").read_text())["layout"] == "single"
    npz = tmp_path / "single.npz"
    assert cli(capsys, "sample", run, "--n", "2", "--out", npz, "--device", "cpu")[0] == 0
    assert np.load(npz)["images"].shape == (2, 3, 32, 32)
    from pairflow.training import load_checkpoint

    model_config = load_checkpoint(run / "last.pt")["model_config"]
    # CIFAR-10's RealNVP: Dinh et al.'s logit boundary (the sizes were overridden with --set).
    assert model_config["logit_alpha"] == 0.05 and model_config["channels"] == 3


def test_out_of_distribution_bits_per_dim(roots, runs, tmp_path, capsys):
    # The Fashion-MNIST flow scores MNIST pairs (same shape); CIFAR-10 pairs are refused.
    both = tmp_path / "both"
    both.mkdir()
    (both / "MNIST").symlink_to(roots["mnist"] / "MNIST")
    (both / "FashionMNIST").symlink_to(roots["fashion-mnist"] / "FashionMNIST")
    out = tmp_path / "ood.json"
    code, _, _ = cli(capsys, "evaluate", runs["fashion-mnist"], "--data-dir", both, "--dataset",
                     "mnist", "--num-pairs", "8", "--device", "cpu", "--out", out)  # fmt: skip
    report = json.loads(out.read_text())
    assert code == 0 and report["trained_on"] == "fashion-mnist" and report["dataset"] == "mnist"
    assert np.isfinite(report["bits_per_dim"])
    code, _, err = cli(capsys, "evaluate", runs["fashion-mnist"], "--data-dir", roots["cifar10"],
                       "--dataset", "cifar10", "--device", "cpu")  # fmt: skip
    assert code == 2 and "same shape" in err and "Traceback" not in err


@pytest.mark.parametrize("dataset", ["fashion-mnist", "cifar10"])
def test_classifier_train_and_sample_metrics(dataset, roots, runs, tmp_path, capsys):
    weights = tmp_path / "clf.pt"
    code, out, _ = cli(capsys, "classifier", "train", "--dataset", dataset, "--data-dir",
                       roots[dataset], "--out", weights, "--num-pairs", "64", "--batch-size",
                       "32", "--eval-pairs", "16", "--threads", "1")  # fmt: skip
    assert code == 0 and "digit accuracy" in out
    from pairflow.classifier import load_classifier

    clf = load_classifier(weights)
    assert clf.config.dataset == dataset and clf.config.pair_shape == SHAPES[dataset]
    assert clf.meta["dataset"] == dataset and f"--dataset {dataset}" in clf.meta["command"]
    code, out, _ = cli(capsys, "classifier", "eval", "--weights", weights, "--data-dir",
                       roots[dataset], "--json")  # fmt: skip
    assert json.loads(out)["dataset"] == dataset
    # evaluate --samples judges the model with its dataset's classifier, and says which.
    code, out, err = cli(capsys, "evaluate", runs[dataset], "--data-dir", roots[dataset],
                         "--num-pairs", "8", "--samples", "16", "--classifier", weights,
                         "--device", "cpu", "--out", tmp_path / "report")  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "report" / "eval_test.json").read_text())
    assert report["samples"]["classifier"] == f"{dataset} classifier {weights}"
    assert f"{dataset} classifier" in (tmp_path / "report" / "report.md").read_text()
    assert np.isfinite(report["metrics"]["fd"]["model"])


def test_errors_name_the_problem(roots, runs, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:  # argparse: an unknown choice
        main(["data", "--dataset", "cifar100", "--root", str(tmp_path)])
    assert exit_info.value.code == 2 and "cifar10" in capsys.readouterr().err
    code, _, err = cli(capsys, "data", "--dataset", "cifar10", "--root", tmp_path)
    assert code == 2 and "cifar-10-batches-py" in err
    # (Conditional single images train now: tests/test_single_conditional_cli.py.)
    mnist_clf = tmp_path / "mnist.pt"
    assert cli(capsys, "classifier", "train", "--data-dir", roots["mnist"], "--out", mnist_clf,
               "--num-pairs", "32", "--batch-size", "32", "--eval-pairs", "8")[0] == 0  # fmt: skip
    code, _, err = cli(capsys, "evaluate", runs["fashion-mnist"], "--data-dir",
                       roots["fashion-mnist"], "--samples", "8", "--classifier", mnist_clf,
                       "--out", tmp_path / "x")  # fmt: skip
    assert code == 2 and "trained on mnist" in err
