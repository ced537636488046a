"""Conditional flows of single images (``layout="single"``): one class label 0..9 per image.

The maths, on tiny 1- and 3-channel images: invertibility and log-determinants against
autograd for the label-reading flows, the class prior as Glow's (one mean and scale per class
over the whole latent), the exact marginal against brute force over the 10 labels, p(y | x)
normalised, label draws following p(y); and pair models exactly as they were.
"""

from __future__ import annotations

import math

import pytest
import torch

from flowtools import check_transform, one_thread, randomize
from pairflow.flows import (
    AffineCoupling,
    ConvResNet,
    FlowConfig,
    LabelEmbedding,
    LabelNormal,
    build_flow,
    channel_mask,
    checkerboard_mask,
)
from pairflow.flows.mixture import ClassMixture
from pairflow.flows.nets import label_context_map
from pairflow.training.checkpoint import upgrade_state

CONDITIONINGS = ("embedding", "prior", "both", "mixture")
SHAPES = ((1, 4, 4), (3, 4, 4))


def tiny_single(arch: str, shape, conditioning: str = "both", seed: int = 0, **extra):
    """A randomised tiny conditional flow of single images."""
    c, h, w = shape
    preset = "seed" if arch == "mlp" else arch
    sizes = dict(hidden_channels=4, num_blocks=1, hidden_features=8, glow_levels=1, glow_steps=2)
    if arch == "multiscale":  # two scales: checkerboard, channel-wise, factor out, checkerboard
        sizes.update(checkerboard_couplings=1, channel_couplings=2, final_couplings=2)
    config = FlowConfig.from_preset(
        preset, channels=c, height=h, width=w, conditional=True, conditioning=conditioning,
        layout="single", embed_dim=3, **sizes, **extra,
    )  # fmt: skip
    return randomize(build_flow(config), seed=seed).eval()


def pixels(n: int, shape, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *shape), generator=gen, dtype=torch.uint8)


# ------------------------------------------------------------------------- the config
def test_config_knows_its_label_sides_and_classes_and_old_configs_are_pairs():
    pair = FlowConfig.from_preset("multiscale", conditional=True)
    single = FlowConfig.from_preset("multiscale", conditional=True, layout="single")
    assert (pair.layout, pair.label_sides, pair.num_classes) == ("pair", 2, 100)
    assert (single.label_sides, single.num_classes) == (1, 10)
    saved = pair.to_dict()
    del saved["layout"]  # a checkpoint from before the field
    assert FlowConfig.from_dict(saved).num_classes == 100
    with pytest.raises(ValueError, match="unknown layout 'triple'; valid: pair, single"):
        FlowConfig(layout="triple")


def test_pair_and_single_parameters_have_their_own_shapes():
    pair = build_flow("multiscale", height=4, width=8, hidden_channels=4, conditional=True)
    single = build_flow("multiscale", height=4, width=4, hidden_channels=4, conditional=True,
                        layout="single")  # fmt: skip
    assert pair.embedding.weight.shape == (20, 8) and single.embedding.weight.shape == (10, 8)
    assert pair.distribution.loc.shape == (2, 10, 1, 4, 4)
    assert single.distribution.loc.shape == (1, 10, 1, 4, 4)
    assert pair.distribution.class_probs.shape == (100,)
    assert single.distribution.class_probs.shape == (10,)
    mixture = build_flow("glow", height=4, width=4, hidden_channels=4, conditional=True,
                         conditioning="mixture", layout="single", glow_levels=1)  # fmt: skip
    assert mixture.distribution.class_probs.shape == (10,) and mixture.label_passes == 1
    assert single.label_passes == 10 and pair.label_passes == 100


# ------------------------------------------------------------------------- embedding
def test_single_embedding_is_one_class_vector_over_the_whole_image():
    emb = LabelEmbedding(3, sides=1)
    ctx = emb(torch.tensor([7, 2]))  # (B, 1, E)
    assert torch.equal(ctx[:, 0], emb.weight[[7, 2]])
    spread = label_context_map(ctx, 2, 5)  # (B, E, H, W)
    assert torch.equal(spread, ctx[:, 0, :, None, None].expand(2, 3, 2, 5))


def test_pair_embedding_is_left_digit_on_the_left_half_right_digit_on_the_right():
    emb = LabelEmbedding(3)
    ctx = emb(torch.tensor([37]))
    assert torch.equal(ctx[0], emb.weight[[3, 17]])
    spread = label_context_map(ctx, 2, 4)
    assert torch.equal(spread[0, :, :, :2], ctx[0, 0, :, None, None].expand(3, 2, 2))
    assert torch.equal(spread[0, :, :, 2:], ctx[0, 1, :, None, None].expand(3, 2, 2))


# ------------------------------------------------------------------------- transforms
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}ch")
@pytest.mark.parametrize("arch", ["multiscale", "glow", "mlp"])
def test_single_conditional_flow_inverts_and_its_logdet_matches_autograd(arch, shape):
    """y -> z through logit, embedding-reading couplings (and 1x1 convs, ActNorm), per label."""
    flow = tiny_single(arch, shape, "embedding", seed=1)
    y = torch.rand((2, *shape), generator=torch.Generator().manual_seed(2)) * 0.9 + 0.05
    with one_thread():
        check_transform(flow, y, torch.tensor([3, 8]))
        z3 = flow.double()(y.double(), torch.tensor([3, 3]))[0]
        z8 = flow(y.double(), torch.tensor([8, 8]))[0]
    assert not torch.allclose(z3, z8), "the couplings must read the label"


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("mask", ["checkerboard", "channel"])
def test_coupling_reading_a_single_class_context_inverts_with_autograd_logdet(mask, channels):
    """RealNVP's masked checkerboard (the conditioner sees the whole image plus the class
    vector everywhere) and the channel-wise gather coupling, context (B, 1, E)."""
    shape = (2 * channels if mask == "channel" else channels, 4, 4)
    mask_fn = checkerboard_mask if mask == "checkerboard" else channel_mask
    layer = AffineCoupling(
        mask_fn(*shape, parity=1), lambda i, o: ConvResNet(i, o, hidden=4, num_blocks=1,
                                                           context_features=3)
    )  # fmt: skip
    layer = randomize(layer, seed=5)
    g = torch.Generator().manual_seed(0)
    x = torch.randn((2, *shape), generator=g)
    context = LabelEmbedding(3, sides=1)(torch.tensor([4, 9])).detach()  # (B, 1, E)
    with one_thread():
        check_transform(layer, x, context)
        z4 = layer.double()(x.double(), context[:1].double().expand(2, 1, 3))[0]
        z9 = layer(x.double(), context[1:].double().expand(2, 1, 3))[0]
    assert not torch.allclose(z4, z9), "the conditioner must read the class"


def test_old_single_image_checkpoints_learn_their_layout_and_pairs_stay_pairs():
    def state(layout):
        return {"kind": "flow", "version": 3, "model": {}, "model_config": {"conditional": False},
                "train_config": {"layout": layout}}  # fmt: skip

    assert upgrade_state(state("single"))["model_config"]["layout"] == "single"
    assert "layout" not in upgrade_state(state("pair"))["model_config"]  # the default: pairs


# ------------------------------------------------------------------------- the prior
def test_single_label_prior_is_one_gaussian_per_class_over_the_whole_latent():
    prior = randomize(LabelNormal((3, 2, 3), sides=1), seed=4).double()
    z = torch.randn(4, 3, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    cond = torch.tensor([0, 9, 4, 4])
    loc, scale = prior.loc[0, cond], prior.log_scale[0, cond].exp()
    expected = torch.distributions.Normal(loc, scale).log_prob(z).flatten(1).sum(1)
    torch.testing.assert_close(prior.log_prob(z, cond), expected)
    columns = prior.log_prob_components(z)  # (B, 10)
    assert columns.shape == (4, 10)
    for y in range(10):
        torch.testing.assert_close(columns[:, y], prior.log_prob(z, torch.full((4,), y)))
    eps = torch.randn(4, 3, 2, 3, generator=torch.Generator().manual_seed(5)).double()
    drawn = prior.sample(4, cond, temperature=0.5, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(drawn, loc + scale * 0.5 * eps)


def test_single_class_mixture_is_the_10_component_mixture():
    prior = randomize(ClassMixture((1, 2, 3), sides=1), seed=6).double()
    prior.set_class_counts(torch.arange(1.0, 11.0))
    z = torch.randn(5, 1, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    log_py = torch.log(torch.arange(1.0, 11.0, dtype=torch.float64) / 55)
    brute = torch.stack([log_py[y] + prior.log_prob(z, torch.full((5,), y)) for y in range(10)])
    torch.testing.assert_close(prior.log_prob(z), torch.logsumexp(brute, 0))
    torch.testing.assert_close(prior.log_posterior(z).exp().sum(1), torch.ones(5, dtype=z.dtype))
    with pytest.raises(ValueError, match="class counts must be 10 non-negative numbers"):
        prior.set_class_counts(torch.ones(100))


def test_single_class_mixture_fit_is_the_per_class_mean_and_std():
    prior = ClassMixture((1, 2, 2), sides=1)
    g = torch.Generator().manual_seed(0)
    cond = torch.arange(10).repeat(30)
    z = torch.randn(300, 1, 2, 2, generator=g) * 0.5 + cond[:, None, None, None].float()
    prior.fit(z, cond)
    for y in (0, 7):
        torch.testing.assert_close(prior.loc[0, y], z[cond == y].mean(0))
        std = z[cond == y].std(0, correction=0)
        torch.testing.assert_close(prior.log_scale[0, y], std.log())


# ------------------------------------------------------------------------- the model of p(x)
@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_marginal_is_brute_force_over_the_10_labels_and_posterior_sums_to_one(conditioning):
    shape = (3, 4, 4) if conditioning in ("both", "mixture") else (1, 4, 4)
    flow = tiny_single("multiscale", shape, conditioning, seed=3)
    counts = torch.tensor([5.0, 1, 0, 2, 8, 3, 1, 1, 4, 2])
    flow.set_label_counts(counts)
    x = pixels(3, shape)
    with one_thread(), torch.no_grad():
        marginal = flow.log_prob(x, generator=torch.Generator().manual_seed(9))
        columns = []
        for y in range(10):
            gen = torch.Generator().manual_seed(9)  # the same dequantization noise
            columns.append(flow.log_prob(x, torch.full((3,), y), generator=gen))
        brute = torch.logsumexp(torch.log(counts / counts.sum())[:, None] + torch.stack(columns), 0)
        posterior = flow.class_posterior(x)
    torch.testing.assert_close(marginal, brute, rtol=1e-5, atol=1e-4)
    assert posterior.shape == (3, 10)
    torch.testing.assert_close(posterior.sum(1), torch.ones(3))
    assert bool((posterior[:, 2] == 0).all()), "a class never seen has p(y | x) = 0"
    assert flow.classify(x).shape == (3,)


def test_label_draws_follow_p_y_and_label_free_samples_work():
    flow = tiny_single("glow", (1, 4, 4), "both", seed=2)
    counts = torch.tensor([1.0, 0, 2, 0, 0, 4, 0, 0, 0, 3])
    flow.set_label_counts(counts)
    n = 20_000
    drawn = flow.sample_labels(n, torch.Generator().manual_seed(0))
    freq = torch.bincount(drawn, minlength=10).double() / n
    p = (counts / counts.sum()).double()
    # Each frequency within 5 binomial standard errors; labels never seen never drawn.
    assert bool(((freq - p).abs() <= 5 * (p * (1 - p) / n).sqrt() + 1e-12).all()), freq
    with one_thread():
        images = flow.sample(4, generator=torch.Generator().manual_seed(1))
        mixture = tiny_single("glow", (3, 4, 4), "mixture", seed=2)
        mixture.set_label_counts(counts)
        z, y = mixture.distribution.sample_with_labels(3, generator=torch.Generator())
        coloured = mixture.sample(2, temperature=0.5)
    assert images.shape == (4, 1, 4, 4) and images.dtype == torch.uint8
    assert coloured.shape == (2, 3, 4, 4) and set(y.tolist()) <= {0, 2, 5, 9}


@pytest.mark.parametrize("bad", [10, 37, -1])
def test_labels_outside_0_to_9_are_refused_with_the_valid_range(bad):
    flow = tiny_single("multiscale", (1, 4, 4), "embedding")
    x = pixels(2, (1, 4, 4))
    with pytest.raises(ValueError, match=r"class labels must be in 0\.\.9.*single images"):
        flow.log_prob(x, bad)
    with pytest.raises(ValueError, match=r"class labels must be in 0\.\.9"):
        flow.sample(2, cond=bad)
    with pytest.raises(ValueError, match="class counts must be 10"):
        flow.set_label_counts(torch.ones(10, 10))


def test_bits_per_dim_given_the_label_uses_the_single_image_dimension():
    flow = tiny_single("multiscale", (3, 4, 4), "prior")
    x = pixels(2, (3, 4, 4))
    gen = torch.Generator().manual_seed(0)
    with one_thread():
        bpd = flow.bits_per_dim(x, torch.tensor([1, 2]), generator=gen)
        log_p = flow.log_prob(x, torch.tensor([1, 2]), generator=torch.Generator().manual_seed(0))
    d = 3 * 4 * 4
    torch.testing.assert_close(bpd, (-log_p + d * math.log(256)) / (d * math.log(2)))


# ------------------------------------------------------------------------- pairs unchanged
def test_pair_models_compute_what_they_did():
    """The pair prior's and embedding's maths, written out as before single images existed."""
    prior = randomize(LabelNormal((1, 2, 4)), seed=1).double()
    z = torch.randn(3, 1, 2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    cond = torch.tensor([37, 5, 99])
    left, right = cond // 10, cond % 10
    loc = torch.cat([prior.loc[0, left], prior.loc[1, right]], dim=-1)
    log_scale = torch.cat([prior.log_scale[0, left], prior.log_scale[1, right]], dim=-1)
    expected = torch.distributions.Normal(loc, log_scale.exp()).log_prob(z).flatten(1).sum(1)
    torch.testing.assert_close(prior.log_prob(z, cond), expected)
    columns = prior.log_prob_components(z)
    assert columns.shape == (3, 100)
    torch.testing.assert_close(columns[torch.arange(3), cond], expected)
    emb = LabelEmbedding(2)
    assert torch.equal(emb(cond), emb.weight[torch.stack([left, 10 + right], 1)])
