"""The label-free mixture prior (``prior="mixture"``): exact marginal, component draws that
follow the weights, k-means, its start from clusters, and a flow trained with it end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from clitools import pairflow
from flowtools import one_thread, randomize
from pairflow.flows import FlowConfig, build_flow
from pairflow.flows.mixture import ClusterMixture, kmeans


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def tiny_cluster_flow(seed: int = 0):
    flow = build_flow("multiscale", height=4, width=8, hidden_channels=4, prior="mixture")
    randomize(flow, seed=seed)
    flow.distribution.set_class_counts(torch.arange(1, 101, dtype=torch.float64))  # non-uniform
    return flow.double()


def test_flow_log_prob_is_the_log_sum_exp_over_the_100_components():
    flow = tiny_cluster_flow()
    assert not flow.config.conditional and flow.config.cluster_mixture
    x = torch.randint(0, 256, (4, 1, 4, 8), dtype=torch.uint8,
                      generator=torch.Generator().manual_seed(0))  # fmt: skip
    from pairflow.flows.preprocessing import dequantize

    y = dequantize(x, torch.Generator().manual_seed(7)).double()
    z, logabsdet = flow(y)
    prior = flow.distribution
    brute = []
    for k in range(100):  # each component's Gaussian, built from its two halves by hand
        a, b = divmod(k, 10)
        loc = torch.cat([prior.loc[0, a], prior.loc[1, b]], -1)
        scale = torch.cat([prior.log_scale[0, a], prior.log_scale[1, b]], -1).exp()
        normal = torch.distributions.Normal(loc, scale).log_prob(z).flatten(1).sum(1)
        brute.append(normal + math.log(prior.class_probs[k]))
    expected = torch.logsumexp(torch.stack(brute, 1), 1) + logabsdet
    got = flow.log_prob(x, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(got, expected)
    # Not just the nearest component: the others contribute.
    assert (got - (torch.stack(brute, 1).max(1).values + logabsdet) > 1e-6).all()


def test_component_draws_follow_the_weights_and_their_gaussians():
    prior = ClusterMixture((1, 2, 4))
    counts = torch.arange(1, 101, dtype=torch.float64) ** 1.5
    prior.set_class_counts(counts)
    with torch.no_grad():
        prior.loc[0] = torch.arange(10.0)[:, None, None, None] * 10  # left mean = 10 a
        prior.loc[1] = -torch.arange(10.0)[:, None, None, None] * 10  # right mean = -10 b
    n = 100_000
    z, k = prior.sample_with_labels(n, temperature=0.01, generator=torch.Generator().manual_seed(0))
    observed = torch.bincount(k, minlength=100).double()
    expected = n * counts / counts.sum()
    # chi-square with 99 degrees of freedom: 99.9th percentile 148.2.
    assert ((observed - expected) ** 2 / expected).sum().item() < 148.2
    torch.testing.assert_close(z[..., :2].mean((1, 2, 3)), 10.0 * (k // 10), atol=0.1, rtol=0)
    torch.testing.assert_close(z[..., 2:].mean((1, 2, 3)), -10.0 * (k % 10), atol=0.1, rtol=0)
    # The label is not read: a cond is ignored, as an unconditional model's sample ignores it.
    assert prior.uses_label is False
    with_cond = prior.sample(5, cond=torch.arange(5), generator=torch.Generator().manual_seed(1))
    without = prior.sample(5, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(with_cond, without)


def test_kmeans_recovers_separated_clusters_and_keeps_every_cluster():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 3, generator=g) * 20
    truth = torch.arange(200) % 4
    points = centres[truth] + torch.randn(200, 3, generator=g)
    found = kmeans(points, 4, seed=1)
    # The same partition up to renaming: each found cluster is one true cluster.
    for j in range(4):
        assert truth[found == j].unique().numel() == 1
    assert found.unique().numel() == 4
    # Duplicated points: k = the number of distinct points still gives k non-empty clusters.
    few = torch.tensor([[0.0], [0.0], [1.0], [5.0], [5.0]])
    assert kmeans(few, 3).unique().numel() == 3
    with pytest.raises(ValueError, match="distinct"):
        kmeans(few, 4)
    with pytest.raises(ValueError, match="k="):
        kmeans(few, 6)


def test_fit_clusters_is_the_maximum_likelihood_start_for_the_pixel_clusters():
    prior = ClusterMixture((1, 2, 4)).double()
    g = torch.Generator().manual_seed(0)
    # Images whose left half is one of 10 grey levels and right half another: k-means on each
    # half's pixels must find exactly those groups.
    a, b = torch.randint(0, 10, (2, 600), generator=g)
    images = torch.empty(600, 1, 2, 4, dtype=torch.uint8)
    images[..., :2] = (a * 25).to(torch.uint8)[:, None, None, None]  # the left half's columns
    images[..., 2:] = (b * 25).to(torch.uint8)[:, None, None, None]
    z = torch.randn(600, 1, 2, 4, generator=g, dtype=torch.float64) + (a - b)[:, None, None, None]
    clusters = prior.fit_clusters(z, images)
    left, right = clusters // 10, clusters % 10
    for j in range(10):  # the clusters are the grey levels, renamed
        assert a[left == j].unique().numel() == 1 and b[right == j].unique().numel() == 1
    torch.testing.assert_close(
        prior.class_probs, torch.bincount(clusters, minlength=100).double() / 600
    )
    # A stationary point of the log-likelihood given the clusters: the MLE of every component.
    prior.log_prob_components(z).gather(1, clusters[:, None]).sum().backward()
    assert prior.loc.grad.abs().max() < 1e-8 and prior.log_scale.grad.abs().max() < 1e-8


def test_config_rejects_a_mixture_prior_on_a_conditional_flow():
    with pytest.raises(ValueError, match="unconditional"):
        FlowConfig(conditional=True, prior="mixture")
    with pytest.raises(ValueError, match="prior"):
        FlowConfig(prior="gaussian")


def test_encode_decode_and_sample_of_a_mixture_flow():
    flow = tiny_cluster_flow(2).float().eval()
    x = flow.sample(6, temperature=0.8, generator=torch.Generator().manual_seed(0))
    assert x.shape == (6, 1, 4, 8) and x.dtype == torch.uint8
    assert torch.equal(flow.decode(flow.encode(x)), x)
    assert flow.prior_params(None) is None  # no single component to name


@pytest.mark.slow
def test_train_sample_evaluate_end_to_end(tiny_mnist_root, tmp_path):
    from pairflow.data import PairedMNIST
    from pairflow.training import load_checkpoint, load_model

    run = tmp_path / "run"
    common = ["--data-dir", str(tiny_mnist_root), "--device", "cpu"]
    pairflow(
        "train", "--preset", "multiscale", "--epochs", "1", "--batch-size", "16",
        "--num-pairs", "200", "--test-pairs", "32", "--out", str(run), "--precision", "fp32",
        "--sample-n", "4", "--no-progress", "--threads", "1", "--ema-decay", "0.9",
        "--set", "hidden_channels=4", "--set", "prior=mixture", *common,
    )  # fmt: skip
    state = load_checkpoint(run / "last.pt")
    assert state["model_config"]["prior"] == "mixture"
    probs = state["model"]["distribution.class_probs"]
    # Started from k-means clusters: the weights are cluster sizes out of the 200 pairs.
    assert not torch.allclose(probs, torch.full_like(probs, 0.01))
    np.testing.assert_allclose((probs * 200).numpy(), (probs * 200).round().numpy(), atol=1e-3)
    flow, _ = load_model(run)
    assert type(flow.distribution) is ClusterMixture
    pairs = PairedMNIST(tiny_mnist_root, train=False, num_pairs=8)
    x, _ = pairs.get_batch(torch.arange(8))
    assert torch.isfinite(flow.bits_per_dim(x)).all()
    out = tmp_path / "s.npz"
    pairflow("sample", str(run), "--n", "5", "--out", str(out))
    assert np.load(out)["images"].shape[0] == 5
    ev = tmp_path / "eval"
    pairflow("evaluate", str(run), "--num-pairs", "32", "--samples", "20", "--out", str(ev),
             *common)  # fmt: skip
    report = json.loads((ev / "eval_test.json").read_text())
    assert math.isfinite(report["bits_per_dim"]) and "samples" in report
    assert report["mixture_prior"] is True and report["conditional"] is False
    assert "label-free mixture prior" in (ev / "report.md").read_text()


@pytest.mark.slow
def test_a_fine_tune_keeps_the_mixture_prior_and_a_conditional_one_drops_it(
    tiny_mnist_root, tmp_path
):
    from pairflow.training import TrainConfig, load_checkpoint, train

    base = dict(
        preset="multiscale", batch_size=16, warmup_steps=2, num_pairs=64, test_pairs=16,
        data_dir=str(tiny_mnist_root), device="cpu", precision="fp32", sample_n=4, epochs=1,
    )  # fmt: skip
    tiny = {"hidden_channels": 4}
    src = tmp_path / "src"
    train(TrainConfig(**base, out=str(src), model_overrides={**tiny, "prior": "mixture"}),
          progress=False)  # fmt: skip
    source = load_checkpoint(src / "last.pt")
    ft = tmp_path / "ft"
    config = TrainConfig(**base, max_steps=1, lr=1e-9, init_from=str(src), out=str(ft),
                         model_overrides=tiny)  # fmt: skip
    train(config, progress=False)
    state = load_checkpoint(ft / "last.pt")
    assert state["model_config"]["prior"] == "mixture"
    # Inherited, not refitted: the clusters' weights are the source's.
    torch.testing.assert_close(state["model"]["distribution.class_probs"],
                               source["model"]["distribution.class_probs"])  # fmt: skip
    cond = tmp_path / "cond"
    config = TrainConfig(**base, max_steps=1, init_from=str(src), out=str(cond), conditional=True,
                         model_overrides={**tiny, "conditioning": "prior"})  # fmt: skip
    train(config, progress=False)
    state = load_checkpoint(cond / "last.pt")
    assert state["model_config"]["prior"] == "normal"
    # The label prior starts at N(0, I), not from the source's clusters.
    assert state["model"]["distribution.loc"].abs().max() < 0.01  # one Adam step from 0
    assert source["model"]["distribution.loc"].abs().max() > 0.1
    # p(y) is the training labels' frequencies (set by training), not the source's clusters.
    probs = state["model"]["distribution.class_probs"]
    assert not torch.equal(probs, source["model"]["distribution.class_probs"])


def test_bad_inputs_exit_2_with_a_message(tiny_mnist_root, tmp_path):
    common = ["--max-steps", "1", "--data-dir", str(tiny_mnist_root), "--device", "cpu",
              "--no-progress", "--set", "hidden_channels=4"]  # fmt: skip
    cases = {
        "at least 10 training pairs": [
            "--set",
            "prior=mixture",
            "--num-pairs",
            "5",
            "--batch-size",
            "4",
        ],
        "unknown prior 'gaussian'": ["--set", "prior=gaussian"],
        "is for unconditional flows": ["--set", "prior=mixture", "--conditional"],
    }
    for i, (message, args) in enumerate(cases.items()):
        out = tmp_path / f"run{i}"
        proc = pairflow("train", "--preset", "multiscale", *args, *common, "--out", str(out),
                        check=False)  # fmt: skip
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and not out.exists()
