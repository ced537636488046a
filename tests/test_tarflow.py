"""TarFlow's parts prove their maths: exact inverses, log-dets equal to autograd's, a causal
conditioner, the key-value-cached inverse equal to the uncached one, and the CLI end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from flowtools import check_transform, one_thread, randomize
from pairflow.flows import FlowConfig, build_flow
from pairflow.flows.tarflow import (
    AutoregressiveBlock,
    CausalTransformer,
    Patches,
    TransformerFlow,
)


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def block(reverse: bool = False, context: int = 0, seed: int = 0) -> AutoregressiveBlock:
    """A randomised block over 6 tokens of 4 values (weights far from the identity)."""
    torch.manual_seed(seed)
    net = CausalTransformer(4, 6, width=8, depth=2, heads=2, context_features=context)
    return randomize(AutoregressiveBlock(net, reverse=reverse), seed=seed, scale=1.0)


def tokens(b: int = 3, n: int = 6, f: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, n, f, generator=torch.Generator().manual_seed(seed))


def context(b: int = 3, seed: int = 2) -> torch.Tensor:
    return torch.randn(b, 2, 3, generator=torch.Generator().manual_seed(seed))  # (B, S, E)


def test_patches_put_the_left_digit_first_and_come_back_exactly():
    x = torch.arange(32.0).view(1, 1, 4, 8)  # a "pair" of two 4x4 images
    patches = Patches((1, 4, 8), 2, sides=2)
    t, ld = patches(x)
    assert t.shape == (1, 8, 4) and torch.equal(ld, torch.zeros(1))
    left, right = x[..., :4], x[..., 4:]
    # The first four tokens are the left digit's 2x2 patches, row-major; then the right's.
    assert torch.equal(t[0, :4].flatten().sort().values, left.flatten().sort().values)
    assert torch.equal(t[0, 4:].flatten().sort().values, right.flatten().sort().values)
    assert t[0, 0].tolist() == [0.0, 1.0, 8.0, 9.0]  # top-left patch of the left digit
    assert t[0, 1].tolist() == [2.0, 3.0, 10.0, 11.0]  # its right neighbour, same digit
    assert t[0, 4].tolist() == [4.0, 5.0, 12.0, 13.0]  # top-left patch of the right digit
    assert torch.equal(patches.inverse(t)[0], x)
    # One side: plain row-major over the whole width.
    single = Patches((1, 4, 8), 2, sides=1)(x)[0]
    assert single[0, 2].tolist() == [4.0, 5.0, 12.0, 13.0]
    with pytest.raises(ValueError, match="width by 4"):
        Patches((1, 4, 6), 2, sides=2)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("conditional", [False, True])
def test_block_inverts_and_its_logdet_is_autograds(reverse, conditional):
    layer = block(reverse, context=6 if conditional else 0)
    ctx = context() if conditional else None
    check_transform(layer, tokens(), ctx)  # both directions, float64 slogdet of the Jacobian
    # The uncached inverse is an inverse too, with the same log-det.
    layer.double()
    z, ld = layer(tokens().double(), None if ctx is None else ctx.double())
    x, ld_inv = layer.inverse_uncached(z, None if ctx is None else ctx.double())
    torch.testing.assert_close(x, tokens().double(), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ld_inv, -ld, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("conditional", [False, True])
def test_body_on_a_tiny_pair_inverts_with_autograds_logdet(conditional):
    torch.manual_seed(0)
    flow = TransformerFlow(
        (1, 4, 8), 2, sides=2, blocks=3, width=8, depth=1, heads=2,
        context_features=6 if conditional else 0,
    )  # fmt: skip
    randomize(flow, scale=1.0)
    x = torch.randn(2, 1, 4, 8, generator=torch.Generator().manual_seed(3))
    # The inverse undoes 3 blocks token by token, each step reading the tokens it restored,
    # so float32 rounding compounds: 1.9e-4 on an AVX2-only CPU for these randomised weights
    # (under 1e-4 with AVX-512). float64 holds 1e-9 on both.
    check_transform(flow, x, context(2) if conditional else None, fp32_tol=1e-3)


def test_logdet_is_minus_the_sum_of_the_log_scales():
    layer = block(context=6).double()
    x, ctx = tokens().double(), context().double()
    alpha, mu = layer.params(x, ctx)
    z, ld = layer(x, ctx)
    torch.testing.assert_close(ld, -alpha.sum(dim=(1, 2)))
    torch.testing.assert_close(z, (x - mu) * torch.exp(-alpha))
    assert alpha.abs().max() > 0.1  # not an identity in disguise
    assert alpha.abs().max() <= layer.scale_bound


@pytest.mark.parametrize("conditional", [False, True])
def test_the_conditioner_is_causal(conditional):
    net = block(context=6 if conditional else 0).net.double()
    ctx = context().double() if conditional else None
    x = tokens().double()
    base = net(x, ctx)
    for k in range(x.shape[1]):
        moved = x.clone()
        moved[:, k] += 1.0
        out = net(moved, ctx)
        # Token k's own parameters and all before it read only tokens < k: unmoved.
        assert torch.equal(out[:, : k + 1], base[:, : k + 1]), k
        if k + 1 < x.shape[1]:
            assert not torch.allclose(out[:, k + 1], base[:, k + 1]), k  # token k+1 reads k


@pytest.mark.parametrize("reverse", [False, True])
def test_a_block_moves_no_latent_before_a_change_in_its_order(reverse):
    layer = block(reverse).double()
    x = tokens().double()
    z, _ = layer(x)
    k = 2
    moved = x.clone()
    moved[:, k] += 1.0
    zm, _ = layer(moved)
    earlier = slice(k + 1, None) if reverse else slice(0, k)  # before k in the block's order
    later = slice(0, k) if reverse else slice(k + 1, None)
    assert torch.equal(zm[:, earlier], z[:, earlier])
    assert not torch.allclose(zm[:, later], z[:, later])


def test_the_start_token_reads_the_label():
    layer = block(context=6).double()
    x = tokens().double()
    a, _ = layer(x, context(seed=2).double())
    b, _ = layer(x, context(seed=5).double())
    assert not torch.allclose(a[:, 0], b[:, 0])  # token 0's transform depends on the label
    with pytest.raises(ValueError, match="conditional"):
        layer(x)


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("conditional", [False, True])
def test_cached_inverse_equals_the_uncached_one(reverse, conditional, grad):
    # Without autograd (sampling) the cache is written in place, with it concatenated.
    layer = block(reverse, context=6 if conditional else 0, seed=4).double()
    ctx = context().double() if conditional else None
    z = tokens(seed=7).double()
    with torch.set_grad_enabled(grad):
        cached, ld_cached = layer.inverse(z, ctx)
        uncached, ld_uncached = layer.inverse_uncached(z, ctx)
    torch.testing.assert_close(cached, uncached, rtol=0, atol=1e-6)
    torch.testing.assert_close(ld_cached, ld_uncached, rtol=0, atol=1e-6)
    assert not torch.allclose(cached, z)  # the block does something
    forward, _ = layer(cached, ctx)
    torch.testing.assert_close(forward, z, rtol=0, atol=1e-9)


def test_bf16_runs_the_transformer_in_bf16_and_the_affine_maths_in_fp32():
    flow = build_flow("tarflow", height=4, width=8, patch_size=2, tar_width=8, tar_heads=2,
                      tar_layers=1, tar_blocks=2, precision="bf16")  # fmt: skip
    randomize(flow.body, scale=1.0)
    blocks = [m for m in flow.modules() if isinstance(m, AutoregressiveBlock)]
    assert blocks and all(b.runs_in_low_precision for b in blocks)
    assert all(b.autocast_dtype == torch.bfloat16 for b in blocks)
    seen = []
    hook = blocks[0].net.proj_out.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    y = torch.rand(2, 1, 4, 8, generator=torch.Generator().manual_seed(0))
    z, ld = flow(y)
    hook.remove()
    assert seen == [torch.bfloat16]
    assert z.dtype == torch.float32 and ld.dtype == torch.float32
    yr, _ = flow.inverse(z)
    assert yr.dtype == torch.float32
    # The forward and the cached inverse compute the same bf16 transformer (its attention in
    # fp32 in both) and fp32 maths: the round trip is exact to fp32's rounding.
    torch.testing.assert_close(yr, y, rtol=0, atol=1e-5)
    flow.precision = "fp32"
    z32, _ = flow(y)
    assert not torch.equal(z, z32)  # bf16 really changed what the transformer computed
    torch.testing.assert_close(z, z32, rtol=0.1, atol=0.1)


def bf16_block(conditional: bool, reverse: bool = False, seed: int = 4):
    layer = block(reverse, context=6 if conditional else 0, seed=seed)
    layer.autocast_dtype = torch.bfloat16
    return layer


@pytest.mark.parametrize("cached", [False, True])
def test_under_bf16_the_attention_runs_in_fp32_between_bf16_projections(cached, monkeypatch):
    # torch's CPU attention is several times slower in bf16: it is computed in fp32, from
    # q, k, v cast up, with autocast off (which would otherwise cast them back down).
    seen = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        seen.append((q.dtype, k.dtype, v.dtype, torch.is_autocast_enabled("cpu")))
        return sdpa(q, k, v, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    layer = bf16_block(conditional=True)
    into_out = []
    attention = layer.net.layers[0].attention
    attention.out.register_forward_hook(lambda m, i, o: into_out.append((i[0].dtype, o.dtype)))
    with torch.no_grad():
        if cached:
            layer.inverse(tokens(), context())
        else:
            layer(tokens(), context())
    calls = 2 * (6 if cached else 1)  # 2 layers, once per pass or once per token
    assert seen == [(torch.float32,) * 3 + (False,)] * calls
    assert set(into_out) == {(torch.bfloat16, torch.bfloat16)}  # cast back for autocast
    # Left in bf16 (the old way), the attention reads bf16 under autocast.
    seen.clear()
    for m in layer.modules():
        if hasattr(m, "upcast_attention"):
            m.upcast_attention = False
    layer(tokens(), context())
    assert seen == [(torch.bfloat16,) * 3 + (True,)] * 2


def test_in_fp32_the_attention_is_not_touched():
    # The cast to fp32 applies under autocast only: an fp32 (or fp64) flow computes exactly
    # what it did, bit for bit.
    for dtype in (torch.float32, torch.float64):
        layer = block(context=6, seed=4).to(dtype)
        x, ctx = tokens().to(dtype), context().to(dtype)
        z, ld = layer(x, ctx)
        cached, _ = layer.inverse(z, ctx)
        for m in layer.modules():
            if hasattr(m, "upcast_attention"):
                m.upcast_attention = False
        z_old, ld_old = layer(x, ctx)
        assert z.dtype == dtype and torch.equal(z, z_old) and torch.equal(ld, ld_old)
        assert torch.equal(cached, layer.inverse(z, ctx)[0])


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("conditional", [False, True])
def test_in_bf16_the_cached_inverse_is_close_to_the_uncached_and_to_fp32(reverse, conditional):
    layer = bf16_block(conditional, reverse)
    ctx = context() if conditional else None
    z = tokens(seed=7)
    with torch.no_grad():
        cached, ld_cached = layer.inverse(z, ctx)
        uncached, ld_uncached = layer.inverse_uncached(z, ctx)
        # Both read the same bf16-rounded keys and values, attended in fp32 (the cache holds
        # them cast up), row by row through the same projections: they agree to fp32's
        # rounding (bit for bit on the machine this was written on).
        torch.testing.assert_close(cached, uncached, rtol=0, atol=1e-4)
        torch.testing.assert_close(ld_cached, ld_uncached, rtol=0, atol=1e-4)
        assert not torch.allclose(cached, z, atol=1.0)  # the block moves tokens by several
        forward, _ = layer(cached, ctx)
        torch.testing.assert_close(forward, z, rtol=0, atol=1e-4)
        layer.autocast_dtype = None
        fp32, ld32 = layer.inverse(z, ctx)
    assert not torch.equal(cached, fp32)  # bf16 really ran
    # bf16's 8-bit mantissa: within 0.15 of fp32's tokens (moved by up to 7), log-dets 2%.
    torch.testing.assert_close(cached, fp32, rtol=0, atol=0.15)
    torch.testing.assert_close(ld_cached, ld32, rtol=2e-2, atol=0)


def test_in_bf16_sampling_casts_each_weight_once_and_keeps_the_affine_maths_in_fp32():
    from torch.utils._python_dispatch import TorchDispatchMode

    class Casts(TorchDispatchMode):
        """Counts the casts to bf16 of tensors of one shape (a layer's qkv weight)."""

        def __init__(self, shape):
            super().__init__()
            self.shape, self.count = shape, 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if (
                func is torch.ops.aten._to_copy.default
                and tuple(args[0].shape) == self.shape
                and kwargs.get("dtype") == torch.bfloat16
            ):
                self.count += 1
            return func(*args, **kwargs)

    layer = bf16_block(conditional=True)
    modes = []
    affine = layer._affine
    layer._affine = lambda *a: modes.append(torch.is_autocast_enabled("cpu")) or affine(*a)
    weight = layer.net.layers[0].attention.qkv.weight  # (24, 8), the 2 layers' alike
    with torch.no_grad(), Casts(tuple(weight.shape)) as casts:
        x, _ = layer.inverse(tokens(), context())
    # One autocast region for all 6 steps: each of the 2 layers' qkv weights is cast once,
    # not once per step (12).
    assert casts.count == 2
    assert modes == [False] * 6 and x.dtype == torch.float32


def test_the_preset_and_its_checks():
    config = FlowConfig.from_preset("tarflow")
    assert (config.arch, config.patch_size, config.tar_blocks) == ("tarflow", 4, 4)
    flow = build_flow(config)
    assert flow.body.patches.num_tokens == 98  # 7x14 patches of 4x4, 49 per digit
    assert len(flow.body.blocks) == 4
    assert [b.reverse for b in flow.body.blocks.transforms] == [False, True, False, True]
    with pytest.raises(ValueError, match=r"divisible by 5 and the width by 10, got 28x56"):
        FlowConfig.from_preset("tarflow", patch_size=5)
    with pytest.raises(ValueError, match=r"tar_width \(10\) must be divisible by tar_heads"):
        FlowConfig.from_preset("tarflow", tar_width=10)
    with pytest.raises(ValueError, match="coupling must be 'affine', got 'spline'"):
        FlowConfig.from_preset("tarflow", coupling="spline")
    with pytest.raises(ValueError, match="tar_layers must be a positive int, got 0"):
        FlowConfig.from_preset("tarflow", tar_layers=0)
    # A single image is cut row-major over all its width (one side).
    single = FlowConfig.from_preset("tarflow", layout="single", height=28, width=28)
    assert build_flow(single).body.patches.num_tokens == 49


@pytest.mark.parametrize("conditional", [False, True])
def test_a_tarflow_pairflow_encodes_decodes_and_samples(conditional):
    torch.manual_seed(0)
    flow = build_flow("tarflow", height=4, width=8, patch_size=2, tar_width=8, tar_heads=2,
                      tar_layers=1, tar_blocks=2, conditional=conditional)  # fmt: skip
    randomize(flow.body, scale=1.0)
    x = torch.randint(0, 256, (3, 1, 4, 8), dtype=torch.uint8)
    cond = torch.tensor([3, 47, 90]) if conditional else None
    bpd = flow.bits_per_dim(x, cond)
    assert torch.isfinite(bpd).all()
    flow.eval()
    assert torch.equal(flow.decode(flow.encode(x, cond), cond), x)
    samples = flow.sample((5,), cond=7 if conditional else None)
    assert samples.shape == (5, 1, 4, 8) and samples.dtype == torch.uint8
    assert samples.float().std() > 0


# ---- the command line end to end --------------------------------------------------------------

TINY = [
    "--set", "tar_width=8", "--set", "tar_heads=2", "--set", "tar_layers=1",
    "--set", "tar_blocks=2", "--set", "patch_size=7",
]  # fmt: skip


def train_args(root, out, *extra: str) -> list[str]:
    return [
        "train", "--preset", "tarflow", "--epochs", "1", "--batch-size", "16", "--num-pairs",
        "32", "--test-pairs", "16", "--data-dir", str(root), "--out", str(out), "--device",
        "cpu", "--precision", "fp32", "--sample-n", "4", "--no-progress", "--threads", "1",
        *TINY, *extra,
    ]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("conditional", [False, True])
def test_train_resume_sample_evaluate(tiny_mnist_root, tmp_path, conditional):
    from clitools import pairflow
    from pairflow.training import load_checkpoint

    run = tmp_path / "run"
    extra = ["--conditional"] if conditional else []
    first = pairflow(*train_args(tiny_mnist_root, run, *extra))
    assert "epoch 1: test bits/dim" in first.stdout
    saved = load_checkpoint(run / "last.pt")
    assert saved["model_config"]["arch"] == "tarflow"
    assert saved["model_config"]["patch_size"] == 7
    pairflow(*train_args(tiny_mnist_root, run, "--epochs", "2", "--resume", *extra))
    assert load_checkpoint(run / "last.pt")["epoch"] == 2
    out = tmp_path / "s.npz"
    label = ["--pair", "37"] if conditional else []
    pairflow("sample", str(run), "--n", "3", *label, "--seed", "1", "--out", str(out))
    images = np.load(out)["images"]
    assert images.shape == (3, 28, 56) and images.dtype == np.uint8 and images.std() > 0
    report = tmp_path / "eval.json"
    pairflow("evaluate", str(run), "--data-dir", str(tiny_mnist_root), "--out", str(report))
    bpd = json.loads(report.read_text())["bits_per_dim"]
    assert 0 < bpd < 8  # beats uniform pixels: ActNorm started the tokens from the data


@pytest.mark.slow
def test_a_bad_patch_size_is_refused_before_training(tiny_mnist_root, tmp_path):
    from clitools import pairflow

    run = tmp_path / "run"
    proc = pairflow(*train_args(tiny_mnist_root, run, "--set", "patch_size=5"), check=False)
    assert proc.returncode == 2, proc.stderr
    assert "divisible by 5 and the width by 10, got 28x56" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not run.exists()


@pytest.mark.parametrize(
    "parts",
    [
        dict(conditional=True, conditioning="prior"),
        dict(conditional=True, conditioning="mixture"),
        dict(prior="mixture"),
        dict(dequantization="variational", dequant_channels=4),
        dict(noise_sigma=0.1),
    ],
)
def test_the_body_takes_every_other_part(parts):
    torch.manual_seed(0)
    flow = build_flow("tarflow", height=4, width=8, patch_size=2, tar_width=8, tar_heads=2,
                      tar_layers=1, tar_blocks=2, **parts)  # fmt: skip
    randomize(flow.body, scale=1.0)
    x = torch.randint(0, 256, (4, 1, 4, 8), dtype=torch.uint8)
    cond = torch.tensor([3, 47, 90, 12]) if flow.config.conditional else None
    bpd = flow.bits_per_dim(x, cond)
    assert torch.isfinite(bpd).all()
    bpd.mean().backward()  # every part trains through the body
    assert all(p.grad is not None for p in flow.body.blocks.parameters())
    if flow.config.conditional:
        posterior = flow.class_posterior(x)  # the label marginalised over all 100
        torch.testing.assert_close(posterior.sum(1), torch.ones(4))
    samples = flow.eval().sample((3,))
    assert samples.shape == (3, 1, 4, 8) and samples.float().std() > 0
