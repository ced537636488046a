"""What a flow's bits/dim is, in the words of a report: exact or a bound, and of which data.

The flow's row of the model registry points here (:attr:`pairflow.models.KindSpec.
likelihood_facts`), so that ``pairflow evaluate`` says what it measured without asking
whether a model is a flow.

Example:
    >>> from pairflow.flows import build_flow
    >>> likelihood_facts(build_flow("seed", hidden_features=8))
    {'dequantization': 'uniform'}
"""

from __future__ import annotations

from typing import Any

__all__ = ["likelihood_facts", "VARIATIONAL_BOUND", "OWN_CLUSTERS_BOUND"]

VARIATIONAL_BOUND = "variational dequantization (Flow++): -E_q[log p(x+u) - log q(u|x)]"
"""The report's ``bound``: what a flow with variational dequantization reports."""

OWN_CLUSTERS_BOUND = (
    "its own clusters: -log p(c(x)) - log p(x | c(x)) at the image's clusters c(x), above "
    "the exact -log p(x) (evaluate --marginal-pairs N sums over every cluster label)"
)
"""The report's ``bound`` for a flow that reads its own clusters."""


def likelihood_facts(flow) -> dict[str, Any]:
    """The report fields that say what ``flow``'s bits/dim is.

    Arguments:
        flow: a :class:`~pairflow.flows.PairFlow`.

    Returns:
        ``dequantization`` (the noise: ``"uniform"`` for the exact likelihood of the
        continuous density, ``"variational"`` for a bound); with variational dequantization
        ``bound``, which one; with TarFlow's noise augmentation ``noise_sigma`` and
        ``likelihood_of``, the noisy data the density is of.
    """
    facts: dict[str, Any] = {"dequantization": flow.config.dequantization}
    sigma = flow.config.noise_sigma
    if flow.dequantizer.noise_sigma:  # noise in the data's space: the density of noisy data
        facts["noise_sigma"] = sigma
        facts["likelihood_of"] = (
            f"noise-augmented data (the image in [-1, 1] + N(0, {sigma:g}^2)): not comparable "
            "with the bits/dim of models trained without noise; evaluate --dequantization "
            "uniform gives this density's exact bits/dim of clean 8-bit data"
        )
    elif sigma and flow.noise is not None and flow.noise.in_training:  # in logit space
        facts["noise_sigma"] = sigma
        facts["likelihood_of"] = (
            f"noise-augmented data (logit-space image + N(0, {sigma:g}^2)): not comparable "
            "with the bits/dim of models trained without noise; evaluate --dequantization "
            "uniform gives this density's exact bits/dim of clean 8-bit data"
        )
    reasons = []
    if flow.dequantizer.is_bound:
        reasons.append(VARIATIONAL_BOUND)
    if getattr(flow, "clusters", None) is not None:
        reasons.append(OWN_CLUSTERS_BOUND)
    if reasons:
        facts["bound"] = "; and ".join(reasons)
    return facts
