"""Test-set bits/dim: mean and standard error over fixed test pairs."""

from __future__ import annotations

import math
import time

import torch

__all__ = ["evaluate_bpd"]


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
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    start = time.perf_counter()
    n = len(dataset)
    per_pair = torch.empty(n, dtype=torch.float64)
    from pairflow.progress import open_bar

    bar = open_bar(progress, n, "bits/dim")
    for lo in range(0, n, batch_size):
        idx = torch.arange(lo, min(lo + batch_size, n))
        x, y = dataset.get_batch(idx)
        x, y = x.to(device), y.to(device)
        cond = y if conditional else None
        total = torch.zeros(len(idx), dtype=torch.float64, device=device)
        for _ in range(draws):
            total += model.bits_per_dim(x, cond=cond, generator=generator).double()
        per_pair[lo : lo + len(idx)] = (total / draws).cpu()
        bar.update(len(idx))
    bar.close()
    model.train(was_training)
    mean = per_pair.mean().item()
    stderr = per_pair.std().item() / math.sqrt(n) if n > 1 else float("nan")
    return {
        "bpd": mean,
        "bpd_stderr": stderr,
        "num_pairs": n,
        "draws": draws,
        "seconds": time.perf_counter() - start,
    }
