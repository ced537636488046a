"""Whole presets: invertible with exact log-dets, trainable, savable, validated."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from flowtools import jacobian_logdet, one_thread, randomize
from pairflow.flows import FlowConfig, PairFlow, build_flow
from pairflow.precision import resolve_precision

TINY = {
    "seed": dict(height=4, width=8, hidden_features=16),
    "multiscale": dict(height=4, width=8, hidden_channels=6, num_blocks=1),
}


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def tiny(preset: str, seed: int = 0, **overrides) -> PairFlow:
    return randomize(build_flow(preset, **{**TINY[preset], **overrides}), seed=seed)


def pixels(b: int = 3, h: int = 4, w: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 1, h, w), generator=g, dtype=torch.uint8)


def test_full_size_presets():
    seed = build_flow("seed")
    assert seed.config.preset == "seed" and seed.config.arch == "mlp"
    # 6 couplings x 2 nets x (784*512 + 512*512 + 512*784 + biases)
    assert sum(p.numel() for p in seed.parameters()) == 6 * 2 * (
        784 * 512 + 512 + 512 * 512 + 512 + 512 * 784 + 784
    )
    ms = build_flow("multiscale")
    n = sum(p.numel() for p in ms.parameters())
    assert 500_000 <= n <= 5_000_000, n
    x = pixels(2, 28, 56)
    for flow in (seed, ms):
        bpd = flow.bits_per_dim(x)
        assert bpd.shape == (2,) and torch.isfinite(bpd).all()
        s = flow.sample(2)
        assert s.shape == (2, 1, 28, 56) and s.dtype == torch.uint8


@pytest.mark.parametrize(
    "preset, overrides",
    [
        ("seed", {}),
        ("seed", {"mask": "checkerboard"}),
        ("multiscale", {}),
        ("multiscale", {"checkerboard": "masked", "num_scales": 3}),
    ],
)
def test_invertible_with_exact_logdet(preset, overrides):
    flow = tiny(preset, **overrides).double()
    y = (pixels().double() + 0.5) / 256  # data space of PairFlow.forward: [0, 1]
    z, ld = flow(y)
    assert z.shape == y.shape
    y_back, ld_inv = flow.inverse(z)
    torch.testing.assert_close(y_back, y, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ld + ld_inv, torch.zeros_like(ld), rtol=0, atol=1e-8)
    # the logit preprocessing is part of the Jacobian
    fwd = jacobian_logdet(lambda v: flow(v)[0], y[:1])
    torch.testing.assert_close(ld[0], fwd, rtol=1e-9, atol=1e-7)
    inv = jacobian_logdet(lambda v: flow.inverse(v)[0], z[:1])
    torch.testing.assert_close(ld_inv[0], inv, rtol=1e-9, atol=1e-7)
    flow32 = flow.float()
    z32, _ = flow32(y.float())
    torch.testing.assert_close(flow32.inverse(z32)[0], y.float(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("preset", ["seed", "multiscale"])
def test_all_parameters_get_gradients(preset):
    flow = tiny(preset)
    flow.bits_per_dim(pixels(), generator=torch.Generator().manual_seed(0)).mean().backward()
    for name, p in flow.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("preset", ["seed", "multiscale"])
def test_train_and_eval_agree(preset):
    flow = tiny(preset)
    x = pixels()
    flow.train()
    a = flow.log_prob(x, generator=torch.Generator().manual_seed(5))
    flow.eval()
    b = flow.log_prob(x, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)


def test_actnorm_data_init_happens_once_in_training():
    flow = build_flow("multiscale", **TINY["multiscale"])
    flow.eval()
    flow.log_prob(pixels(16))
    assert not any(bool(b) for n, b in flow.named_buffers() if n.endswith("initialized"))
    flow.data_init(pixels(16))
    flags = [bool(b) for n, b in flow.named_buffers() if n.endswith("initialized")]
    assert flags and all(flags)
    assert not flow.training  # data_init restores the mode it found


@pytest.mark.parametrize("preset", ["seed", "multiscale"])
def test_save_load_round_trip(preset, tmp_path):
    flow = tiny(preset, conditional=True)
    path = tmp_path / "flow.pt"
    torch.save({"config": dataclasses.asdict(flow.config), "model": flow.state_dict()}, path)
    ckpt = torch.load(path, weights_only=True)
    loaded = build_flow(FlowConfig.from_dict(ckpt["config"]))
    loaded.load_state_dict(ckpt["model"])
    x, cond = pixels(), torch.tensor([37, 5, 99])
    a = flow.log_prob(x, cond, generator=torch.Generator().manual_seed(1))
    b = loaded.log_prob(x, cond, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("conditioning", ["embedding", "prior", "both"])
@pytest.mark.parametrize("preset", ["seed", "multiscale"])
def test_conditional_flow(preset, conditioning):
    flow = tiny(preset, conditional=True, conditioning=conditioning).double()
    y = (pixels().double() + 0.5) / 256
    labels = torch.tensor([37, 0, 99])
    z, ld = flow(y, labels)
    torch.testing.assert_close(flow.inverse(z, labels)[0], y, rtol=1e-9, atol=1e-9)
    fwd = jacobian_logdet(lambda v: flow(v, labels[:1])[0], y[:1])
    torch.testing.assert_close(ld[0], fwd, rtol=1e-9, atol=1e-7)
    # the label changes the map (embedding) or the base distribution (prior)
    z_other, _ = flow(y, torch.tensor([73, 11, 42]))
    assert torch.allclose(z, z_other) == (conditioning == "prior")
    flow = flow.float()
    x = pixels(1).expand(4, -1, -1, -1)
    lp = flow.log_prob(x, torch.tensor([0, 9, 90, 99]), generator=torch.Generator().manual_seed(0))
    assert len(set(lp.tolist())) == 4
    s = flow.sample(4, cond=37, generator=torch.Generator().manual_seed(0))
    assert s.shape == (4, 1, 4, 8)


def test_label_prior_is_position_aware_and_exact():
    flow = tiny("multiscale", conditional=True, conditioning="prior").double()
    loc, log_scale = flow.prior_params(torch.tensor([37, 30, 97]))
    # left half from the left digit, right half from the right digit
    torch.testing.assert_close(loc[0, ..., :4], loc[1, ..., :4], rtol=0, atol=0)
    torch.testing.assert_close(loc[0, ..., 4:], loc[2, ..., 4:], rtol=0, atol=0)
    assert not torch.allclose(loc[0, ..., 4:], loc[1, ..., 4:])
    assert not torch.allclose(log_scale[0, ..., :4], log_scale[2, ..., :4])
    # log p(z | label) is the diagonal normal's, summed over dimensions
    z = torch.randn(3, 1, 4, 8, dtype=torch.float64)
    labels = torch.tensor([37, 30, 97])
    expected = torch.distributions.Normal(loc, log_scale.exp()).log_prob(z).sum((1, 2, 3))
    torch.testing.assert_close(flow.log_prior(z, labels), expected, rtol=1e-12, atol=1e-9)
    # T -> 0 samples decode the prior's mean
    flow = flow.float()
    cold = flow.sample(2, temperature=1e-4, cond=37, generator=torch.Generator().manual_seed(0))
    mode = flow.decode(flow.prior_params(torch.tensor([37]))[0].float(), torch.tensor([37]))
    assert (cold.int() - mode.int()).abs().max() <= 1


def test_zero_initialised_prior_starts_as_the_standard_normal():
    source = tiny("seed", conditional=True, conditioning="embedding")
    both = build_flow("seed", conditional=True, conditioning="both", **TINY["seed"])
    missing = both.load_state_dict(source.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["distribution.loc", "distribution.log_scale"]
    x, cond = pixels(), torch.tensor([37, 5, 99])
    a = source.log_prob(x, cond, generator=torch.Generator().manual_seed(1))
    b = both.log_prob(x, cond, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_sample_encode_decode():
    flow = tiny("multiscale")
    a = flow.sample(5, generator=torch.Generator().manual_seed(3))
    b = flow.sample(5, generator=torch.Generator().manual_seed(3))
    assert a.dtype == torch.uint8 and a.shape == (5, 1, 4, 8) and torch.equal(a, b)
    cold = flow.sample(5, temperature=1e-3, generator=torch.Generator().manual_seed(4))
    mode = flow.decode(torch.zeros(1, 1, 4, 8))
    assert (cold.int() - mode.int()).abs().max() <= 1  # T -> 0 gives the latent origin
    x = pixels(4)
    z = flow.encode(x)
    assert z.shape == (4, 1, 4, 8) and z.dtype == torch.float32
    assert torch.equal(flow.decode(z), x)


def test_bf16_precision_close_to_fp32():
    flow = tiny("multiscale", hidden_channels=16)
    x = pixels(4)
    fp32 = flow.bits_per_dim(x, generator=torch.Generator().manual_seed(0))
    flow.precision = "bf16"
    assert flow.config.precision == "bf16"
    bf16 = flow.bits_per_dim(x, generator=torch.Generator().manual_seed(0))
    assert bf16.dtype == torch.float32
    # bf16 conditioners perturb the scales and shifts by ~0.4% (8-bit mantissa): a relative bound.
    torch.testing.assert_close(bf16, fp32, rtol=0.01, atol=0)
    assert not torch.equal(bf16, fp32)  # the conditioners really ran in bf16
    z = flow.encode(x)
    assert torch.equal(flow.decode(z), x)  # the affine maths is exact in fp32 either way
    with pytest.raises(ValueError, match="valid: fp32, bf16"):
        flow.precision = "fp16"


def test_input_validation():
    flow = tiny("multiscale")
    with pytest.raises(ValueError, match=r"\(B, 1, 4, 8\).*got \(3, 1, 8, 4\)"):
        flow.log_prob(pixels(3, 8, 4))
    with pytest.raises(ValueError, match="max 256"):
        flow.log_prob(torch.full((1, 1, 4, 8), 256.0))
    with pytest.raises(ValueError, match="scaled to"):
        flow.log_prob(torch.full((1, 1, 4, 8), -0.5))
    with pytest.raises(ValueError, match="whole numbers"):
        flow.log_prob(torch.full((1, 1, 4, 8), 0.5))
    with pytest.raises(TypeError, match="int64"):
        flow.log_prob(pixels().long())
    with pytest.raises(ValueError, match="unconditional"):
        flow.log_prob(pixels(), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        flow.sample(2, temperature=0)
    with pytest.raises(ValueError, match="n must be an int >= 1, got 0"):
        flow.sample(0)
    cond_flow = tiny("seed", conditional=True)
    with pytest.raises(ValueError, match="conditional: pass cond"):
        cond_flow.encode(pixels(2))  # the couplings read the label: a latent is of one label
    with pytest.raises(ValueError, match="0..99, got min 0, max 100"):
        cond_flow.log_prob(pixels(2), torch.tensor([0, 100]))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        cond_flow.log_prob(pixels(2), torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="integer tensor"):
        cond_flow.log_prob(pixels(2), torch.tensor([0.0, 1.0]))


def test_config_validation():
    with pytest.raises(ValueError, match="unknown preset 'flowpp'; valid: seed, multiscale, glow"):
        FlowConfig.from_preset("flowpp")
    with pytest.raises(ValueError, match="unknown mask 'stripes'; valid: alternate"):
        FlowConfig.from_preset("seed", mask="stripes")
    with pytest.raises(ValueError, match="unknown FlowConfig field.*hiden_channels"):
        FlowConfig.from_preset("multiscale", hiden_channels=8)
    with pytest.raises(ValueError, match="hidden_channels must be a positive int, got 0"):
        FlowConfig.from_preset("multiscale", hidden_channels=0)
    config = FlowConfig.from_preset("multiscale")
    assert FlowConfig.from_dict(dataclasses.asdict(config)) == config
    assert all(isinstance(v, (int, float, str, bool)) for v in dataclasses.asdict(config).values())


def test_resolve_precision():
    assert resolve_precision("fp32") == "fp32" and resolve_precision("bf16") == "bf16"
    assert resolve_precision("auto", "cpu") in ("fp32", "bf16")
    with pytest.raises(ValueError, match="valid: fp32, bf16, auto"):
        resolve_precision("half")
