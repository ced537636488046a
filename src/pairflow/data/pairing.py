"""Drawing pairs of digits: which source digit goes left and which goes right.

Pure index arithmetic on the digit labels, shared by every paired dataset. A pair of digits
with labels ``l`` (left) and ``r`` (right) has the pair label ``10 * l + r`` (3|7 -> 37,
0|5 -> 5). The same code draws single images (``sides=1``: the label is the class itself),
so the ``single`` layout of :class:`pairflow.data.PairedDataset` shares every option.

Digits are drawn from shuffled copies of the split ("cycled permutations") rather than
independently, so with ``num_pairs`` equal to the split size every digit appears exactly once
on the left and once on the right, and each epoch sees all digits.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = ["normalize_labels", "pairing_rng", "draw_pairs"]

from pairflow.options import NUM_PAIR_CLASSES


def normalize_labels(
    labels: int | Iterable[int] | None, num_classes: int = NUM_PAIR_CLASSES
) -> tuple[int, ...] | None:
    """Check a label selection (an int or ints in 0..num_classes-1): sorted unique tuple, or None.

    ``num_classes`` is 100 for pair labels (the default) and 10 for single images.
    """
    if labels is None:
        return None
    top = num_classes - 1
    what = "pair label" if num_classes == NUM_PAIR_CLASSES else "label"
    if isinstance(labels, (int, np.integer)):
        labels = [int(labels)]
    try:
        values = sorted({int(v) for v in labels})
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"labels must be an int or a list of ints in 0..{top}, got {labels!r}"
        ) from err
    if not values:
        raise ValueError(f"labels is empty: give at least one {what} in 0..{top}, or None for all")
    bad = [v for v in values if not 0 <= v < num_classes]
    if bad:
        if num_classes == NUM_PAIR_CLASSES:
            raise ValueError(f"pair labels must be in 0..99 (10*left + right), got {bad}")
        raise ValueError(f"labels must be in 0..{top}, got {bad}")
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
    sides: int = 2,
) -> np.ndarray:
    """Draw ``num_pairs`` (left, right) source indices (or single indices, ``sides=1``).

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
        sides: 2 for pairs (labels 0..99); 1 for single images (labels are the classes
            0..9, frequencies ``p(l)``). The pairs drawn with ``sides=2`` do not depend on
            this option's existence: the random stream is the same as before it.

    Returns:
        int64 array (num_pairs, sides): column 0 the left digit's index, column 1 the right's.

    Raises:
        ValueError: a required digit class is absent from ``digit_labels``, or ``balanced``
            with a ``num_pairs`` that is not a multiple of the number of classes.
    """
    digit_labels = np.asarray(digit_labels, dtype=np.int64)
    n = len(digit_labels)
    if num_pairs < 0:
        raise ValueError(f"num_pairs must be >= 0, got {num_pairs}")
    if sides not in (1, 2):
        raise ValueError(f"sides must be 1 (single images) or 2 (pairs), got {sides}")
    if num_pairs == 0:
        return np.zeros((0, sides), dtype=np.int64)
    if n == 0:
        raise ValueError("cannot draw pairs from an empty dataset")
    if not balanced and labels is None:
        # Unconstrained: classes follow the data; each digit used evenly on each side.
        everyone = np.arange(n, dtype=np.int64)
        return np.stack([_cycled(everyone, num_pairs, rng) for _ in range(sides)], 1)

    num_classes = 10**sides
    classes = np.arange(num_classes) if labels is None else np.asarray(labels, np.int64)
    counts = np.bincount(digit_labels, minlength=10)
    # The digit on each side of a class label: (tens, units) for pairs, the class for singles.
    side_digits = [classes // 10, classes % 10] if sides == 2 else [classes]
    missing = sorted({int(d) for digits in side_digits for d in digits if counts[d] == 0})
    if missing:
        raise ValueError(
            f"cannot draw the requested pair labels: digit class(es) {missing} do not occur "
            "in this dataset"
        )
    if balanced:
        targets = _balanced_classes(classes, num_pairs)
    else:
        weights = np.prod([counts[digits] for digits in side_digits], axis=0)
        targets = rng.choice(classes, size=num_pairs, p=weights / weights.sum())
    targets = rng.permutation(targets)  # interleave the classes in dataset order

    pools = [np.flatnonzero(digit_labels == d) for d in range(10)]
    pairs = np.empty((num_pairs, sides), dtype=np.int64)
    by_side = (targets // 10, targets % 10) if sides == 2 else (targets,)
    for side, side_digit in enumerate(by_side):
        for d in range(10):
            where = np.flatnonzero(side_digit == d)
            if len(where):
                pairs[where, side] = _cycled(pools[d], len(where), rng)
    return pairs
