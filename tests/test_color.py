"""Colour and other shapes: flows, bits/dim, the classifier and image grids on 3-channel images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from flowtools import check_transform, one_thread, randomize
from pairflow.classifier import PairClassifier, _random_shift, classifier_config_for
from pairflow.dataset_presets import model_overrides_for
from pairflow.flows import build_flow
from pairflow.images import make_grid, save_grid


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def _y(shape, seed=0):
    """Continuous data in (0, 1), as the flows' forward takes it."""
    return (torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 254 + 1) / 256


@pytest.mark.parametrize("conditional", [False, True])
def test_multiscale_flow_on_three_channels(conditional):
    # 3x4x8: the CIFAR-10 pair's layout (3 x H x 2W) at a size the Jacobian can be taken of.
    flow = build_flow(
        "multiscale",
        channels=3,
        height=4,
        width=8,
        hidden_channels=4,
        num_blocks=1,
        conditional=conditional,
        conditioning="both",
        logit_alpha=0.05,
    )
    randomize(flow, seed=3)
    cond = torch.tensor([37, 5]) if conditional else None
    check_transform(flow, _y((2, 3, 4, 8)), cond)
    if conditional:  # the position-aware prior covers each half of the 3-channel latent
        assert flow.distribution.loc.shape == (2, 10, 3, 4, 4)


def test_mlp_flow_on_three_channels():
    flow = randomize(build_flow("seed", channels=3, height=2, width=4, hidden_features=8))
    check_transform(flow, _y((2, 3, 2, 4)))


def test_bits_per_dim_counts_every_channel():
    # Identity body (fresh couplings, no ActNorm): the closed form with D = C x H x W = 96.
    flow = build_flow(
        "multiscale", channels=3, height=4, width=8, hidden_channels=4, num_blocks=1,
        actnorm=False, logit_alpha=0.05,
    )  # fmt: skip
    x = torch.randint(0, 256, (2, 3, 4, 8), generator=torch.Generator().manual_seed(0))
    x = x.to(torch.uint8)
    bpd = flow.bits_per_dim(x, generator=torch.Generator().manual_seed(7))
    u = torch.rand(2, 3, 4, 8, generator=torch.Generator().manual_seed(7)).double().numpy()
    a, d = 0.05, 96
    s = a + (1 - 2 * a) * (x.double().numpy() + u) / 256
    h = np.log(s) - np.log1p(-s)
    log_prior = (-0.5 * h**2 - 0.5 * np.log(2 * np.pi)).reshape(2, -1).sum(1)
    log_det = (np.log(1 - 2 * a) - np.log(s) - np.log1p(-s)).reshape(2, -1).sum(1)
    expected = (-(log_prior + log_det) + d * np.log(256)) / (d * np.log(2))
    np.testing.assert_allclose(bpd.detach().double().numpy(), expected, rtol=1e-5)
    assert flow.sample(2).shape == (2, 3, 4, 8)


def test_dataset_presets():
    cifar = model_overrides_for("flow", "multiscale", "cifar10", "single")
    assert cifar == dict(
        channels=3, height=32, width=32, num_scales=2, hidden_channels=64, num_blocks=8,
        logit_alpha=0.05,
    )  # fmt: skip
    assert model_overrides_for("flow", "multiscale", "mnist", "pair") == dict(
        channels=1, height=28, width=56
    )
    assert model_overrides_for("gan", "dcgan", "cifar10", "pair") == dict(
        channels=3, height=32, width=64
    )
    config = build_flow("multiscale", **cifar).config
    assert config.shape == (3, 32, 32) and config.num_dims == 3072


def test_classifier_reads_rgb_pairs():
    config = classifier_config_for("cifar10", channels=(4, 4, 8), hidden=8)
    assert config.pair_shape == (3, 32, 64) and config.in_channels == 3
    clf = randomize(PairClassifier(config)).eval()
    x = torch.randint(0, 256, (4, 3, 32, 64), dtype=torch.uint8)
    logits = clf(x)
    assert logits.shape == (4, 2, 10) and clf.features(x).shape == (4, 16)
    # Each half is read on its own: changing the right image leaves the left logits alone.
    y = x.clone()
    y[..., 32:] = 0
    torch.testing.assert_close(clf(y)[:, 0], logits[:, 0])
    assert not torch.allclose(clf(y)[:, 1], logits[:, 1])
    with pytest.raises(ValueError, match=r"cifar10 pairs of shape \(B, 3, 32, 64\)"):
        clf(torch.zeros(1, 1, 28, 56))


def test_random_shift_moves_all_channels_together():
    x = torch.zeros(4, 3, 32, 64)
    x[:, :, 16, 16] = torch.tensor([10.0, 20.0, 30.0])[None, :]  # one RGB pixel in each half
    x[:, :, 16, 48] = torch.tensor([40.0, 50.0, 60.0])[None, :]
    moved = _random_shift(x, 2, torch.Generator().manual_seed(0))
    for b in range(4):
        for colour, centre in (((10.0, 20.0, 30.0), 16), ((40.0, 50.0, 60.0), 48)):
            where = [(moved[b, c] == v).nonzero() for c, v in enumerate(colour)]
            assert all(len(w) == 1 for w in where) and all(torch.equal(w, where[0]) for w in where)
            row, col = where[0][0].tolist()
            assert abs(row - 16) <= 2 and abs(col - centre) <= 2


def test_rgb_grids(tmp_path):
    images = torch.zeros(3, 3, 2, 4, dtype=torch.uint8)
    images[1, 0] = 200  # the second image is red
    grid = make_grid(images, nrow=3, padding=1, pad_value=64)
    assert grid.shape == (4, 16, 3)
    assert grid[1, 6].tolist() == [200, 0, 0] and grid[0, 0].tolist() == [64, 64, 64]
    assert make_grid(images[:, :1]).dim() == 2  # one channel stays a grayscale grid
    path = save_grid(images, tmp_path / "g.png", nrow=3, scale=1, labels=["a", "b", "c"])
    with Image.open(path) as png:
        assert png.mode == "RGB"
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        make_grid(torch.zeros(2, 2, 4, 4, dtype=torch.uint8))
