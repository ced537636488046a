"""TarFlow's noise augmentation and score-based denoising: the noisy likelihood is what it says,
and the denoising step is h + sigma^2 times the gradient of the flow's own log-density."""

from __future__ import annotations

import math

import pytest
import torch

from flowtools import one_thread, randomize
from pairflow.flows import FlowConfig, build_flow
from pairflow.flows.preprocessing import dequantize, quantize


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def tiny(sigma: float, **overrides):
    flow = build_flow(
        "multiscale", height=4, width=8, hidden_channels=4, num_blocks=1, noise_sigma=sigma,
        **overrides,
    )  # fmt: skip
    return randomize(flow, seed=1).double().eval()


def test_noisy_log_prob_is_the_density_of_the_noised_logits():
    flow = tiny(0.3).float()
    x = torch.randint(0, 256, (3, 1, 4, 8), dtype=torch.uint8)
    got = flow.log_prob(x, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)  # the dequantisation draw, then the noise
    y = dequantize(x, g)
    eps = torch.randn(y.shape, generator=g, dtype=y.dtype)
    h, ld_logit = flow.logit(y)
    z, ld_body = flow.body(h + 0.3 * eps, None)
    torch.testing.assert_close(got, flow.log_prior(z) + ld_logit + ld_body)
    plain = tiny(0.0).float()  # the same weights without noise: a different number
    assert not torch.allclose(got, plain.log_prob(x, generator=torch.Generator().manual_seed(5)))


def test_denoising_step_is_sigma_squared_times_the_score():
    sigma = 0.4
    flow = tiny(sigma)
    h = torch.randn(2, 1, 4, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def log_p(v):
        z, ld = flow.body(v, None)
        return flow.log_prior(z) + ld

    step = (flow.denoise_logits(h) - h) / sigma**2
    delta = 1e-5
    for index in [(0, 0, 0, 0), (0, 0, 2, 5), (1, 0, 3, 7), (1, 0, 1, 2)]:
        e = torch.zeros_like(h)
        e[index] = delta
        numeric = (log_p(h + e) - log_p(h - e))[index[0]] / (2 * delta)
        torch.testing.assert_close(step[index], numeric, rtol=1e-5, atol=1e-7)


def test_samples_end_with_the_denoising_step():
    flow = tiny(0.2).float()
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    z = flow.distribution.sample(4, temperature=0.7, generator=g())
    h, _ = flow.body.inverse(z, None)
    denoised = quantize(flow.logit.inverse(flow.denoise_logits(h))[0])
    raw = quantize(flow.logit.inverse(h)[0])
    assert torch.equal(flow.sample(4, temperature=0.7, generator=g()), denoised)
    assert torch.equal(flow.sample(4, temperature=0.7, generator=g(), denoise=False), raw)
    assert not torch.equal(denoised, raw)


def test_logit_noise_flow_scored_on_clean_data_is_its_exact_likelihood_and_still_denoises():
    flow = tiny(0.3).float()
    clean = flow.with_uniform_dequantization()
    assert clean is not flow and clean.body is flow.body and clean.denoises
    x = torch.randint(0, 256, (3, 1, 4, 8), dtype=torch.uint8)
    got = clean.log_prob(x, generator=torch.Generator().manual_seed(5))
    y = dequantize(x, torch.Generator().manual_seed(5))  # no noise after the dequantisation
    h, ld_logit = flow.logit(y)
    z, ld_body = flow.body(h, None)
    torch.testing.assert_close(got, flow.log_prior(z) + ld_logit + ld_body)
    from pairflow.flows.report import likelihood_facts

    assert "noise_sigma" in likelihood_facts(flow) and "noise_sigma" not in likelihood_facts(clean)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    assert torch.equal(clean.sample(4, temperature=0.7, generator=g()),
                       flow.sample(4, temperature=0.7, generator=g()))  # fmt: skip


def test_noise_sigma_is_checked():
    with pytest.raises(ValueError, match="noise_sigma"):
        FlowConfig.from_preset("multiscale", noise_sigma=-0.1)


def test_evaluate_reports_noisy_bits_per_dim_apart(tiny_mnist_root, tmp_path):
    import json

    from clitools import pairflow

    out = tmp_path / "run"
    pairflow(
        "train", "--preset", "seed", "--epochs", "1", "--batch-size", "16", "--num-pairs", "32",
        "--test-pairs", "16", "--data-dir", str(tiny_mnist_root), "--out", str(out),
        "--precision", "fp32", "--sample-n", "4", "--no-progress",
        "--set", "hidden_features=16", "--set", "noise_sigma=0.1",
    )  # fmt: skip
    proc = pairflow("evaluate", str(out), "--data-dir", str(tiny_mnist_root), "--num-pairs", "8")
    report = json.loads(proc.stdout[: proc.stdout.rindex("}") + 1])
    assert report["noise_sigma"] == 0.1 and "noise-augmented" in report["likelihood_of"]
    assert "of noisy data, sigma 0.1" in proc.stderr


# ----------------------------------------------------------------- noise in the data's space
def gaussian(sigma: float = 0.1, **overrides):
    return tiny(sigma, dequantization="gaussian", **overrides)


def test_gaussian_noise_density_term_by_term():
    """log p of noisy data: y = (x + 1/2) / 256 + (sigma / 2) eps, h = 2 y - 1 (log-det D log 2,
    no logit), then the body and the prior; no log q (the noise is the data)."""
    flow = gaussian(0.1).float()
    x = torch.randint(0, 256, (3, 1, 4, 8), dtype=torch.uint8)
    got = flow.log_prob(x, generator=torch.Generator().manual_seed(5))
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    y = (x.float() + 0.5) / 256 + 0.05 * eps
    z, ld_body = flow.body(2 * y - 1, None)
    d = x[0].numel()
    torch.testing.assert_close(got, flow.log_prior(z) + d * math.log(2) + ld_body)
    assert not flow.bits_per_dim_is_bound and flow.denoises


def test_gaussian_flow_scored_on_clean_data_is_its_exact_uniform_likelihood():
    flow = gaussian(0.1).float()
    clean = flow.with_uniform_dequantization()
    assert (
        clean is not flow and clean.body is flow.body and clean.config.dequantization == "uniform"
    )
    x = torch.randint(0, 256, (3, 1, 4, 8), dtype=torch.uint8)
    got = clean.log_prob(x, generator=torch.Generator().manual_seed(2))
    y = dequantize(x, torch.Generator().manual_seed(2))  # (x + u) / 256, u ~ U[0, 1)
    z, ld_body = flow.body(2 * y - 1, None)
    torch.testing.assert_close(got, flow.log_prior(z) + x[0].numel() * math.log(2) + ld_body)


def test_gaussian_denoising_step_is_sigma_squared_times_the_score_in_data_space():
    sigma = 0.15
    flow = gaussian(sigma)
    h = torch.rand(2, 1, 4, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    h = 2 * h - 1  # the [-1, 1] space the noise was added in

    def log_p(v):
        z, ld = flow.body(v, None)
        return flow.log_prior(z) + ld

    step = (flow.denoise_logits(h) - h) / sigma**2
    for index in [(0, 0, 0, 0), (1, 0, 3, 7), (1, 0, 2, 2)]:
        e = torch.zeros_like(h)
        e[index] = 1e-5
        numeric = (log_p(h + e) - log_p(h - e))[index[0]] / 2e-5
        torch.testing.assert_close(step[index], numeric, rtol=1e-5, atol=1e-7)
    g = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    flow = flow.float()  # sampling draws float32 latents
    z = flow.distribution.sample(3, temperature=0.8, generator=g())
    h, _ = flow.body.inverse(z, None)
    expected = quantize((flow.denoise_logits(h) + 1) / 2)
    torch.testing.assert_close(flow.sample(3, temperature=0.8, generator=g()), expected)


def test_gaussian_dequantization_needs_a_sigma():
    with pytest.raises(ValueError, match="dequantization='gaussian'.*noise_sigma > 0"):
        FlowConfig.from_preset("multiscale", dequantization="gaussian")


def test_cli_trains_on_noisy_data_samples_denoised_and_reports_both_likelihoods(
    tiny_mnist_root, tmp_path
):
    import json

    from clitools import pairflow

    out = tmp_path / "run"
    pairflow(
        "train", "--preset", "seed", "--epochs", "1", "--batch-size", "16", "--num-pairs", "32",
        "--test-pairs", "16", "--data-dir", str(tiny_mnist_root), "--out", str(out),
        "--precision", "fp32", "--sample-n", "4", "--no-progress", "--threads", "1",
        "--set", "hidden_features=16", "--set", "dequantization=gaussian",
        "--set", "noise_sigma=0.1",
    )  # fmt: skip
    on = pairflow("sample", str(out), "--n", "4", "--out", str(tmp_path / "a.npz"))
    assert "denoising: on" in on.stdout
    off = pairflow("sample", str(out), "--n", "4", "--no-denoise", "--out", str(tmp_path / "b.npz"))
    assert "denoising: off" in off.stdout
    noisy = pairflow("evaluate", str(out), "--data-dir", str(tiny_mnist_root), "--num-pairs", "8")
    report = json.loads(noisy.stdout[: noisy.stdout.rindex("}") + 1])
    assert report["noise_sigma"] == 0.1 and "[-1, 1]" in report["likelihood_of"]
    clean = pairflow("evaluate", str(out), "--data-dir", str(tiny_mnist_root), "--num-pairs", "8",
                     "--dequantization", "uniform")  # fmt: skip
    exact = json.loads(clean.stdout[: clean.stdout.rindex("}") + 1])
    assert exact["dequantization"] == "uniform" and "noise_sigma" not in exact
    assert exact["bits_per_dim"] != report["bits_per_dim"]


def test_no_denoise_is_refused_for_a_model_trained_without_noise(tiny_mnist_root, tmp_path):
    from clitools import pairflow

    proc = pairflow("sample", "--pretrained", "seed", "--n", "2", "--no-denoise",
                    "--out", str(tmp_path / "x.npz"), check=False)  # fmt: skip
    assert proc.returncode == 2 and "trained without noise" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "x.npz").exists()
