"""Couplings from parts: every elementwise map, and every coupling built with it.

The maths, not shapes: inverse(forward(x)) == x with random parameters; log-determinants
against autograd Jacobians in float64, both directions; the spline at its knots, in its
tails and across bins, monotone and continuous at every bin edge.
"""

from __future__ import annotations

import math

import pytest
import torch

from flowtools import check_transform, randomize
from pairflow.flows import (
    AdditiveMap,
    AffineMap,
    Coupling,
    FlowConfig,
    RationalQuadraticSpline,
    Transform,
    build_flow,
    coupling_layer,
)
from pairflow.flows.base import set_autocast
from pairflow.flows.build import couplings_of
from pairflow.flows.masks import alternating_mask, channel_mask, checkerboard_mask
from pairflow.flows.nets import MLP, ConvResNet

MAPS = {
    "affine": lambda: AffineMap(scale_bound=2.0),
    "additive": AdditiveMap,
    "spline": lambda: RationalQuadraticSpline(bins=5, bound=3.0),
}


def random_params(m, n: int, seed: int = 0, scale: float = 2.0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [scale * torch.randn(n, generator=g, dtype=torch.float64) for _ in range(m.num_params)]


def points(n: int = 400) -> torch.Tensor:
    """Inputs from well inside to well outside [-3, 3]: tails, bins and everything between."""
    return torch.linspace(-5, 5, n, dtype=torch.float64)


@pytest.mark.parametrize("name", MAPS)
def test_map_inverts_its_forward_and_log_derivatives_cancel(name):
    m = MAPS[name]()
    x = points()
    params = random_params(m, len(x))
    z, ld = m(x, params)
    back, ld_inv = m.inverse(z, params)
    torch.testing.assert_close(back, x, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ld + ld_inv, torch.zeros_like(ld), rtol=0, atol=1e-10)
    assert name == "additive" or ld.abs().max() > 0.1  # not the identity


@pytest.mark.parametrize("name", MAPS)
def test_map_log_derivative_is_autograd_in_both_directions(name):
    m = MAPS[name]()
    x = points(60)
    params = random_params(m, len(x), seed=1)
    z, ld = m(x, params)
    # Elementwise: the Jacobian is diagonal; slogdet of the full matrix checks that too.
    fwd = torch.autograd.functional.jacobian(lambda v: m(v, params)[0], x)
    torch.testing.assert_close(torch.diagonal(fwd).log(), ld, rtol=1e-9, atol=1e-9)
    assert torch.count_nonzero(fwd - torch.diag(torch.diagonal(fwd))) == 0
    inv = torch.autograd.functional.jacobian(lambda v: m.inverse(v, params)[0], z)
    torch.testing.assert_close(torch.linalg.slogdet(inv)[1], m.inverse(z, params)[1].sum())


def spline_knots(spline, params):
    xs, ys, ds = spline._knots(params)
    return xs, ys, ds


def test_spline_passes_through_its_knots_with_their_derivatives():
    spline = RationalQuadraticSpline(bins=6, bound=2.0)
    params = random_params(spline, 1, seed=2)
    xs, ys, ds = spline_knots(spline, params)  # (1, K + 1) each
    inner = xs[0, 1:-1]  # the inner knots; the end knots are the tails' joins
    p = [q.expand(len(inner)) for q in params]
    z, ld = spline(inner, p)
    torch.testing.assert_close(z, ys[0, 1:-1], rtol=0, atol=1e-12)
    torch.testing.assert_close(ld.exp(), ds[0, 1:-1], rtol=1e-9, atol=0)
    assert xs[0, 0] == -2 and xs[0, -1] == 2 and ys[0, 0] == -2 and ys[0, -1] == 2


def test_spline_is_monotone_and_continuous_at_every_bin_edge_and_at_the_tails():
    spline = RationalQuadraticSpline(bins=7, bound=3.0)
    params = random_params(spline, 1, seed=3, scale=3.0)
    xs, _, _ = spline_knots(spline, params)
    x = torch.linspace(-6, 6, 20001, dtype=torch.float64)
    p = [q.expand(len(x)) for q in params]
    z, ld = spline(x, p)
    assert bool((z[1:] > z[:-1]).all())  # strictly increasing
    for edge in xs[0]:  # bins' edges and the two joins with the linear tails
        around = torch.stack([edge - 1e-9, edge + 1e-9])
        q = [v.expand(2) for v in params]
        zz, lds = spline(around, q)
        assert abs(float(zz[1] - zz[0])) < 1e-7  # continuous
        assert abs(float(lds[1] - lds[0])) < 1e-5  # and so is its derivative
    tails = x.abs() >= 3
    assert torch.equal(z[tails], x[tails]) and bool((ld[tails] == 0).all())


def test_spline_with_zero_parameters_is_the_identity():
    spline = RationalQuadraticSpline(bins=8, bound=5.0)
    x = points()
    z, ld = spline(x, [torch.zeros_like(x)] * spline.num_params)
    torch.testing.assert_close(z, x, rtol=0, atol=1e-12)
    torch.testing.assert_close(ld, torch.zeros_like(ld), rtol=0, atol=1e-12)


def test_spline_refuses_bad_settings():
    with pytest.raises(ValueError, match="bins must be an int >= 1"):
        RationalQuadraticSpline(bins=0)
    with pytest.raises(ValueError, match="bound must be a finite number > 0"):
        RationalQuadraticSpline(bound=-1.0)
    with pytest.raises(ValueError, match="min_bin"):
        RationalQuadraticSpline(bins=10, min_bin=0.2)
    with pytest.raises(ValueError, match="takes 5 parameters, got 2"):
        RationalQuadraticSpline(bins=2)(torch.zeros(3), [torch.zeros(3)] * 2)


@pytest.mark.parametrize("name", MAPS)
def test_vector_coupling_with_each_map(name):
    layer = randomize(
        Coupling(alternating_mask(6), lambda i, o: MLP(i, o, hidden=8), MAPS[name]()), scale=1.0
    )
    check_transform(layer, torch.randn(3, 6, generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("name", MAPS)
@pytest.mark.parametrize("mask_fn", [channel_mask, checkerboard_mask])
def test_image_coupling_with_each_map(name, mask_fn):
    """Channel masks feed the conditioner the kept channels; checkerboards the masked image."""
    layer = randomize(
        Coupling(mask_fn(2, 4, 8), lambda i, o: ConvResNet(i, o, hidden=4), MAPS[name]()),
        scale=1.0,
    )
    x = torch.randn(3, 2, 4, 8, generator=torch.Generator().manual_seed(1))
    check_transform(layer, x)
    z, _ = layer(x)
    kept = mask_fn(2, 4, 8).expand_as(x)
    assert torch.equal(z[kept], x[kept])  # kept features pass exactly


@pytest.mark.parametrize("arch", ["mlp", "multiscale", "glow"])
@pytest.mark.parametrize("coupling", ["affine", "additive", "spline"])
def test_every_architecture_takes_every_map(arch, coupling):
    preset = {"mlp": "seed", "multiscale": "multiscale", "glow": "glow"}[arch]
    small = {"mlp": dict(hidden_features=8), "glow": dict(glow_levels=2, glow_steps=1)}
    flow = build_flow(
        preset, height=4, width=8, hidden_channels=4, coupling=coupling, **small.get(arch, {})
    )
    maps = {type(m.map).__name__ for m in flow.modules() if isinstance(m, Coupling)}
    assert maps == {type(MAPS[coupling]()).__name__}
    randomize(flow.body, scale=0.3)  # deep spline stacks amplify fp32 error at larger ones
    check_transform(flow.body, torch.randn(2, 1, 4, 8, generator=torch.Generator().manual_seed(2)))


def test_spline_bound_follows_the_input_scale_unless_set():
    seed = FlowConfig.from_preset("seed", coupling="spline")
    multiscale = FlowConfig.from_preset("multiscale", coupling="spline")
    mask = alternating_mask(4)

    def bound(config):
        return couplings_of(config)(mask, lambda i, o: MLP(i, o, hidden=2)).map.bound

    # Raw logits of pixels reach logit(1e-6) ~ -13.8: a narrower spline would let them pass.
    assert bound(seed) == 15.0 > -math.log(1e-6)
    assert bound(multiscale) == 5.0  # ActNorm before every coupling: near unit scale
    assert bound(FlowConfig.from_preset("seed", coupling="spline", spline_bound=7.5)) == 7.5
    with pytest.raises(ValueError, match="spline_bound must be >= 0"):
        FlowConfig.from_preset("seed", spline_bound=-1.0)
    with pytest.raises(ValueError, match="spline_bins must be a positive int"):
        FlowConfig.from_preset("seed", spline_bins=0)
    with pytest.raises(ValueError, match="unknown coupling 'splines'; valid: affine, additive"):
        FlowConfig.from_preset("seed", coupling="splines")
    with pytest.raises(ValueError, match="unknown coupling"):
        coupling_layer("bogus")


def test_parts_declare_which_of_them_run_in_bf16():
    class Declared(Transform):
        runs_in_low_precision = True

    class Plain(Transform):
        pass

    holder = torch.nn.ModuleList([Declared(), Plain()])
    set_autocast(holder, torch.bfloat16)
    assert holder[0].autocast_dtype == torch.bfloat16 and holder[1].autocast_dtype is None
    flow = build_flow("multiscale", height=4, width=8, hidden_channels=4, coupling="spline")
    couplings = [m for m in flow.modules() if isinstance(m, Coupling)]
    flow.precision = "bf16"
    assert couplings and all(c.autocast_dtype == torch.bfloat16 for c in couplings)
    x = torch.randint(0, 256, (2, 1, 4, 8), dtype=torch.uint8)
    assert torch.isfinite(flow.bits_per_dim(x)).all()  # spline maths in fp32 beside bf16 nets
    flow.precision = "fp32"
    assert all(c.autocast_dtype is None for c in couplings)
