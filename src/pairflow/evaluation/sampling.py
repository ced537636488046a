"""Drawing many samples in chunks: bounded memory, one generator, labels in order."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from pairflow.progress import ProgressFactory, open_bar

__all__ = ["iter_samples", "draw_samples", "check_guidance_for"]


def check_guidance_for(model, model_config: dict, source, weight: float) -> float:
    """``weight`` if ``model`` can sample with classifier-free guidance by it, else
    ValueError naming the model and what to do: guidance needs a conditional flow trained
    with label dropout (its config's ``label_dropout`` > 0), and a finite weight in range.

    Arguments:
        model: the loaded model.
        model_config: its checkpoint's ``model_config`` dict.
        source: what the model was loaded from, for messages.
        weight: the guidance weight w.
    """
    if not model_config.get("label_dropout"):
        if model_config.get("clusters"):  # reads its own clusters: they take dropout too
            kind, how = "a cluster flow", "fine-tune it with --set label_dropout=0.1"
        elif model_config.get("conditional"):
            kind, how = "a conditional", "train one with --conditional --set label_dropout=0.1"
        else:
            kind, how = "an unconditional", "train one with --conditional --set label_dropout=0.1"
        raise ValueError(
            f"guidance needs a conditional flow (or one reading its own clusters) trained with "
            f"label dropout; {source} is {kind} model without it ({how})"
        )
    try:
        return model.check_guidance(weight)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None


@torch.no_grad()
def iter_samples(
    model,
    n: int,
    batch_size: int = 500,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    labels: Tensor | None = None,
    progress: ProgressFactory | None = None,
    guidance: float | None = None,
    **sample_options,
) -> Iterator[Tensor]:
    """Yield uint8 sample chunks (<= batch_size, C, H, W) until ``n`` images are drawn.

    Arguments:
        model: any :class:`~pairflow.models.GenerativeModel`.
        n: how many images (with ``labels``: ``len(labels)``, one per label).
        batch_size: images per chunk (memory is bounded by one chunk).
        temperature: sampling temperature.
        generator: one generator for every chunk (the draws are reproducible).
        labels: pair labels (n,) for a conditional model, None otherwise.
        progress: a bar factory (:func:`pairflow.progress.bars`) counting the images drawn;
            None: silent.
        guidance: classifier-free guidance weight w for a flow trained with label dropout
            (:func:`check_guidance_for`); None: off.
        sample_options: passed on to ``model.sample`` (e.g. ``denoise=False`` for a flow
            trained with noise).
    """
    if labels is not None:
        n = len(labels)
    if n < 1 or batch_size < 1:
        raise ValueError(f"need n >= 1 and batch_size >= 1, got n={n}, batch_size={batch_size}")
    device = model.device
    extra = {} if guidance is None else {"guidance": guidance}  # only guided models take it
    what = f"T={temperature:g}" + ("" if guidance is None else f", guidance {guidance:g}")
    bar = open_bar(progress, n, f"sampling at {what}")
    try:
        for lo in range(0, n, batch_size):
            hi = min(lo + batch_size, n)
            cond = None if labels is None else labels[lo:hi].to(device)
            chunk = model.sample(
                (hi - lo,), cond=cond, temperature=temperature, generator=generator,
                **extra, **sample_options,
            )  # fmt: skip
            bar.update(hi - lo)
            yield chunk.cpu()  # (hi - lo, C, H, W) uint8
    finally:
        bar.close()


def draw_samples(model, n: int, batch_size: int = 500, **kwargs) -> Tensor:
    """All of :func:`iter_samples` in one uint8 tensor (N, C, H, W)."""
    return torch.cat(list(iter_samples(model, n, batch_size, **kwargs)))
