"""Variational dequantization: an exact conditional flow, and a bound that beats uniform noise."""

from __future__ import annotations

import math

import pytest
import torch

from flowtools import check_transform, one_thread, randomize
from pairflow.flows import build_flow
from pairflow.flows.dequantization import VariationalDequantizer
from pairflow.flows.preprocessing import quantize


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def pixels(b: int, shape=(1, 4, 8), seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, *shape), generator=g, dtype=torch.uint8)


def test_q_is_an_exact_conditional_flow():
    q = randomize(VariationalDequantizer((1, 4, 8), hidden_channels=4, num_couplings=2), seed=2)
    x = pixels(3)
    context = q.context(x).detach()
    u = torch.rand(3, 1, 4, 8, generator=torch.Generator().manual_seed(1)) * 0.98 + 0.01
    check_transform(q.transform, u, context)
    # Sampling returns the density of what it drew.
    q = q.double().float()
    u, log_q = q(x, torch.Generator().manual_seed(3))
    assert ((u > 0) & (u < 1)).all()
    torch.testing.assert_close(q.log_prob(u, x), log_q, rtol=1e-4, atol=1e-3)
    # It depends on x: other images, other noise.
    u2, _ = q(pixels(3, seed=9), torch.Generator().manual_seed(3))
    assert not torch.allclose(u, u2)


def test_bound_beats_uniform_where_the_optimum_is_known():
    """Within each bin the model's density is g(t) = 2t, so P(x) = w(x) exactly and

    bound(q) = -log P(x) + KL(q(u | x) || g): the optimum q = g gives the exact -log P(x),
    uniform noise pays KL(U || g) = 1 - log 2 nats per dimension.
    """
    shape = (1, 2, 2)
    d = 4
    torch.manual_seed(0)
    q = VariationalDequantizer(shape, hidden_channels=8, num_couplings=2)
    x = pixels(64, shape)
    opt = torch.optim.Adam(q.parameters(), lr=1e-2)

    def gap(u: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
        """log q(u | x) - log g(u), per image: the bound minus -log P(x), in nats."""
        return log_q - torch.log(2 * u).flatten(1).sum(1)

    g = torch.Generator().manual_seed(1)
    for _ in range(300):
        loss = gap(*q(x, g)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        u, log_q = q(x.repeat(50, 1, 1, 1), torch.Generator().manual_seed(2))
        learned = gap(u, log_q)
    uniform_gap = d * (1 - math.log(2))  # E_U[-log 2u] = 1 - log 2 per dimension
    stderr = learned.std().item() / math.sqrt(len(learned))
    assert learned.mean().item() < 0.25 * uniform_gap  # much closer to the truth than uniform
    assert learned.mean().item() > -4 * stderr  # and never below it: KL >= 0


def test_flow_with_variational_dequantization_reports_a_bound():
    flow = build_flow(
        "multiscale", height=4, width=8, hidden_channels=4, num_blocks=1,
        dequantization="variational", dequant_channels=4,
    )  # fmt: skip
    randomize(flow, seed=1)
    assert flow.bits_per_dim_is_bound
    assert not build_flow("multiscale", height=4, width=8).bits_per_dim_is_bound
    x = pixels(3)
    g = torch.Generator().manual_seed(5)
    bpd = flow.bits_per_dim(x, generator=g)
    # By hand: y = (x + u) / 256 with u ~ q, minus log q.
    g = torch.Generator().manual_seed(5)
    u, log_q = flow.dequantizer(x, g)
    z, logabsdet = flow((x.float() + u) / 256)
    log_p = flow.log_prior(z) + logabsdet - log_q
    expected = (-log_p + 32 * math.log(256)) / (32 * math.log(2))
    torch.testing.assert_close(bpd, expected)
    flow.eval()
    assert torch.equal(flow.decode(flow.encode(x)), x)
    with pytest.raises(ValueError, match="dequantization"):
        build_flow("multiscale", dequantization="learned")


@pytest.mark.slow
def test_training_and_evaluate_call_it_a_bound(tiny_mnist_root, tmp_path):
    import json

    from clitools import pairflow

    run = tmp_path / "run"
    trained = pairflow(
        "train", "--preset", "multiscale", "--epochs", "1", "--batch-size", "16",
        "--num-pairs", "32", "--test-pairs", "16", "--data-dir", str(tiny_mnist_root),
        "--out", str(run), "--device", "cpu", "--precision", "fp32", "--sample-n", "4",
        "--no-progress", "--threads", "1", "--set", "hidden_channels=4",
        "--set", "dequantization=variational", "--set", "dequant_channels=4",
    )  # fmt: skip
    assert "epoch 1: test bits/dim <= " in trained.stdout
    assert "(variational bound)" in trained.stdout and "ELBO" not in trained.stdout
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all("bpd" not in r and "test_bpd" not in r for r in records)
    assert any("test_bpd_bound" in r for r in records)
    out = tmp_path / "eval.json"
    proc = pairflow("evaluate", str(run), "--data-dir", str(tiny_mnist_root), "--out", str(out))
    report = json.loads(out.read_text())
    assert "bits_per_dim" not in report and report["bits_per_dim_bound"] > 0
    assert "variational dequantization" in report["bound"]
    assert "bits_per_dim_bound" in proc.stdout
    # The same flow's exact likelihood: its continuous density under uniform noise.
    pairflow("evaluate", str(run), "--data-dir", str(tiny_mnist_root), "--dequantization",
             "uniform", "--precision", "fp32")  # fmt: skip
    exact = json.loads((run / "eval_test_uniform.json").read_text())
    assert "bits_per_dim_bound" not in exact and "bound" not in exact
    assert exact["dequantization"].startswith("uniform (asked for")
    from pairflow.data import PairedMNIST
    from pairflow.evaluation import evaluate_bpd
    from pairflow.training import load_model

    model, _ = load_model(run / "best.pt")
    model.precision = "fp32"
    expected = evaluate_bpd(
        model.with_uniform_dequantization(), PairedMNIST(tiny_mnist_root, train=False)
    )
    assert exact["bits_per_dim"] == pytest.approx(expected["bpd"], rel=1e-6)
    vae = tmp_path / "vae"
    pairflow(
        "train", "--model", "vae", "--epochs", "1", "--batch-size", "16", "--num-pairs", "32",
        "--test-pairs", "16", "--data-dir", str(tiny_mnist_root), "--out", str(vae),
        "--device", "cpu", "--sample-n", "4", "--no-progress", "--threads", "1",
        "--set", "hidden_channels=4", "--set", "latent_dim=2", "--set", "hidden_features=8",
    )  # fmt: skip
    proc = pairflow("evaluate", str(vae), "--data-dir", str(tiny_mnist_root),
                    "--dequantization", "uniform", check=False)  # fmt: skip
    assert proc.returncode == 2 and "scores a flow's exact likelihood" in proc.stderr


def test_uniform_dequantization_of_a_variational_flow_is_the_same_density_scored_exactly():
    """The view shares the trained weights and scores them as a flow built with uniform noise
    would: with and without the label (the exact marginal over the 100 labels)."""
    small = dict(height=4, width=8, hidden_channels=4, num_blocks=1, conditional=True,
                 conditioning="both", dequant_channels=4)  # fmt: skip
    variational = randomize(build_flow("multiscale", dequantization="variational", **small), 3)
    variational.set_label_counts(torch.arange(1, 101, dtype=torch.float32))
    uniform = build_flow("multiscale", **small)
    load = uniform.load_state_dict(variational.state_dict(), strict=False)
    assert not load.missing_keys and all(k.startswith("dequantizer.") for k in load.unexpected_keys)
    view = variational.with_uniform_dequantization()
    assert not view.bits_per_dim_is_bound and not view.dequantizer.is_bound
    assert view.with_uniform_dequantization() is view
    x, cond = pixels(3), torch.tensor([7, 42, 99])
    for labels in (cond, None):
        got = view.bits_per_dim(x, labels, torch.Generator().manual_seed(4))
        want = uniform.bits_per_dim(x, labels, torch.Generator().manual_seed(4))
        torch.testing.assert_close(got, want)
    # It differs from the bound (another noise), and it is a view: the weights are shared.
    bound = variational.bits_per_dim(x, cond, torch.Generator().manual_seed(4))
    assert not torch.allclose(bound, view.bits_per_dim(x, cond, torch.Generator().manual_seed(4)))
    with torch.no_grad():
        next(variational.body.parameters()).add_(0.5)
    after = view.bits_per_dim(x, cond, torch.Generator().manual_seed(4))
    assert not torch.allclose(
        after, uniform.bits_per_dim(x, cond, torch.Generator().manual_seed(4))
    )


def test_the_deterministic_point_of_a_variational_flow_is_where_q_puts_eps_zero():
    """class_posterior's noise="center": q's image of eps = 0 (the body was fitted to q's
    noise), minus its log q; bin centres for uniform flows."""
    small = dict(height=4, width=8, hidden_channels=4, num_blocks=1, conditional=True,
                 conditioning="both", dequant_channels=4)  # fmt: skip
    flow = randomize(build_flow("multiscale", dequantization="variational", **small), 5).eval()
    x = pixels(3)
    with torch.no_grad():
        u, log_q = flow.dequantizer.mode_noise(x)
        assert ((u > 0) & (u < 1)).all() and not torch.allclose(u, torch.full_like(u, 0.5))
        again, _ = flow.dequantizer.mode_noise(x)
        assert torch.equal(u, again)  # deterministic
        torch.testing.assert_close(log_q, flow.dequantizer.log_prob(u, x))
        got = flow.class_log_likelihoods(x, noise="center")
        y = (x.float() + u) / 256
        for label in (0, 42, 99):
            cond = torch.full((3,), label)
            z, logabsdet = flow(y, cond)
            want = flow.log_prior(z, cond) + logabsdet - log_q
            torch.testing.assert_close(got[:, label], want, rtol=1e-5, atol=1e-4)
        posterior = flow.class_posterior(x)
        torch.testing.assert_close(posterior, (flow.log_label_probs() + got).softmax(1))
        # encode reads the flow at the same point (bin centres would be off its data).
        torch.testing.assert_close(flow.encode(x, 42), flow(y, torch.full((3,), 42))[0])


def test_encode_of_a_variational_flow_round_trips_every_pixel_level():
    """q's point stays inside each bin (even where q pushes the noise to an edge): decode
    finds every one of the 256 levels again in fp32."""
    flow = build_flow(
        "multiscale", height=4, width=8, hidden_channels=4, num_blocks=1,
        dequantization="variational", dequant_channels=4,
    )  # fmt: skip
    randomize(flow, seed=7).eval()
    randomize(flow.dequantizer, seed=8, scale=3.0)  # q's point pushed to the bin edges
    x = torch.arange(256, dtype=torch.uint8).view(8, 1, 4, 8)
    with torch.no_grad():
        u, _ = flow.dequantizer.mode_noise(x)
        assert u.min() < 1e-2 and u.max() > 1 - 1e-2  # the margin is exercised at both ends
        assert torch.equal(quantize((x.float() + u) / 256), x)
        assert torch.equal(flow.decode(flow.encode(x)), x)
