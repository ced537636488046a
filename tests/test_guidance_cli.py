"""Classifier-free guidance from the command line, end to end on tiny data.

``train --conditional --set label_dropout=P`` trains a flow with a null label;
``sample --guidance W`` and ``evaluate --samples N --guidance W`` draw with guidance; models
without label dropout and bad weights exit 2 with a message, before any work.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from clitools import pairflow


def _train(root, out, *extra: str):
    return pairflow(
        "train", "--preset", "seed", "--conditional", "--epochs", "1", "--batch-size", "16",
        "--num-pairs", "64", "--test-pairs", "32", "--data-dir", str(root), "--out", str(out),
        "--device", "cpu", "--precision", "fp32", "--sample-n", "4", "--no-progress",
        "--set", "hidden_features=16", *extra,
    )  # fmt: skip


@pytest.fixture(scope="module")
def guided_run(tmp_path_factory, tiny_mnist_root):
    out = tmp_path_factory.mktemp("guided") / "run"
    _train(tiny_mnist_root, out, "--set", "label_dropout=0.3")
    return out


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory, tiny_mnist_root):
    out = tmp_path_factory.mktemp("plain") / "run"
    _train(tiny_mnist_root, out)
    return out


def test_label_dropout_trains_a_null_label_that_never_reaches_p_y(guided_run, tiny_mnist_root):
    import torch

    from pairflow.data import PairedMNIST
    from pairflow.training import load_model

    model, _ = load_model(guided_run)
    assert model.config.label_dropout == 0.3 and model.guidable
    # The null label was trained: it moved from its zero start.
    assert model.embedding.null.abs().sum() > 0
    # p(y) is the training labels' frequencies over the 100 pair labels, nothing else.
    counts = PairedMNIST(tiny_mnist_root, train=True, num_pairs=64, seed=0).pair_label_counts()
    probs = model.distribution.class_probs
    assert probs.shape == (100,)
    torch.testing.assert_close(probs.double(), counts.flatten().double() / counts.sum())


def test_a_fine_tune_of_a_guided_flow_keeps_its_label_dropout(
    guided_run, tiny_mnist_root, tmp_path
):
    # Its null label is a weight of the source: without --set label_dropout the fine-tune keeps
    # it (and so guidance), starting from the source's own null label.
    import torch

    from pairflow.training import load_checkpoint, load_model

    out = tmp_path / "fine-tune"
    _train(tiny_mnist_root, out, "--init-from", str(guided_run), "--lr", "1e-9")
    model, _ = load_model(out)
    source, _ = load_model(guided_run)
    assert model.config.label_dropout == 0.3 and model.guidable
    torch.testing.assert_close(model.embedding.null, source.embedding.null, rtol=0, atol=1e-6)
    assert load_checkpoint(out / "last.pt")["train_config"]["init_from"] == str(guided_run)


def test_a_fine_tune_without_label_dropout_leaves_the_null_label_out(
    guided_run, tiny_mnist_root, tmp_path
):
    from pairflow.training import load_model

    out = tmp_path / "no-dropout"
    proc = _train(tiny_mnist_root, out, "--init-from", str(guided_run), "--set", "label_dropout=0")
    assert "its null label is left out (--set label_dropout=0)" in proc.stdout
    model, _ = load_model(out)
    assert not model.config.label_dropout and not model.guidable


def _sample_unguided_at_zero_and_guided(run, pair: str, tmp_path):
    """The same 3 samples per pair of ``run`` without guidance, at w = 0 and at w = 1.5."""
    plain, zero, guided = tmp_path / "p.npz", tmp_path / "z.npz", tmp_path / "g.npz"
    common = ["sample", str(run), "--pair", pair, "--n", "3", "--seed", "1"]
    pairflow(*common, "--out", str(plain))
    pairflow(*common, "--guidance", "0", "--out", str(zero))
    proc = pairflow(*common, "--guidance", "1.5", "--out", str(guided))
    assert "guidance 1.5" in proc.stdout
    return plain, zero, guided


def test_sample_with_guidance_zero_is_the_conditional_model(guided_run, tmp_path):
    plain, zero, guided = _sample_unguided_at_zero_and_guided(guided_run, "37,05", tmp_path)
    assert np.array_equal(np.load(zero)["images"], np.load(plain)["images"])
    assert np.load(guided)["labels"].tolist() == [37] * 3 + [5] * 3
    assert not np.array_equal(np.load(guided)["images"], np.load(plain)["images"])


def test_label_free_sampling_with_guidance(guided_run, tmp_path):
    out = tmp_path / "free.npz"
    proc = pairflow("sample", str(guided_run), "--n", "8", "--guidance", "-1", "--out", str(out))
    assert "guidance -1" in proc.stdout
    data = np.load(out)
    assert data["images"].shape == (8, 28, 56) and data["labels"].min() >= 0


def test_evaluate_samples_with_guidance(guided_run, tiny_mnist_root, tmp_path):
    out = tmp_path / "eval.json"
    proc = pairflow(
        "evaluate", str(guided_run), "--samples", "64", "--guidance", "1.5", "--num-pairs", "8",
        "--data-dir", str(tiny_mnist_root), "--out", str(out), "--no-progress",
    )  # fmt: skip
    report = json.loads(out.read_text())
    assert report["samples"]["guidance"] == 1.5
    assert "guidance 1.5" in proc.stderr
    assert "classifier-free guidance 1.5" in (tmp_path / "eval.md").read_text()


@pytest.mark.parametrize(
    "args, message",
    [
        (["sample", "RUN", "--guidance", "nan"], "--guidance must be a finite number"),
        (["sample", "RUN", "--guidance", "25"], "--guidance must be a finite number"),
        (["sample", "RUN", "--interpolate", "--guidance", "1"], "--guidance does not apply"),
        (["evaluate", "RUN", "--guidance", "1"], "add --samples N"),
        (["evaluate", "RUN", "--samples", "8", "--guidance", "inf"], "finite number"),
    ],
)
def test_bad_guidance_exits_2_before_any_work(guided_run, tmp_path, args, message):
    args = [str(guided_run) if a == "RUN" else a for a in args]
    proc = pairflow(*args, "--out", str(tmp_path / "x.png"), check=False)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.png").exists()


def test_a_model_without_label_dropout_refuses_guidance(plain_run, tiny_mnist_root, tmp_path):
    for args in (
        ["sample", str(plain_run), "--guidance", "1", "--out", str(tmp_path / "x.png")],
        ["evaluate", str(plain_run), "--samples", "8", "--guidance", "1",
         "--data-dir", str(tiny_mnist_root), "--out", str(tmp_path / "e.json")],
    ):  # fmt: skip
        proc = pairflow(*args, check=False)
        assert proc.returncode == 2, proc.stderr
        assert "trained with label dropout" in proc.stderr, proc.stderr
        assert "label_dropout=0.1" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "e.json").exists()


def test_label_dropout_without_labels_is_refused_by_train(tiny_mnist_root, tmp_path):
    proc = pairflow(
        "train", "--preset", "seed", "--epochs", "1", "--data-dir", str(tiny_mnist_root),
        "--out", str(tmp_path / "run"), "--set", "label_dropout=0.2", check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "label_dropout" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def test_a_fine_tune_with_label_dropout_from_a_model_without_it(
    plain_run, tiny_mnist_root, tmp_path
):
    from pairflow.training import load_model

    out = tmp_path / "tuned"
    proc = pairflow(
        "train", "--init-from", str(plain_run), "--preset", "seed", "--conditional",
        "--epochs", "1", "--batch-size", "16", "--num-pairs", "64", "--test-pairs", "32",
        "--data-dir", str(tiny_mnist_root), "--out", str(out), "--device", "cpu",
        "--precision", "fp32", "--sample-n", "4", "--no-progress",
        "--set", "hidden_features=16", "--set", "label_dropout=0.3",
    )  # fmt: skip
    assert "null label starts at the digits' average (embedding, prior)" in proc.stdout
    assert load_model(out)[0].guidable
    pairflow("sample", str(out), "--guidance", "2", "--n", "4", "--out", str(tmp_path / "s.png"))


@pytest.mark.slow
def test_a_tarflow_trained_with_label_dropout_samples_and_evaluates_with_guidance(
    tiny_mnist_root, tmp_path
):
    from pairflow.app import core
    from test_tarflow import train_args  # the tarflow end-to-end test's tiny sizes

    run = tmp_path / "tarflow"
    pairflow(*train_args(tiny_mnist_root, run, "--conditional", "--set", "label_dropout=0.2"))
    assert core.load_model(str(run)).guidable  # the app shows its guidance slider
    plain, zero, guided = _sample_unguided_at_zero_and_guided(run, "37", tmp_path)
    images = np.load(guided)["images"]
    assert images.shape == (3, 28, 56) and np.load(guided)["labels"].tolist() == [37] * 3
    assert np.array_equal(np.load(zero)["images"], np.load(plain)["images"])  # w = 0
    assert not np.array_equal(images, np.load(plain)["images"])
    out = tmp_path / "eval.json"
    pairflow(
        "evaluate", str(run), "--samples", "16", "--guidance", "1", "--num-pairs", "8",
        "--data-dir", str(tiny_mnist_root), "--out", str(out), "--no-progress",
    )  # fmt: skip
    assert json.loads(out.read_text())["samples"]["guidance"] == 1.0


def test_the_sample_sweep_guides_given_and_drawn_labels(guided_run, tiny_mnist_root, tmp_path):
    """benchmarks/sample_sweep.py sweeps the guidance weights given a label and with the
    label drawn from p(y); w = 0 is the unguided row's model, so its samples are the same."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "sample_sweep.py"
    out, picture = tmp_path / "sweep.json", tmp_path / "sweep.png"
    proc = subprocess.run(
        [sys.executable, str(script), "--models", str(guided_run), "--samples", "100",
         "--temperatures", "0.7", "--guidance", "-1", "0", "1", "--data-dir",
         str(tiny_mnist_root), "--threads", "1", "--out", str(out), "--plot", str(picture)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())["rows"]
    settings = {(r["mode"], r["guidance"]) for r in rows}
    assert settings == {(m, w) for m in ("given-label", "label-free") for w in (None, -1, 0, 1)}
    by = {(r["mode"], r["guidance"]): r for r in rows}
    for mode in ("given-label", "label-free"):  # w = 0 is exactly the conditional model
        assert by[(mode, 0)]["fd"] == pytest.approx(by[(mode, None)]["fd"], rel=1e-6)
        assert by[(mode, 1)]["fd"] != by[(mode, None)]["fd"]
    assert picture.stat().st_size > 0


@pytest.fixture(scope="module")
def run_with_own_guidance(guided_run, tmp_path_factory):
    """``guided_run`` whose checkpoints carry the guidance weights a sweep chose, as a shipped
    model's do once loaded (its ``weights/index.json`` entry's ``"guidance"``)."""
    import shutil

    import torch

    out = tmp_path_factory.mktemp("own-guidance") / "run"
    shutil.copytree(guided_run, out)
    for file in out.glob("*.pt"):
        state = torch.load(file, map_location="cpu", weights_only=False)
        state["sampling_guidance"] = {"default": 0.5, "label_free": 1.5}
        torch.save(state, file)
    return out


def test_a_models_own_guidance_is_the_default_and_zero_turns_it_off(
    guided_run, run_with_own_guidance, tmp_path
):
    def draw(run, name, *extra):
        out = tmp_path / f"{name}.npz"
        proc = pairflow("sample", str(run), "--n", "3", "--seed", "1", *extra, "--out", str(out))
        return np.load(out)["images"], proc.stdout

    own, said = draw(run_with_own_guidance, "own", "--pair", "37")
    assert "guidance 0.5, the default of this model; --guidance 0 for none" in said
    explicit, _ = draw(guided_run, "explicit", "--pair", "37", "--guidance", "0.5")
    assert np.array_equal(own, explicit)
    off, said = draw(run_with_own_guidance, "off", "--pair", "37", "--guidance", "0")
    plain, _ = draw(guided_run, "plain", "--pair", "37")
    assert np.array_equal(off, plain) and not np.array_equal(off, own)
    assert "default of this model" not in said
    # Labels drawn from p(y) take the label-free weight.
    free, said = draw(run_with_own_guidance, "free")
    assert "guidance 1.5, the label-free default of this model" in said
    assert np.array_equal(free, draw(guided_run, "free-explicit", "--guidance", "1.5")[0])


def test_evaluate_takes_a_models_own_guidance(run_with_own_guidance, tiny_mnist_root, tmp_path):
    common = ["evaluate", str(run_with_own_guidance), "--samples", "32", "--num-pairs", "8",
              "--data-dir", str(tiny_mnist_root), "--no-progress"]  # fmt: skip
    pairflow(*common, "--out", str(tmp_path / "given.json"))
    pairflow(*common, "--labels", "prior", "--out", str(tmp_path / "free.json"))
    pairflow(*common, "--guidance", "0", "--out", str(tmp_path / "off.json"))
    samples = {k: json.loads((tmp_path / f"{k}.json").read_text())["samples"]
               for k in ("given", "free", "off")}  # fmt: skip
    assert samples["given"]["guidance"] == 0.5 and samples["free"]["guidance"] == 1.5
    assert samples["off"]["guidance"] == 0
