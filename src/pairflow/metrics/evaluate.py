"""All sample-quality metrics in one call, and the real-vs-real floor that gives them a scale."""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from pairflow.classifier import pair_labels
from pairflow.metrics.conditional import conditional_accuracy
from pairflow.metrics.coverage import class_coverage, kl_to_uniform
from pairflow.metrics.frechet import frechet_distance
from pairflow.metrics.inception_score import inception_score, pair_probabilities
from pairflow.metrics.precision_recall import precision_recall

if TYPE_CHECKING:
    from pairflow.classifier import PairClassifier
    from pairflow.progress import ProgressFactory

__all__ = ["evaluate_samples", "real_pairs", "real_vs_real_floor", "METRIC_KEYS"]

from pairflow.metrics.table import METRIC_KEYS  # noqa: E402  (the one table)


def _check_images(name: str, images: Tensor, shape: tuple[int, int, int] | None = None) -> Tensor:
    """Images (N, C, H, W); of ``shape`` (C, H, W) when given (the classifier's pairs)."""
    images = torch.as_tensor(images)
    if images.dim() != 4 or (shape is not None and tuple(images.shape[1:]) != tuple(shape)):
        want = "(N, C, H, W)" if shape is None else f"(N, {', '.join(map(str, shape))})"
        raise ValueError(
            f"{name} must be image pairs of shape {want} with pixel values 0..255 "
            f"(the classifier's), got {tuple(images.shape)}"
        )
    return images


def _nonfinite_count(images: Tensor) -> int:
    if not images.is_floating_point():
        return 0
    return int((~torch.isfinite(images.flatten(1))).any(dim=1).sum())


def evaluate_samples(
    samples: Tensor,
    real: Tensor,
    classifier: PairClassifier | None = None,
    requested_labels: Tensor | None = None,
    k: int = 3,
    batch_size: int = 1000,
    dataset: str = "mnist",
    progress: ProgressFactory | None = None,
    desc: str = "classifier features",
) -> dict[str, Any]:
    """Judge generated digit pairs against real ones with the pair classifier.

    Computes, in the classifier's feature space: Fréchet distance (``fd``), the 100-way
    inception score (``inception_score``), k-NN ``precision`` and ``recall``, the fraction
    of the 100 pair classes the samples are read as (``coverage``), the KL divergence of that
    class histogram to uniform (``kl_uniform``, nats) and, given ``requested_labels``, the
    conditional accuracy (mean over requested pairs, worst pair, per-pair list).

    Samples that are not finite (NaN or inf pixels, as from a diverged flow) are not
    dropped: every sample metric is then NaN and ``nonfinite_samples`` counts them.

    Arguments:
        samples: generated pairs, (N, C, H, W) (the classifier's pair shape: (N, 1, 28, 56)
            for MNIST), pixel values 0..255 (uint8 or float).
        real: real reference pairs (usually test pairs of the same dataset), (M, C, H, W),
            same scale.
        classifier: the judge; by default the shipped
            :func:`pairflow.classifier.load_classifier` weights of ``dataset``.
        requested_labels: for conditional samples, the pair label (10 * left + right) each
            sample was drawn for, int64 (N,).
        k: neighbourhood size of precision/recall.
        batch_size: pairs per classifier forward pass.
        dataset: whose shipped classifier judges when ``classifier`` is None.
        progress: a bar factory (:func:`pairflow.progress.bars`) for the classifier passes
            over samples and real pairs; None: silent.
        desc: that bar's description.

    Returns:
        A JSON-ready dict: ``num_samples``, ``num_real``, ``nonfinite_samples``, the
        :data:`METRIC_KEYS` floats and, with ``requested_labels``, ``conditional_accuracy``,
        ``conditional_accuracy_min``, ``conditional_accuracy_min_pair``,
        ``conditional_accuracy_overall`` and ``conditional_accuracy_per_pair`` (100 entries,
        ``None`` for pairs not requested).

    References:
        See :func:`frechet_distance`, :func:`inception_score`, :func:`precision_recall`.

    Example:
        >>> images, labels = real_pairs("/work/shared/data", 1000)  # doctest: +SKIP
        >>> evaluate_samples(flow.sample(1000), images)["fd"]  # doctest: +SKIP
    """
    if classifier is None:
        from pairflow.classifier import load_classifier

        classifier = load_classifier(dataset=dataset)
    shape = classifier.config.pair_shape
    samples = _check_images("samples", samples, shape)
    real = _check_images("real", real, shape)
    if _nonfinite_count(real):
        raise ValueError(f"real holds {_nonfinite_count(real)} non-finite images: check the data")
    if requested_labels is not None:
        requested_labels = torch.as_tensor(requested_labels)
        if requested_labels.shape != (samples.shape[0],):
            raise ValueError(
                f"requested_labels must have one label per sample, shape ({samples.shape[0]},), "
                f"got {tuple(requested_labels.shape)}"
            )

    result: dict[str, Any] = {
        "num_samples": int(samples.shape[0]),
        "num_real": int(real.shape[0]),
        "nonfinite_samples": _nonfinite_count(samples),
    }
    if result["nonfinite_samples"]:
        # A diverged model must look diverged: no metric is computed on the finite rest.
        result.update(dict.fromkeys(METRIC_KEYS, math.nan))
        if requested_labels is not None:
            result.update(
                conditional_accuracy=math.nan,
                conditional_accuracy_min=math.nan,
                conditional_accuracy_min_pair=None,
                conditional_accuracy_overall=math.nan,
                conditional_accuracy_per_pair=None,
            )
        return result

    from pairflow.progress import open_bar

    bar = open_bar(progress, samples.shape[0] + real.shape[0], desc)
    try:
        fake_feats, fake_logits = _embed(classifier, samples, batch_size, bar)  # (N, F), (N, 2, 10)
        real_feats, _ = _embed(classifier, real, batch_size, bar)  # (M, F)
    finally:
        bar.close()
    pred = pair_labels(fake_logits)  # (N,)
    precision, recall = precision_recall(real_feats, fake_feats, k=k)
    result.update(
        fd=frechet_distance(real_feats, fake_feats),
        inception_score=inception_score(pair_probabilities(fake_logits)),
        precision=precision,
        recall=recall,
        coverage=class_coverage(pred),
        kl_uniform=kl_to_uniform(pred),
    )
    if requested_labels is not None:
        acc = conditional_accuracy(pred, requested_labels)
        result.update(
            conditional_accuracy=acc.mean,
            conditional_accuracy_min=acc.min,
            conditional_accuracy_min_pair=acc.min_pair,
            conditional_accuracy_overall=acc.overall,
            conditional_accuracy_per_pair=acc.to_dict()["per_pair"],
        )
    return result


def _embed(classifier, images: Tensor, batch_size: int, bar) -> tuple[Tensor, Tensor]:
    """``classifier.embed`` batch by batch, counting each batch on ``bar``."""
    feats, logits = [], []
    for batch in images.split(batch_size):
        f, lg = classifier.embed(batch, batch_size)
        feats.append(f)
        logits.append(lg)
        bar.update(batch.shape[0])
    return torch.cat(feats), torch.cat(logits)


def real_pairs(
    root: str | os.PathLike | None = None,
    num_pairs: int = 10000,
    train: bool = False,
    seed: int = 0,
    balanced: bool = False,
    dataset: str = "mnist",
) -> tuple[Tensor, Tensor]:
    """Draw real pairs as one tensor: the reference set for :func:`evaluate_samples`.

    Arguments:
        root: data root (see :func:`pairflow.data.resolve_root`).
        num_pairs: how many pairs.
        train: draw from the training digits instead of the test digits.
        seed: seeds the pairing.
        balanced: as many pairs of each of the 100 labels as possible (for conditional
            models asked for every pair equally often).
        dataset: ``"mnist"``, ``"fashion-mnist"`` or ``"cifar10"``.

    Returns:
        ``(images uint8 (num_pairs, C, H, 2W), labels int64 (num_pairs,))``: (num_pairs, 1, 28,
        56) for MNIST.
    """
    from pairflow.data import PairedDataset

    data = PairedDataset(
        dataset, root, train=train, num_pairs=num_pairs, seed=seed, balanced=balanced
    )
    return data.get_batch(torch.arange(len(data)))


def real_vs_real_floor(
    reference: Tensor,
    held_out: Tensor | None = None,
    held_out_labels: Tensor | None = None,
    root: str | os.PathLike | None = None,
    classifier: PairClassifier | None = None,
    seed: int = 0,
    balanced: bool = False,
    k: int = 3,
    batch_size: int = 1000,
    dataset: str = "mnist",
    progress: ProgressFactory | None = None,
) -> dict[str, Any]:
    """The metrics of :func:`evaluate_samples` for real pairs in place of samples.

    A perfect generator would draw new real pairs, so the same metrics computed for a second
    real set against the reference set are the best a model can hope for (FD > 0 and
    precision/recall < 1 at finite sample sizes). Report them beside every model's numbers.

    Arguments:
        reference: the real reference pairs the samples are compared with (e.g. test pairs).
        held_out: the real set standing in for the samples; by default ``len(reference)``
            pairs of MNIST *training* digits drawn from ``root`` with ``seed`` (independent of
            the test digits; use as many as the model has samples, since FD depends on it).
        held_out_labels: true labels of ``held_out``; when known (always, for the default
            set) the conditional accuracy floor is the classifier's accuracy on real pairs.
        root: MNIST root, for the default held-out set.
        classifier: the judge; the shipped weights by default.
        seed: seeds the default held-out pairing.
        balanced: draw the default held-out set label-balanced.
        k: neighbourhood size of precision/recall.
        batch_size: pairs per classifier forward pass.
        dataset: the dataset of the default held-out set (and of the default classifier).
        progress: a bar factory for its classifier passes (None: silent).

    Returns:
        The dict of :func:`evaluate_samples`, with ``held_out`` naming where the set came from.
    """
    reference = _check_images("reference", reference)
    source = "given"
    if held_out is None:
        held_out, held_out_labels = real_pairs(
            root, reference.shape[0], train=True, seed=seed, balanced=balanced, dataset=dataset
        )
        source = f"{reference.shape[0]} training pairs, seed {seed}"
    result = evaluate_samples(
        held_out,
        reference,
        classifier,
        requested_labels=held_out_labels,
        k=k,
        batch_size=batch_size,
        dataset=dataset,
        progress=progress,
        desc="real-vs-real floor",
    )
    result["held_out"] = source
    return result
