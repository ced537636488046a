"""Sample metrics of a model beside the real-vs-real floor: the body of ``evaluate --samples``."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

from pairflow.evaluation.floor import REFERENCE_SEED, cached_floor
from pairflow.evaluation.report import relative
from pairflow.evaluation.sampling import draw_samples
from pairflow.metrics.table import METRICS

__all__ = ["sample_metrics"]


def sample_metrics(
    model,
    conditional: bool,
    n: int,
    root: Path,
    grid_path: Path,
    cache_dir: Path,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 500,
    json_dir: Path | None = None,
    dataset: str = "mnist",
    classifier_path: Path | None = None,
    progress=None,
    labels_from: str = "even",
    guidance: float | None = None,
) -> dict:
    """Draw ``n`` samples, judge them against ``n`` real test pairs beside the floor.

    Conditional models are asked for every pair label in turn (00, 01, ..., 99, 00, ...),
    or with ``labels_from="prior"`` for labels drawn from the model's p(label)
    (``model.sample_labels``): the label-free sampler, whose unconditional metrics compare
    with an unconditional model's.

    Arguments:
        model: a :class:`~pairflow.models.GenerativeModel`.
        conditional: whether to ask for labels.
        n: samples (and real test pairs; at most the test split's size).
        root: the data root.
        grid_path: where the sample grid PNG goes.
        cache_dir: the folder of the floor cache.
        temperature, seed, batch_size: of the samples.
        json_dir: the folder the grid's path is given relative to (default: its own).
        dataset: the model's dataset: its test pairs are the reference, its classifier judges.
        classifier_path: a classifier checkpoint of ``dataset`` (default: the shipped one).
        progress: a bar factory (:func:`pairflow.progress.bars`) for the sampling, the
            classifier's features and the floor; None: silent.
        labels_from: ``"even"`` or ``"prior"``, the labels a conditional model is asked for.
        guidance: classifier-free guidance weight of the samples (a flow trained with label
            dropout); None: off.

    Returns:
        ``{"samples": details, "metrics": {key: {"model", "floor"}}}``.

    Raises:
        FileNotFoundError, ValueError: the data root lacks the test split, the classifier
            is missing or is of another dataset.
    """
    import torch

    from pairflow.classifier import SHIPPED_WEIGHTS, load_classifier
    from pairflow.data import PairedDataset
    from pairflow.images import save_grid
    from pairflow.metrics import evaluate_samples

    test = PairedDataset(dataset, root, train=False, num_pairs=n, seed=REFERENCE_SEED)
    if n > len(test.digits):
        # N test pairs from fewer test digits would reuse digits and shrink the floor.
        print(
            f"pairflow evaluate: --samples {n} is more than the {len(test.digits)} test pairs "
            f"of {root}; using N = {len(test.digits)} samples and real pairs",
            file=sys.stderr,
        )
        n = len(test.digits)
        test = PairedDataset(dataset, root, train=False, num_pairs=n, seed=REFERENCE_SEED)
    reference, _ = test.get_batch(torch.arange(n))  # (N, C, H, 2W) uint8
    device = model.device
    weights = Path(classifier_path) if classifier_path else SHIPPED_WEIGHTS[dataset]
    classifier = load_classifier(weights, device=device, dataset=dataset)
    if classifier.config.dataset != dataset:
        raise ValueError(
            f"classifier {weights} was trained on {classifier.config.dataset}; the model is a "
            f"{dataset} model: give a {dataset} classifier"
        )
    if weights == SHIPPED_WEIGHTS[dataset]:
        classifier_name = f"shipped {dataset} classifier (pairflow/weights/{weights.name})"
    else:
        classifier_name = f"{dataset} classifier {weights}"

    if labels_from not in ("even", "prior"):
        raise ValueError(f"labels_from must be 'even' or 'prior', got {labels_from!r}")
    generator = torch.Generator(device=device).manual_seed(seed)
    # Conditional models are asked for every pair label in turn: 00, 01, ..., 99, 00, ...
    labels = torch.arange(n) % model.config.num_classes if conditional else None
    if conditional and labels_from == "prior":
        labels = model.sample_labels(n, generator).cpu()  # y ~ p(y), then x ~ p(x | y)
    start = time.perf_counter()
    samples = draw_samples(  # (N, C, H, 2W) uint8
        model,
        n,
        batch_size,
        temperature=temperature,
        generator=generator,
        labels=labels,
        progress=progress,
        guidance=guidance,
    )
    sampling_seconds = time.perf_counter() - start

    start = time.perf_counter()
    metrics = evaluate_samples(
        samples,
        reference,
        classifier,
        requested_labels=labels,
        batch_size=batch_size,
        progress=progress,
    )
    metrics_seconds = time.perf_counter() - start
    floor, floor_info = cached_floor(
        reference,
        root,
        classifier,
        seed,
        cache_dir,
        batch_size,
        dataset,
        weights,
        progress=progress,
    )

    shown = 100 if conditional else 64
    grid_images = samples[: min(n, shown)]
    grid_labels = None if labels is None else [f"{int(v):02d}" for v in labels[: len(grid_images)]]
    save_grid(grid_images, grid_path, nrow=10 if conditional else 8, labels=grid_labels)

    table = {
        m.key: {"model": metrics[m.key], "floor": floor[m.key]}
        for m in METRICS
        if conditional or not m.conditional_only
    }
    details = {
        "num_samples": n,
        "num_real": metrics["num_real"],
        "temperature": temperature,
        **({} if guidance is None else {"guidance": guidance}),
        "seed": seed,
        "requested_labels": None
        if not conditional
        else "00..99 in turn (evenly)"
        if labels_from == "even"
        else "drawn from the model's p(label) (the label-free sampler)",
        "reference": f"{n} test pairs (pairing seed {REFERENCE_SEED})",
        "floor_held_out": floor["held_out"],
        "classifier": classifier_name,
        "nonfinite_samples": metrics["nonfinite_samples"],
        "sampling_seconds": sampling_seconds,
        "samples_per_second": n / sampling_seconds if sampling_seconds > 0 else math.inf,
        "metrics_seconds": metrics_seconds,
        **floor_info,
        "grid": relative(grid_path, json_dir or grid_path.parent),
    }
    if conditional:
        details["conditional_accuracy_min_pair"] = metrics["conditional_accuracy_min_pair"]
        details["conditional_accuracy_overall"] = metrics["conditional_accuracy_overall"]
        details["conditional_accuracy_per_pair"] = metrics["conditional_accuracy_per_pair"]
    return {"samples": details, "metrics": table}
