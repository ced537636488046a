"""Score: what the page says of one image: bits/dim, the classifier's reading, the model's
own p(y | x), and its reconstruction.

Example (the shipped weights)::

    loaded = load_model("multiscale-cond")
    result = score(loaded, x, label="37")  # x: uint8 (1, 1, 28, 56)
    result.bits_per_dim, result.reading, result.posterior_top
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pairflow.app.inputs import AppInputError, parse_pair
from pairflow.app.model import LoadedModel, shape_text
from pairflow.models import has_label_prior
from pairflow.options import DEFAULT_DATASET

__all__ = ["ScoreResult", "shipped_classifier", "score"]


@dataclass
class ScoreResult:
    """What the Score tab shows for one image.

    Attributes:
        bits_per_dim: -log2 p(x [| label]) / D (D = C x H x W), averaged over dequantisation
            draws; None for a model without a likelihood. For a VAE it is the negative ELBO
            (an upper bound).
        label: the label the likelihood was conditioned on (conditional models), else None.
        label_source: ``"given"``, ``"classifier"`` or ``"posterior"`` (the model's own
            p(y | x), where no classifier reads the dataset): where the label came from.
        digit_probs: the dataset's shipped classifier's softmax for each half, (2, 10) (one
            row for a single image); None where no classifier ships for the dataset.
        reading: the classifier's reading, ``10 * left + right`` (a single image's class);
            None without a classifier.
        classifier_note: why there is no reading (None where there is one).
        class_posterior: the model's own p(y | x), (100,) summing to one: a conditional
            flow's Bayes posterior from its p(y) and p(x | y); None for other models.
        reconstruction: decode(encode(x)), uint8 (1, C, H, W), or None without an encoder.
        max_reconstruction_error: largest absolute pixel difference of the reconstruction.
    """

    bits_per_dim: float | None
    label: int | None
    label_source: str | None
    digit_probs: Tensor | None
    reading: int | None
    classifier_note: str | None
    class_posterior: Tensor | None
    reconstruction: Tensor | None
    max_reconstruction_error: int | None

    @property
    def posterior_top(self) -> tuple[int, float] | None:
        """The model's most probable label and its probability (None without p(y | x))."""
        if self.class_posterior is None:
            return None
        i = int(self.class_posterior.argmax())
        return i, float(self.class_posterior[i])


_CLASSIFIERS: dict[str, Any] = {}
_CLASSIFIER_LOCK = threading.Lock()


def shipped_classifier(dataset: str = DEFAULT_DATASET):
    """The shipped pair classifier of ``dataset`` (loaded once), or None where none ships
    (CIFAR-10: train one with ``pairflow classifier train --dataset cifar10``)."""
    from pairflow.classifier import SHIPPED_WEIGHTS, load_classifier

    with _CLASSIFIER_LOCK:
        if dataset not in _CLASSIFIERS:
            path = SHIPPED_WEIGHTS.get(dataset)
            exists = path is not None and path.is_file()
            _CLASSIFIERS[dataset] = load_classifier(path) if exists else None
        return _CLASSIFIERS[dataset]


def _read(loaded: LoadedModel, x: Tensor) -> tuple[Tensor | None, int | None, str | None]:
    """(per-half softmax (2|1, 10), reading, why none) from the dataset's shipped classifier."""
    clf = shipped_classifier(loaded.dataset)
    if clf is None:
        return None, None, f"no classifier ships for {loaded.spec.title}"
    pair = x if loaded.layout == "pair" else torch.cat([x, x], dim=-1)  # halves read alone
    with torch.no_grad():
        probs = clf(pair).softmax(-1)[0].cpu()  # (2, 10)
    if loaded.layout == "single":
        probs = probs[:1]
        return probs, int(probs[0].argmax()), None
    digits = probs.argmax(-1)
    return probs, int(10 * digits[0] + digits[1]), None


def score(loaded: LoadedModel, x: Tensor, label: str | None = None, draws: int = 8) -> ScoreResult:
    """Score one image: bits/dim, the classifier's reading, p(y | x), reconstruction.

    Arguments:
        loaded: the model.
        x: pixels uint8 (1, C, H, W), the model's image shape.
        label: for a conditional model, the label to condition on (``"37"``); blank uses the
            classifier's reading, or where no classifier reads the dataset the model's own
            most probable label (conditional flows). Ignored by unconditional models.
        draws: dequantisation (flow) or latent (VAE) draws averaged, from a fixed seed, so
            the same image always gets the same number.

    Raises:
        AppInputError: ``x`` is not of the model's shape, a bad label, or a blank label on a
            conditional model that has neither a classifier nor its own p(y | x).
    """
    if tuple(x.shape) != (1, *loaded.image_shape):
        raise AppInputError(
            f"expected one {loaded.items} of shape {shape_text(loaded.image_shape)}, got "
            f"{shape_text(tuple(x.shape[1:]))}"
        )
    probs, reading, note = _read(loaded, x)
    posterior = None
    if has_label_prior(loaded.model):  # a conditional flow: p(y | x) by Bayes over 100 labels
        with loaded.lock:
            posterior = loaded.model.class_posterior(x)[0].float().cpu()
    cond, source = None, None
    if loaded.conditional:
        given = None
        if label is not None and str(label).strip():
            given = parse_pair(label, True, loaded.layout)
        if given is not None:
            cond, source = given, "given"
        elif reading is not None:
            cond, source = reading, "classifier"
        elif posterior is not None:
            cond, source = int(posterior.argmax()), "posterior"
        else:
            raise AppInputError(
                f"give the label to condition on: {note}, so nothing reads this image's label"
            )
    c = None if cond is None else torch.full((draws,), cond, dtype=torch.int64)
    bpd = recon = err = None
    with loaded.lock, torch.no_grad():
        if loaded.has_likelihood:
            gen = torch.Generator().manual_seed(0)
            bpd = float(loaded.model.bits_per_dim(x.expand(draws, -1, -1, -1), c, gen).mean())
        if loaded.has_encoder:
            c1 = None if c is None else c[:1]
            own_labels = getattr(loaded.model, "own_labels", None)
            if c1 is None and own_labels is not None:  # a flow reading its own clusters
                c1 = own_labels(x)
            recon = loaded.model.decode(loaded.model.encode(x, cond=c1), cond=c1).cpu()
            err = int((recon.int() - x.int()).abs().max())
    return ScoreResult(bpd, cond, source, probs, reading, note, posterior, recon, err)
