"""The sample-quality metrics on cases whose answer is known exactly."""

from __future__ import annotations

import math

import pytest
import torch

from pairflow.metrics import (
    class_coverage,
    class_histogram,
    conditional_accuracy,
    evaluate_samples,
    frechet_distance,
    inception_score,
    kl_to_uniform,
    pair_probabilities,
    precision_recall,
)


def _with_exact_moments(n: int, mean: torch.Tensor, cov: torch.Tensor, seed: int) -> torch.Tensor:
    """n samples whose sample mean and (unbiased) sample covariance are exactly mean and cov."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, len(mean), generator=g, dtype=torch.float64)
    z = z - z.mean(0)
    # Whiten: afterwards the sample covariance of z is the identity.
    z = z @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(z.T))).T
    return mean + z @ torch.linalg.cholesky(cov).T


# -- Fréchet distance ------------------------------------------------------------------------


def test_frechet_identical_sets_is_zero():
    x = torch.randn(500, 16, generator=torch.Generator().manual_seed(0))
    assert abs(frechet_distance(x, x)) < 1e-8


def test_frechet_diagonal_gaussians_closed_form():
    # Diagonal covariances commute: Tr((Sa Sb)^1/2) = sum sqrt(a b), so
    # d^2 = |mu_a - mu_b|^2 + sum (sqrt(a) - sqrt(b))^2.
    mu_a, mu_b = torch.tensor([0.0, 1.0, -2.0, 0.5]), torch.tensor([1.0, 1.0, 0.0, -0.5])
    var_a, var_b = torch.tensor([1.0, 4.0, 0.25, 2.0]), torch.tensor([9.0, 1.0, 0.25, 0.5])
    a = _with_exact_moments(300, mu_a.double(), torch.diag(var_a).double(), seed=1)
    b = _with_exact_moments(400, mu_b.double(), torch.diag(var_b).double(), seed=2)
    expected = ((mu_a - mu_b) ** 2).sum() + ((var_a.sqrt() - var_b.sqrt()) ** 2).sum()
    assert frechet_distance(a, b) == pytest.approx(expected.item(), rel=1e-6)


def test_frechet_full_covariances_closed_form():
    # General case: Tr((Sa Sb)^1/2) = Tr((Sa^1/2 Sb Sa^1/2)^1/2), computed here by eigh.
    g = torch.Generator().manual_seed(3)
    ma, mb = torch.randn(5, generator=g, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)
    la = torch.randn(5, 5, generator=g, dtype=torch.float64)
    lb = torch.randn(5, 5, generator=g, dtype=torch.float64)
    sa, sb = la @ la.T + 0.1 * torch.eye(5), lb @ lb.T + 0.1 * torch.eye(5)

    def sqrtm_psd(m):
        w, v = torch.linalg.eigh(m)
        return v @ torch.diag(w.clamp(min=0).sqrt()) @ v.T

    ra = sqrtm_psd(sa)
    expected = (ma - mb).square().sum() + sa.trace() + sb.trace()
    expected -= 2 * sqrtm_psd(ra @ sb @ ra).trace()
    a = _with_exact_moments(200, ma, sa, seed=4)
    b = _with_exact_moments(250, mb, sb, seed=5)
    assert frechet_distance(a, b) == pytest.approx(expected.item(), rel=1e-6)


def test_frechet_is_symmetric_and_grows_with_shift():
    g = torch.Generator().manual_seed(6)
    a, b = torch.randn(300, 3, generator=g), torch.randn(300, 3, generator=g)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-6)
    assert frechet_distance(a, b + 3) > frechet_distance(a, b + 1) > frechet_distance(a, b)


def test_frechet_nan_features_give_nan():
    a = torch.randn(50, 4)
    b = a.clone()
    b[7, 2] = math.nan
    assert math.isnan(frechet_distance(a, b))
    b[7, 2] = math.inf
    assert math.isnan(frechet_distance(b, a))


def test_frechet_rejects_bad_shapes():
    with pytest.raises(ValueError, match="feature dimensions differ"):
        frechet_distance(torch.randn(10, 3), torch.randn(10, 4))
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(torch.randn(1, 3), torch.randn(10, 3))
    with pytest.raises(ValueError, match=r"\(N, F\)"):
        frechet_distance(torch.randn(10), torch.randn(10))


# -- Inception score -------------------------------------------------------------------------


def test_inception_score_same_distribution_everywhere_is_one():
    probs = torch.full((64, 100), 1 / 100)
    assert inception_score(probs) == pytest.approx(1.0, abs=1e-12)
    probs = torch.tensor([[0.7, 0.2, 0.1]]).repeat(20, 1)  # not uniform, but all the same
    assert inception_score(probs) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("k", [1, 7, 100])
def test_inception_score_confident_and_even_is_k(k):
    probs = torch.eye(100)[torch.arange(5 * k) % k]  # one-hot, each of k classes 5 times
    assert inception_score(probs) == pytest.approx(float(k), rel=1e-12)


def test_inception_score_known_mixture():
    # Half the samples one-hot on class 0, half uniform over 2 classes: marginal (3/4, 1/4),
    # KL = 1/2 * log(4/3) + 1/2 * (1/2 log(2/3) + 1/2 log 2).
    probs = torch.tensor([[1.0, 0.0], [0.5, 0.5]]).repeat(10, 1)
    expected = math.exp(0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3) + 0.25 * math.log(2))
    assert inception_score(probs) == pytest.approx(expected, rel=1e-12)


def test_inception_score_splits_average_chunks():
    probs = torch.cat([torch.eye(4), torch.full((4, 4), 0.25)])  # chunk scores 4 and 1
    assert inception_score(probs, splits=2) == pytest.approx(2.5, rel=1e-12)


def test_inception_score_nan_propagates_and_logits_rejected():
    probs = torch.eye(10)
    probs[3] = math.nan
    assert math.isnan(inception_score(probs))
    with pytest.raises(ValueError, match="softmax outputs, not logits"):
        inception_score(torch.randn(8, 10))


def test_pair_probabilities_is_outer_product_indexed_by_label():
    logits = torch.full((1, 2, 10), -1e9)
    logits[0, 0, 3] = logits[0, 1, 7] = 0.0  # certain left 3, right 7
    p = pair_probabilities(logits)
    assert p.shape == (1, 100) and p[0, 37] == pytest.approx(1.0)
    logits = torch.randn(5, 2, 10)
    p = pair_probabilities(logits).view(5, 10, 10)
    torch.testing.assert_close(p.sum(2), logits[:, 0].double().softmax(-1))
    torch.testing.assert_close(p.sum(1), logits[:, 1].double().softmax(-1))


# -- Precision and recall --------------------------------------------------------------------


def test_precision_recall_identical_sets_is_one():
    x = torch.randn(200, 8, generator=torch.Generator().manual_seed(0))
    assert precision_recall(x, x, k=3) == (1.0, 1.0)


def test_precision_recall_far_apart_sets_is_zero():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(200, 8, generator=g), torch.randn(200, 8, generator=g) + 100
    assert precision_recall(real, fake, k=3) == (0.0, 0.0)


def test_precision_recall_mode_collapse_has_precision_not_recall():
    g = torch.Generator().manual_seed(1)
    real = torch.randn(400, 2, generator=g)
    collapsed = 0.05 * torch.randn(400, 2, generator=g)  # all samples near the real mode
    precision, recall = precision_recall(real, collapsed, k=3)
    assert precision > 0.9 and recall < 0.2


def test_precision_recall_hand_computed_1d():
    # k=1. real 0, 1, 2, 3: radii 1 each. fake 0.5, 1.5, 10, 11.5: radii 1, 1, 1.5, 1.5.
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    fake = torch.tensor([[0.5], [1.5], [10.0], [11.5]])
    # precision: 0.5 and 1.5 lie in real balls, 10 and 11.5 do not -> 2/4.
    # recall: real 0, 1, 2 lie within 1 of fake 0.5 or 1.5; 3 is 1.5 away -> 3/4.
    assert precision_recall(real, fake, k=1, chunk_size=3) == (0.5, 0.75)


def test_precision_recall_ball_boundary_counts_as_inside():
    real = torch.tensor([[0.0], [1.0]])  # k=1 radii: 1, 1
    fake = torch.tensor([[2.0], [50.0]])  # 2 is exactly 1 from real 1
    assert precision_recall(real, fake, k=1)[0] == 0.5


def test_precision_recall_nan_and_validation():
    x = torch.randn(20, 3)
    y = x.clone()
    y[0, 0] = math.nan
    p, r = precision_recall(x, y)
    assert math.isnan(p) and math.isnan(r)
    with pytest.raises(ValueError, match="needs more than k"):
        precision_recall(x[:3], x, k=3)
    with pytest.raises(ValueError, match="positive integer"):
        precision_recall(x, x, k=0)


# -- Coverage and KL to uniform --------------------------------------------------------------


def test_class_histogram_counts_and_validates():
    assert class_histogram(torch.tensor([3, 3, 0]), num_classes=4).tolist() == [1, 0, 0, 2]
    with pytest.raises(ValueError, match=r"0\.\.99"):
        class_histogram(torch.tensor([5, 100]))
    with pytest.raises(ValueError, match="integer"):
        class_histogram(torch.tensor([1.0, 2.0]))


def test_coverage_on_constructed_histograms():
    assert class_coverage(torch.arange(100)) == 1.0
    assert class_coverage(torch.tensor([37] * 50)) == 0.01
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    assert class_coverage(labels, num_classes=10) == 0.3
    assert class_coverage(labels, num_classes=10, min_count=2) == 0.2


def test_kl_to_uniform_on_constructed_histograms():
    assert kl_to_uniform(torch.arange(100).repeat(3)) == 0.0
    assert kl_to_uniform(torch.tensor([37] * 50)) == pytest.approx(math.log(100), rel=1e-12)
    # Half the mass on each of 2 of 4 classes: KL = log 4 - log 2 = log 2.
    assert kl_to_uniform(torch.tensor([0, 1, 0, 1]), num_classes=4) == pytest.approx(math.log(2))
    # p = (1/2, 1/4, 1/4, 0): KL = 1/2 log 2 + 2 * 1/4 log 1 = log(2) / 2.
    labels = torch.tensor([0, 0, 1, 2])
    assert kl_to_uniform(labels, num_classes=4) == pytest.approx(math.log(2) / 2, rel=1e-12)
    with pytest.raises(ValueError, match="empty"):
        kl_to_uniform(torch.tensor([], dtype=torch.int64))


# -- Conditional accuracy --------------------------------------------------------------------


def test_conditional_accuracy_per_pair_breakdown():
    requested = torch.tensor([37] * 10 + [5] * 2 + [99] * 4)
    pred = requested.clone()
    pred[:1] = 73  # 37: 9/10
    pred[10] = 6  # 05: 1/2
    r = conditional_accuracy(pred, requested)
    assert r.per_pair[37] == 0.9 and r.per_pair[5] == 0.5 and r.per_pair[99] == 1.0
    assert r.mean == pytest.approx((0.9 + 0.5 + 1.0) / 3)  # each requested pair weighs the same
    assert (r.min, r.min_pair) == (0.5, 5)
    assert r.overall == pytest.approx(14 / 16)
    assert math.isnan(r.per_pair[0]) and r.counts[37] == 10 and r.counts[0] == 0
    assert r.to_dict()["per_pair"][0] is None


def test_conditional_accuracy_validates():
    with pytest.raises(ValueError, match="differ in length"):
        conditional_accuracy(torch.tensor([1, 2]), torch.tensor([1]))
    with pytest.raises(ValueError, match=r"0\.\.99"):
        conditional_accuracy(torch.tensor([1]), torch.tensor([137]))


# -- evaluate_samples ------------------------------------------------------------------------


def test_evaluate_samples_nan_samples_make_every_metric_nan():
    from pairflow.classifier import PairClassifier

    torch.manual_seed(0)
    clf = PairClassifier().eval()
    real = torch.randint(0, 256, (20, 1, 28, 56), dtype=torch.uint8)
    samples = real.float()
    samples[4, 0, 3, 3] = math.nan
    result = evaluate_samples(
        samples, real, clf, requested_labels=torch.zeros(20, dtype=torch.long)
    )
    assert result["nonfinite_samples"] == 1
    for key in ("fd", "inception_score", "precision", "recall", "coverage", "kl_uniform"):
        assert math.isnan(result[key]), key
    assert math.isnan(result["conditional_accuracy"])


def test_evaluate_samples_real_against_itself():
    from pairflow.classifier import PairClassifier

    torch.manual_seed(0)
    clf = PairClassifier().eval()
    real = torch.randint(0, 256, (40, 1, 28, 56), dtype=torch.uint8)
    result = evaluate_samples(real, real, clf, requested_labels=clf.predict_pairs(real))
    assert abs(result["fd"]) < 1e-6
    assert (result["precision"], result["recall"]) == (1.0, 1.0)
    assert result["conditional_accuracy"] == 1.0 and result["nonfinite_samples"] == 0
    assert 1.0 <= result["inception_score"] <= 100.0
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 56\)"):
        evaluate_samples(real[:, :, :, :28], real, clf)


def test_real_vs_real_floor_on_tiny_data(tiny_mnist_root):
    from pairflow.classifier import PairClassifier
    from pairflow.metrics import real_pairs, real_vs_real_floor

    torch.manual_seed(0)
    clf = PairClassifier().eval()
    reference, labels = real_pairs(tiny_mnist_root, 30, train=False, seed=0)
    assert reference.shape == (30, 1, 28, 56) and reference.dtype == torch.uint8
    assert labels.tolist() == [10 * (t // 10) + t % 10 for t in labels.tolist()]
    floor = real_vs_real_floor(reference, root=tiny_mnist_root, classifier=clf, seed=1)
    assert floor["num_samples"] == floor["num_real"] == 30
    assert "training pairs" in floor["held_out"]
    assert floor["fd"] > 0 and 0 <= floor["precision"] <= 1 and 0 <= floor["recall"] <= 1
    assert 0 <= floor["conditional_accuracy"] <= 1  # true labels are known for real pairs
    # The same set as held-out set and reference: the floor of the floor.
    same = real_vs_real_floor(reference, reference, labels, classifier=clf)
    assert abs(same["fd"]) < 1e-6 and same["held_out"] == "given"
