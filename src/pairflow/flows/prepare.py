"""What a flow needs before training starts, and what a fine-tune keeps from its source.

The flow's row of the model registry (:data:`pairflow.models.REGISTRY`) points here; the
training loop calls these through the row and never asks whether a model is a flow.

- :func:`prepare`: p(y) from the training labels, a class mixture's Gaussians fitted to a
  trained body, a label-free mixture started from k-means clusters, the centres of a flow
  that reads its own clusters, ActNorm's data-dependent
  start before distributed wrapping; returns the lines to print.
- :func:`inherited_fields` and :func:`left_out`: a fine-tune (``--init-from``) keeps its
  source's dequantizer and label-free prior, and leaves out the weights of parts it has not.
- :func:`widen`: a conditional fine-tune of a flow whose couplings did not read a label starts
  the conditioners' new label inputs at zero weight, so it starts as its source.

Only the flow's public parts are used (``dequantizer.dequantize``, ``distribution``, ``config``,
``set_label_counts``, ``data_init``, and ``flow(y)``: data -> latent).

Example:
    >>> inherited_fields({"prior": "mixture"}, overrides={}, conditional=False)
    {'prior': 'mixture'}
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pairflow.flows import guidance
from pairflow.flows.config import label_base

__all__ = [
    "prepare",
    "train_latents",
    "fit_mixture",
    "fit_clusters",
    "fit_own_clusters",
    "inherited_fields",
    "left_out",
    "widen",
    "DEQUANTIZER_FIELDS",
]

DEQUANTIZER_FIELDS = ("dequantization", "dequant_channels", "dequant_couplings")
"""The config fields of a variational dequantizer q(u | x), kept together by a fine-tune."""


def prepare(flow, preparation) -> list[str]:
    """Make a new or fine-tuned flow ready for its first step; the lines to print.

    Arguments:
        flow: the :class:`~pairflow.flows.PairFlow` about to train, on its device.
        preparation: a :class:`pairflow.models.Preparation`: the training pairs, the loader,
            the device, the ranks, and for ``--init-from`` the weights the checkpoint did
            not hold.

    Returns:
        What was done, in lines for people (empty when there is nothing to say).

    Raises:
        ValueError: a label-free mixture prior with fewer than 10 training pairs.
    """
    lines: list[str] = []
    inherited = preparation.inherited
    if any(name.startswith("dequantizer.") for name in preparation.left_out):
        lines.append(
            "its variational dequantizer is left out (--set dequantization=uniform): "
            "this run dequantizes with uniform noise, its bits/dim exact"
        )
    elif inherited.get("dequantization") == "variational":
        lines.append(
            "it keeps its variational dequantization: bits/dim is Flow++'s variational "
            "bound (--set dequantization=uniform drops it)"
        )
    elif inherited.get("dequantization") == "gaussian":
        lines.append(
            f"it keeps its noise in the data's space (sigma {inherited.get('noise_sigma', 0):g}): "
            "bits/dim is of noisy data (--set dequantization=... changes it)"
        )
    if any(name.rsplit(".", 1)[-1].startswith("null") for name in preparation.left_out):
        lines.append(
            "its null label is left out (--set label_dropout=0): this run trains without label "
            "dropout and samples without guidance"
        )
    if inherited.get("prior") == "mixture":
        lines.append("it keeps its label-free mixture prior (--set prior=normal drops it)")
    config, train_set, device = flow.config, preparation.train_set, preparation.device
    fine_tune = preparation.init_from is not None
    new_prior = "distribution.loc" in preparation.new_weights  # not in the source checkpoint
    if config.conditional:
        # p(y), the training pairs' label frequencies: the mixture's weights, and the label
        # draws of every conditional flow sampled without a label.
        flow.set_label_counts(train_set.pair_label_counts())
    if config.clusters:
        lines += fit_own_clusters(flow, train_set)
    if config.null_label and fine_tune and any("null" in k for k in preparation.new_weights):
        lines += guidance.start_null_label(flow)  # trained digits, a null label to learn
    if config.label_mixture and fine_tune and new_prior:
        # A trained body under a new mixture: its Gaussians start at their optimum.
        fit_mixture(flow, train_set, device)
    if config.cluster_mixture and (not fine_tune or new_prior):
        # The label-free mixture starts from k-means clusters of the training images.
        fit_clusters(flow, train_set, device)
        k = flow.distribution.num_classes
        lines.append(f"mixture prior: {k} components started from k-means clusters (no labels)")
    if not fine_tune and preparation.world_size > 1:
        # ActNorm's data-dependent start before distributed wrapping: DDP then broadcasts
        # rank 0's parameters and buffers, so every rank starts from the same model. A
        # single process initialises it on its first step, from the same batch.
        loader = preparation.loader
        loader.set_epoch(0)
        x0, y0 = next(iter(loader))
        flow.data_init(x0.to(device), y0.to(device) if config.conditional else None)
    return lines


@torch.no_grad()
def train_latents(
    flow, train_set, device: torch.device | str, num_pairs: int, batch_size: int = 250
) -> tuple[Tensor, Tensor, Tensor]:
    """The first ``num_pairs`` training pairs' (images, labels, latents), dequantized as in
    training.

    The noise is uniform, or the learned q's draw for variational dequantization. At bin
    centres constant pixels (the black border) give constant latents, whose fitted scales
    collapse (measured: train bits/dim 15,772 at step 5 after a bin-centre fit).

    Arguments:
        flow: a :class:`~pairflow.flows.PairFlow`.
        train_set: a paired dataset (``get_batch``).
        device: where the flow is.
        num_pairs: how many pairs, from the first (at most all of them).
        batch_size: pairs per forward pass.

    Returns:
        ``(images (N, C, H, W) uint8, labels (N,), latents (N, C, H, W))`` on ``device``;
        the latents are of the body without a label.
    """
    n = min(num_pairs, len(train_set))
    images, labels, latents = [], [], []
    generator = torch.Generator(device=device).manual_seed(0)
    for lo in range(0, n, batch_size):
        x, y = train_set.get_batch(torch.arange(lo, min(lo + batch_size, n)))
        x = x.to(device)
        y_cont, _ = flow.dequantizer.dequantize(x, generator)  # (B, C, H, W), as in training
        z, _ = flow(y_cont)  # (B, C, H, W); no label
        images.append(x)
        labels.append(y.to(device))
        latents.append(z)
    return torch.cat(images), torch.cat(labels), torch.cat(latents)


def fit_mixture(flow, train_set, device: torch.device | str, num_pairs: int = 1000) -> None:
    """Fit a class mixture's Gaussians to the latents of the first ``num_pairs`` training pairs.

    The maximum-likelihood means and scales for the body as it is (see
    :meth:`~pairflow.flows.mixture.ClassMixture.fit`); 1,000 pairs give each digit about 100
    latents per side and cost a few hundred forward passes' worth of time, not an epoch's.
    """
    _, labels, latents = train_latents(flow, train_set, device, num_pairs)
    flow.distribution.fit(latents, labels)


def fit_clusters(flow, train_set, device: torch.device | str, num_pairs: int = 2000) -> None:
    """Start a label-free mixture from k-means clusters of the first ``num_pairs`` training
    pairs (:meth:`~pairflow.flows.mixture.ClusterMixture.fit_clusters`); labels are not read.

    Raises:
        ValueError: fewer than 10 training pairs (k-means makes 10 clusters per side).
    """
    if len(train_set) < 10:
        raise ValueError(
            "--set prior=mixture starts 10 clusters per side from k-means of the training "
            f"images: it needs at least 10 training pairs, got {len(train_set)} (--num-pairs)"
        )
    images, _, latents = train_latents(flow, train_set, device, num_pairs)
    flow.distribution.fit_clusters(latents, images)


def fit_own_clusters(flow, train_set) -> list[str]:
    """A flow that reads its own clusters: their centres, by k-means of the training set's
    single images (every side, no labels read), unless it has them (a fine-tune of such a
    flow keeps its source's); then p(c), each side's cluster frequencies over those images
    (pairs are drawn at random, so a pair's p(a, b) = p(a) p(b)). Returns the lines to print.
    """
    clusters = flow.clusters
    images = train_set.digits  # (N, H, W) or (N, C, H, W) uint8: single images
    lines = []
    if not clusters.fitted:
        split = None if clusters.parents is None else len(clusters.parents)
        clusters.fit(images.to(clusters.centres.device))
        if split is None:
            lines.append(
                f"clusters: {clusters.k} per side, k-means of the {len(images):,} training "
                "images' pixels (no labels read)"
            )
        else:
            lines.append(
                f"clusters: each of the source's {split} per side split in {clusters.k // split} "
                f"by k-means of its training images' pixels ({clusters.k} per side, no labels "
                "read); each new cluster's label rows start as its parent's"
            )
            if clusters.unfilled:
                lines.append(
                    f"clusters: {clusters.unfilled} of them had no training image of their own "
                    "(a parent with fewer images than children) and start at their parent's "
                    "centre"
                )
    side = clusters.label_counts(images).double()
    base = clusters.base  # labels base * a + b: p(c) over base ** sides, zero past k per side
    if clusters.sides == 2:
        table = torch.zeros(base, base, dtype=torch.float64)
        table[: clusters.k, : clusters.k] = side[:, None] * side[None, :]
        flow.set_label_counts(table)
    else:
        flow.set_label_counts(torch.nn.functional.pad(side, (0, base - clusters.k)))
    return lines


def inherited_fields(
    source: dict[str, Any], overrides: dict[str, Any], conditional: bool
) -> dict[str, Any]:
    """The config fields a flow fine-tuned from a checkpoint keeps from it.

    The learned noise q(u | x) is part of how such a flow was fitted: its density is shaped to
    it, and the same weights scored with uniform noise are far worse (BENCHMARKS.md). So a
    fine-tune keeps the source's dequantizer unless ``--set dequantization=...`` says
    otherwise, and noise in the data's space (``dequantization="gaussian"`` with its
    ``noise_sigma``), whose body reads the image through an affine map rather than the logit.
    An unconditional fine-tune keeps the source's label-free mixture prior
    (``prior="mixture"``) the same way, unless ``--set prior=...`` (or ``--set clusters=k``,
    whose prior reads the clusters); a source's own clusters (``clusters``, with its
    ``conditioning``), unless ``--set clusters=...``; and a source's label dropout
    (``label_dropout``: its null labels are weights, and it samples guided) where the
    fine-tune reads the same labels, unless ``--set label_dropout=...``.

    Arguments:
        source: the source checkpoint's model config (a dict).
        overrides: the run's ``--set`` fields.
        conditional: whether the run trains a conditional flow.

    Returns:
        The fields to keep ({} when there are none).
    """
    kept: dict[str, Any] = {}
    if source.get("dequantization") == "variational" and "dequantization" not in overrides:
        kept.update({k: source[k] for k in DEQUANTIZER_FIELDS if k in source})
    # Noise in the data's space comes with an affine map in place of the logit: the body was
    # fitted to that input, and under the logit it would start from nonsense.
    if source.get("dequantization") == "gaussian" and "dequantization" not in overrides:
        kept["dequantization"] = "gaussian"
        if "noise_sigma" not in overrides:
            kept["noise_sigma"] = source.get("noise_sigma")
    # A conditional model's base distribution is its conditioning, not the source's prior;
    # nor is that of a flow that reads its own clusters.
    clusters = overrides.get("clusters", 0 if conditional else source.get("clusters", 0))
    if (
        source.get("prior", "normal") != "normal"
        and not conditional
        and not clusters
        and "prior" not in overrides
    ):
        kept["prior"] = source["prior"]
    # A flow that reads its own clusters keeps them (its centres come with its weights), or
    # splits them (--set clusters=k, a multiple of the source's: see widen).
    own = source.get("clusters") and not conditional and clusters
    if own and "clusters" not in overrides:
        kept["clusters"] = source["clusters"]
    if own and "conditioning" not in overrides:
        kept["conditioning"] = source.get("conditioning", "embedding")
    # Label dropout's null labels are weights of the source: a fine-tune that reads the same
    # labels (a conditional source's, or its clusters, kept or split) keeps them, and guidance.
    reads_same = (conditional and source.get("conditional")) or own
    if source.get("label_dropout") and reads_same and "label_dropout" not in overrides:
        kept["label_dropout"] = source["label_dropout"]
    return kept


def left_out(weights: dict[str, Tensor], flow, source: dict[str, Any]) -> list[str]:
    """The names of a source checkpoint's ``weights`` that a fine-tuned ``flow`` leaves out.

    A variational dequantizer q(u | x) (``dequantizer.*``) the flow has no place for is no
    part of its density p(x); a label-free mixture's clusters (``distribution.*``) are no part
    of another base distribution; a null label (``*.null*``, label dropout's) is no part of a
    flow trained without label dropout (``--set label_dropout=0``).

    Arguments:
        weights: the source's state dict.
        flow: the flow being fine-tuned.
        source: the source checkpoint's model config.
    """
    own = flow.state_dict()
    dropped = sorted(k for k in weights if k.startswith("dequantizer.") and k not in own)
    if source.get("label_dropout") and not getattr(flow.config, "label_dropout", 0):
        dropped += sorted(
            k for k in weights if k.rsplit(".", 1)[-1].startswith("null") and k not in own
        )
    if source.get("prior", "normal") != flow.config.prior:
        dropped += sorted(k for k in weights if k.startswith("distribution."))
    return dropped


def widen(weights: dict[str, Tensor], flow, source: dict[str, Any]) -> list[str]:
    """Zero-extend the source's conditioner inputs where ``flow``'s couplings read a label
    that the source's did not; the names widened (``weights`` is changed in place).

    Every conditioner appends the label context after its input (a convolution's input
    channels, an MLP's input features: dim 1 of the first layer's weight in each case), so a
    source tensor that is narrower than the flow's only along dim 1, by the context's size,
    is the first layer of a conditioner that now also reads the label. Its new inputs start
    at zero weight: the fine-tuned flow computes exactly what its source did for every label
    (a weight-normalised convolution's norm is unchanged by zero columns), and the label
    enters as training moves those weights off zero.

    Arguments:
        weights: the source's state dict.
        flow: the flow being fine-tuned.
        source: the source checkpoint's model config.

    A flow that reads more clusters of its own than its source (``clusters`` k, a multiple
    of the source's p) splits the source's: each of its p centres into m = k / p by k-means
    of the parent's training images (:meth:`~pairflow.flows.clusters.PixelClusters.split_from`,
    fitted by :func:`prepare`), and every tensor with a row per cluster (the label
    embedding's, the label prior's mean and log-scale) starts each child's row as its
    parent's, so the fine-tune starts as its source (up to images nearer another parent's
    child); ``weights`` then holds the flow's shapes.

    Returns:
        The names of the tensors widened (empty unless the flow has a label embedding and the
        source had none).
    """
    _split_clusters(weights, flow, source)
    source_embeds = source.get("conditional") and source.get("conditioning") in (
        "embedding",
        "both",
    )
    if flow.embedding is None or source_embeds:
        return []
    sides, width = flow.config.label_sides, flow.config.embed_dim
    own = flow.state_dict()
    done = []
    for name, value in weights.items():
        target = own.get(name)
        if target is None or target.dim() < 2 or value.dim() != target.dim():
            continue
        extra = target.shape[1] - value.shape[1]
        same_else = value.shape[:1] == target.shape[:1] and value.shape[2:] == target.shape[2:]
        if same_else and extra in (width, sides * width):
            wide = torch.zeros_like(target, dtype=value.dtype)
            wide[:, : value.shape[1]] = value
            weights[name] = wide
            done.append(name)
    return sorted(done)


def _split_clusters(weights: dict[str, Tensor], flow, source: dict[str, Any]) -> None:
    """Widen's split of a source's own clusters into the flow's (``weights`` changed)."""
    old, new = source.get("clusters") or 0, getattr(flow.config, "clusters", 0)
    if not old or not new or old == new:
        return
    if new % old:
        raise ValueError(
            f"--set clusters={new}: a fine-tune splits each of its source's {old} clusters per "
            f"side into the same number, so clusters must be a multiple of {old}"
        )
    m, own = new // old, flow.state_dict()
    old_base, base = label_base(old), flow.config.label_base
    flow.clusters.split_from(weights.pop("clusters.centres"))
    child = torch.arange(new)
    for name, value in list(weights.items()):
        target = own.get(name)  # (up to 10 clusters per side the shapes stay those of 10)
        if target is None:
            continue
        if name == "embedding.weight":  # rows base * side + digit
            grown = target.clone().to(value.dtype)
            for s in range(flow.config.label_sides):
                grown[s * base + child] = value[s * old_base + child // m]
        elif name in ("distribution.loc", "distribution.log_scale"):  # [side, digit]
            grown = target.clone().to(value.dtype)
            grown[:, child] = value[:, child // m]
        elif name == "distribution.class_probs":  # p(c): set again by prepare
            grown = target.clone()
        else:
            continue  # init_weights names it as a misfit if its shape differs
        weights[name] = grown
