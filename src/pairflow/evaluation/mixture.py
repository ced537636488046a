"""A conditional flow on test pairs as a model of p(x): unconditional and conditional
bits/dim and p(y | x) (one pass per dequantisation draw for the class mixture, one per label
(100 for pairs, 10 for single images) where the couplings read the label)."""

from __future__ import annotations

import math
import time

import torch

from pairflow.evaluation.likelihood import pair_batches, standard_error

__all__ = ["evaluate_mixture", "classifier_accuracy"]


@torch.no_grad()
def evaluate_mixture(
    model: torch.nn.Module,
    dataset,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    draws: int = 1,
    seed: int = 1234,
    progress=None,
    labels_of=None,
) -> dict:
    """A conditional flow on every pair of ``dataset``, with and without the label.

    Each draw gives log p(x | y) for all K labels (100 pair labels, or 10 classes of single
    images; ``model.class_log_likelihoods``: one pass for a class mixture,
    ``model.label_passes`` = K otherwise), hence the exact
    unconditional bits/dim (of log p(x) = logsumexp_y [log p(y) + log p(x | y)], with p(y)
    ``model.log_label_probs()``), the bits/dim given the true label, and the flow's own pair
    classification by Bayes (argmax of p(y | x), the log-likelihoods averaged over the
    draws). Draws, seed, progress and NaN handling as in :func:`evaluate_bpd`.
    ``labels_of``: images -> the labels to score them under in place of the dataset's (a
    flow that reads its own clusters: ``model.own_labels``).

    Returns:
        ``{"bpd", "bpd_stderr", "bpd_given_label", "bpd_given_label_stderr", "accuracy",
        "num_pairs", "draws", "seconds"}``; ``accuracy`` is the fraction of pairs whose
        label the flow reads right (for pairs: both digits).
    """
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    device = torch.device(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    start = time.perf_counter()
    n = len(dataset)
    d = model.config.num_dims
    log_prior = model.log_label_probs().double()  # (K,)
    marginal = torch.empty(n, dtype=torch.float64)
    given = torch.empty(n, dtype=torch.float64)
    hits = torch.empty(n, dtype=torch.bool)

    def to_bpd(log_p: torch.Tensor) -> torch.Tensor:
        return (-log_p + d * math.log(256)) / (d * math.log(2))

    from pairflow.progress import open_bar

    bar = open_bar(progress, n, "bits/dim, all labels")
    for rows, x, y in pair_batches(model, dataset, batch_size, device):
        if labels_of is not None:
            y = labels_of(x)
        total_marginal = torch.zeros(len(x), dtype=torch.float64, device=device)
        total_given = torch.zeros_like(total_marginal)
        mean_loglik = torch.zeros(len(x), len(log_prior), dtype=torch.float64, device=device)
        for _ in range(draws):
            loglik = model.class_log_likelihoods(x, generator=generator).double()  # (B, K)
            total_marginal += to_bpd(torch.logsumexp(log_prior + loglik, dim=1))
            total_given += to_bpd(loglik.gather(1, y[:, None]).squeeze(1))
            mean_loglik += loglik / draws
        marginal[rows] = (total_marginal / draws).cpu()
        given[rows] = (total_given / draws).cpu()
        hits[rows] = ((log_prior + mean_loglik).argmax(dim=1) == y).cpu()
        bar.update(len(x))
    bar.close()

    return {
        "bpd": marginal.mean().item(),
        "bpd_stderr": standard_error(marginal),
        "bpd_given_label": given.mean().item(),
        "bpd_given_label_stderr": standard_error(given),
        "accuracy": hits.double().mean().item(),
        "num_pairs": n,
        "draws": draws,
        "label_passes": model.label_passes,
        "seconds": time.perf_counter() - start,
    }


@torch.no_grad()
def classifier_accuracy(
    dataset,
    device: torch.device | str = "cpu",
    batch_size: int = 500,
    path=None,
    name: str = "mnist",
) -> float:
    """A pair classifier's accuracy (both digits right) on ``dataset``'s pairs.

    ``path``: a classifier checkpoint of dataset ``name`` (default: the shipped one).
    """
    from pairflow.classifier import SHIPPED_WEIGHTS, load_classifier, pair_labels

    classifier = load_classifier(path or SHIPPED_WEIGHTS[name], device=device, dataset=name)
    images, targets = dataset.get_batch(torch.arange(len(dataset)))
    _, logits = classifier.embed(images.to(device), batch_size=batch_size)  # (N, 2, 10)
    return (pair_labels(logits).cpu() == targets).double().mean().item()
