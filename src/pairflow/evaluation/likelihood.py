"""Test-set bits/dim: mean and standard error over fixed test pairs."""

from __future__ import annotations

import math
import time

import torch

__all__ = ["evaluate_bpd", "evaluate_importance_weighted"]


def pair_batches(model: torch.nn.Module, dataset, batch_size: int, device: torch.device):
    """``(rows, x, y)`` over ``dataset``'s pairs in their fixed order, ``batch_size`` at a time,
    on ``device`` (``rows``: the slice of the pairs); ``model`` is in eval mode meanwhile."""
    was_training = model.training
    model.eval()
    try:
        n = len(dataset)
        for lo in range(0, n, batch_size):
            idx = torch.arange(lo, min(lo + batch_size, n))
            x, y = dataset.get_batch(idx)
            yield slice(lo, lo + len(idx)), x.to(device), y.to(device)
    finally:
        model.train(was_training)


def standard_error(values: torch.Tensor) -> float:
    """The standard error of the mean of per-pair ``values`` (N,): NaN for one pair."""
    n = len(values)
    return values.std().item() / math.sqrt(n) if n > 1 else float("nan")


@torch.no_grad()
def evaluate_bpd(
    model: torch.nn.Module,
    dataset,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    draws: int = 1,
    seed: int = 1234,
    conditional: bool = False,
    progress=None,
) -> dict:
    """Bits/dim of ``model`` on every pair of ``dataset`` (in its fixed order).

    Each pair's bits/dim is averaged over ``draws`` uniform-dequantisation draws (a fixed
    generator seeded with ``seed``, so the number is reproducible); the mean and its standard
    error are over pairs. NaN or inf is kept, never dropped: a diverged model reports NaN.

    Arguments:
        model: a ``PairFlow`` (anything with ``bits_per_dim(x, cond=None, generator=None)``).
        dataset: a paired dataset (``PairedDataset``, ``PairedMNIST``; uses ``get_batch``).
        batch_size: pairs per forward pass.
        device: where to compute.
        draws: dequantisation draws per pair.
        seed: seed of the dequantisation noise.
        conditional: pass the pair labels as ``cond``.
        progress: a bar factory (:func:`pairflow.progress.bars`); None: silent.

    Returns:
        ``{"bpd": mean, "bpd_stderr": s.e., "num_pairs": N, "draws": draws, "seconds": t}``.
    """
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    device = torch.device(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    start = time.perf_counter()
    n = len(dataset)
    per_pair = torch.empty(n, dtype=torch.float64)
    from pairflow.progress import open_bar

    bar = open_bar(progress, n, "bits/dim")
    for rows, x, y in pair_batches(model, dataset, batch_size, device):
        cond = y if conditional else None
        total = torch.zeros(len(x), dtype=torch.float64, device=device)
        for _ in range(draws):
            total += model.bits_per_dim(x, cond=cond, generator=generator).double()
        per_pair[rows] = (total / draws).cpu()
        bar.update(len(x))
    bar.close()
    return {
        "bpd": per_pair.mean().item(),
        "bpd_stderr": standard_error(per_pair),
        "num_pairs": n,
        "draws": draws,
        "seconds": time.perf_counter() - start,
    }


@torch.no_grad()
def evaluate_importance_weighted(
    model: torch.nn.Module,
    dataset,
    samples: int,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    seed: int = 1234,
    conditional: bool = False,
    progress=None,
) -> dict:
    r"""The importance-weighted bound on the 256-level bits/dim of every pair of ``dataset``.

    Per pair, K = ``samples`` weights w_k (``model.log_weight``: dequantization noise for a
    flow, latents for a VAE, each with E[w] = P(x)) give

    .. math:: -\log P(x) \le -\log \frac{1}{K} \sum_k w_k
        \le -\frac{1}{K} \sum_k \log w_k

    (Burda et al. 2016): the right side is the usual bound (a flow's bits/dim, a VAE's
    negative ELBO, averaged over K draws), the middle one tightens towards the discrete
    model's exact -log P(x) as K grows. For a flow with uniform noise the right side is the
    exact likelihood of its continuous density; the middle one is then a bound on its
    discrete model, which puts all of a bin's mass on the bin.

    Arguments:
        model: a :class:`~pairflow.models.LikelihoodModel` (flow or VAE).
        dataset, batch_size, device, seed, conditional, progress: as in :func:`evaluate_bpd`.
        samples: K >= 1 weights per pair (K passes through the model).

    Returns:
        ``{"bpd": the K-sample bound, "bpd_stderr", "bpd_mean_draws": the usual bound
        averaged over the same K draws, "bpd_mean_draws_stderr", "samples": K,
        "num_pairs", "seconds"}``; standard errors over pairs.
    """
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise ValueError(f"samples must be an int >= 1, got {samples!r}")
    device = torch.device(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    start = time.perf_counter()
    n = len(dataset)
    bits = model.config.num_dims * math.log(2)  # nats per bit/dim
    weighted = torch.empty(n, dtype=torch.float64)
    mean_draws = torch.empty(n, dtype=torch.float64)
    from pairflow.progress import open_bar

    bar = open_bar(progress, n * samples, f"bits/dim, {samples} importance samples")
    for rows, x, y in pair_batches(model, dataset, batch_size, device):
        cond = y if conditional else None
        log_w = torch.empty(len(x), samples, dtype=torch.float64, device=device)
        for k in range(samples):
            log_w[:, k] = model.log_weight(x, cond=cond, generator=generator).double()
            bar.update(len(x))
        iw = torch.logsumexp(log_w, dim=1) - math.log(samples)
        weighted[rows] = (-iw / bits).cpu()
        mean_draws[rows] = (-log_w.mean(dim=1) / bits).cpu()
    bar.close()
    return {
        "bpd": weighted.mean().item(),
        "bpd_stderr": standard_error(weighted),
        "bpd_mean_draws": mean_draws.mean().item(),
        "bpd_mean_draws_stderr": standard_error(mean_draws),
        "samples": samples,
        "num_pairs": n,
        "seconds": time.perf_counter() - start,
    }
