"""Drawing pairs of digits: which source digit goes left and which goes right.

Pure index arithmetic on the digit labels, shared by every paired dataset. A pair of digits
with labels ``l`` (left) and ``r`` (right) has the pair label ``10 * l + r`` (3|7 -> 37,
0|5 -> 5).

Digits are drawn from shuffled copies of the split ("cycled permutations") rather than
independently, so with ``num_pairs`` equal to the split size every digit appears exactly once
on the left and once on the right, and each epoch sees all digits.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = ["NUM_PAIR_CLASSES", "normalize_labels", "pairing_rng", "draw_pairs"]

from pairflow.options import NUM_PAIR_CLASSES


def normalize_labels(labels: int | Iterable[int] | None) -> tuple[int, ...] | None:
    """Check a pair-label selection (an int or ints in 0..99): sorted unique tuple, or None."""
    if labels is None:
        return None
    if isinstance(labels, (int, np.integer)):
        labels = [int(labels)]
    try:
        values = sorted({int(v) for v in labels})
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"labels must be an int or a list of ints in 0..99, got {labels!r}"
        ) from err
    if not values:
        raise ValueError("labels is empty: give at least one pair label in 0..99, or None for all")
    bad = [v for v in values if not 0 <= v < NUM_PAIR_CLASSES]
    if bad:
        raise ValueError(f"pair labels must be in 0..99 (10*left + right), got {bad}")
    return tuple(values)


def pairing_rng(seed: int, epoch: int) -> np.random.Generator:
    """The random generator for one epoch's pairs: a pure function of ``(seed, epoch)``."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(seed) >> 32, int(epoch)])


def _cycled(pool: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` items of ``pool``: concatenated random permutations, so usage is even."""
    reps = -(-count // len(pool))
    return np.concatenate([rng.permutation(pool) for _ in range(reps)])[:count]


def _balanced_classes(classes: np.ndarray, num_pairs: int) -> np.ndarray:
    if num_pairs % len(classes):
        lo = num_pairs // len(classes) * len(classes)
        raise ValueError(
            f"balanced pairs need num_pairs to be a multiple of the number of pair classes "
            f"({len(classes)}) so that each appears equally often; got {num_pairs}, "
            f"use {lo or len(classes)} or {lo + len(classes)}"
        )
    return np.repeat(classes, num_pairs // len(classes))


def draw_pairs(
    digit_labels: np.ndarray,
    num_pairs: int,
    rng: np.random.Generator,
    balanced: bool = False,
    labels: tuple[int, ...] | None = None,
) -> np.ndarray:
    """Draw ``num_pairs`` (left, right) source indices.

    Arguments:
        digit_labels: int array (N,) of digit labels in 0..9.
        num_pairs: number of pairs to draw.
        rng: the generator (see :func:`pairing_rng`).
        balanced: every allowed pair class appears exactly ``num_pairs / K`` times, K the
            number of allowed classes (100, or ``len(labels)``); ``num_pairs`` must be a
            multiple of K.
        labels: allowed pair labels (see :func:`normalize_labels`); ``None`` allows all.
            Without ``balanced``, the classes keep their natural frequencies
            ``p(l) * p(r)`` among the allowed ones.

    Returns:
        int64 array (num_pairs, 2): column 0 the left digit's index, column 1 the right's.

    Raises:
        ValueError: a required digit class is absent from ``digit_labels``, or ``balanced``
            with a ``num_pairs`` that is not a multiple of the number of classes.
    """
    digit_labels = np.asarray(digit_labels, dtype=np.int64)
    n = len(digit_labels)
    if num_pairs < 0:
        raise ValueError(f"num_pairs must be >= 0, got {num_pairs}")
    if num_pairs == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if n == 0:
        raise ValueError("cannot draw pairs from an empty dataset")
    if not balanced and labels is None:
        # Unconstrained: classes follow the data; each digit used evenly on each side.
        everyone = np.arange(n, dtype=np.int64)
        return np.stack([_cycled(everyone, num_pairs, rng), _cycled(everyone, num_pairs, rng)], 1)

    classes = np.arange(NUM_PAIR_CLASSES) if labels is None else np.asarray(labels, np.int64)
    counts = np.bincount(digit_labels, minlength=10)
    missing = sorted({int(d) for c in classes for d in divmod(int(c), 10) if counts[d] == 0})
    if missing:
        raise ValueError(
            f"cannot draw the requested pair labels: digit class(es) {missing} do not occur "
            "in this dataset"
        )
    if balanced:
        targets = _balanced_classes(classes, num_pairs)
    else:
        weights = counts[classes // 10] * counts[classes % 10]
        targets = rng.choice(classes, size=num_pairs, p=weights / weights.sum())
    targets = rng.permutation(targets)  # interleave the classes in dataset order

    pools = [np.flatnonzero(digit_labels == d) for d in range(10)]
    pairs = np.empty((num_pairs, 2), dtype=np.int64)
    for side, side_digit in enumerate((targets // 10, targets % 10)):
        for d in range(10):
            where = np.flatnonzero(side_digit == d)
            if len(where):
                pairs[where, side] = _cycled(pools[d], len(where), rng)
    return pairs
