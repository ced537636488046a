"""Every conditional flow as a model of p(x): p(y) from the training pairs, label-free
sampling (y ~ p(y), then x ~ p(x | y)), the exact marginal over the 100 labels and p(y | x),
also where the couplings read the label (100 passes)."""

from __future__ import annotations

import math

import pytest
import torch

from flowtools import one_thread, randomize
from pairflow.flows import build_flow
from pairflow.training.checkpoint import VERSION, upgrade_state


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def tiny_conditional_flow(conditioning: str = "both", seed: int = 0):
    flow = build_flow(
        "multiscale", height=4, width=8, hidden_channels=4, num_blocks=1,
        conditional=True, conditioning=conditioning,
    )  # fmt: skip
    randomize(flow, seed=seed)
    flow.set_label_counts(torch.arange(1, 101, dtype=torch.float64) ** 1.5)  # non-uniform
    return flow.double().eval()


@pytest.mark.parametrize("conditioning", ["both", "embedding", "prior"])
def test_marginal_equals_brute_force_over_labels(conditioning):
    flow = tiny_conditional_flow(conditioning)
    x = torch.randint(0, 256, (3, 1, 4, 8), dtype=torch.uint8)
    brute = torch.stack(
        [
            flow.log_prob(x, torch.full((3,), y), generator=torch.Generator().manual_seed(7))
            for y in range(100)
        ],
        dim=1,
    )  # log p(x | y), the same dequantisation noise for every label
    joint = brute + flow.log_label_probs()
    marginal = flow.log_prob(x, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(marginal, torch.logsumexp(joint, 1))
    assert (marginal - joint.max(1).values > 1e-6).all()  # more than the best label's term
    lik = flow.class_log_likelihoods(x, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(lik, brute)
    assert flow.label_passes == (1 if conditioning == "prior" else 100)
    # Bayes: p(y | x) sums to one and is proportional to p(y) p(x | y) at the bin centres.
    post = flow.class_posterior(x)
    torch.testing.assert_close(post.sum(1), torch.ones(3, dtype=post.dtype))
    centre = flow.class_log_likelihoods(x, noise="center") + flow.log_label_probs()
    torch.testing.assert_close(post, torch.softmax(centre, 1))
    assert torch.equal(flow.classify(x), centre.argmax(1))


def test_the_true_label_bound_holds():
    # -log p(x) <= -log p(y) - log p(x | y) for every y: evaluate's free upper bound.
    flow = tiny_conditional_flow("both", seed=2)
    x = torch.randint(0, 256, (4, 1, 4, 8), dtype=torch.uint8)
    y = torch.tensor([3, 37, 99, 0])
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    marginal = flow.log_prob(x, generator=g())
    bound = flow.log_prob(x, y, generator=g()) + flow.log_label_probs()[y]
    assert (marginal >= bound - 1e-9).all()


def test_label_free_samples_draw_labels_from_p_y():
    flow = tiny_conditional_flow("both")
    counts = torch.zeros(100)
    counts[[5, 37, 80]] = torch.tensor([1.0, 2.0, 7.0])
    flow.set_label_counts(counts)
    y = flow.sample_labels(20_000, torch.Generator().manual_seed(0))
    observed = torch.bincount(y, minlength=100).double() / len(y)
    assert set(torch.nonzero(observed).flatten().tolist()) == {5, 37, 80}
    assert math.isclose(observed[80].item(), 0.7, abs_tol=0.01)
    # sample() without a label draws y first with the same generator, then samples given y.
    images = flow.sample(6, generator=torch.Generator().manual_seed(3), temperature=0.5)
    g = torch.Generator().manual_seed(3)
    labels = flow.sample_labels(6, g)
    z = flow.distribution.sample(6, labels, temperature=0.5, generator=g)
    from pairflow.flows.preprocessing import quantize

    assert torch.equal(images, quantize(flow.inverse(z, labels)[0]))


def test_unconditional_flow_has_no_label_prior():
    flow = build_flow("multiscale", height=4, width=8, hidden_channels=4)
    assert flow.label_passes == 0
    for call in (flow.log_label_probs, lambda: flow.sample_labels(2)):
        with pytest.raises(ValueError, match="needs a conditional model"):
            call()


def test_version_2_checkpoints_load_with_a_uniform_label_prior():
    flow = tiny_conditional_flow("both").float()
    # A version-2 file had no p(label) at all (today's is distribution.class_probs).
    weights = {k: v for k, v in flow.state_dict().items() if k != "distribution.class_probs"}
    state = {
        "kind": "flow", "version": 2, "model": weights,
        "model_config": {"conditional": True, "conditioning": "both"},
        "ema": {"shadow": dict(weights)},
    }  # fmt: skip
    upgrade_state(state)
    assert state["version"] == VERSION and "uniform" in state["label_probs"]
    for w in (state["model"], state["ema"]["shadow"]):
        torch.testing.assert_close(w["distribution.class_probs"], torch.full((100,), 0.01))
    fresh = tiny_conditional_flow("both").float()
    fresh.load_state_dict(state["model"])  # strict: every key fits
    torch.testing.assert_close(fresh.log_label_probs().exp(), torch.full((100,), 0.01))
