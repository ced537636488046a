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

This module gathers the app's functions from the modules that hold them, one concept each:

- :mod:`~pairflow.app.inputs`: what a user types, checked (labels, counts, temperatures);
- :mod:`~pairflow.app.model` and :mod:`~pairflow.app.loading`: the model and how it loads;
- :mod:`~pairflow.app.generate`: samples; :mod:`~pairflow.app.pictures`: grids, downloads;
- :mod:`~pairflow.app.explore`: latent interpolation strips;
- :mod:`~pairflow.app.uploads` and :mod:`~pairflow.app.score`: an image in, and its score.

Example:
    >>> from pairflow.app import core
    >>> model = core.load_model("multiscale-cond")  # doctest: +SKIP
    >>> images, labels = core.generate(model, pair="37", count=16, seed=0)  # doctest: +SKIP
    >>> images.shape  # doctest: +SKIP
    torch.Size([16, 1, 28, 56])
"""

from __future__ import annotations

from pairflow.app.explore import interpolate_labels, interpolate_latents, interpolate_test_pairs
from pairflow.app.generate import (
    default_guidance_for,
    default_temperature_for,
    generate,
    model_labels,
)
from pairflow.app.inputs import (
    GUIDANCE_RANGE,
    MAX_COUNT,
    MAX_STEPS,
    TEMPERATURE_RANGE,
    AppInputError,
    parse_pair,
)
from pairflow.app.loading import ModelCache, load_model
from pairflow.app.model import MNIST_PAIR, LoadedModel, label_text
from pairflow.app.pictures import (
    GRID_PADDING,
    GRID_SCALE,
    grid_image,
    grid_nrow,
    npz_bytes,
    png_bytes,
)
from pairflow.app.score import ScoreResult, score, shipped_classifier
from pairflow.app.uploads import check_drawable, image_from_array, image_from_drawing

__all__ = [
    "AppInputError",
    "LoadedModel",
    "ModelCache",
    "ScoreResult",
    "load_model",
    "label_text",
    "parse_pair",
    "generate",
    "model_labels",
    "default_temperature_for",
    "default_guidance_for",
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
    "MAX_STEPS",
    "MNIST_PAIR",
    "TEMPERATURE_RANGE",
    "GUIDANCE_RANGE",
]
