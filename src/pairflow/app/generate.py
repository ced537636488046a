"""Generate: draw samples for the page, the same ones ``pairflow sample`` draws.

Example:
    >>> from pairflow.flows import build_flow
    >>> from pairflow.models import kind_of
    >>> flow = build_flow("seed", num_couplings=2, hidden_features=8, conditional=True).eval()
    >>> images, labels = generate(LoadedModel("tiny", flow, kind_of(flow)), "37", count=2)
    >>> images.shape, labels.tolist()
    (torch.Size([2, 1, 28, 56]), [37, 37])
"""

from __future__ import annotations

import torch
from torch import Tensor

from pairflow.app.inputs import (
    AppInputError,
    check_count,
    check_guidance,
    check_seed,
    check_temperature,
    is_any,
    parse_pair,
)
from pairflow.app.model import LoadedModel
from pairflow.models import has_label_prior
from pairflow.options import num_classes_of

__all__ = ["generate", "default_temperature_for", "default_guidance_for", "model_labels"]


def model_labels(model, n: int, seed: int) -> Tensor:
    """n labels drawn from a conditional flow's p(y) (the training pairs' frequencies)."""
    return model.sample_labels(n, torch.Generator(device=model.device).manual_seed(seed)).cpu()


def generate(
    loaded: LoadedModel,
    pair: str | int | None = "any",
    count: int = 16,
    temperature: float | None = None,
    seed: int = 0,
    guidance: float | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Draw ``count`` pairs, the same ones as ``pairflow sample`` with the same settings.

    Arguments:
        loaded: the model.
        pair: ``"37"`` (conditional models), or ``"any"``: a label per image drawn from p(y)
            (conditional models) or no label (unconditional ones).
        count: 1..MAX_COUNT images.
        temperature: scale of the latent's standard deviation (> 0); None: the model's
            default for this pair, as ``pairflow sample`` takes it
            (:func:`default_temperature_for`).
        seed: seeds the latents (and the random labels of ``"any"``).
        guidance: classifier-free guidance weight (models trained with label dropout,
            :attr:`LoadedModel.guidable`; -1..5), as ``pairflow sample --guidance``; None: off.

    Returns:
        ``(images uint8 (N, C, H, W), labels int64 (N,) or None)``: the model's image shape,
        (N, 1, 28, 56) for MNIST pairs, (N, 3, 32, 64) (R, G, B) for CIFAR-10 pairs.
    """
    label = parse_pair(pair, loaded.conditional, loaded.layout)
    if temperature is None:
        temperature = default_temperature_for(loaded, pair)
    n, t, s = check_count(count), check_temperature(temperature), check_seed(seed)
    if guidance is not None:
        if not loaded.guidable:
            raise AppInputError(
                f"{loaded.name} was trained without label dropout: it has no guidance"
            )
        guidance = check_guidance(guidance)
    labels = None
    if label is not None:
        labels = torch.full((n,), label, dtype=torch.int64)
    elif loaded.conditional and has_label_prior(loaded.model):  # as `pairflow sample` does
        labels = model_labels(loaded.model, n, s)
    elif loaded.conditional:
        classes = num_classes_of(loaded.layout)
        labels = torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(s))
    from pairflow.evaluation import draw_samples

    gen = torch.Generator().manual_seed(s)
    with loaded.lock:
        images = draw_samples(
            loaded.model, n, temperature=t, generator=gen, labels=labels, guidance=guidance
        )
    return images, labels


def default_temperature_for(loaded: LoadedModel, pair: str | int | None) -> float:
    """The temperature ``pairflow sample`` takes for this model and pair when none is given.

    The model's own where a sweep chose them (a shipped model's), else 0.8 where a
    conditional flow draws its labels from its own p(y) (``"any"``), 0.7 for a given label and
    for unconditional models (:func:`pairflow.options.default_temperature`).
    The page moves its slider here when the pair switches between a label and ``"any"``.

    Example:
        >>> from pairflow.flows import build_flow
        >>> flow = build_flow("multiscale", hidden_channels=4, num_blocks=1, conditional=True,
        ...                   conditioning="both")
        >>> from pairflow.models import kind_of
        >>> loaded = LoadedModel("tiny", flow, kind_of(flow))
        >>> default_temperature_for(loaded, "37"), default_temperature_for(loaded, "any")
        (0.7, 0.8)
    """
    from pairflow.options import default_temperature

    label_free = is_any(pair) and loaded.conditional and has_label_prior(loaded.model)
    return default_temperature(bool(label_free), loaded.temperatures)


def default_guidance_for(loaded: LoadedModel, pair: str | int | None) -> float:
    """The guidance weight ``pairflow sample`` takes for this model and pair when
    ``--guidance`` is not given: the model's own where its sweep chose one
    (:func:`pairflow.options.default_guidance`), else 0 (the conditional model as trained).

    Example:
        >>> from pairflow.flows import build_flow
        >>> flow = build_flow("multiscale", hidden_channels=4, num_blocks=1, conditional=True,
        ...                   conditioning="both", label_dropout=0.1)
        >>> from pairflow.models import kind_of
        >>> loaded = LoadedModel("tiny", flow, kind_of(flow),
        ...                      guidance={"default": 0.1, "label_free": 0.15})
        >>> default_guidance_for(loaded, "37"), default_guidance_for(loaded, "any")
        (0.1, 0.15)
    """
    from pairflow.options import default_guidance

    if not loaded.guidable:
        return 0.0
    own_clusters = bool(getattr(loaded.model.config, "clusters", 0))  # drawn from p(c)
    label_free = own_clusters or (
        is_any(pair) and loaded.conditional and has_label_prior(loaded.model)
    )
    weight = default_guidance(bool(label_free), loaded.guidance)
    return 0.0 if weight is None else weight
