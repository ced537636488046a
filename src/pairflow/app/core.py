"""What the web app computes, as plain functions: load, generate, interpolate, score.

The page (:mod:`pairflow.app.ui`) only turns widgets into these calls and their results into
widgets, so everything here is testable without a browser or gradio. Errors a user can cause
(an unknown model, a pair label that is not 00..99, an image of the wrong size, an empty
drawing) raise :class:`AppInputError` with a message meant for the page.

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
from typing import Any, Protocol, runtime_checkable

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
    "HasClassPosterior",
    "load_model",
    "parse_pair",
    "generate",
    "grid_image",
    "grid_nrow",
    "png_bytes",
    "npz_bytes",
    "interpolate_latents",
    "interpolate_test_pairs",
    "interpolate_labels",
    "image_from_array",
    "image_from_drawing",
    "score",
    "GRID_SCALE",
    "GRID_PADDING",
    "MAX_COUNT",
]

IMAGE_SHAPE = (28, 56)  # (H, W) of one digit pair
GRID_SCALE = 2  # nearest-neighbour upscaling of grids and strips, so digits stay legible
GRID_PADDING = 2  # pixels between tiles before upscaling (pairflow.images.make_grid)
MAX_COUNT = 64  # samples per click: 64 take several seconds on one CPU thread


def model_labels(model, n: int, seed: int) -> Tensor:
    """n labels drawn from a conditional flow's p(y) (the training pairs' frequencies)."""
    return model.sample_labels(n, torch.Generator(device=model.device).manual_seed(seed)).cpu()


class AppInputError(ValueError):
    """Bad input from the page; the message is shown to the user as it is."""


@runtime_checkable
class HasClassPosterior(Protocol):
    """A model that gives its own p(y | x) over the 100 pair labels (a class-mixture prior).

    No shipped model has one: the shipped conditional flows model p(x | y), not p(y | x).
    """

    def class_log_posterior(self, x: Tensor) -> Tensor:
        """log p(y | x), float (B, 100), for pixel values 0..255 of shape (B, 1, 28, 56)."""
        ...


@dataclass
class LoadedModel:
    """A model ready for the page: the network and what its kind declares it can do.

    Attributes:
        name: what the user chose (a shipped name or a run folder / checkpoint path).
        model: the network, in eval mode on the CPU.
        kind: the model kind's row in :data:`pairflow.models.REGISTRY` (its capabilities).
        test_bpd: the shipped model's measured test bits/dim (None for a run).
    """

    name: str
    model: torch.nn.Module
    kind: KindSpec
    test_bpd: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

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

    def describe(self) -> str:
        """One line for the page: kind, conditioning and, for shipped weights, test bits/dim."""
        cond = "conditional on the pair label" if self.conditional else "unconditional"
        text = f"**{self.name}**: a {self.kind.name}, {cond}"
        if self.test_bpd is not None:
            return text + f"; shipped weights, test bits/dim {self.test_bpd:.4f}"
        return text


def load_model(name_or_path: str) -> LoadedModel:
    """Load a shipped model by name, or a run folder / checkpoint file, onto the CPU.

    Raises:
        AppInputError: the name is neither a shipped model nor an existing checkpoint, or
            the checkpoint cannot be read.
    """
    import pairflow
    from pairflow.pretrained import list_pretrained

    name = str(name_or_path).strip()
    if not name:
        raise AppInputError("no model chosen: pick a shipped model or give a run folder")
    try:
        model = pairflow.load(os.path.expanduser(name), map_location="cpu")
    except ValueError as err:  # CheckpointError is one too
        raise AppInputError(f"model {name!r}: {err}") from err
    shipped = list_pretrained()
    test_bpd = shipped[name].get("test_bpd") if name in shipped else None
    return LoadedModel(name, model, kind_of(model), test_bpd)


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


def parse_pair(text: str | int | None, conditional: bool) -> int | None:
    """A pair label ``"00".."99"`` -> int, or ``"any"`` (or blank) -> None.

    ``"any"`` on a conditional model means a label per image drawn from the model's p(y); an
    unconditional model accepts only ``"any"``.

    Raises:
        AppInputError: not two digits, or a label for an unconditional model.
    """
    text = "any" if text is None else str(text).strip().lower()
    if text in ("", "any"):
        return None
    if not (text.isdigit() and 1 <= len(text) <= 2):
        raise AppInputError(f"pair {text!r}: give two digits 00..99 (e.g. 37), or 'any'")
    if not conditional:
        raise AppInputError(
            f"pair {text}: this model is unconditional and samples without a label; "
            "choose 'any', or a conditional model such as multiscale-cond"
        )
    return int(text)


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
        ``(images uint8 (N, 1, 28, 56), labels int64 (N,) or None)``.
    """
    label = parse_pair(pair, loaded.conditional)
    n, t, s = _check_count(count), _check_temperature(temperature), _check_seed(seed)
    labels = None
    if label is not None:
        labels = torch.full((n,), label, dtype=torch.int64)
    elif loaded.conditional and has_label_prior(loaded.model):  # as `pairflow sample` does
        labels = model_labels(loaded.model, n, s)
    elif loaded.conditional:
        labels = torch.randint(
            0, NUM_PAIR_CLASSES, (n,), generator=torch.Generator().manual_seed(s)
        )
    from pairflow.evaluation import draw_samples

    gen = torch.Generator().manual_seed(s)
    with loaded.lock:
        images = draw_samples(loaded.model, n, temperature=t, generator=gen, labels=labels)
    return images, labels


def grid_nrow(n: int) -> int:
    """Tiles per row of a grid of n pairs: squarish in tiles, at most 8 (pairs are 2:1)."""
    return max(1, min(8, math.ceil(math.sqrt(n))))


def grid_image(images: Tensor, nrow: int | None = None) -> np.ndarray:
    """Images (N, 1, 28, 56) uint8 -> one grid, uint8 (H, W), upscaled by GRID_SCALE.

    Tiles are GRID_PADDING pixels apart (gray 64) before upscaling, row-major.
    """
    from pairflow.images import make_grid

    nrow = grid_nrow(len(images)) if nrow is None else nrow
    grid = make_grid(images, nrow=nrow, padding=GRID_PADDING).numpy()
    return grid.repeat(GRID_SCALE, axis=0).repeat(GRID_SCALE, axis=1)


def png_bytes(array: np.ndarray) -> bytes:
    """A uint8 (H, W) array as grayscale PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def npz_bytes(images: Tensor, labels: Tensor | None) -> bytes:
    """Images (N, 1, 28, 56) and labels (N,) as ``.npz``: ``images`` (N, 28, 56), ``labels``."""
    arrays = {"images": images[:, 0].numpy()}
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


@functools.lru_cache(maxsize=2)
def _test_pairs(root: Path):
    """The test pairing of seed 0 (what ``pairflow sample --interpolate`` draws from)."""
    from pairflow.data import PairedMNIST

    return PairedMNIST(root, train=False)


def interpolate_test_pairs(
    loaded: LoadedModel,
    index_a: int,
    index_b: int,
    steps: int = 10,
    data_dir: str | os.PathLike | None = None,
) -> tuple[Tensor, Tensor, list[int] | None]:
    """Latent interpolation between two real MNIST test pairs (the test pairing of seed 0).

    Returns:
        ``(strip uint8 (steps, 1, 28, 56), endpoint labels (2,), decoding labels or None)``.
    """
    from pairflow.data import MNISTNotFoundError, resolve_root

    steps = _check_steps(steps)
    try:
        test = _test_pairs(resolve_root(data_dir))
    except (MNISTNotFoundError, ValueError, OSError) as err:
        raise AppInputError(
            f"the MNIST test pairs are not available ({err}); start the app with "
            "--data-dir ROOT, or use two labels instead"
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
    x, y = test.get_batch(torch.tensor(idx))  # (2, 1, 28, 56), (2,)
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
    a, b = parse_pair(pair_a, True), parse_pair(pair_b, True)
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


def image_from_array(array: Any) -> Tensor:
    """An uploaded picture -> pixels uint8 (1, 1, 28, 56), white digits on black.

    Accepts grayscale (H, W), RGB or RGBA (H, W, 3|4) arrays of exactly 28x56 pixels, or an
    exact whole-number upscale of it (56x112 from this app's grids, ...), which is averaged
    back down. Colour is turned to gray; transparent pixels count as black.

    Raises:
        AppInputError: no image, or a size other than 28x56 (or a multiple of it).
    """
    if array is None:
        raise AppInputError("no image: upload a 28x56 picture of a digit pair (white on black)")
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] in (1, 3, 4):
        alpha = a[..., 3:4].astype(np.float64) / 255 if a.shape[2] == 4 else 1.0
        rgb = a[..., :3].astype(np.float64) * alpha
        gray = rgb.mean(axis=2) if rgb.shape[2] == 3 else rgb[..., 0]
    elif a.ndim == 2:
        gray = a.astype(np.float64)
    else:
        raise AppInputError(
            f"expected a grayscale or colour image, got an array of shape {a.shape}"
        )
    h, w = gray.shape
    k = h // IMAGE_SHAPE[0]
    if k < 1 or (h, w) != (k * IMAGE_SHAPE[0], k * IMAGE_SHAPE[1]):
        raise AppInputError(
            f"the image is {h}x{w} pixels (height x width); a digit pair is 28x56 "
            "(or an exact multiple such as 56x112)"
        )
    if k > 1:
        gray = gray.reshape(28, k, 56, k).mean(axis=(1, 3))
    pixels = np.clip(np.rint(gray), 0, 255).astype(np.uint8)
    return torch.from_numpy(pixels).view(1, 1, *IMAGE_SHAPE)


def image_from_drawing(value: Any) -> Tensor:
    """The drawing canvas's value -> pixels uint8 (1, 1, 28, 56).

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
    if a.ndim == 3:
        alpha = a[..., 3:4].astype(np.float64) / 255 if a.shape[2] == 4 else 1.0
        gray = (a[..., :3].astype(np.float64) * alpha).mean(axis=2)
    else:
        gray = a.astype(np.float64)
    h, w = gray.shape
    if h < 28 or abs(w / h - 2) > 0.02:
        raise AppInputError(f"the canvas is {h}x{w}; expected a 1:2 canvas of at least 28x56")
    from PIL import Image

    small = Image.fromarray(gray.astype(np.float32)).resize((56, 28), Image.BOX)
    pixels = np.clip(np.rint(np.asarray(small)), 0, 255).astype(np.uint8)
    if pixels.max() < 32:
        raise AppInputError("the drawing is empty: draw a digit in each half of the canvas")
    return torch.from_numpy(pixels).view(1, 1, *IMAGE_SHAPE)


@dataclass
class ScoreResult:
    """What the Score tab shows for one pair.

    Attributes:
        bits_per_dim: -log2 p(x [| label]) / D, averaged over dequantisation draws; None for
            a model without a likelihood. For a VAE it is the negative ELBO (an upper bound).
        label: the pair label the likelihood was conditioned on (conditional models), else None.
        label_source: ``"given"`` or ``"classifier"`` (where the label came from).
        digit_probs: the shipped classifier's softmax for each digit, (2, 10).
        reading: the classifier's reading, ``10 * left + right``.
        class_posterior: the model's own p(y | x), (100,), or None where it has none.
        reconstruction: decode(encode(x)), uint8 (1, 1, 28, 56), or None without an encoder.
        max_reconstruction_error: largest absolute pixel difference of the reconstruction.
    """

    bits_per_dim: float | None
    label: int | None
    label_source: str | None
    digit_probs: Tensor
    reading: int
    class_posterior: Tensor | None
    reconstruction: Tensor | None
    max_reconstruction_error: int | None


_CLASSIFIER: Any = None
_CLASSIFIER_LOCK = threading.Lock()


def shipped_classifier():
    """The shipped pair classifier (loaded once)."""
    global _CLASSIFIER
    with _CLASSIFIER_LOCK:
        if _CLASSIFIER is None:
            from pairflow.classifier import load_classifier

            _CLASSIFIER = load_classifier()
        return _CLASSIFIER


def score(loaded: LoadedModel, x: Tensor, label: str | None = None, draws: int = 8) -> ScoreResult:
    """Score one pair: bits/dim, the classifier's reading, p(y | x), reconstruction.

    Arguments:
        loaded: the model.
        x: pixels uint8 (1, 1, 28, 56).
        label: for a conditional model, the pair label to condition on (``"37"``); blank
            uses the classifier's reading. Ignored by unconditional models.
        draws: dequantisation (flow) or latent (VAE) draws averaged, from a fixed seed, so
            the same image always gets the same number.
    """
    clf = shipped_classifier()
    with torch.no_grad():
        probs = clf(x).softmax(-1)[0]  # (2, 10)
    digits = probs.argmax(-1)
    reading = int(10 * digits[0] + digits[1])
    cond, source = None, None
    if loaded.conditional:
        given = parse_pair(label, True) if label is not None and str(label).strip() else None
        cond, source = (given, "given") if given is not None else (reading, "classifier")
    c = None if cond is None else torch.full((draws,), cond, dtype=torch.int64)
    bpd = recon = err = posterior = None
    with loaded.lock, torch.no_grad():
        if loaded.has_likelihood:
            gen = torch.Generator().manual_seed(0)
            bpd = float(loaded.model.bits_per_dim(x.expand(draws, -1, -1, -1), c, gen).mean())
        if loaded.has_encoder:
            c1 = None if c is None else c[:1]
            recon = loaded.model.decode(loaded.model.encode(x, cond=c1), cond=c1).cpu()
            err = int((recon.int() - x.int()).abs().max())
        if isinstance(loaded.model, HasClassPosterior):
            posterior = loaded.model.class_log_posterior(x)[0].exp().cpu()
    return ScoreResult(bpd, cond, source, probs, reading, posterior, recon, err)
