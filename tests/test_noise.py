"""TarFlow's noise augmentation and score-based denoising: the noisy likelihood is what it says,
and the denoising step is h + sigma^2 times the gradient of the flow's own log-density."""

from __future__ import annotations

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
