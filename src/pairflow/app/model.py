"""The model the page works with: the network, its dataset and layout, and how to name it.

:class:`LoadedModel` carries what the page needs to know of a model: its kind's capabilities
(from :data:`pairflow.models.REGISTRY`), the dataset and layout it was trained on (so images
in and out have its shape, and labels read as its classes), and its shipped test bits/dim.

Example:
    >>> from pairflow.flows import build_flow
    >>> from pairflow.models import kind_of
    >>> flow = build_flow("seed", num_couplings=2, hidden_features=8, conditional=True)
    >>> loaded = LoadedModel("tiny", flow, kind_of(flow))
    >>> loaded.image_shape, loaded.conditional, label_text(loaded, 5)
    ((1, 28, 56), True, '05')
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import torch

from pairflow.models import KindSpec
from pairflow.options import DEFAULT_DATASET

__all__ = ["MNIST_PAIR", "LoadedModel", "label_text", "shape_text"]

MNIST_PAIR = (1, 28, 56)  # (C, H, W) of an MNIST (or Fashion-MNIST) pair


def shape_text(shape: tuple[int, ...]) -> str:
    """``(1, 28, 56)`` -> ``"1x28x56"``."""
    return "x".join(str(v) for v in shape)


@dataclass
class LoadedModel:
    """A model ready for the page: the network, its data and what its kind can do.

    Attributes:
        name: what the user chose (a shipped name or a run folder / checkpoint path).
        model: the network, in eval mode on the CPU.
        kind: the model kind's row in :data:`pairflow.models.REGISTRY` (its capabilities).
        test_bpd: the shipped model's measured test bits/dim (None for a run).
        dataset: the dataset it was trained on (a name in :data:`pairflow.data.DATASETS`).
        layout: ``"pair"`` (two images side by side) or ``"single"``.
        temperatures: its own sampling defaults where a sweep chose them (a shipped model's
            ``sampling_temperatures``, :func:`pairflow.options.default_temperature`), or None.
        guidance: its own guidance weights where a sweep chose them (a shipped model's
            ``sampling_guidance``, :func:`pairflow.options.default_guidance`), or None.
    """

    name: str
    model: torch.nn.Module
    kind: KindSpec
    test_bpd: float | None = None
    dataset: str = DEFAULT_DATASET
    layout: str = "pair"
    temperatures: dict | None = None
    guidance: dict | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def spec(self):
        """The dataset's :class:`pairflow.data.DatasetSpec` (title, classes, shape)."""
        from pairflow.data import get_dataset

        return get_dataset(self.dataset)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the model's images: 1x28x56 for MNIST pairs, 3x32x64 for CIFAR-10."""
        return self.spec.image_shape(self.layout)

    @property
    def items(self) -> str:
        """What one image is, in words: ``"Fashion-MNIST pair"``, ``"CIFAR-10 image"``."""
        return f"{self.spec.title} {'pair' if self.layout == 'pair' else 'image'}"

    @property
    def an_item(self) -> str:
        """:attr:`items` with its article: ``"an MNIST pair"``, ``"a CIFAR-10 pair"``."""
        return f"{'an' if self.dataset == 'mnist' else 'a'} {self.items}"

    @property
    def drawable(self) -> bool:
        """Whether the page's drawing canvas (1 channel, 28x56) makes this model's images."""
        return self.image_shape == MNIST_PAIR

    @property
    def conditional(self) -> bool:
        """Whether the model takes a pair label."""
        return bool(self.model.config.conditional)

    @property
    def guidable(self) -> bool:
        """Whether it samples with classifier-free guidance: a conditional flow trained with
        label dropout (its config's ``label_dropout``; no other kind's config has one)."""
        return bool(getattr(self.model.config, "label_dropout", 0)) and self.model.guidable

    @property
    def has_encoder(self) -> bool:
        """Flows and VAEs map images to latents and back (``Autoencoding``)."""
        return self.kind.encodes

    @property
    def has_likelihood(self) -> bool:
        """Flows give exact bits/dim, VAEs an upper bound (negative ELBO), GANs none."""
        return self.kind.likelihood is not None

    @property
    def likelihood_bound(self) -> str | None:
        """What kind of upper bound the model's bits/dim is, in words; None where it is exact
        (a flow with uniform dequantization) or the model has none (a GAN)."""
        if not self.has_likelihood or not self.model.bits_per_dim_is_bound:  # LikelihoodModel
            return None
        if self.kind.likelihood == "bound":
            return "upper bound: negative ELBO"
        over = getattr(self.model, "bound_over", ())  # a flow's: what it is a bound over
        return "variational bound: " + (" and ".join(over) or "variational dequantization")

    def choice_label(self) -> str:
        """The model list's entry: the name and its data (``"run (CIFAR-10 pairs)"``)."""
        return f"{self.name} ({self.items}s)"

    def describe(self) -> str:
        """One line for the page: kind, data, conditioning, how to score, shipped test bits/dim."""
        label = "pair label" if self.layout == "pair" else "class"
        cond = f"conditional on the {label}" if self.conditional else "unconditional"
        c, h, w = self.image_shape
        colour = "colour" if c == 3 else "grayscale"
        text = (
            f"**{self.name}**: a {self.kind.name} of {self.items}s ({shape_text(self.image_shape)}"
            f", {colour}), {cond}"
        )
        if self.test_bpd is not None:
            bound = self.likelihood_bound
            value = f"<= {self.test_bpd:.4f} ({bound})" if bound else f"{self.test_bpd:.4f}"
            if getattr(self.model, "denoises", False):  # trained on noisy data: of noisy data
                value += " of noisy data"
            text += f"; shipped weights, test bits/dim {value}"
        if self.guidable:
            text += "; trained with label dropout: guidance from -1 (no label) up"
        if getattr(self.model, "denoises", False):
            text += "; trained with noise: samples end with its denoising step (on)"
        if not self.drawable:
            text += f". Score: upload a {h}x{w} {colour} image (the canvas draws 28x56 pairs)"
        return text


def label_text(loaded: LoadedModel, label: int) -> str:
    """A label for the page: ``"37"`` for MNIST pairs, with the class names otherwise
    (``"18 (Trouser | Bag)"`` for Fashion-MNIST, ``"7 (horse)"`` for a CIFAR-10 image)."""
    classes = loaded.spec.classes
    if loaded.layout == "single":
        return str(label) if loaded.dataset == "mnist" else f"{label} ({classes[label]})"
    text = f"{label:02d}"
    if loaded.dataset == "mnist":
        return text
    return f"{text} ({classes[label // 10]} | {classes[label % 10]})"
