"""A class-mixture flow end to end: train with labels, sample without, evaluate and classify."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clitools import pairflow
from pairflow.training import load_checkpoint

pytestmark = pytest.mark.slow  # CLI runs: train, sample and evaluate with --samples


@pytest.fixture(scope="module")
def mix_run(tmp_path_factory, tiny_mnist_root):
    out = tmp_path_factory.mktemp("mix") / "run"
    pairflow(
        "train", "--preset", "multiscale", "--conditional", "--epochs", "1", "--batch-size", "16",
        "--num-pairs", "64", "--test-pairs", "32", "--data-dir", str(tiny_mnist_root),
        "--out", str(out), "--device", "cpu", "--precision", "fp32", "--sample-n", "4",
        "--no-progress", "--threads", "1", "--ema-decay", "0.9",
        "--set", "hidden_channels=4", "--set", "conditioning=mixture",
    )  # fmt: skip
    return out


def test_training_sets_p_y_and_logs_the_mixture_numbers(mix_run, tiny_mnist_root):
    from pairflow.data import PairedMNIST

    state = load_checkpoint(mix_run / "last.pt")
    train_set = PairedMNIST(tiny_mnist_root, train=True, seed=0, num_pairs=64)
    counts = train_set.pair_label_counts().flatten().double()
    probs = state["ema"]["shadow"]["distribution.class_probs"].double()
    np.testing.assert_allclose(probs.numpy(), (counts / counts.sum()).numpy(), rtol=1e-6)
    records = [json.loads(line) for line in (mix_run / "metrics.jsonl").read_text().splitlines()]
    test = [r for r in records if r["type"] == "test"][-1]
    assert {"test_bpd", "test_bpd_given_label", "test_accuracy"} <= set(test)
    # log p(x) >= log p(x, y) = log p(x | y) + log p(y): the marginal costs at most -log p(y).
    assert test["test_bpd"] <= test["test_bpd_given_label"] + 1e-6 + np.log2(100) / (28 * 56)


def test_sample_without_a_pair_draws_labels_from_p_y(mix_run, tmp_path):
    out = tmp_path / "s.npz"
    pairflow("sample", str(mix_run), "--n", "6", "--out", str(out))
    images = np.load(out)["images"]
    assert images.shape[0] == 6
    pairflow("sample", str(mix_run), "--pair", "37", "--n", "2", "--out", str(tmp_path / "p.png"))


def test_evaluate_mixture_fields(mix_run, tiny_mnist_root, tmp_path):
    out = tmp_path / "eval"
    common = ["--data-dir", str(tiny_mnist_root), "--device", "cpu", "--out", str(out)]
    pairflow("evaluate", str(mix_run), "--num-pairs", "40", "--samples", "30", *common)
    report = json.loads((out / "eval_test.json").read_text())
    assert report["class_mixture"] is True
    assert report["bits_per_dim"] <= report["bits_per_dim_given_label"] + 0.01
    c = report["classification"]
    assert 0 <= c["flow_accuracy"] <= 1 and 0 <= c["classifier_accuracy"] <= 1
    assert c["num_pairs"] == 40
    assert report["samples"]["requested_labels"] is None  # drawn without labels
    assert report["samples"]["temperature"] == 0.8  # the label-free sampler's default
    assert "conditional_accuracy" not in report["metrics"]
    assert "As a pair classifier" in (out / "report.md").read_text()


def test_init_from_fits_the_mixture_to_the_trained_body(tiny_mnist_root, tmp_path):
    import torch

    from pairflow.data import PairedMNIST
    from pairflow.flows.mixture import ClassMixture
    from pairflow.flows.preprocessing import dequantize
    from pairflow.training import TrainConfig, load_model, train

    base = dict(
        preset="multiscale", batch_size=16, warmup_steps=2, num_pairs=200, test_pairs=32,
        data_dir=str(tiny_mnist_root), device="cpu", precision="fp32", sample_n=4, epochs=1,
    )  # fmt: skip
    tiny = {"hidden_channels": 4}
    train(TrainConfig(**base, out=str(tmp_path / "a"), model_overrides=tiny), progress=False)
    mix = {**tiny, "conditioning": "mixture"}
    config = TrainConfig(
        **base, max_steps=1, lr=1e-9, conditional=True, init_from=str(tmp_path / "a"),
        out=str(tmp_path / "b"), model_overrides=mix,
    )  # fmt: skip
    train(config, progress=False)
    fitted = load_checkpoint(tmp_path / "b" / "last.pt")["model"]
    # The same fit by hand: the base model's latents of the training pairs, per digit.
    body, _ = load_model(tmp_path / "a")
    pairs = PairedMNIST(tiny_mnist_root, train=True, seed=0, num_pairs=200)
    x, y = pairs.get_batch(torch.arange(200))
    expected = ClassMixture((1, 28, 56))
    with torch.no_grad():  # uniform dequantisation, as in training, with the fit's seed
        z, _ = body(dequantize(x, torch.Generator().manual_seed(0)))
    expected.fit(z, y)
    assert fitted["distribution.loc"].abs().max() > 0.01
    torch.testing.assert_close(fitted["distribution.loc"], expected.loc.detach(), atol=1e-4, rtol=0)
    torch.testing.assert_close(
        fitted["distribution.log_scale"], expected.log_scale.detach(), atol=1e-4, rtol=0
    )
