"""What the web app computes, as plain functions: load, generate, interpolate, score.

The page (:mod:`pairflow.app.ui`) only turns widgets into these calls and their results into
widgets, so everything here is testable without a browser or gradio. Errors a user can cause
(an unknown model, a pair label that is not 00..99, an image of the wrong size, an empty
drawing) raise :class:`AppInputError` with a message meant for the page.

Every model carries the dataset and layout it was trained on (from its checkpoint: MNIST,
Fashion-MNIST or CIFAR-10, pairs or single images), hence its image shape (C, H, W): images
in and out have that shape, colour ones (C = 3, channels R, G, B) stay in colour, Explore's
real test pairs come from that dataset, and Score reads with that dataset's shipped
classifier (none ships for CIFAR-10: the page says so).

Example:
    >>> from pairflow.app import core
    >>> model = core.load_model("multiscale-cond")  # doctest: +SKIP
    >>> images, labels = core.generate(model, pair="37", count=16, seed=0)  # doctest: +SKIP
    >>> images.shape  # doctest: +SKIP
    torch.Size([16, 1, 28, 56])
"""

from __future__ import annotations

import functools
import io
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pairflow.models import KindSpec, has_label_prior, kind_of
from pairflow.validation import NUM_PAIR_CLASSES

__all__ = [
    "AppInputError",
    "LoadedModel",
    "ModelCache",
    "ScoreResult",
    "load_model",
    "label_text",
    "parse_pair",
    "generate",
    "default_temperature_for",
    "grid_image",
    "grid_nrow",
    "png_bytes",
    "npz_bytes",
    "interpolate_latents",
    "interpolate_test_pairs",
    "interpolate_labels",
    "image_from_array",
    "image_from_drawing",
    "check_drawable",
    "shipped_classifier",
    "score",
    "GRID_SCALE",
    "GRID_PADDING",
    "MAX_COUNT",
]

MNIST_PAIR = (1, 28, 56)  # (C, H, W) of an MNIST (or Fashion-MNIST) pair
GRID_SCALE = 2  # nearest-neighbour upscaling of grids and strips, so digits stay legible
GRID_PADDING = 2  # pixels between tiles before upscaling (pairflow.images.make_grid)
MAX_COUNT = 64  # samples per click: 64 take several seconds on one CPU thread


def model_labels(model, n: int, seed: int) -> Tensor:
    """n labels drawn from a conditional flow's p(y) (the training pairs' frequencies)."""
    return model.sample_labels(n, torch.Generator(device=model.device).manual_seed(seed)).cpu()


class AppInputError(ValueError):
    """Bad input from the page; the message is shown to the user as it is."""


def _shape_text(shape: tuple[int, ...]) -> str:
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
    """

    name: str
    model: torch.nn.Module
    kind: KindSpec
    test_bpd: float | None = None
    dataset: str = "mnist"
    layout: str = "pair"
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
        return "variational bound: variational dequantization"

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
            f"**{self.name}**: a {self.kind.name} of {self.items}s ({_shape_text(self.image_shape)}"
            f", {colour}), {cond}"
        )
        if self.test_bpd is not None:
            bound = self.likelihood_bound
            value = f"<= {self.test_bpd:.4f} ({bound})" if bound else f"{self.test_bpd:.4f}"
            text += f"; shipped weights, test bits/dim {value}"
        if not self.drawable:
            text += f". Score: upload a {h}x{w} {colour} image (the canvas draws 28x56 pairs)"
        return text


def load_model(name_or_path: str) -> LoadedModel:
    """Load a shipped model by name, or a run folder / checkpoint file, onto the CPU.

    As :func:`pairflow.load` does (the fast precision here, ``"auto"``), and the dataset and
    layout from the checkpoint's training config (MNIST pairs where it names none).

    Raises:
        AppInputError: the name is neither a shipped model nor an existing checkpoint, or
            the checkpoint cannot be read.
    """
    from pairflow.commands._common import dataset_of
    from pairflow.data import get_dataset
    from pairflow.models import load_with_checkpoint
    from pairflow.pretrained import list_pretrained

    name = str(name_or_path).strip()
    if not name:
        raise AppInputError("no model chosen: pick a shipped model or give a run folder")
    shipped = list_pretrained()
    path = os.path.expanduser(name)
    try:
        model, state = load_with_checkpoint(path if os.path.exists(path) else name, "cpu")
        dataset, layout = dataset_of(state)
        get_dataset(dataset).image_shape(layout)  # a checkpoint naming an unknown one
    except ValueError as err:  # CheckpointError is one too
        raise AppInputError(f"model {name!r}: {err}") from err
    test_bpd = shipped[name].get("test_bpd") if name in shipped else None
    return LoadedModel(name, model, kind_of(model), test_bpd, dataset, layout)


class ModelCache:
    """Loaded models by name, so a page event does not reload the weights (thread-safe)."""

    def __init__(self) -> None:
        self._models: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()

    def get(self, name_or_path: str) -> LoadedModel:
        key = str(name_or_path).strip()
        with self._lock:
            if key not in self._models:
                self._models[key] = load_model(key)
            return self._models[key]


def _is_any(text: str | int | None) -> bool:
    """Whether a pair field asks for no particular label: ``"any"``, blank or None."""
    return text is None or str(text).strip().lower() in ("", "any")


def parse_pair(text: str | int | None, conditional: bool, layout: str = "pair") -> int | None:
    """A pair label ``"00".."99"`` (a class ``"0".."9"`` for single images) -> int, or
    ``"any"`` (or blank) -> None.

    ``"any"`` on a conditional model means a label per image drawn from the model's p(y); an
    unconditional model accepts only ``"any"``.

    Raises:
        AppInputError: not two digits (one for single images), or a label for an
            unconditional model.
    """
    if _is_any(text):
        return None
    text = str(text).strip().lower()
    if layout == "single":
        if not (text.isdigit() and len(text) == 1):
            raise AppInputError(f"class {text!r}: give one digit 0..9 (e.g. 7), or 'any'")
    elif not (text.isdigit() and 1 <= len(text) <= 2):
        raise AppInputError(f"pair {text!r}: give two digits 00..99 (e.g. 37), or 'any'")
    if not conditional:
        raise AppInputError(
            f"pair {text}: this model is unconditional and samples without a label; "
            "choose 'any', or a conditional model such as multiscale-cond"
        )
    return int(text)


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


def _check_count(count: Any) -> int:
    try:
        n = int(count)
    except (TypeError, ValueError):
        raise AppInputError(f"count {count!r}: give a whole number 1..{MAX_COUNT}") from None
    if not 1 <= n <= MAX_COUNT or n != float(count):
        raise AppInputError(f"count {count!r}: give a whole number 1..{MAX_COUNT}")
    return n


def _check_temperature(temperature: Any) -> float:
    try:
        t = float(temperature)
    except (TypeError, ValueError):
        raise AppInputError(f"temperature {temperature!r}: give a number > 0") from None
    if not (math.isfinite(t) and t > 0):
        raise AppInputError(f"temperature {temperature!r}: give a number > 0 (e.g. 0.7)")
    return t


def _check_seed(seed: Any) -> int:
    try:
        s = int(seed)
    except (TypeError, ValueError):
        raise AppInputError(f"seed {seed!r}: give a whole number >= 0") from None
    if s < 0:
        raise AppInputError(f"seed {seed!r}: give a whole number >= 0")
    return s


def generate(
    loaded: LoadedModel,
    pair: str | int | None = "any",
    count: int = 16,
    temperature: float = 0.7,
    seed: int = 0,
) -> tuple[Tensor, Tensor | None]:
    """Draw ``count`` pairs, the same ones as ``pairflow sample`` with the same settings.

    Arguments:
        loaded: the model.
        pair: ``"37"`` (conditional models), or ``"any"``: a label per image drawn from p(y)
            (conditional models) or no label (unconditional ones).
        count: 1..MAX_COUNT images.
        temperature: scale of the latent's standard deviation (> 0).
        seed: seeds the latents (and the random labels of ``"any"``).

    Returns:
        ``(images uint8 (N, C, H, W), labels int64 (N,) or None)``: the model's image shape,
        (N, 1, 28, 56) for MNIST pairs, (N, 3, 32, 64) (R, G, B) for CIFAR-10 pairs.
    """
    label = parse_pair(pair, loaded.conditional, loaded.layout)
    n, t, s = _check_count(count), _check_temperature(temperature), _check_seed(seed)
    labels = None
    if label is not None:
        labels = torch.full((n,), label, dtype=torch.int64)
    elif loaded.conditional and has_label_prior(loaded.model):  # as `pairflow sample` does
        labels = model_labels(loaded.model, n, s)
    elif loaded.conditional:
        classes = 10 if loaded.layout == "single" else NUM_PAIR_CLASSES
        labels = torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(s))
    from pairflow.evaluation import draw_samples

    gen = torch.Generator().manual_seed(s)
    with loaded.lock:
        images = draw_samples(loaded.model, n, temperature=t, generator=gen, labels=labels)
    return images, labels


def default_temperature_for(loaded: LoadedModel, pair: str | int | None) -> float:
    """The temperature ``pairflow sample`` takes for this model and pair when none is given.

    0.8 where a conditional flow draws its labels from its own p(y) (``"any"``), 0.7 for a
    given label and for unconditional models (:func:`pairflow.options.default_temperature`).
    The page moves its slider here when the pair switches between a label and ``"any"``.

    Example:
        >>> from pairflow.flows import build_flow
        >>> flow = build_flow("multiscale", hidden_channels=4, num_blocks=1, conditional=True,
        ...                   conditioning="both")
        >>> loaded = LoadedModel("tiny", flow, kind_of(flow))
        >>> default_temperature_for(loaded, "37"), default_temperature_for(loaded, "any")
        (0.7, 0.8)
    """
    from pairflow.options import default_temperature

    label_free = _is_any(pair) and loaded.conditional and has_label_prior(loaded.model)
    return default_temperature(bool(label_free))


def grid_nrow(n: int) -> int:
    """Tiles per row of a grid of n pairs: squarish in tiles, at most 8 (pairs are 2:1)."""
    return max(1, min(8, math.ceil(math.sqrt(n))))


def grid_image(images: Tensor, nrow: int | None = None) -> np.ndarray:
    """Images (N, C, H, W) uint8 -> one grid, upscaled by GRID_SCALE: uint8 (H', W') for one
    channel, (H', W', 3) RGB for three.

    Tiles are GRID_PADDING pixels apart (gray 64) before upscaling, row-major.
    """
    from pairflow.images import make_grid

    nrow = grid_nrow(len(images)) if nrow is None else nrow
    grid = make_grid(images, nrow=nrow, padding=GRID_PADDING).numpy()
    return grid.repeat(GRID_SCALE, axis=0).repeat(GRID_SCALE, axis=1)


def png_bytes(array: np.ndarray) -> bytes:
    """A uint8 (H, W) array as grayscale PNG bytes, (H, W, 3) as RGB."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def npz_bytes(images: Tensor, labels: Tensor | None) -> bytes:
    """Images (N, C, H, W) and labels (N,) as ``.npz``, as ``pairflow sample`` writes it:
    ``images`` uint8 (N, H, W) for one channel, (N, C, H, W) for colour; ``labels`` int64."""
    arrays = {"images": (images[:, 0] if images.shape[1] == 1 else images).numpy()}
    if labels is not None:
        arrays["labels"] = labels.numpy().astype(np.int64)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def interpolate_latents(z0: Tensor, z1: Tensor, steps: int) -> Tensor:
    """The path z(t) = cos(t pi/2) z0 + sin(t pi/2) z1 at ``steps`` points t in [0, 1].

    It keeps a Gaussian latent's norm (a straight line passes through low-norm, blurry
    latents); z(0) = z0, z(1) = z1.

    Arguments:
        z0, z1: latents of the same shape (B, ...).

    Returns:
        (B * steps, ...): row b holds the ``steps`` points from z0[b] to z1[b].
    """
    t = torch.linspace(0, 1, steps, device=z0.device)
    angle = (t * math.pi / 2).view((1, steps) + (1,) * (z0.dim() - 1))
    path = torch.cos(angle) * z0.unsqueeze(1) + torch.sin(angle) * z1.unsqueeze(1)
    return path.reshape(z0.shape[0] * steps, *z0.shape[1:])


def _check_steps(steps: Any) -> int:
    try:
        s = int(steps)
    except (TypeError, ValueError):
        raise AppInputError(f"steps {steps!r}: give a whole number 2..16") from None
    if not 2 <= s <= 16:
        raise AppInputError(f"steps {steps!r}: give a whole number 2..16")
    return s


def _interpolate(
    loaded: LoadedModel, x: Tensor, labels: Tensor | None, steps: int
) -> tuple[Tensor, list[int] | None]:
    """The strip from x[0] to x[1]; a conditional model's label switches halfway."""
    if not loaded.has_encoder:
        raise AppInputError(
            f"{loaded.name} is a {loaded.kind.name}: it has no encoder, so it cannot interpolate "
            "between images; choose a flow or a VAE"
        )
    cond = labels if loaded.conditional else None
    t = torch.linspace(0, 1, steps)
    with loaded.lock, torch.no_grad():
        z = loaded.model.encode(x, cond=cond)
        path = interpolate_latents(z[:1], z[1:], steps)
        c = None
        if loaded.conditional:
            c = torch.where(t < 0.5, labels[0], labels[1])
        strip = loaded.model.decode(path, cond=c).cpu()
    return strip, None if c is None else c.tolist()


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
        data_dir: the data root holding the dataset's folder (``FashionMNIST/raw/``,
            ``cifar-10-batches-py/``, ...); default $PAIRFLOW_DATA, else ./data.

    Returns:
        ``(strip uint8 (steps, C, H, W), endpoint labels (2,), decoding labels or None)``.
    """
    from pairflow.data import resolve_root

    steps = _check_steps(steps)
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
    strip, c = _interpolate(loaded, x, y, steps)
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

    Each endpoint is drawn at ``temperature`` for its label and encoded with it; the path
    then runs as in :func:`interpolate_test_pairs`. Conditional models only.
    """
    if not loaded.conditional:
        raise AppInputError(
            f"{loaded.name} is unconditional: interpolating between two labels needs a "
            "conditional model (e.g. multiscale-cond); use two test pairs instead"
        )
    steps = _check_steps(steps)
    a, b = parse_pair(pair_a, True, loaded.layout), parse_pair(pair_b, True, loaded.layout)
    if a is None or b is None:
        raise AppInputError("give both labels as two digits 00..99 (e.g. 37 and 80)")
    labels = torch.tensor([a, b])
    t, s = _check_temperature(temperature), _check_seed(seed)
    with loaded.lock, torch.no_grad():
        x = loaded.model.sample(
            2, temperature=t, generator=torch.Generator().manual_seed(s), cond=labels
        )
    strip, c = _interpolate(loaded, x, labels, steps)
    return strip, labels, c


def _alpha_on_black(a: np.ndarray) -> np.ndarray:
    """(H, W, 3|4) -> float (H, W, 3): RGBA composited on black (transparent = black)."""
    alpha = a[..., 3:4].astype(np.float64) / 255 if a.shape[2] == 4 else 1.0
    return a[..., :3].astype(np.float64) * alpha


def image_from_array(
    array: Any, shape: tuple[int, int, int] = MNIST_PAIR, what: str = "an MNIST pair"
) -> Tensor:
    """An uploaded picture -> pixels uint8 (1, C, H, W) of a model's image ``shape``.

    Accepts grayscale (H, W), RGB or RGBA (H, W, 3|4) arrays of exactly H x W pixels, or an
    exact whole-number upscale of it (2H x 2W from this app's grids, ...), which is averaged
    back down. For one channel (MNIST: white digits on black) colour is turned to gray; for
    three (CIFAR-10) the colours are kept and a grayscale picture counts as gray in colour.
    Transparent pixels count as black.

    Arguments:
        array: the picture.
        shape: (C, H, W) the model takes (:attr:`LoadedModel.image_shape`).
        what: what the model's images are, for the message (``"a CIFAR-10 pair"``).

    Raises:
        AppInputError: no image, or a size other than H x W (or a multiple of it).
    """
    c, height, width = shape
    size = f"{height}x{width}"
    if array is None:
        raise AppInputError(f"no image: upload a {size} picture ({what})")
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] in (3, 4):
        rgb = _alpha_on_black(a)
    elif a.ndim == 3 and a.shape[2] == 1:
        rgb = np.repeat(a.astype(np.float64), 3, axis=2)
    elif a.ndim == 2:
        rgb = np.repeat(a.astype(np.float64)[..., None], 3, axis=2)
    else:
        raise AppInputError(
            f"expected a grayscale or colour image, got an array of shape {a.shape}"
        )
    h, w = rgb.shape[:2]
    k = h // height
    if k < 1 or (h, w) != (k * height, k * width):
        colour = "colour " if c == 3 else ""
        raise AppInputError(
            f"the image is {h}x{w} pixels (height x width); this model takes {what}: a "
            f"{colour}image of {size} pixels (or an exact multiple such as "
            f"{2 * height}x{2 * width})"
        )
    if k > 1:
        rgb = rgb.reshape(height, k, width, k, 3).mean(axis=(1, 3))
    pixels = rgb.mean(axis=2, keepdims=True) if c == 1 else rgb  # (H, W, C)
    pixels = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))[None]


def check_drawable(loaded: LoadedModel) -> None:
    """Raise AppInputError unless the drawing canvas (one channel, 28x56) fits the model."""
    if not loaded.drawable:
        c, h, w = loaded.image_shape
        colour = "colour " if c == 3 else ""
        raise AppInputError(
            f"the canvas draws 1-channel 28x56 pairs; {loaded.name} models {loaded.items}s "
            f"({_shape_text(loaded.image_shape)}): upload a {h}x{w} {colour}image instead"
        )


def image_from_drawing(value: Any) -> Tensor:
    """The drawing canvas's value -> pixels uint8 (1, 1, 28, 56) (1-channel pair models).

    ``value`` is an image array (H, W[, C]) of a canvas with a 1:2 aspect ratio, or gradio's
    editor dict with a ``"composite"`` array. White strokes on a black (or transparent)
    canvas; the canvas is averaged down to 28x56 with area weights.

    Raises:
        AppInputError: nothing drawn, or a canvas that is not 1:2.
    """
    if isinstance(value, dict):
        value = value.get("composite")
    if value is None:
        raise AppInputError("the drawing is empty: draw a digit in each half of the canvas")
    a = np.asarray(value)
    gray = _alpha_on_black(a).mean(axis=2) if a.ndim == 3 else a.astype(np.float64)
    h, w = gray.shape
    if h < 28 or abs(w / h - 2) > 0.02:
        raise AppInputError(f"the canvas is {h}x{w}; expected a 1:2 canvas of at least 28x56")
    from PIL import Image

    small = Image.fromarray(gray.astype(np.float32)).resize((56, 28), Image.BOX)
    pixels = np.clip(np.rint(np.asarray(small)), 0, 255).astype(np.uint8)
    if pixels.max() < 32:
        raise AppInputError("the drawing is empty: draw a digit in each half of the canvas")
    return torch.from_numpy(pixels).view(1, *MNIST_PAIR)


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


def shipped_classifier(dataset: str = "mnist"):
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
            f"expected one {loaded.items} of shape {_shape_text(loaded.image_shape)}, got "
            f"{_shape_text(tuple(x.shape[1:]))}"
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
            recon = loaded.model.decode(loaded.model.encode(x, cond=c1), cond=c1).cpu()
            err = int((recon.int() - x.int()).abs().max())
    return ScoreResult(bpd, cond, source, probs, reading, note, posterior, recon, err)
