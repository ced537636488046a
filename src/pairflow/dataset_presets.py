"""What a model preset becomes on each dataset: the image shape, and the per-dataset sizes.

Every model config (flows and baselines) takes its image shape (C, H, W) as fields; a preset
names sizes chosen on MNIST pairs. :func:`model_overrides_for` gives the fields to set for a
dataset and layout: the shape always, and for CIFAR-10's flows the multi-scale RealNVP of
Dinh et al. (2017, section 4.1 and appendix): residual conditioners of 64 feature maps and 8
residual blocks, one downscaling (two scales), and the logit boundary a = 0.05 they use.

Reference test bits/dim on CIFAR-10 single images (3x32x32): RealNVP 3.49 (Dinh et al.
2017), Glow 3.35 (Kingma and Dhariwal 2018). Pairs (3x32x64) model two independent images
side by side, so their bits/dim is comparable to, not the same as, those figures.

References:
    Dinh, Sohl-Dickstein, Bengio. Density estimation using Real NVP. ICLR 2017.
    Kingma, Dhariwal. Glow: Generative flow with invertible 1x1 convolutions. NeurIPS 2018.

Example:
    >>> model_overrides_for("flow", "multiscale", "cifar10", "single")["logit_alpha"]
    0.05
    >>> model_overrides_for("vae", "conv", "mnist", "pair")
    {'channels': 1, 'height': 28, 'width': 56}
"""

from __future__ import annotations

from typing import Any

__all__ = ["DATASET_PRESETS", "REFERENCE_BPD", "model_overrides_for"]

# (model, preset, dataset) -> fields that differ from the MNIST-chosen preset.
DATASET_PRESETS: dict[tuple[str, str, str], dict[str, Any]] = {
    ("flow", "multiscale", "cifar10"): dict(
        num_scales=2, hidden_channels=64, num_blocks=8, logit_alpha=0.05
    ),
}

# Published test bits/dim on CIFAR-10 (3x32x32), for comparison in reports.
REFERENCE_BPD = {
    "cifar10": {"RealNVP (Dinh et al. 2017)": 3.49, "Glow (Kingma and Dhariwal 2018)": 3.35}
}


def model_overrides_for(
    model: str, preset: str | None, dataset: str, layout: str
) -> dict[str, Any]:
    """The model-config fields for ``dataset`` in ``layout``: shape, then per-dataset sizes.

    Arguments:
        model: ``"flow"``, ``"vae"`` or ``"gan"``.
        preset: the preset name.
        dataset: a name in :data:`pairflow.data.DATASETS`.
        layout: ``"pair"`` or ``"single"``.

    Returns:
        A dict of config fields (``channels``, ``height``, ``width`` and any others).
    """
    from pairflow.data.datasets import get_dataset

    channels, height, width = get_dataset(dataset).image_shape(layout)
    fields: dict[str, Any] = dict(channels=channels, height=height, width=width)
    fields.update(DATASET_PRESETS.get((model, preset or "", get_dataset(dataset).name), {}))
    return fields
