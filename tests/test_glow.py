"""Glow's parts prove their maths: exact inverses and log-dets equal to autograd's."""

from __future__ import annotations

import pytest
import torch

from flowtools import check_transform, one_thread, randomize
from pairflow.flows import ConvResNet, build_flow
from pairflow.flows.glow import AdditiveCoupling, InvertibleConv1x1, glow_flow, glow_step
from pairflow.flows.masks import channel_mask, checkerboard_mask


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def images(b: int = 3, shape=(1, 4, 8), seed: int = 1) -> torch.Tensor:
    return torch.randn(b, *shape, generator=torch.Generator().manual_seed(seed))


def factory(i: int, o: int):
    return ConvResNet(i, o, hidden=6, num_blocks=1)


@pytest.mark.parametrize("channels", [2, 4, 5])
def test_invertible_conv_1x1(channels):
    layer = randomize(InvertibleConv1x1(channels, torch.Generator().manual_seed(3)))
    x = images(shape=(channels, 2, 3))
    check_transform(layer, x)
    # The LU form is W: the log-det from the diagonal equals the dense one.
    layer.double()  # check_transform leaves it in float32
    w = layer.weight()
    assert not torch.allclose(w, torch.eye(channels, dtype=w.dtype))
    dense = torch.linalg.slogdet(w)[1] * 6
    torch.testing.assert_close(layer(x.double())[1][0], dense)


def test_invertible_conv_is_invertible_after_training_steps():
    layer = InvertibleConv1x1(4, torch.Generator().manual_seed(0))
    opt = torch.optim.SGD(layer.parameters(), lr=0.05)
    x = images(8, (4, 3, 3))
    for _ in range(3):
        z, ld = layer(x)
        (0.5 * z.pow(2).flatten(1).sum(1) - ld).mean().backward()
        opt.step()
        opt.zero_grad()
    z, _ = layer(x)
    torch.testing.assert_close(layer.inverse(z)[0], x, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mask_fn", [channel_mask, checkerboard_mask])
def test_additive_coupling(mask_fn):
    layer = randomize(AdditiveCoupling(mask_fn(4, 2, 4, parity=1), factory))
    x = images(shape=(4, 2, 4))
    check_transform(layer, x)
    z, ld = layer.double()(x.double())
    assert torch.equal(ld, torch.zeros_like(ld))


@pytest.mark.parametrize("coupling", ["affine", "additive"])
def test_glow_step_and_flow(coupling):
    step = randomize(glow_step((4, 2, 4), factory, coupling, parity=1))
    check_transform(step, images(shape=(4, 2, 4)))
    flow = randomize(
        glow_flow((1, 4, 8), factory, num_levels=2, steps_per_level=2, coupling=coupling)
    )
    check_transform(flow, images())


def test_glow_rejects_bad_arguments():
    with pytest.raises(ValueError, match="coupling"):
        glow_step((4, 2, 2), factory, coupling="bogus")
    with pytest.raises(ValueError, match="divisible"):
        glow_flow((1, 6, 8), factory, num_levels=2)


def test_glow_arch_builds_a_pairflow():
    from flowtools import randomize as rand

    flow = rand(build_flow("glow", height=4, width=8, hidden_channels=4, glow_steps=2))
    assert any(isinstance(m, InvertibleConv1x1) for m in flow.modules())
    x = torch.randint(0, 256, (2, 1, 4, 8), dtype=torch.uint8)
    assert torch.isfinite(flow.bits_per_dim(x)).all()
    flow.eval()
    assert torch.equal(flow.decode(flow.encode(x)), x)
