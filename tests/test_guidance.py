"""Classifier-free guidance: label dropout's null label, and sampling guided by w.

The maths: w = 0 is the conditional model and w = -1 the unconditional one (the null label)
exactly, in float64, for every architecture and every conditioning that reads the label; the
guided flow stays invertible for a fixed w; training with dropout replaces labels by the
learned null label, and the null label never reaches p(y).
"""

from __future__ import annotations

import math

import pytest
import torch

from flowtools import jacobian_logdet, one_thread, randomize
from pairflow.flows import FlowConfig, build_flow
from pairflow.flows.guidance import (
    NULL_DIGIT,
    Guided,
    check_guidance,
    drop_labels,
    guide,
    null_labels,
)

TINY = {
    "mlp": dict(arch="mlp", hidden_features=8, num_couplings=4),
    "multiscale": dict(hidden_channels=4, num_blocks=1),
    "glow": dict(hidden_channels=4, num_blocks=1, glow_levels=2, glow_steps=2),
    "tarflow": dict(patch_size=2, tar_width=8, tar_heads=2, tar_layers=1, tar_blocks=2),
}


def tiny_flow(arch: str, conditioning: str, layout: str = "pair", dropout: float = 0.3, seed=0):
    """A tiny conditional flow with a null label, every weight random, in float64."""
    width = 8 if layout == "pair" else 4
    torch.manual_seed(seed)
    preset = "seed" if arch == "mlp" else arch
    flow = build_flow(
        preset, height=4, width=width, conditional=True, conditioning=conditioning,
        layout=layout, label_dropout=dropout, embed_dim=3, **TINY[arch],
    )  # fmt: skip
    return randomize(flow, seed=seed).double().eval()


def draw(flow, label, n: int, seed: int = 0) -> torch.Tensor:
    """The sampler before quantisation: z ~ the prior given ``label``, y = inverse(z)."""
    gen = torch.Generator().manual_seed(seed)
    z = flow.distribution.sample(n, label, temperature=0.8, generator=gen)
    y, _ = flow.inverse(z.double(), label)
    return y


CASES = [(arch, c) for arch in TINY for c in ("embedding", "both", "prior")]


@pytest.mark.parametrize("arch,conditioning", CASES)
def test_w0_is_the_conditional_model_and_w_minus1_the_unconditional_one_exactly(arch, conditioning):
    with one_thread():
        flow = tiny_flow(arch, conditioning)
        sides = flow.config.label_sides
        cond = torch.tensor([37, 5, 99, 40])
        conditional = draw(flow, cond, 4)
        unconditional = draw(flow, null_labels(4, sides), 4)
        # The label matters, else the equalities below could not fail.
        assert (conditional - unconditional).abs().max() > 1e-3
        assert torch.equal(draw(flow, guide(flow, cond, 0.0), 4), conditional)
        assert torch.equal(draw(flow, guide(flow, cond, -1.0), 4), unconditional)
        guided = draw(flow, guide(flow, cond, 1.5), 4)
        assert (guided - conditional).abs().max() > 1e-4
        # The public sampler (in fp32, as it runs): guidance=0 draws the conditional
        # model's images bit for bit.
        flow.float()
        gen = torch.Generator().manual_seed(3)
        plain = flow.sample((4,), cond=cond, generator=gen)
        gen = torch.Generator().manual_seed(3)
        assert torch.equal(flow.sample((4,), cond=cond, generator=gen, guidance=0.0), plain)


@pytest.mark.parametrize("arch,conditioning", CASES)
def test_the_guided_log_density_is_the_conditional_at_w0_and_the_unconditional_at_w_minus1(
    arch, conditioning
):
    # The forward direction (data -> latent, log p), as the sampler's test above checks the
    # inverse: every label-reading part's output is the label's at w = 0, the null's at -1.
    with one_thread():
        flow = tiny_flow(arch, conditioning)
        cond = torch.tensor([37, 5, 99, 40])
        gen = torch.Generator().manual_seed(5)
        y = torch.rand(4, *flow.config.shape, generator=gen, dtype=torch.float64) * 0.9 + 0.05

        def log_density(label) -> torch.Tensor:
            z, logabsdet = flow.latent(y, label)
            return flow.log_prior(z, label) + logabsdet

        conditional = log_density(cond)
        unconditional = log_density(null_labels(4, flow.config.label_sides))
        assert (conditional - unconditional).abs().max() > 1e-3
        assert torch.equal(log_density(guide(flow, cond, 0.0)), conditional)
        assert torch.equal(log_density(guide(flow, cond, -1.0)), unconditional)
        assert (log_density(guide(flow, cond, 1.5)) - conditional).abs().max() > 1e-4


def test_guidance_extrapolates_every_conditioner_output_linearly_in_w():
    # out(w) = out_c + w (out_c - out_u): the coupling's parameters and the prior's are affine
    # in w, so the prior's mean at w = 2 is 3 mu_c - 2 mu_u.
    flow = tiny_flow("multiscale", "both")
    cond = torch.tensor([37, 5])
    loc_c, ls_c = flow.distribution.params(cond)
    loc_u, ls_u = flow.distribution.params(null_labels(2, 2))
    loc, ls = flow.distribution.params(guide(flow, cond, 2.0))
    torch.testing.assert_close(loc, loc_c + 2 * (loc_c - loc_u), rtol=0, atol=1e-12)
    torch.testing.assert_close(ls, ls_c + 2 * (ls_c - ls_u), rtol=0, atol=1e-12)
    layer = next(m for m in flow.body.modules() if type(m).__name__.endswith("Coupling"))
    h = torch.randn(2, *_net_input_shape(flow, layer), dtype=torch.float64)
    ctx = Guided(flow.embedding(cond), flow.embedding(null_labels(2, 2)), 2.0)
    got = layer._params(h, ctx, h.dtype)
    c = layer._params(h, ctx.cond, h.dtype)
    u = layer._params(h, ctx.uncond, h.dtype)
    for g, a, b in zip(got, c, u, strict=True):
        assert (a - b).abs().max() > 1e-6
        torch.testing.assert_close(g, a + 2 * (a - b), rtol=0, atol=1e-12)


def _net_input_shape(flow, layer) -> tuple[int, ...]:
    """The shape of one sample at ``layer``'s conditioner's input, by a forward hook."""
    seen = {}

    def keep(module, args, out) -> None:
        seen.setdefault("x", args[0])

    handle = layer.net.register_forward_hook(keep)
    flow(torch.rand(1, *flow.config.shape, dtype=torch.float64) * 0.9 + 0.05, torch.tensor([1]))
    handle.remove()
    return tuple(seen["x"].shape[1:])


@pytest.mark.parametrize("arch", list(TINY))
def test_a_guided_flow_is_invertible_for_a_fixed_w(arch):
    with one_thread():
        flow = tiny_flow(arch, "both")
        cond = torch.tensor([37, 5, 99])
        label = guide(flow, cond, 1.5)
        z = flow.distribution.sample(3, label, generator=torch.Generator().manual_seed(0))
        h, ld_inv = flow.body.inverse(z, flow.context(label))
        # Sampling then encoding with the same w gives back z, the log-determinants cancel.
        z_back, ld = flow.body(h, flow.context(label))
        torch.testing.assert_close(z_back, z, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(ld + ld_inv, torch.zeros_like(ld), rtol=0, atol=1e-9)
        # The log-determinant is the guided map's own (autograd's slogdet), not the label's.
        ctx = flow.context(guide(flow, cond[:1], 1.5))
        fwd = jacobian_logdet(lambda v: flow.body(v, ctx)[0], h[:1])
        torch.testing.assert_close(ld[0], fwd, rtol=1e-9, atol=1e-8)
        plain = flow.body(h[:1], flow.context(cond[:1]))[1]
        assert (plain - ld[0]).abs() > 1e-6


def test_a_tarflow_block_extrapolates_each_tokens_shift_and_log_scale():
    # Token k's shift mu_k is (1 + w) mu_c - w mu_u; its raw log-scale likewise, before the
    # soft bound alpha = b tanh(. / b), as a coupling's affine map bounds its mixed output.
    flow = tiny_flow("tarflow", "embedding")
    block = flow.body.blocks.transforms[0]
    cond = torch.tensor([37, 5])
    ctx = Guided(flow.embedding(cond), flow.embedding(null_labels(2, 2)), 2.0)
    x = torch.randn(2, 8, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    raw_c, raw_u = block.net(x, ctx.cond), block.net(x, ctx.uncond)  # (B, N, 2F)
    alpha, mu = block.params(x, ctx)
    (s_c, mu_c), (s_u, mu_u) = raw_c.chunk(2, dim=-1), raw_u.chunk(2, dim=-1)
    assert (mu_c - mu_u).abs().max() > 1e-3 and (s_c - s_u).abs().max() > 1e-3
    torch.testing.assert_close(mu, mu_c + 2 * (mu_c - mu_u), rtol=0, atol=1e-12)
    b = block.scale_bound
    torch.testing.assert_close(
        alpha, b * torch.tanh((s_c + 2 * (s_c - s_u)) / b), rtol=0, atol=1e-12
    )


def test_tarflows_cached_guided_inverse_is_the_uncached_one_and_undoes_the_forward():
    with one_thread():
        flow = tiny_flow("tarflow", "both")
        cond = torch.tensor([37, 5, 99])
        ctx = flow.context(guide(flow, cond, 1.5))
        z = torch.randn(3, 8, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
        for block in flow.body.blocks.transforms:  # both token orders
            cached, ld_cached = block.inverse(z, ctx)  # two key-value caches, token by token
            uncached, ld_uncached = block.inverse_uncached(z, ctx)  # full passes, no cache
            torch.testing.assert_close(cached, uncached, rtol=0, atol=1e-10)
            torch.testing.assert_close(ld_cached, ld_uncached, rtol=0, atol=1e-10)
            plain, _ = block.inverse(z, flow.context(cond))
            assert (cached - plain).abs().max() > 1e-3  # guidance moved the tokens
            back, ld = block(cached, ctx)
            torch.testing.assert_close(back, z, rtol=0, atol=1e-10)
            torch.testing.assert_close(ld + ld_cached, torch.zeros(3, dtype=ld.dtype), atol=1e-10,
                                       rtol=0)  # fmt: skip
        # The whole flow at w = 1.5: images -> latents -> the cached inverse -> the images.
        label = guide(flow, cond, 1.5)
        gen = torch.Generator().manual_seed(3)
        y = torch.rand(3, 1, 4, 8, generator=gen, dtype=torch.float64) * 0.9 + 0.05
        latent, ld = flow.latent(y, label)
        y_back, ld_inv = flow.inverse(latent, label)
        torch.testing.assert_close(y_back, y, rtol=0, atol=1e-10)
        torch.testing.assert_close(ld + ld_inv, torch.zeros(3, dtype=ld.dtype), rtol=0, atol=1e-9)


def test_a_bf16_tarflows_guided_inverse_undoes_its_guided_forward():
    # Both passes run the bf16 transformer (attention in fp32) and mix in fp32, in the forward
    # and in the cached inverse alike: the guided round trip is exact to fp32's rounding.
    with one_thread():
        torch.manual_seed(0)
        flow = build_flow("tarflow", height=4, width=8, conditional=True, label_dropout=0.2,
                          embed_dim=3, precision="bf16", **TINY["tarflow"])  # fmt: skip
        randomize(flow, scale=1.0).eval()
        label = guide(flow, torch.tensor([37, 5, 99]), 1.5)
        y = torch.rand(3, 1, 4, 8, generator=torch.Generator().manual_seed(4)) * 0.9 + 0.05
        with torch.no_grad():
            z, ld = flow.latent(y, label)
            y_back, ld_inv = flow.inverse(z, label)
            flow.precision = "fp32"
            z32, _ = flow.latent(y, label)
        assert z.dtype == torch.float32 and not torch.equal(z, z32)  # bf16 really ran
        torch.testing.assert_close(y_back, y, rtol=0, atol=1e-5)
        torch.testing.assert_close(ld + ld_inv, torch.zeros(3), rtol=0, atol=1e-4)


def test_a_tarflow_with_label_dropout_is_guidable_because_its_blocks_follow_guidance(
    monkeypatch,
):
    from pairflow.flows.guidance import why_not_guidable
    from pairflow.flows.tarflow import AutoregressiveBlock

    flow = tiny_flow("tarflow", "embedding")
    assert why_not_guidable(flow) is None and flow.guidable
    # The declaration is what lets it through: without it the blocks are refused by name.
    monkeypatch.setattr(AutoregressiveBlock, "follows_guidance", False)
    assert "AutoregressiveBlock does not follow guidance" in why_not_guidable(flow)


def test_single_images_are_guided_too():
    flow = tiny_flow("multiscale", "both", layout="single")
    cond = torch.tensor([3, 7])
    assert torch.equal(draw(flow, guide(flow, cond, 0.0), 2), draw(flow, cond, 2))
    assert torch.equal(draw(flow, guide(flow, cond, -1.0), 2), draw(flow, null_labels(2, 1), 2))


def test_label_dropout_trains_the_null_label():
    # With dropout near 1 every side is null: the training loss is the unconditional
    # model's, whatever the label, and only the null label's parameters get gradients.
    flow = tiny_flow("multiscale", "both", dropout=1 - 1e-12)
    x = torch.randint(0, 256, (4, 1, 4, 8), dtype=torch.uint8)
    flow.train()
    losses = []
    for cond in (torch.tensor([37, 5, 99, 40]), torch.tensor([0, 11, 22, 33])):
        losses.append(flow.log_prob(x, cond, generator=torch.Generator().manual_seed(1)))
    torch.testing.assert_close(losses[0], losses[1], rtol=0, atol=0)
    flow.eval()  # no dropout: the label is read again, and the null label scores as trained
    null = null_labels(4, 2)
    y, log_q = flow.dequantizer.dequantize(x, torch.Generator().manual_seed(1))
    z, ld = flow.latent(y, null)
    torch.testing.assert_close(losses[0], flow.log_prior(z, null) + ld - log_q)
    assert not torch.equal(flow.log_prob(x, torch.tensor([37, 5, 99, 40])), losses[0])
    flow.train()
    losses[0].sum().backward()
    assert flow.embedding.null.grad.abs().sum() > 0
    assert flow.distribution.null_loc.grad.abs().sum() > 0
    assert flow.embedding.weight.grad is None or flow.embedding.weight.grad.abs().sum() == 0


def test_drop_labels_nulls_each_side_at_its_rate_and_keeps_the_rest():
    cond = torch.randint(0, 100, (20_000,), generator=torch.Generator().manual_seed(0))
    digits = drop_labels(cond, 0.25, 2, torch.Generator().manual_seed(1))
    dropped = digits == NULL_DIGIT
    for side in range(2):
        assert abs(dropped[:, side].float().mean().item() - 0.25) < 0.015
    both = (dropped[:, 0] & dropped[:, 1]).float().mean().item()
    assert abs(both - 0.25**2) < 0.01  # independently per side
    kept = torch.stack([cond // 10, cond % 10], dim=1)
    assert torch.equal(digits[~dropped], kept[~dropped])


def test_the_null_label_never_reaches_p_y():
    flow = tiny_flow("multiscale", "both")
    counts = torch.arange(100, dtype=torch.float64) + 1
    flow.set_label_counts(counts)
    assert flow.log_label_probs().shape == (100,)
    torch.testing.assert_close(flow.log_label_probs().exp(), counts / counts.sum())
    flow.train()  # labels drawn from p(y) are real labels, never the null one
    labels = flow.sample_labels(5000, torch.Generator().manual_seed(0))
    assert labels.min() >= 0 and labels.max() <= 99


def test_a_model_without_dropout_refuses_guidance_and_loads_as_before():
    torch.manual_seed(0)
    plain = build_flow("multiscale", height=4, width=8, hidden_channels=4, num_blocks=1,
                       conditional=True, conditioning="both")  # fmt: skip
    torch.manual_seed(0)
    dropout = build_flow("multiscale", height=4, width=8, hidden_channels=4, num_blocks=1,
                         conditional=True, conditioning="both", label_dropout=0.1)  # fmt: skip
    assert not plain.guidable and dropout.guidable
    # The null label is new parameters only: the rest is as ever, seeded build included.
    extra = set(dropout.state_dict()) - set(plain.state_dict())
    assert extra == {"embedding.null", "distribution.null_loc", "distribution.null_log_scale"}
    for name, value in plain.state_dict().items():
        assert torch.equal(dropout.state_dict()[name], value), name
    with pytest.raises(ValueError, match="label_dropout=0"):
        plain.sample((2,), cond=torch.tensor([1, 2]), guidance=1.0)
    with pytest.raises(ValueError, match="label dropout"):
        plain.check_guidance(0.0)


@pytest.mark.parametrize("bad", [math.nan, math.inf, 21.0, "1", True, None])
def test_bad_guidance_weights_are_refused_by_name(bad):
    with pytest.raises(ValueError, match="guidance must be a finite number"):
        check_guidance(bad)
    flow = tiny_flow("mlp", "embedding")
    if bad is not None:
        with pytest.raises(ValueError, match="guidance must be"):
            flow.sample((1,), guidance=bad)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(label_dropout=0.1),  # unconditional
        dict(label_dropout=0.1, conditional=True, conditioning="mixture"),
        dict(label_dropout=1.0, conditional=True),
        dict(label_dropout=-0.1, conditional=True),
    ],
)
def test_label_dropout_config_errors_name_the_value(overrides):
    with pytest.raises(ValueError, match="label_dropout"):
        FlowConfig.from_preset("multiscale", **overrides)


def test_label_free_sampling_of_a_guided_model_draws_labels_from_p_y():
    flow = tiny_flow("multiscale", "both").float()
    flow.set_label_counts(torch.eye(100)[37] * 5)  # p(y) all on 37
    gen = torch.Generator().manual_seed(0)
    free = flow.sample((3,), generator=gen, guidance=1.0)
    gen = torch.Generator().manual_seed(0)
    flow.sample_labels(3, gen)  # the label-free sampler's first draw
    z = flow.distribution.sample(3, guide(flow, torch.full((3,), 37), 1.0), generator=gen)
    h, _ = flow.body.inverse(z, flow.context(guide(flow, torch.full((3,), 37), 1.0)))
    from pairflow.flows.preprocessing import quantize

    assert torch.equal(free, quantize(flow.logit.inverse(h)[0]))


def test_a_fine_tunes_new_null_label_starts_at_the_digits_average():
    from pairflow.flows.guidance import start_null_label

    flow = tiny_flow("multiscale", "both")
    lines = start_null_label(flow)
    assert lines and "embedding, prior" in lines[0]
    weight = flow.embedding.weight.view(2, 10, -1)
    torch.testing.assert_close(flow.embedding.null, weight.mean(1))
    torch.testing.assert_close(flow.distribution.null_loc, flow.distribution.loc.mean(1))
    assert start_null_label(tiny_flow("multiscale", "both", dropout=0.0)) == []


def test_the_guidance_page_runs_as_printed():
    """docs/guidance.md: its Python runs, and every flag of its commands exists."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "guidance.md").read_text()
    for block in re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
        exec(compile(block, "docs/guidance.md", "exec"), {})
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.splitlines():
            command = line.split()[1]
            helptext = subprocess.run(
                [sys.executable, "-m", "pairflow", command, "--help"],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            for flag in re.findall(r"\s(--[a-z-]+)", line):
                assert flag in helptext, (line, flag)


def test_the_denoising_step_follows_the_guided_flow():
    # A flow trained with noise ends sampling with h + sigma^2 grad log p(h): under guidance
    # the score is the guided flow's own, so w = 0 still draws the conditional model's images.
    torch.manual_seed(0)
    flow = build_flow("multiscale", height=4, width=8, hidden_channels=4, num_blocks=1,
                      conditional=True, conditioning="both", label_dropout=0.2,
                      noise_sigma=0.3)  # fmt: skip
    flow = randomize(flow).eval()
    cond = torch.tensor([37, 5, 99])

    def draw_with(**kw):
        return flow.sample((3,), cond=cond, generator=torch.Generator().manual_seed(0), **kw)

    assert torch.equal(draw_with(guidance=0.0), draw_with())
    h = torch.randn(3, 1, 4, 8)
    step = flow.denoise_logits(h, guide(flow, cond, 2.0)) - h
    plain = flow.denoise_logits(h, cond) - h
    assert (step - plain).abs().max() > 1e-4  # the guided score differs from the label's
    # and is sigma^2 times the gradient of the guided log-density, by autograd here.
    label = guide(flow, cond, 2.0)
    v = h.clone().requires_grad_(True)
    z, ld = flow.body(v, flow.context(label))
    (grad,) = torch.autograd.grad((flow.log_prior(z, label) + ld).sum(), v)
    torch.testing.assert_close(step, 0.3**2 * grad)


def test_a_fine_tune_keeps_label_dropout_where_it_reads_the_same_labels():
    # The null label is a weight of the source: kept by a fine-tune that reads the source's
    # labels (a conditional one, or the clusters it keeps), not by one that reads none.
    from pairflow.flows.prepare import inherited_fields

    cond = {"conditional": True, "label_dropout": 0.1}
    assert inherited_fields(cond, {}, conditional=True)["label_dropout"] == 0.1
    assert "label_dropout" not in inherited_fields(cond, {}, conditional=False)
    assert "label_dropout" not in inherited_fields(cond, {"label_dropout": 0.2}, conditional=True)
    clusters = {"clusters": 10, "conditioning": "both", "label_dropout": 0.1}
    assert inherited_fields(clusters, {}, conditional=False)["label_dropout"] == 0.1
    assert "label_dropout" not in inherited_fields(clusters, {"clusters": 0}, conditional=False)
    assert "label_dropout" not in inherited_fields({"clusters": 10}, {}, conditional=False)
    # clusters split (--set clusters=k): its conditioning and null label kept, not its count
    prior = {"clusters": 3, "conditioning": "prior", "label_dropout": 0.1}
    split = inherited_fields(prior, {"clusters": 12}, conditional=False)
    assert split == {"conditioning": "prior", "label_dropout": 0.1}
    assert inherited_fields(prior, {"clusters": 12}, conditional=True) == {}
