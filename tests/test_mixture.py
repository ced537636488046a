"""The class-mixture prior: exact marginal, Bayes posterior, label draws that follow p(y)."""

from __future__ import annotations

import math

import pytest
import torch

from flowtools import one_thread, randomize
from pairflow.flows import build_flow
from pairflow.flows.mixture import ClassMixture


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def tiny_mixture_flow(seed: int = 0):
    flow = build_flow(
        "multiscale", height=4, width=8, hidden_channels=4, num_blocks=1,
        conditional=True, conditioning="mixture",
    )  # fmt: skip
    randomize(flow, seed=seed)
    counts = torch.arange(1, 101, dtype=torch.float64)  # non-uniform p(y)
    flow.distribution.set_class_counts(counts)
    return flow.double()


def test_components_equal_the_full_gaussians():
    prior = randomize(ClassMixture((2, 2, 4)), seed=3).double()
    z = torch.randn(5, 2, 2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    comps = prior.log_prob_components(z)
    for y in range(100):
        labels = torch.full((5,), y)
        loc, log_scale = prior.params(labels)
        direct = torch.distributions.Normal(loc, log_scale.exp()).log_prob(z).flatten(1).sum(1)
        torch.testing.assert_close(comps[:, y], direct)
        torch.testing.assert_close(prior.log_prob(z, labels), direct)


def test_flow_marginal_equals_brute_force_over_labels():
    flow = tiny_mixture_flow()
    x = torch.randint(
        0, 256, (4, 1, 4, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    brute = []
    for y in range(100):
        g = torch.Generator().manual_seed(7)  # same dequantisation noise for every label
        brute.append(flow.log_prob(x, cond=torch.full((4,), y), generator=g))
    brute = torch.stack(brute, 1) + torch.log(flow.distribution.class_probs)  # (B, 100) log p(x, y)
    g = torch.Generator().manual_seed(7)
    marginal = flow.log_prob(x, generator=g)
    torch.testing.assert_close(marginal, torch.logsumexp(brute, 1))
    # Not just the best label: the other labels contribute.
    assert (marginal - brute.max(1).values > 1e-6).all()
    g = torch.Generator().manual_seed(7)
    from_one_pass = flow.class_log_likelihoods(x, generator=g)
    torch.testing.assert_close(from_one_pass, brute - torch.log(flow.distribution.class_probs))
    # log p(x) <= log p(x | y) + log p(y) is not true in general; log p(x) >= log p(x, y) is.
    assert (marginal[:, None] >= brute - 1e-9).all()


def test_posterior_sums_to_one_and_is_bayes():
    flow = tiny_mixture_flow(1)
    # Fixed pixels: unseeded ones made some rows one-hot to float precision (a CI failure).
    x = torch.randint(
        0, 256, (6, 1, 4, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    post = flow.class_posterior(x)
    torch.testing.assert_close(post.sum(1), torch.ones(6, dtype=post.dtype))
    # Every row is a real distribution: its runner-up label keeps some mass.
    assert (post.topk(2, 1).values[:, 1] > 1e-7).all()
    from pairflow.flows.preprocessing import dequantize

    z, logabsdet = flow(dequantize(x, noise="center"))  # the body takes no label
    joint = torch.stack(
        [flow.log_prior(z, torch.full((6,), y)) + logabsdet for y in range(100)], 1
    ) + torch.log(flow.distribution.class_probs)
    torch.testing.assert_close(post, torch.softmax(joint, 1))
    assert flow.classify(x).tolist() == post.argmax(1).tolist()


def test_label_draws_follow_p_y():
    prior = ClassMixture((1, 2, 2))
    counts = torch.arange(1, 101, dtype=torch.float64) ** 1.5
    prior.set_class_counts(counts)
    n = 200_000
    y = prior.sample_labels(n, torch.Generator().manual_seed(0))
    observed = torch.bincount(y, minlength=100).double()
    expected = n * counts / counts.sum()
    chi2 = ((observed - expected) ** 2 / expected).sum().item()
    # chi-square with 99 degrees of freedom: 99.9th percentile 148.2, mean 99.
    assert chi2 < 148.2
    assert math.isclose(observed[99] / observed[0], (100 / 1) ** 1.5, rel_tol=0.3)


def test_sampling_without_a_label_uses_the_drawn_labels_components():
    prior = ClassMixture((1, 2, 4))
    with torch.no_grad():
        prior.loc[0] = torch.arange(10.0)[:, None, None, None] * 10  # left mean = 10 * left digit
        prior.loc[1] = -torch.arange(10.0)[:, None, None, None] * 10
    z, y = prior.sample_with_labels(
        50, temperature=0.01, generator=torch.Generator().manual_seed(1)
    )
    torch.testing.assert_close(z[..., :2].mean((1, 2, 3)), 10.0 * (y // 10), atol=0.1, rtol=0)
    torch.testing.assert_close(z[..., 2:].mean((1, 2, 3)), -10.0 * (y % 10), atol=0.1, rtol=0)


def test_mixture_flow_samples_with_and_without_labels_and_rejects_misuse():
    flow = tiny_mixture_flow().float()
    flow.eval()
    assert flow.sample(3).shape == (3, 1, 4, 8)
    assert flow.sample(3, cond=42).shape == (3, 1, 4, 8)
    x = flow.sample(4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(flow.decode(flow.encode(x)), x)
    # The body never sees the label: the latent of an image is the same whatever its label.
    assert not hasattr(flow, "digit_embedding")
    plain = build_flow("multiscale", height=4, width=8, hidden_channels=4)
    with pytest.raises(ValueError, match="needs a conditional model"):
        plain.class_posterior(x)  # an unconditional flow has no labels to weigh
    with pytest.raises(ValueError, match="counts"):
        flow.distribution.set_class_counts(torch.zeros(100))


def test_fit_is_the_maximum_likelihood_gaussians():
    prior = ClassMixture((1, 2, 4)).double()
    g = torch.Generator().manual_seed(0)
    cond = torch.arange(400) % 100
    z = (
        torch.randn(400, 1, 2, 4, generator=g, dtype=torch.float64) * 2
        + (cond // 10)[:, None, None, None]
    )
    prior.fit(z, cond)
    prior.log_prob(z, cond).sum().backward()
    # A stationary point of the log-likelihood in every mean and log-scale: the MLE.
    assert prior.loc.grad.abs().max() < 1e-8 and prior.log_scale.grad.abs().max() < 1e-8
    torch.testing.assert_close(prior.loc[0, 3], z[cond // 10 == 3][..., :2].mean(0))
    with pytest.raises(ValueError, match="digit"):
        prior.fit(z[:5], cond[:5])
