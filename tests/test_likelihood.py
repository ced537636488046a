"""Bits/dim is computed as documented, and training by maximum likelihood works."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flowtools import one_thread, randomize
from pairflow.flows import build_flow


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def test_bits_per_dim_closed_form_identity_flow():
    # Fresh couplings are the identity (zero last layers) and no ActNorm: z = logit(s).
    flow = build_flow(
        "multiscale",
        height=4,
        width=8,
        hidden_channels=4,
        num_blocks=1,
        actnorm=False,
        logit_alpha=0.05,
    )
    x = torch.randint(0, 256, (3, 1, 4, 8), generator=torch.Generator().manual_seed(0))
    x = x.to(torch.uint8)
    bpd = flow.bits_per_dim(x, generator=torch.Generator().manual_seed(7))

    # The same generator draws the same dequantization noise u ~ U[0, 1).
    u = torch.rand(3, 1, 4, 8, generator=torch.Generator().manual_seed(7)).double().numpy()
    a, d = 0.05, 32
    y = (x.double().numpy() + u) / 256
    s = a + (1 - 2 * a) * y
    h = np.log(s) - np.log1p(-s)
    log_prior = (-0.5 * h**2 - 0.5 * np.log(2 * np.pi)).reshape(3, -1).sum(1)
    log_det = (np.log(1 - 2 * a) - np.log(s) - np.log1p(-s)).reshape(3, -1).sum(1)
    expected = (-(log_prior + log_det) + d * np.log(256)) / (d * np.log(2))
    np.testing.assert_allclose(bpd.detach().double().numpy(), expected, rtol=1e-5)


def test_bits_per_dim_at_bin_centre_of_grey():
    # y = 0.5 everywhere -> h = 0 -> z = 0: log p(y) = -D/2 ln(2 pi) + D ln(1 - 2a) + 2 D ln 2,
    # so bpd = log2(2 pi) / 2 - log2(1 - 2a) - 2 + 8 for any D.
    flow = build_flow("seed", height=2, width=4, hidden_features=8)
    a = flow.config.logit_alpha
    z, ld = flow(torch.full((1, 1, 2, 4), 0.5))  # y = (127 + 1) / 256, i.e. k = 127, u = 1
    assert torch.allclose(z, torch.zeros_like(z), atol=1e-5)
    log_p = -0.5 * z.pow(2).sum() - 4 * math.log(2 * math.pi) + ld
    bpd = (-log_p + 8 * math.log(256)) / (8 * math.log(2))
    expected = 0.5 * math.log2(2 * math.pi) - math.log2(1 - 2 * a) - 2 + 8
    assert abs(float(bpd.detach()) - expected) < 1e-5
    # and log_prob on pixels agrees with forward + prior for the same noise
    px = torch.randint(0, 256, (2, 1, 2, 4), dtype=torch.uint8)
    randomize(flow)
    u = torch.rand(2, 1, 2, 4, generator=torch.Generator().manual_seed(3))
    z, ld = flow((px.float() + u) / 256)
    manual = -0.5 * z.pow(2).flatten(1).sum(1) - 4 * math.log(2 * math.pi) + ld
    lp = flow.log_prob(px, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(lp, manual)


@pytest.mark.parametrize("preset", ["seed", "multiscale"])
def test_overfitting_drives_bpd_down(preset, tiny_mnist_root):
    """150 Adam steps on 8 digit-like pairs take bits/dim far below the start."""
    from pairflow.data import PairedMNIST

    data = PairedMNIST(tiny_mnist_root, train=True, num_pairs=8, seed=0)
    x, _ = data.get_batch(torch.arange(8))  # (8, 1, 28, 56) uint8
    x = x[:, :, 6:22, 20:36].contiguous()  # a 16x16 crop around the seam keeps it fast
    torch.manual_seed(0)
    if preset == "seed":
        flow = build_flow("seed", height=16, width=16, hidden_features=64)
    else:
        flow = build_flow(
            "multiscale",
            height=16,
            width=16,
            hidden_channels=16,
            num_blocks=1,
            checkerboard_couplings=2,
            channel_couplings=2,
            final_couplings=2,
        )
    opt = torch.optim.Adam(flow.parameters(), lr=5e-3)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        start = float(flow.bits_per_dim(x, generator=g).mean())
    for _ in range(150):
        loss = flow.bits_per_dim(x, generator=g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        end = float(flow.bits_per_dim(x, generator=g).mean())
    assert math.isfinite(end)
    assert end < 0.5 * start, (start, end)
