"""PairLoader: batches of digit pairs by tensor indexing, shardable across ranks.

A ``torch.utils.data.DataLoader`` over a paired dataset builds every pair on its own and
collates them; PairLoader asks the dataset for a whole batch at once
(:meth:`~pairflow.data.paired.PairingMixin.get_batch`), which is one gather of the
in-memory digits, so no worker processes are needed.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

__all__ = ["PairLoader"]


class PairLoader:
    """Iterate over a paired dataset in batches, optionally shuffled and sharded.

    Each epoch's order is a permutation drawn from ``(seed, epoch)``. With ``world_size > 1``
    the permutation is cut to a multiple of ``world_size`` (at most ``world_size - 1`` pairs
    skipped, different ones each shuffled epoch) and rank ``r`` takes every ``world_size``-th
    pair starting at ``r``: the ranks' shares are disjoint, equally long (so every rank runs
    the same number of steps, as distributed training needs) and together cover the epoch.

    :meth:`set_epoch` sets the epoch of both the order and the dataset's pairs (if the
    dataset has ``set_epoch``); call it at the start of every epoch, like
    ``DistributedSampler.set_epoch``. Without it every pass repeats the same order.

    Arguments:
        dataset: object with ``get_batch(idx) -> (images, targets)`` and ``__len__``
            (e.g. :class:`~pairflow.data.PairedMNIST`).
        batch_size: pairs per batch (per rank).
        shuffle: random order per epoch; else in dataset order.
        drop_last: drop the last incomplete batch of each epoch.
        seed: seed of the order (independent of the dataset's pairing seed).
        rank: this process's rank in ``0..world_size-1``.
        world_size: number of processes sharing the epoch.

    Yields:
        ``(images, targets)``: uint8 tensor (B, C, H, W) with values 0..255 (the dataset's
        ``image_shape``: (B, 1, 28, 56) for MNIST pairs, (B, 3, 32, 64) for CIFAR-10 pairs)
        and int64 tensor (B,) of labels.

    Example:
        >>> loader = PairLoader(PairedMNIST(root), batch_size=128, seed=0)  # doctest: +SKIP
        >>> for epoch in range(3):  # doctest: +SKIP
        ...     loader.set_epoch(epoch)
        ...     for images, targets in loader:
        ...         ...  # images: (128, 1, 28, 56) uint8
    """

    def __init__(
        self,
        dataset,
        batch_size: int,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not hasattr(dataset, "get_batch"):
            raise TypeError(
                f"PairLoader needs a dataset with get_batch(idx), got {type(dataset).__name__}"
            )
        if int(batch_size) <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size}")
        if int(world_size) <= 0:
            raise ValueError(f"world_size must be a positive int, got {world_size}")
        if not 0 <= int(rank) < int(world_size):
            raise ValueError(f"rank must be in 0..{int(world_size) - 1}, got {rank}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch``'s order, and ``epoch``'s pairs if the dataset redraws per epoch."""
        self.epoch = int(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)

    def _per_rank(self) -> int:
        return len(self.dataset) // self.world_size if self.world_size > 1 else len(self.dataset)

    def indices(self) -> torch.Tensor:
        """This rank's pair indices for the current epoch, in iteration order (int64)."""
        n = len(self.dataset)
        if self.shuffle:
            # A pure function of (seed, epoch), the same on every rank.
            rng = np.random.default_rng([self.seed & 0xFFFFFFFF, self.epoch])
            order = torch.from_numpy(rng.permutation(n))
        else:
            order = torch.arange(n)
        if self.world_size > 1:
            order = order[: self._per_rank() * self.world_size][self.rank :: self.world_size]
        return order

    def __len__(self) -> int:
        per_rank = self._per_rank()
        if self.drop_last:
            return per_rank // self.batch_size
        return -(-per_rank // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.indices()
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield self.dataset.get_batch(order[start : start + self.batch_size])
