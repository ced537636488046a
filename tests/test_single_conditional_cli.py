"""``pairflow train --layout single --conditional`` end to end on tiny data of each dataset.

Then ``sample --label``/``--grid``/label-free, ``evaluate`` (bits/dim given the label, the
exact marginal), and the label mistakes a user makes, each exiting 2 with a message naming
the right form. In process (``pairflow.cli.main``), as in ``test_datasets_cli``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from pairflow.cli import main

# dataset -> (preset, conditioning, image shape)
RUNS = {
    "mnist": ("multiscale", "both", (1, 28, 28)),
    "fashion-mnist": ("glow", "mixture", (1, 28, 28)),
    "cifar10": ("multiscale", "embedding", (3, 32, 32)),
}


def train_args(root, out, dataset, preset, *extra):
    return [
        "train", "--dataset", dataset, "--layout", "single", "--conditional", "--preset",
        preset, "--epochs", "1", "--batch-size", "8", "--num-pairs", "16", "--test-pairs", "8",
        "--data-dir", str(root), "--out", str(out), "--device", "cpu", "--precision", "fp32",
        "--sample-n", "4", "--threads", "1", "--no-progress", "--no-compile",
        "--set", "hidden_channels=4", "--set", "num_blocks=1", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def runs(roots, tmp_path_factory):
    """One tiny conditional flow of single images per dataset."""
    out = {}
    for dataset, (preset, conditioning, _) in RUNS.items():
        out[dataset] = tmp_path_factory.mktemp("single") / dataset
        extra = ["--set", f"conditioning={conditioning}"]
        if preset == "glow":
            extra += ["--set", "glow_steps=2"]
        assert main(train_args(roots[dataset], out[dataset], dataset, preset, *extra)) == 0
    return out


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("dataset", list(RUNS))
def test_train_sample_and_evaluate_a_conditional_single_image_flow(
    dataset, roots, runs, tmp_path, capsys
):
    run, (_, conditioning, (c, h, w)) = runs[dataset], RUNS[dataset]
    saved = json.loads((run / "config.json").read_text())
    assert saved["layout"] == "single" and saved["conditional"] is True

    npz = tmp_path / "s.npz"
    code, _, err = cli(capsys, "sample", run, "--label", "3,8", "--n", "2", "--out", npz,
                       "--device", "cpu")  # fmt: skip
    assert code == 0, err
    data = np.load(npz)
    assert data["images"].shape == ((4, h, w) if c == 1 else (4, c, h, w))
    assert data["labels"].tolist() == [3, 3, 8, 8]

    grid = tmp_path / "grid.npz"
    assert cli(capsys, "sample", run, "--grid", "--n", "20", "--out", grid)[0] == 0
    assert np.load(grid)["labels"].tolist() == np.repeat(np.arange(10), 2).tolist()
    free = tmp_path / "free.npz"  # no label: y ~ p(y), the training images' frequencies
    assert cli(capsys, "sample", run, "--n", "5", "--out", free)[0] == 0
    assert set(np.load(free)["labels"].tolist()) <= set(range(10))

    code, out, err = cli(capsys, "evaluate", run, "--data-dir", roots[dataset], "--num-pairs",
                         "8", "--marginal-pairs", "4", "--device", "cpu", "--out",
                         tmp_path / "e.json")  # fmt: skip
    assert code == 0, err
    summary = next(line for line in err.splitlines() if " bits/dim " in line)  # on stderr
    assert "on 8 images" in summary and "pairs" not in summary, err  # single images
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["layout"] == "single" and report["num_pairs"] == 8
    assert np.isfinite(report["bits_per_dim"])
    if conditioning == "mixture":  # one pass: the marginal is its headline number
        assert np.isfinite(report["bits_per_dim_given_label"])
    else:  # the couplings read the label: 10 passes per image for the exact marginal
        marginal = report["unconditional"]
        assert marginal["label_passes"] == 10 and marginal["num_pairs"] == 4
        assert np.isfinite(marginal["bits_per_dim"])
        # log p(x) >= log p(y) + log p(x | y): the marginal is below the bound on each image
        assert marginal["bits_per_dim"] <= marginal["bits_per_dim_upper_bound"] + 1e-3
    assert 0 <= report["classification"]["flow_accuracy"] <= 1


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--pair", "37"], "draws single images, whose labels are one class 0..9"),
        (["--pair", "7"], "give --label 7"),
        (["--label", "37"], "a pair model takes --pair 37"),
        (["--label", "x"], "'x' is not a class label; give one digit 0..9"),
        (["--label", "10"], "'10' is not a class label"),
        (["--label", "3", "--grid"], "--label and --grid exclude each other"),
    ],
)
def test_label_mistakes_exit_2_naming_the_right_form(runs, flags, message, tmp_path, capsys):
    code, _, err = cli(capsys, "sample", runs["mnist"], *flags, "--out", tmp_path / "x.png")
    assert code == 2 and message in err and "Traceback" not in err, err


def test_a_pair_model_refuses_label_and_layout_cannot_be_set_twice(roots, tmp_path, capsys):
    pair = tmp_path / "pair"
    args = train_args(roots["mnist"], pair, "mnist", "multiscale")
    args[args.index("single")] = "pair"
    assert main(args) == 0
    code, _, err = cli(capsys, "sample", pair, "--label", "7", "--out", tmp_path / "x.png")
    assert code == 2 and "draws pairs: give --pair" in err
    code, _, _ = cli(
        capsys, "sample", pair, "--pair", "37", "--n", "1", "--out", tmp_path / "p.npz"
    )
    assert code == 0 and np.load(tmp_path / "p.npz")["labels"].tolist() == [37]
    bad = train_args(
        roots["mnist"], tmp_path / "bad", "mnist", "multiscale", "--set", "layout=pair"
    )
    code, _, err = cli(capsys, *bad)
    assert code == 2 and "give --layout pair instead" in err


BASELINE_SIZES = {
    "vae": ["latent_dim=4", "hidden_channels=4", "hidden_features=16", "num_mixtures=1"],
    "gan": ["latent_dim=8", "generator_channels=4", "discriminator_channels=4"],
}


@pytest.mark.parametrize("model", ["vae", "gan"])
def test_conditional_baselines_of_single_images_train_sample_and_evaluate(
    model, roots, tmp_path, capsys
):
    """The conditional VAE and GAN take --layout single as the flows do: class labels 0..9,
    one class vector over the whole image (``layout`` in their saved config)."""
    run = tmp_path / model
    args = train_args(roots["fashion-mnist"], run, "fashion-mnist", "multiscale")
    args = args[: args.index("--set")]  # the flow's sizes are not the baselines'
    args[args.index("--preset") + 1] = "conv" if model == "vae" else "dcgan"
    for size in BASELINE_SIZES[model]:
        args += ["--set", size]
    code, _, err = cli(capsys, *args, "--model", model)
    assert code == 0, err
    state = json.loads((run / "config.json").read_text())
    assert state["layout"] == "single"
    npz = tmp_path / "s.npz"
    code, _, err = cli(capsys, "sample", run, "--label", "0,9", "--n", "2", "--out", npz)
    assert code == 0, err
    assert np.load(npz)["images"].shape == (4, 28, 28)
    assert np.load(npz)["labels"].tolist() == [0, 0, 9, 9]
    code, _, err = cli(capsys, "sample", run, "--label", "12", "--out", tmp_path / "x.png")
    assert code == 2 and "'12' is not a class label" in err
    if model == "vae":  # a likelihood bound given the label, per single-image dimension
        out = tmp_path / "e.json"
        code, _, err = cli(capsys, "evaluate", run, "--data-dir", roots["fashion-mnist"],
                           "--num-pairs", "8", "--out", out)  # fmt: skip
        assert code == 0, err
        report = json.loads(out.read_text())
        assert report["layout"] == "single" and np.isfinite(report["bits_per_dim_bound"])
