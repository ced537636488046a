"""Each transform type proves its maths: exact inverse, log-dets that cancel and equal autograd."""

from __future__ import annotations

import pytest
import torch

from flowtools import check_transform, one_thread, randomize
from pairflow.flows import (
    MLP,
    ActNorm,
    AffineCoupling,
    Compose,
    ConvResNet,
    FactorOut,
    Inverse,
    Logit,
    SeparateMLPs,
    Squeeze,
    channel_mask,
    checkerboard_mask,
    dequantize,
    multiscale_flow,
    quantize,
    squeezed_checkerboard_mask,
    vector_mask,
)

torch.manual_seed(0)
SHAPE = (1, 4, 8)


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def images(b: int = 3, shape=SHAPE, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, *shape, generator=torch.Generator().manual_seed(seed))


def conv_factory(context: int = 0):
    return lambda i, o: ConvResNet(i, o, hidden=6, num_blocks=1, context_features=context)


@pytest.mark.parametrize("kind", ["alternate", "half", "checkerboard"])
@pytest.mark.parametrize("net", ["mlp", "separate"])
def test_vector_coupling(kind, net):
    mask = vector_mask(kind, SHAPE, parity=1)
    if net == "mlp":
        factory = lambda i, o: MLP(i, o, hidden=16)  # noqa: E731
    else:
        factory = lambda i, o: SeparateMLPs(i, o, hidden=16)  # noqa: E731
    layer = randomize(AffineCoupling(mask, factory, scale_bound=1.0))
    assert layer.gather
    check_transform(layer, images().flatten(1))


@pytest.mark.parametrize("parity", [0, 1])
def test_alternating_mask_views_match_the_index_path(parity):
    mask = vector_mask("alternate", SHAPE, parity=parity)
    layer = randomize(AffineCoupling(mask, lambda i, o: MLP(i, o, hidden=16)))
    assert layer.parity == int(~mask[0])  # the first kept feature: 0 when mask[0] is kept
    x = images().flatten(1).requires_grad_()
    z, ld = layer(x)
    (z.square().sum() + ld.sum()).backward()
    grad_views = x.grad.clone()
    x.grad = None
    layer.parity = None  # the general index_select path
    z2, ld2 = layer(x)
    (z2.square().sum() + ld2.sum()).backward()
    torch.testing.assert_close(z, z2, rtol=0, atol=0)
    torch.testing.assert_close(grad_views, x.grad, rtol=0, atol=0)
    # channel masks keep the index path (their features are channels, not vector entries)
    assert AffineCoupling(channel_mask(2, 4, 8), conv_factory(), 2.0).parity is None


@pytest.mark.parametrize("mask_fn", [checkerboard_mask, channel_mask])
@pytest.mark.parametrize("parity", [0, 1])
def test_image_coupling(mask_fn, parity):
    shape = (2, 4, 8)
    layer = randomize(AffineCoupling(mask_fn(*shape, parity=parity), conv_factory(), 2.0))
    assert layer.gather == (mask_fn is channel_mask)
    check_transform(layer, images(shape=shape))


def test_conditional_coupling_uses_context():
    layer = randomize(AffineCoupling(checkerboard_mask(*SHAPE), conv_factory(context=3)))
    x = images()
    ctx = torch.randn(3, 2, 3, generator=torch.Generator().manual_seed(2))
    check_transform(layer, x, ctx)
    z1, _ = layer.double()(x.double(), ctx.double())
    z2, _ = layer(x.double(), ctx.double() + 1)
    assert not torch.allclose(z1, z2)


@pytest.mark.parametrize(
    "mask", [vector_mask("alternate", SHAPE), checkerboard_mask(*SHAPE), channel_mask(2, 4, 8)]
)
def test_masked_dimensions_pass_unchanged(mask):
    if mask.dim() == 1:
        layer, x = AffineCoupling(mask, lambda i, o: MLP(i, o, hidden=8)), images().flatten(1)
    else:
        layer, x = AffineCoupling(mask, conv_factory()), images(shape=tuple(mask.shape))
    randomize(layer)
    z, _ = layer(x)
    keep = mask.expand_as(x)
    assert torch.equal(z[keep], x[keep])
    assert not torch.allclose(z[~keep], x[~keep])
    xr, _ = layer.inverse(z)
    assert torch.equal(xr[keep], z[keep])


def test_bounded_scale_never_overflows():
    layer = AffineCoupling(vector_mask("half", SHAPE), lambda i, o: MLP(i, o, 8), 2.0)
    randomize(layer, scale=1e4)  # absurd weights: raw log-scales in the thousands
    z, ld = layer(images().flatten(1) * 100)
    assert torch.isfinite(z).all() and torch.isfinite(ld).all()
    assert (ld.abs() <= 2.0 * 16 + 1e-4).all()  # 16 transformed dims, |s| < 2


def test_logit_transform():
    logit = Logit(alpha=1e-6)
    y = torch.rand(3, *SHAPE, generator=torch.Generator().manual_seed(3)) * 0.98 + 0.01
    check_transform(logit, y)
    # also near the edges, where the logit is steep
    edges = torch.tensor([[0.0, 1e-7, 0.5, 1 - 1e-7]], dtype=torch.float64)
    h, ld = logit.double()(edges)
    assert torch.isfinite(h).all() and torch.isfinite(ld).all()
    y_back, _ = logit.inverse(h)
    torch.testing.assert_close(y_back, edges, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="alpha"):
        Logit(alpha=0.5)


def test_dequantize_quantize():
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    g = torch.Generator().manual_seed(0)
    y = dequantize(x, g)
    assert y.dtype == torch.float32 and (y >= 0).all() and (y < 1).all()
    assert torch.equal(quantize(y), x)  # each y stays inside its pixel's bin
    assert torch.equal(quantize(dequantize(x, noise="center")), x)
    y2 = dequantize(x, torch.Generator().manual_seed(0))
    assert torch.equal(y, y2)  # same generator, same noise
    with pytest.raises(ValueError, match="valid: 'uniform', 'center'"):
        dequantize(x, noise="gaussian")


def test_squeeze_is_a_permutation():
    x = torch.arange(2 * 4 * 8, dtype=torch.float64).view(1, 2, 4, 8)
    z, ld = Squeeze()(x)
    assert z.shape == (1, 8, 2, 4)
    assert torch.equal(z.flatten().sort().values, x.flatten())
    assert torch.equal(ld, torch.zeros(1, dtype=torch.float64))
    # channel 4c + 2di + dj at (i, j) holds x[c, 2i + di, 2j + dj]
    for c, di, dj, i, j in [(0, 0, 1, 1, 2), (1, 1, 0, 0, 3), (1, 1, 1, 1, 1)]:
        assert z[0, 4 * c + 2 * di + dj, i, j] == x[0, c, 2 * i + di, 2 * j + dj]
    check_transform(Squeeze(), x.repeat(2, 1, 1, 1))
    check_transform(Inverse(Squeeze()), z.repeat(2, 1, 1, 1))
    assert torch.equal(Squeeze().inverse(z)[0], x)
    with pytest.raises(ValueError, match="even height and width"):
        Squeeze()(torch.zeros(1, 1, 3, 4))


def test_actnorm():
    layer = ActNorm(2)
    layer.train()
    x = images(64, shape=(2, 4, 8)) * 3 + 1
    z, _ = layer(x)
    assert bool(layer.initialized)
    torch.testing.assert_close(z.mean(dim=(0, 2, 3)), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(dim=(0, 2, 3)), torch.ones(2), atol=1e-3, rtol=0)
    before = layer.bias.detach().clone()
    layer(x * 5)  # initialised once only
    assert torch.equal(layer.bias.detach(), before)
    check_transform(randomize(ActNorm(2)), images(shape=(2, 4, 8)))
    check_transform(randomize(ActNorm(5)), torch.randn(3, 5))
    # loading an uninitialised state makes the next training forward initialise again
    layer.load_state_dict(ActNorm(2).state_dict())
    assert not bool(layer.initialized)
    layer(x * 5)
    assert bool(layer.initialized) and not torch.equal(layer.bias.detach(), before)
    layer.reset()
    layer(x)
    torch.testing.assert_close(layer.bias.detach(), before)


def test_trained_flow_traces_for_torch_compile_in_one_graph():
    """After initialisation ActNorm reads no tensor to decide anything: no graph break."""
    flow = multiscale_flow((1, 4, 8), conv_factory(), num_scales=2, channel_couplings=1)
    x = images(4)
    flow.train()
    flow(x)  # initialises every ActNorm
    explained = torch._dynamo.explain(lambda v: flow(v)[1].sum())(x)
    assert explained.graph_break_count == 0, [b.reason for b in explained.break_reasons]


def test_factor_out_and_multiscale():
    inner = randomize(AffineCoupling(channel_mask(2, 4, 8), conv_factory()))
    layer = FactorOut(inner, keep=2)
    x = images(shape=(4, 4, 8))
    z, _ = layer(x)
    assert torch.equal(z[:, 2:], x[:, 2:])  # factored-out channels go straight to the latent
    check_transform(layer, x)
    for mode in ("squeezed", "masked"):
        flow = multiscale_flow(
            SHAPE,
            conv_factory(),
            num_scales=3,
            checkerboard_couplings=2,
            channel_couplings=2,
            final_couplings=2,
            checkerboard=mode,
        )
        check_transform(randomize(flow), images())
    with pytest.raises(ValueError, match="valid: squeezed, masked"):
        multiscale_flow(SHAPE, conv_factory(), checkerboard="checkers")
    with pytest.raises(ValueError, match="divisible"):
        multiscale_flow((1, 6, 6), conv_factory(), num_scales=3)


def test_compose_and_inverse():
    a = randomize(AffineCoupling(checkerboard_mask(*SHAPE), conv_factory()), seed=1)
    b = randomize(ActNorm(1), seed=2)
    flow = Compose([a, Squeeze(), Inverse(Squeeze()), b])
    x = images()
    z, ld = flow(x)
    za, lda = a(x)
    zb, ldb = b(za)
    torch.testing.assert_close(z, zb)
    torch.testing.assert_close(ld, lda + ldb)
    check_transform(flow, x)
    inv = Inverse(flow)
    torch.testing.assert_close(inv(z)[0], x, rtol=1e-5, atol=1e-5)
    check_transform(inv, z.detach())


@pytest.mark.parametrize("parity", [0, 1])
def test_squeezed_checkerboard_is_the_checkerboard(parity):
    # The squeezed mask, unsqueezed, is exactly the pixel checkerboard.
    mask = squeezed_checkerboard_mask(8, 2, 4, parity).double()[None]
    pixels, _ = Squeeze().inverse(mask)
    assert torch.equal(pixels[0].bool(), checkerboard_mask(2, 4, 8, parity))
    # and a coupling with it leaves the checkerboard's kept pixels unchanged
    layer = randomize(AffineCoupling(squeezed_checkerboard_mask(8, 2, 4, parity), conv_factory()))
    flow = Compose([Squeeze(), layer, Inverse(Squeeze())])
    x = images(shape=(2, 4, 8))
    z, _ = flow(x)
    keep = checkerboard_mask(2, 4, 8, parity).expand_as(x)
    assert torch.equal(z[keep], x[keep]) and not torch.allclose(z[~keep], x[~keep])
    check_transform(flow, x)


def test_conv_net_channels_last_matches_contiguous():
    a = randomize(ConvResNet(3, 4, hidden=8, num_blocks=2, channels_last=True))
    b = ConvResNet(3, 4, hidden=8, num_blocks=2, channels_last=False)
    b.load_state_dict(a.state_dict())
    x = images(shape=(3, 4, 8))
    out = a(x)
    assert out.is_contiguous()
    torch.testing.assert_close(out, b(x), rtol=1e-5, atol=1e-6)


def _actnorm_rank(rank: int, path: str, port: int) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.manual_seed(rank)
    layer = ActNorm(3)
    layer(torch.randn(32, 3, 2, 2) * (rank + 1) + 5 * rank)  # different data per rank
    torch.save({k: v.detach() for k, v in layer.state_dict().items()}, f"{path}/{rank}.pt")
    dist.destroy_process_group()


def test_actnorm_init_agrees_across_ranks(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_actnorm_rank, args=(str(tmp_path), port), nprocs=2)
    a, b = torch.load(tmp_path / "0.pt"), torch.load(tmp_path / "1.pt")
    assert torch.equal(a["bias"], b["bias"]) and torch.equal(a["log_scale"], b["log_scale"])
    assert (a["bias"] < -1).all()  # pooled mean of both ranks' data (0 and 5) is ~2.5
