"""Explore: a strip of images walking through a model's latent space between two images.

The strip is :func:`pairflow.evaluation.interpolation.interpolate`'s, the one
``pairflow sample --interpolate`` draws: a conditional model encodes and decodes the whole
strip under the start image's label, so the strip is a morph that begins and ends on the two
images (that function's docstring says why this policy). The two images are real test pairs
of the model's own dataset, or a sample of each of two labels.

Example (the shipped weights and MNIST)::

    loaded = load_model("multiscale-cond")
    strip, ends, labels = interpolate_test_pairs(loaded, 4, 9, steps=10)
    strip.shape  # (10, 1, 28, 56); labels: the start pair's label, 10 times
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch
from torch import Tensor

from pairflow.app.inputs import (
    AppInputError,
    check_seed,
    check_steps,
    check_temperature,
    parse_pair,
)
from pairflow.app.model import LoadedModel
from pairflow.evaluation.interpolation import interpolate, latent_path

__all__ = ["interpolate_latents", "interpolate_test_pairs", "interpolate_labels"]

interpolate_latents = latent_path
"""The latent path of a strip (:func:`pairflow.evaluation.interpolation.latent_path`)."""


def _strip(loaded: LoadedModel, x: Tensor, labels: Tensor | None, steps: int):
    """The strip from x[0] to x[1] (2, C, H, W), and its decoding labels (None without)."""
    if not loaded.has_encoder:
        raise AppInputError(
            f"{loaded.name} is a {loaded.kind.name}: it has no encoder, so it cannot interpolate "
            "between images; choose a flow or a VAE"
        )
    start = labels[:1] if loaded.conditional else None
    with loaded.lock:
        strip = interpolate(loaded.model, x[:1], x[1:], steps, cond=start)[0]
    return strip, None if start is None else [int(start)] * steps


@functools.lru_cache(maxsize=4)
def _test_pairs(root: Path, dataset: str, layout: str):
    """A dataset's test pairing of seed 0 (what ``pairflow sample --interpolate`` draws from)."""
    from pairflow.data import PairedDataset

    return PairedDataset(dataset, root, train=False, layout=layout)


def interpolate_test_pairs(
    loaded: LoadedModel,
    index_a: int,
    index_b: int,
    steps: int = 10,
    data_dir: str | os.PathLike | None = None,
) -> tuple[Tensor, Tensor, list[int] | None]:
    """Latent interpolation between two real test pairs of the model's own dataset (its
    test split, the pairing of seed 0; single images for a single-layout model).

    Arguments:
        loaded: the model (a flow or a VAE).
        index_a, index_b: the test pairs' indices.
        steps: images in the strip, 2..16.
        data_dir: the data root holding the dataset's folder (``FashionMNIST/raw/``,
            ``cifar-10-batches-py/``, ...); default $PAIRFLOW_DATA, else ./data.

    Returns:
        ``(strip uint8 (steps, C, H, W), endpoint labels (2,), decoding labels or None)``:
        a conditional model decodes every image under pair A's label.
    """
    from pairflow.data import resolve_root

    steps = check_steps(steps)
    try:
        root = resolve_root(data_dir)
        test = _test_pairs(root, loaded.dataset, loaded.layout)
    except (ValueError, OSError) as err:  # the not-found and format errors are these
        raise AppInputError(
            f"the {loaded.items} test set is not available ({err}); start the app with "
            f"--data-dir ROOT (the folder that holds {loaded.spec.folder.split('/')[0]}/), "
            "or use two labels instead"
        ) from err
    idx = []
    for name, value in (("pair A", index_a), ("pair B", index_b)):
        try:
            i = int(value)
        except (TypeError, ValueError):
            i = -1
        if not 0 <= i < len(test) or str(value).strip() != str(i):
            raise AppInputError(f"{name}: test pair index {value!r} is not in 0..{len(test) - 1}")
        idx.append(i)
    x, y = test.get_batch(torch.tensor(idx))  # (2, C, H, W), (2,)
    strip, c = _strip(loaded, x, y, steps)
    return strip, y, c


def interpolate_labels(
    loaded: LoadedModel,
    pair_a: str,
    pair_b: str,
    steps: int = 10,
    temperature: float = 0.7,
    seed: int = 0,
) -> tuple[Tensor, Tensor, list[int] | None]:
    """Latent interpolation between a sample of pair ``pair_a`` and one of ``pair_b``.

    Each end is drawn at ``temperature`` for its label; the strip then runs as in
    :func:`interpolate_test_pairs`, under ``pair_a``'s label, and ends on the sample of
    ``pair_b``. Conditional models only.
    """
    if not loaded.conditional:
        raise AppInputError(
            f"{loaded.name} is unconditional: interpolating between two labels needs a "
            "conditional model (e.g. multiscale-cond); use two test pairs instead"
        )
    steps = check_steps(steps)
    labels = []
    for field, text in (("label A", pair_a), ("label B", pair_b)):
        label = parse_pair(text, True, loaded.layout, field=field)
        if label is None:
            raise AppInputError(f"{field}: give a label (e.g. 37 and 80), not 'any'")
        labels.append(label)
    labels = torch.tensor(labels)
    t, s = check_temperature(temperature), check_seed(seed)
    with loaded.lock, torch.no_grad():
        x = loaded.model.sample(
            2, temperature=t, generator=torch.Generator().manual_seed(s), cond=labels
        )
    strip, c = _strip(loaded, x, labels, steps)
    return strip, labels, c
