"""Importance weights and the K-sample bound: unbiased for the discrete P(x), exact as K grows.

Where P(x) is known by quadrature (a 2-pixel flow: its density integrated over the pixels'
bin; a VAE with a 2-d latent: p(x | z) integrated against N(0, I)), the weights average to
it, their log-mean-exp converges to it and the usual bound stays above it.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from flowtools import one_thread, randomize
from pairflow.baselines.vae import build_vae
from pairflow.evaluation import evaluate_importance_weighted
from pairflow.flows import build_flow


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


class Pairs:
    """The least a dataset needs here: ``len`` and ``get_batch``."""

    def __init__(self, x: torch.Tensor):
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def get_batch(self, idx: torch.Tensor):
        return self.x[idx], torch.zeros(len(idx), dtype=torch.int64)


def two_pixel_flow(dequantization: str):
    flow = build_flow(
        "seed", height=1, width=2, hidden_features=16, num_couplings=4,
        dequantization=dequantization, dequant_channels=4,
    )  # fmt: skip
    return randomize(flow, seed=3, scale=0.8).eval()


def flow_log_prob_exact(flow, x: torch.Tensor, grid: int = 600) -> float:
    """log P(x) of the 256-level pixels x (1, 1, 1, 2): the flow's density on the bin, by the
    midpoint rule on a grid x grid."""
    t = (torch.arange(grid, dtype=torch.float64) + 0.5) / grid
    u1, u2 = torch.meshgrid(t, t, indexing="ij")
    u = torch.stack([u1.flatten(), u2.flatten()], dim=1).view(-1, 1, 1, 2)
    y = ((x.double() + u) / 256).float()
    with torch.no_grad():
        z, logabsdet = flow(y)
        log_p = (flow.log_prior(z) + logabsdet).double()  # density of y on [0, 1]^2
    return (torch.logsumexp(log_p, 0) - math.log(len(log_p))).item() - 2 * math.log(256)


def mean_exact_bpd(flow, x: torch.Tensor) -> float:
    """The mean over images x (B, 1, 1, 2) of -log2 P(x) / 2."""
    log_p = [flow_log_prob_exact(flow, x[i : i + 1]) for i in range(len(x))]
    return -sum(log_p) / len(log_p) / (2 * math.log(2))


@pytest.mark.parametrize("dequantization", ["variational", "uniform"])
def test_flow_weights_average_to_the_probability_of_the_bin(dequantization):
    flow = two_pixel_flow(dequantization)
    x = torch.tensor([[[[97, 181]]]], dtype=torch.uint8)
    exact = flow_log_prob_exact(flow, x)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        log_w = flow.log_weight(x.expand(20000, -1, -1, -1), generator=g).double()
    ratio = torch.exp(log_w - exact)  # w / P(x): mean 1 when unbiased
    stderr = ratio.std().item() / math.sqrt(len(ratio))
    assert abs(ratio.mean().item() - 1) < 4 * stderr + 1e-3
    # The usual bound is the mean of log w: it is the flow's bits/dim, and above the truth.
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        bpd = flow.bits_per_dim(x.expand(20000, -1, -1, -1), generator=g).double()
    torch.testing.assert_close(bpd, -log_w / (2 * math.log(2)))
    assert bpd.mean().item() > -exact / (2 * math.log(2))


def test_the_k_sample_bound_tightens_to_the_exact_bits_per_dim():
    x = torch.tensor([[[[97, 181]], [[60, 200]], [[128, 128]]]], dtype=torch.uint8).view(3, 1, 1, 2)
    # Uniform noise: bounded weights, so K = 500 lands on the quadrature's value (the D ln 256
    # of the bins included: a slip there is whole bits).
    flow = two_pixel_flow("uniform")
    exact_bpd = mean_exact_bpd(flow, x)
    one = evaluate_importance_weighted(flow, Pairs(x), 1, seed=1)
    many = evaluate_importance_weighted(flow, Pairs(x), 500, seed=1)
    assert one["bpd"] == pytest.approx(one["bpd_mean_draws"], abs=1e-12)  # K = 1: one draw
    assert many["bpd"] == pytest.approx(exact_bpd, abs=3e-3)  # Monte Carlo error ~1e-3
    assert many["samples"] == 500 and many["num_pairs"] == 3
    # A (random) learned q pays its KL from the bin's density in the usual bound; the
    # weighted one recovers most of it from the same draws.
    flow = two_pixel_flow("variational")
    exact_bpd = mean_exact_bpd(flow, x)
    many = evaluate_importance_weighted(flow, Pairs(x), 500, seed=1)
    gap = many["bpd_mean_draws"] - exact_bpd
    assert gap > 0.05
    assert many["bpd"] < exact_bpd + 0.25 * gap
    with pytest.raises(ValueError, match="samples"):
        evaluate_importance_weighted(flow, Pairs(x), 0)


def test_vae_weights_give_its_elbo_on_average_and_its_likelihood_in_the_limit():
    torch.manual_seed(0)
    vae = build_vae("conv", height=4, width=8, latent_dim=2, hidden_channels=4, hidden_features=8)
    vae = randomize(vae, seed=5, scale=0.3).eval()
    x = torch.randint(0, 256, (1, 1, 4, 8), generator=torch.Generator().manual_seed(2))
    x = x.to(torch.uint8)
    # log p(x) = log of the integral of p(x | z) N(z; 0, I) over z, by the midpoint rule.
    t = torch.linspace(-7, 7, 281)
    step = (t[1] - t[0]).item()
    z1, z2 = torch.meshgrid(t, t, indexing="ij")
    z = torch.stack([z1.flatten(), z2.flatten()], dim=1)
    with torch.no_grad():
        log_px_z = vae.log_likelihood(x.expand(len(z), -1, -1, -1), z).double()
    log_prior = -0.5 * z.double().pow(2).sum(1) - math.log(2 * math.pi)
    exact = (torch.logsumexp(log_px_z + log_prior, 0) + 2 * math.log(step)).item()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        log_w = vae.log_weight(x.expand(4000, -1, -1, -1), generator=g).double()
        elbo = vae.elbo(x.expand(4000, -1, -1, -1), generator=g).double()
    iw = (torch.logsumexp(log_w, 0) - math.log(len(log_w))).item()
    assert iw == pytest.approx(exact, abs=0.02)
    # E[log w] is the ELBO (sampled KL against the closed form): the same mean, below log p(x).
    se = math.hypot(log_w.std().item(), elbo.std().item()) / math.sqrt(4000)
    assert abs(log_w.mean().item() - elbo.mean().item()) < 4 * se
    assert log_w.mean().item() < exact


@pytest.mark.slow
def test_evaluate_writes_the_importance_weighted_bound(tiny_mnist_root, tmp_path, capsys):
    from pairflow.cli import main

    def cli(*args) -> int:
        capsys.readouterr()
        return main([str(a) for a in args])

    common = ["--epochs", "1", "--batch-size", "16", "--num-pairs", "64", "--test-pairs", "16",
              "--data-dir", tiny_mnist_root, "--device", "cpu", "--precision", "fp32",
              "--sample-n", "4", "--no-progress"]  # fmt: skip
    flow, vae, gan = tmp_path / "flow", tmp_path / "vae", tmp_path / "gan"
    assert cli("train", "--preset", "seed", "--set", "hidden_features=16", "--out", flow,
               *common) == 0  # fmt: skip
    assert cli("train", "--model", "vae", "--out", vae, *common) == 0
    assert cli("train", "--model", "gan", "--out", gan, *common) == 0
    for run in (flow, vae):
        code = cli("evaluate", run, "--importance-samples", "8", "--num-pairs", "12",
                   "--data-dir", tiny_mnist_root, "--no-progress")  # fmt: skip
        out, err = capsys.readouterr()
        assert code == 0, err
        report = json.loads((run / "eval_test_iw8.json").read_text())
        iw = report["importance_weighted"]
        assert iw["samples"] == 8 and iw["num_pairs"] == 12 and not iw["given_label"]
        assert math.isfinite(iw["bits_per_dim_bound"])
        assert iw["bits_per_dim_bound"] <= iw["mean_of_draws"]
        assert "importance-weighted (K = 8" in err
        assert not (run / "eval_test.json").exists()  # the usual report is not overwritten
    for bad, message in ((["--importance-samples", "-1"], "--importance-samples"),):
        assert cli("evaluate", flow, *bad, "--data-dir", tiny_mnist_root) == 2
        assert message in capsys.readouterr().err
    assert cli("evaluate", gan, "--importance-samples", "4", "--samples", "8",
               "--data-dir", tiny_mnist_root) == 2  # fmt: skip
    assert "has none" in capsys.readouterr().err
