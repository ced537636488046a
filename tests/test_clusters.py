"""A flow that reads its own clusters: the clusters, the bound it reports against its exact
density, its samples, its fine-tunes and the CLI end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from clitools import pairflow
from pairflow.flows import FlowConfig, PixelClusters, build_flow
from pairflow.training import TrainConfig, load_checkpoint, load_model, train

TINY = dict(height=4, width=8, hidden_channels=4, num_blocks=1)


def cluster_flow(k: int = 2, conditioning: str = "both", **kw):
    """A tiny multiscale flow reading k clusters per side, randomised, with fitted centres."""
    torch.manual_seed(0)
    flow = build_flow("multiscale", clusters=k, conditioning=conditioning, **TINY, **kw)
    with torch.no_grad():
        for p in flow.parameters():  # off the identity start, so every part matters
            p.add_(0.2 * torch.randn_like(p))
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (40, 1, 4, 8), generator=g, dtype=torch.uint8)
    flow.clusters.fit_sides(images)
    side = flow.clusters.label_counts(torch.cat([images[..., :4], images[..., 4:]])).double()
    base = flow.config.label_base
    table = torch.zeros(base, base, dtype=torch.float64)
    table[:k, :k] = side[:, None] * side[None, :]
    flow.set_label_counts(table)
    return flow, images


def test_an_image_takes_its_sides_nearest_centres_as_a_pair_label():
    clusters = PixelClusters(3, (1, 2, 4), sides=2)
    centres = torch.stack([torch.full((1, 2, 2), v) for v in (0.0, 100.0, 250.0)])
    clusters.set_centres(centres)
    left = [10, 90, 200, 255]  # nearest: 0, 1, 2, 2
    right = [180, 0, 120, 40]  # nearest: 2, 0, 1, 0
    sides = [
        (torch.full((1, 2, 2), a), torch.full((1, 2, 2), b))
        for a, b in zip(left, right, strict=True)
    ]
    x = torch.stack([torch.cat(pair, -1) for pair in sides]).to(torch.uint8)
    assert clusters(x).tolist() == [2, 10, 21, 20]
    single = PixelClusters(3, (1, 2, 2), sides=1)
    single.set_centres(centres)
    assert single(x[..., :2]).tolist() == [0, 1, 2, 2]


def test_more_than_ten_clusters_per_side_write_labels_in_base_k():
    """12 clusters per side: labels 12 a + b (0..143), read back by the embedding and the
    label prior as the digits (a, b); up to 10 they stay 10 a + b, like a pair label."""
    from pairflow.flows.distributions import LabelNormal
    from pairflow.flows.guidance import label_digits
    from pairflow.flows.labels import LabelEmbedding

    clusters = PixelClusters(12, (1, 1, 2), sides=2)
    clusters.set_centres(torch.arange(12.0).mul(20).view(12, 1, 1, 1))
    x = torch.tensor([[[[220, 20]]], [[[0, 200]]], [[[41, 239]]]], dtype=torch.uint8)
    assert clusters.base == 12 and clusters(x).tolist() == [11 * 12 + 1, 10, 2 * 12 + 11]
    assert PixelClusters(10, (1, 1, 2), sides=2).base == 10
    labels = torch.tensor([143, 10, 35])
    assert [d.tolist() for d in label_digits(labels, 2, 12)] == [[11, 0, 2], [11, 10, 11]]
    config = FlowConfig.from_preset("multiscale", **TINY, clusters=12, conditioning="both")
    assert (config.label_base, config.num_classes) == (12, 144)
    assert FlowConfig.from_preset("multiscale", **TINY, clusters=7).num_classes == 100
    torch.manual_seed(0)
    embed = LabelEmbedding(3, sides=2, base=12)
    assert embed.weight.shape == (24, 3)
    torch.testing.assert_close(embed(labels)[2], embed.weight[[2, 12 + 11]])
    prior = LabelNormal((1, 2, 4), sides=2, base=12)
    with torch.no_grad():
        prior.loc.normal_()
        prior.log_scale.normal_(std=0.3)
    z = torch.randn(5, 1, 2, 4, dtype=torch.float64)
    prior = prior.double()
    columns = prior.log_prob_components(z)  # (5, 144), column 12 a + b
    assert columns.shape == (5, 144)
    for y in (0, 13, 35, 143):
        want = prior.log_prob(z, torch.full((5,), y))
        torch.testing.assert_close(columns[:, y], want, rtol=0, atol=1e-10)


def test_fitted_centres_are_the_means_of_their_kmeans_clusters():
    g = torch.Generator().manual_seed(0)
    dark = torch.randint(0, 30, (20, 1, 2, 2), generator=g)
    bright = torch.randint(200, 256, (12, 1, 2, 2), generator=g)
    images = torch.cat([dark, bright]).to(torch.uint8)
    clusters = PixelClusters(2, (1, 2, 4), sides=2)
    assert not clusters.fitted
    with pytest.raises(ValueError, match="no centres yet"):
        clusters(torch.zeros(1, 1, 2, 4, dtype=torch.uint8))
    assign = clusters.fit(images)
    assert clusters.fitted and sorted(torch.bincount(assign).tolist()) == [12, 20]
    for j in range(2):
        want = images[assign == j].double().mean(0)
        torch.testing.assert_close(clusters.centres[j].double(), want, rtol=0, atol=1e-4)
    assert clusters.label_counts(images).sum() == 32
    with pytest.raises(ValueError, match="at least 2 training images"):
        PixelClusters(2, (1, 2, 4), sides=2).fit(images[:1])
    with pytest.raises(ValueError, match="single images of shape"):
        PixelClusters(2, (1, 2, 4), sides=2).fit(torch.zeros(5, 1, 2, 4, dtype=torch.uint8))


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(clusters=1), "0 \\(none\\) or 2..80"),
        (dict(clusters=81), "0 \\(none\\) or 2..80"),
        (dict(clusters=True), "clusters: expected an integer"),
        (dict(clusters=3, conditional=True), "a conditional flow reads its labels"),
        (dict(clusters=3, prior="mixture"), "prior 'normal'"),
        (dict(clusters=3, conditioning="mixture"), "conditioning 'embedding'"),
    ],
)
def test_bad_cluster_settings_are_refused_by_name(fields, message):
    with pytest.raises(ValueError, match=message):
        FlowConfig.from_preset("multiscale", **TINY, **fields)


@pytest.mark.parametrize("k", [3, 12])
def test_its_bits_per_dim_is_the_mixture_term_at_its_own_clusters_below_the_exact_density(k):
    """log_prob(x) = log p(c(x)) + log p(x | c(x)) exactly (float64, one dequantization draw),
    and the exact log p(x) = logsumexp_c [log p(c) + log p(x | c)] is above it; with more
    than 10 clusters per side over k * k cluster labels."""
    flow, images = cluster_flow(k)
    flow = flow.double().eval()
    x = images[:8]
    own = flow.own_labels(x)
    assert len(set(own.tolist())) > 1  # the images fall in several cluster pairs
    bound = flow.log_prob(x, generator=torch.Generator().manual_seed(5))
    columns = flow.class_log_likelihoods(x, torch.Generator().manual_seed(5))  # (B, K)
    assert columns.shape == (8, max(10, k) ** 2)
    log_pc = flow.log_label_probs()
    want = log_pc[own] + columns.gather(1, own[:, None]).squeeze(1)
    torch.testing.assert_close(bound, want, rtol=0, atol=1e-9)
    exact = flow.marginal_log_prob(x, torch.Generator().manual_seed(5))
    manual = torch.stack(
        [torch.logsumexp(torch.stack([log_pc[c] + columns[i, c] for c in range(len(log_pc))
                                      if log_pc[c] > -math.inf]), 0) for i in range(8)]
    )  # fmt: skip
    torch.testing.assert_close(exact, manual, rtol=0, atol=1e-9)
    assert (exact >= bound - 1e-9).all() and (exact > bound + 1e-6).any()
    assert flow.bits_per_dim_is_bound
    # What it is a bound over, as the card and the app say: the cluster pair, and the learned
    # dequantization where the flow has one too.
    assert flow.bound_over == ("the images' own cluster pair",)
    both = build_flow("multiscale", clusters=3, conditioning="both", dequantization="variational",
                      **TINY)  # fmt: skip
    assert both.bound_over == ("variational dequantization", "the images' own cluster pair")
    with pytest.raises(ValueError, match="unconditional"):
        flow.log_prob(x, cond=torch.zeros(8, dtype=torch.int64))  # it takes no label


def test_it_is_the_conditional_flow_given_its_clusters():
    """The same weights as a conditional flow: the cluster flow's log_prob is the conditional
    one at c(x) plus log p(c(x)); its samples are the conditional flow's label-free ones."""
    flow, images = cluster_flow(2, conditioning="both")
    flow.eval()
    config = dict(flow.config.to_dict(), clusters=0, conditional=True)
    conditional = build_flow(FlowConfig.from_dict(config)).eval()
    state = {k: v for k, v in flow.state_dict().items() if not k.startswith("clusters.")}
    conditional.load_state_dict(state)
    x = images[:6]
    own = flow.own_labels(x)
    with torch.no_grad():
        a = flow.log_prob(x, generator=torch.Generator().manual_seed(2))
        b = conditional.log_prob(x, own, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(a, b + conditional.log_label_probs()[own], rtol=0, atol=1e-4)
    s = flow.sample(16, temperature=0.9, generator=torch.Generator().manual_seed(3))
    t = conditional.sample(16, temperature=0.9, generator=torch.Generator().manual_seed(3))
    assert torch.equal(s, t) and s.dtype == torch.uint8
    # the cluster draws follow p(c): only the fitted clusters (2 per side) ever come out
    labels = flow.sample_labels(2000, torch.Generator().manual_seed(0))
    assert set(labels.tolist()) <= {0, 1, 10, 11}
    freq = torch.bincount(labels, minlength=100)[[0, 1, 10, 11]].double() / 2000
    want = flow.log_label_probs().exp()[[0, 1, 10, 11]].double()
    torch.testing.assert_close(freq, want, rtol=0, atol=0.04)


def test_it_is_no_conditional_model_to_its_users():
    """No label prior to draw from or classify by for the commands and the app: its p(c) is
    of clusters, which are not the data's labels."""
    from pairflow.models import has_label_prior

    flow, _ = cluster_flow(2)
    assert not has_label_prior(flow) and not flow.config.conditional
    assert flow.label_passes == 100  # what its exact marginal costs
    config = dict(flow.config.to_dict(), clusters=0, conditional=True)
    assert has_label_prior(build_flow(FlowConfig.from_dict(config)))


def test_encode_and_decode_invert_under_its_own_clusters():
    flow, images = cluster_flow(2)
    flow.eval()
    x = images[:5]
    z = flow.encode(x)
    assert torch.equal(flow.decode(z, flow.own_labels(x)), x)
    with pytest.raises(ValueError, match="own_labels"):
        flow.decode(z)


def test_int8_export_keeps_the_centres_exactly(tmp_path):
    from pairflow.training.packing import pack_state_dict, unpack_state_dict

    flow, _ = cluster_flow(2)
    state = flow.state_dict()
    for dtype in ("fp16", "int8"):
        back = unpack_state_dict(pack_state_dict(state, dtype))
        assert torch.equal(back["clusters.centres"], state["clusters.centres"])


def tiny_run(root, out, **kw) -> TrainConfig:
    values = dict(
        preset="multiscale", epochs=1, batch_size=16, lr=1e-3, warmup_steps=2, num_pairs=64,
        test_pairs=32, data_dir=str(root), out=str(out), device="cpu", precision="fp32",
        sample_n=4, log_every=1,
        model_overrides=dict(hidden_channels=8, num_blocks=1, clusters=3, conditioning="both"),
    )  # fmt: skip
    values.update(kw)
    return TrainConfig(**values)


def test_training_fits_the_centres_and_a_fine_tune_keeps_them(tiny_mnist_root, tmp_path):
    from pairflow.data import PairedMNIST

    train(tiny_run(tiny_mnist_root, tmp_path / "a"), progress=False)
    model, _ = load_model(tmp_path / "a" / "last.pt")
    centres = model.clusters.centres.clone()
    train_set = PairedMNIST(tiny_mnist_root, train=True, num_pairs=64)
    # the centres: k-means of every training image (both sides are single images)
    want = PixelClusters(3, (1, 28, 56), sides=2)
    want.fit(train_set.digits)
    torch.testing.assert_close(centres, want.centres, rtol=0, atol=1e-3)
    # p(c): each side's cluster frequencies over the training images, a pair's the product
    side = want.label_counts(train_set.digits).double()
    table = torch.zeros(10, 10, dtype=torch.float64)
    table[:3, :3] = side[:, None] * side[None, :] / side.sum() ** 2
    torch.testing.assert_close(model.log_label_probs().exp().double(), table.flatten(),
                               rtol=0, atol=1e-6)  # fmt: skip
    # a fine-tune of it (no --set clusters) keeps its clusters and their centres
    train(tiny_run(tiny_mnist_root, tmp_path / "b", init_from=str(tmp_path / "a"),
                   model_overrides=dict(hidden_channels=8, num_blocks=1), max_steps=2),
          progress=False)  # fmt: skip
    tuned = load_checkpoint(tmp_path / "b" / "last.pt")
    assert tuned["model_config"]["clusters"] == 3
    assert tuned["model_config"]["conditioning"] == "both"
    assert torch.equal(tuned["model"]["clusters.centres"], centres)


def test_a_flow_fine_tuned_into_one_that_reads_clusters_starts_as_its_source(
    tiny_mnist_root, tmp_path
):
    """Zero-weight cluster inputs and a zero label prior: the start differs from the source
    only by log p(c(x)), on every pair."""
    from pairflow.data import PairedMNIST
    from pairflow.flows.prepare import fit_own_clusters
    from pairflow.training.loop import init_weights

    source = tmp_path / "source"
    plain = dict(hidden_channels=8, num_blocks=1)
    train(tiny_run(tiny_mnist_root, source, max_steps=3, lr=1e-2, model_overrides=plain),
          progress=False)  # fmt: skip
    src_model, _ = load_model(source / "last.pt")
    config = dict(src_model.config.to_dict(), clusters=3, conditioning="both")
    model = build_flow(FlowConfig.from_dict(config)).eval()
    fresh, dropped, widened = init_weights(model, source)
    assert widened and "clusters.centres" in fresh
    train_set = PairedMNIST(tiny_mnist_root, train=True, num_pairs=64)
    assert fit_own_clusters(model, train_set)[0].startswith("clusters: 3 per side")
    x, _ = PairedMNIST(tiny_mnist_root, train=False, num_pairs=8).get_batch(torch.arange(8))
    with torch.no_grad():
        want = src_model.eval().log_prob(x, generator=torch.Generator().manual_seed(0))
        got = model.log_prob(x, generator=torch.Generator().manual_seed(0))
    log_pc = model.log_label_probs()[model.own_labels(x)]
    torch.testing.assert_close(got, want + log_pc, rtol=1e-6, atol=1e-3)


def test_cli_trains_samples_evaluates_and_interpolates_a_cluster_flow(tiny_mnist_root, tmp_path):
    run = tmp_path / "run"
    proc = pairflow(
        "train", "--preset", "multiscale", "--set", "hidden_channels=8", "--set", "num_blocks=1",
        "--set", "clusters=3", "--epochs", "1", "--batch-size", "16", "--num-pairs", "64",
        "--test-pairs", "32", "--data-dir", str(tiny_mnist_root), "--out", str(run),
        "--device", "cpu", "--precision", "fp32", "--sample-n", "4", "--no-progress",
    )  # fmt: skip
    assert "clusters: 3 per side, k-means of the 256 training images' pixels" in proc.stdout
    assert "bound at its own clusters" in proc.stdout
    out = tmp_path / "s.npz"
    pairflow("sample", str(run), "--n", "6", "--out", str(out))
    data = np.load(out)
    assert data["images"].shape == (6, 28, 56) and "labels" not in data
    refused = pairflow("sample", str(run), "--pair", "37", "--out", str(out), check=False)
    assert refused.returncode == 2 and "unconditional" in refused.stderr
    pairflow("evaluate", str(run), "--data-dir", str(tiny_mnist_root), "--num-pairs", "16",
             "--marginal-pairs", "4")  # fmt: skip
    report = json.loads((run / "eval_test.json").read_text())
    assert "its own clusters" in report["bound"] and not report["conditional"]
    exact = report["exact"]
    assert exact["num_pairs"] == 4 and exact["label_passes"] == 100
    assert exact["bits_per_dim"] <= exact["bits_per_dim_at_own_clusters"] + 1e-9
    interp = tmp_path / "i.png"
    pairflow("sample", str(run), "--interpolate", "--n", "2", "--steps", "3",
             "--data-dir", str(tiny_mnist_root), "--out", str(interp))  # fmt: skip
    assert interp.is_file()


def test_a_fine_tune_of_a_flow_with_noise_in_the_data_space_keeps_it(tiny_mnist_root, tmp_path):
    """Without --set, a fine-tune keeps the source's Gaussian dequantization and sigma (its
    body reads the image through an affine map, not the logit) and starts where it ended."""
    from pairflow.training.loop import start_test_bpd

    overrides = dict(hidden_channels=8, num_blocks=1, clusters=3, conditioning="both",
                     dequantization="gaussian", noise_sigma=0.1)  # fmt: skip
    train(tiny_run(tiny_mnist_root, tmp_path / "a", model_overrides=overrides), progress=False)
    source = load_checkpoint(tmp_path / "a" / "last.pt")
    plain = dict(hidden_channels=8, num_blocks=1)
    tune = tiny_run(tiny_mnist_root, tmp_path / "b", init_from=str(tmp_path / "a"), max_steps=1,
                    model_overrides=plain)  # fmt: skip
    train(tune, progress=False)
    tuned = load_checkpoint(tmp_path / "b" / "last.pt")
    for key in ("dequantization", "noise_sigma", "clusters"):
        assert tuned["model_config"][key] == source["model_config"][key], key
    records = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").open()]
    start = start_test_bpd(records, "test_bpd_bound")
    ended = [r for r in (json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").open())
             if r["type"] == "test"][-1]["test_bpd_bound"]  # fmt: skip
    assert start == pytest.approx(ended, abs=1e-3)


@pytest.mark.parametrize("k", [3, 12])
def test_label_dropout_trains_on_its_own_clusters_with_sides_dropped_and_log_p_c_kept(k):
    """In training the body and prior read the image's clusters with each side replaced by
    the null label at the dropout rate; log p(c) stays the term of the image's own clusters."""
    from pairflow.flows.guidance import NULL_DIGIT, train_labels

    flow, images = cluster_flow(k=k, label_dropout=0.5)
    flow = flow.double().train()
    x = images[:16]
    got = flow.log_prob(x, generator=torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)  # the same draws, in the same order, by hand
    own = flow.clusters(x)
    y, log_q = flow.dequantizer.dequantize(x.double(), g)
    label = train_labels(flow, own, g)
    assert (label == NULL_DIGIT).any() and (label != NULL_DIGIT).any()
    base = max(10, k)  # the sides kept are the clusters' digits, a = c // base, b = c % base
    digits = torch.stack([own // base, own % base], 1)
    kept = label != NULL_DIGIT
    assert torch.equal(label[kept], digits[kept])
    z, logdet = flow.latent(y, label, flow.training_noise(y, g))
    expected = flow.log_label_probs()[own] + flow.log_prior(z, label) + logdet - log_q
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-9)
    flow.eval()  # evaluation reads the clusters themselves, never the null label
    at_own = flow.log_prob(x, generator=torch.Generator().manual_seed(4))
    assert (at_own - got).abs().max() > 1e-3


@pytest.mark.parametrize("k", [3, 12])
def test_guidance_by_its_own_clusters_is_exact_at_w0_and_w_minus1(k):
    from pairflow.flows.guidance import guide, null_labels

    flow, _ = cluster_flow(k=k, label_dropout=0.3)
    flow = flow.double().eval()
    assert flow.guidable
    c = flow.sample_labels(5, torch.Generator().manual_seed(2))

    def draw(label):
        gen = torch.Generator().manual_seed(0)
        z = flow.distribution.sample(5, label, temperature=0.9, generator=gen)
        return flow.inverse(z.double(), label)[0]

    own, null = draw(c), draw(null_labels(5, 2))
    assert (own - null).abs().max() > 1e-3  # the clusters matter, so the checks can fail
    assert torch.equal(draw(guide(flow, c, 0.0)), own)
    assert torch.equal(draw(guide(flow, c, -1.0)), null)
    flow.float()  # the public sampler: w = 0 draws the unguided images bit for bit
    plain = flow.sample((6,), generator=torch.Generator().manual_seed(3))
    zero = flow.sample((6,), generator=torch.Generator().manual_seed(3), guidance=0.0)
    guided = flow.sample((6,), generator=torch.Generator().manual_seed(3), guidance=2.0)
    assert torch.equal(zero, plain) and not torch.equal(guided, plain)
    unguidable, _ = cluster_flow(k=3)
    with pytest.raises(ValueError, match="trained without it"):
        unguidable.sample((2,), guidance=1.0)


def test_cli_trains_a_cluster_flow_with_label_dropout_and_samples_it_guided(
    tiny_mnist_root, tmp_path
):
    source, run = tmp_path / "source", tmp_path / "run"
    common = ["--epochs", "1", "--batch-size", "16", "--num-pairs", "64", "--test-pairs", "32",
              "--data-dir", str(tiny_mnist_root), "--device", "cpu", "--precision", "fp32",
              "--sample-n", "4", "--no-progress"]  # fmt: skip
    pairflow("train", "--preset", "multiscale", "--set", "hidden_channels=8", "--set",
             "num_blocks=1", "--set", "clusters=3", "--out", str(source), *common)  # fmt: skip
    # A fine-tune adds label dropout to a cluster flow: it keeps its clusters (not --set
    # again), and its new null label starts at the clusters' average.
    proc = pairflow("train", "--init-from", str(source), "--set", "hidden_channels=8", "--set",
                    "num_blocks=1", "--set", "label_dropout=0.2", "--out", str(run),
                    *common)  # fmt: skip
    assert "null label" in proc.stdout
    model, _ = load_model(run)
    before, _ = load_model(source)
    assert model.config.clusters == 3 and model.config.label_dropout == 0.2 and model.guidable
    assert torch.equal(model.clusters.centres, before.clusters.centres)
    assert model.embedding.null.abs().sum() > 0
    out = {w: tmp_path / f"{w}.npz" for w in ("none", "0", "1.5")}
    for w, path in out.items():
        extra = [] if w == "none" else ["--guidance", w]
        proc = pairflow("sample", str(run), "--n", "4", "--seed", "1", *extra, "--out", str(path))
    assert "guidance 1.5" in proc.stdout
    images = {w: np.load(path)["images"] for w, path in out.items()}
    assert np.array_equal(images["0"], images["none"])
    assert not np.array_equal(images["1.5"], images["none"])
    pairflow("evaluate", str(run), "--samples", "32", "--guidance", "1.5", "--num-pairs", "8",
             "--data-dir", str(tiny_mnist_root), "--out", str(tmp_path / "e.json"))  # fmt: skip
    assert json.loads((tmp_path / "e.json").read_text())["samples"]["guidance"] == 1.5
    # benchmarks/sample_sweep.py guides the clusters it draws, in its unconditional mode
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "sample_sweep.py"
    sweep = subprocess.run(
        [sys.executable, str(script), "--models", str(run), "--samples", "100", "--temperatures",
         "0.9", "--guidance", "0", "1", "--data-dir", str(tiny_mnist_root), "--threads", "1",
         "--out", str(tmp_path / "sweep.json")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert sweep.returncode == 0, sweep.stderr
    rows = {r["guidance"]: r for r in json.loads((tmp_path / "sweep.json").read_text())["rows"]}
    assert set(rows) == {None, 0, 1} and {r["mode"] for r in rows.values()} == {"unconditional"}
    assert rows[0]["fd"] == pytest.approx(rows[None]["fd"], rel=1e-6)
    assert rows[1]["fd"] != rows[0]["fd"]


def test_split_clusters_are_kmeans_within_each_parent():
    """split_from(p parents), then fit: each image goes to its nearest parent, and parent a's
    images are split into m = k / p clusters a m .. a m + m - 1 by k-means."""
    g = torch.Generator().manual_seed(0)
    levels = (10, 60, 140, 200)  # two parents (dark, bright), each of two shades
    images = torch.cat([torch.full((6, 1, 2, 2), v) + torch.randint(0, 5, (6, 1, 2, 2), generator=g)
                        for v in levels]).to(torch.uint8)  # fmt: skip
    parents = torch.stack([torch.full((1, 2, 2), v) for v in (35.0, 170.0)])
    clusters = PixelClusters(4, (1, 2, 4), sides=2)
    clusters.split_from(parents)
    assert not clusters.fitted
    assign = clusters.fit(images)
    assert clusters.parents is None  # used once
    assert sorted(assign[:12].unique().tolist()) == [0, 1]  # dark images: parent 0's children
    assert sorted(assign[12:].unique().tolist()) == [2, 3]
    for shade in range(4):  # each shade is one child
        assert len(assign[shade * 6 : shade * 6 + 6].unique()) == 1
    means = clusters.centres.flatten(1).mean(1)
    assert (means[:2] < 100).all() and (means[2:] > 100).all()
    with pytest.raises(ValueError, match="multiple of their number"):
        PixelClusters(3, (1, 2, 4), sides=2).split_from(parents)


def test_a_parent_with_fewer_images_than_children_fills_what_it_can():
    """Tiny data: a parent with one image split in 3 gives it to its first child; the other
    two start at the parent's centre and count as unfilled; the full parent splits by k-means."""
    images = torch.tensor([[[[10, 10]]], [[[12, 12]]], [[[200, 200]]], [[[210, 210]]],
                           [[[250, 250]]], [[[90, 90]]]], dtype=torch.uint8)  # fmt: skip
    parents = torch.tensor([[[[20.0, 20.0]]], [[[220.0, 220.0]]]])  # (2, 1, 1, 2)
    clusters = PixelClusters(6, (1, 1, 4), sides=2)
    clusters.split_from(parents)
    assign = clusters.fit(images)
    # Parent 0 (near 20) holds 10, 12 and 90: three images, three children.
    assert sorted(assign[[0, 1, 5]].tolist()) == [0, 1, 2]
    assert clusters.unfilled == 0
    clusters = PixelClusters(6, (1, 1, 4), sides=2)
    clusters.split_from(parents)
    few = torch.tensor([10, 200, 210, 250, 230, 240], dtype=torch.uint8)
    assign = clusters.fit(few[:, None, None, None].expand(6, 1, 1, 2))  # parent 0: one image
    assert assign[0] == 0 and sorted(set(assign[1:].tolist())) == [3, 4, 5]
    assert clusters.unfilled == 2
    centres = clusters.centres.flatten(1)
    assert torch.equal(centres[0], torch.tensor([10.0, 10.0]))
    assert torch.equal(centres[1], parents[0].flatten()) and torch.equal(centres[2], centres[1])


@pytest.mark.parametrize("k", [6, 12])
def test_a_fine_tune_that_splits_its_sources_clusters_starts_as_its_source(
    k, tiny_mnist_root, tmp_path
):
    """3 clusters per side split into k (--set clusters=k; 12 writes labels in base 12): each
    child's label rows start as its parent's, so wherever an image's new cluster is a child of
    its old one the new log p(x | c) is the source's, exactly; p(c) is of the new clusters."""
    from pairflow.data import PairedMNIST
    from pairflow.flows.prepare import fit_own_clusters
    from pairflow.training.loop import init_weights

    source = tmp_path / "source"
    overrides = dict(hidden_channels=8, num_blocks=1, clusters=3, conditioning="both",
                     label_dropout=0.2)  # fmt: skip
    train(tiny_run(tiny_mnist_root, source, max_steps=4, lr=1e-2, model_overrides=overrides),
          progress=False)  # fmt: skip
    src_model, _ = load_model(source / "last.pt")
    src_model.eval()
    with torch.no_grad():  # the label rows apart, so a wrong copy shows
        src_model.distribution.loc.add_(0.3 * torch.randn_like(src_model.distribution.loc))
        src_model.embedding.weight.add_(torch.randn_like(src_model.embedding.weight))
    state = {k: v for k, v in load_checkpoint(source / "last.pt").items() if k != "ema"}
    torch.save(dict(state, model=src_model.state_dict()), source / "moved.pt")
    config = dict(src_model.config.to_dict(), clusters=k)
    m, base = k // 3, max(10, k)
    model = build_flow(FlowConfig.from_dict(config)).eval()
    fresh, _, _ = init_weights(model, source / "moved.pt")
    assert "clusters.centres" in fresh and model.clusters.parents is not None
    train_set = PairedMNIST(tiny_mnist_root, train=True, num_pairs=64)
    line = fit_own_clusters(model, train_set)[0]
    assert f"each of the source's 3 per side split in {m}" in line
    for s in range(2):  # rows base * side + digit; child j of parent j // m
        for j in range(k):
            assert torch.equal(model.embedding.weight[base * s + j],
                               src_model.embedding.weight[10 * s + j // m])  # fmt: skip
            for name in ("loc", "log_scale"):
                new_row = getattr(model.distribution, name)[s, j]
                assert torch.equal(new_row, getattr(src_model.distribution, name)[s, j // m])
    x, _ = PairedMNIST(tiny_mnist_root, train=False, num_pairs=32).get_batch(torch.arange(32))
    old, new = src_model.own_labels(x), model.own_labels(x)
    parent = (new // base // m) * 10 + (new % base) // m
    same = parent == old
    assert same.sum() >= 24 and len(new.unique()) > len(old.unique())
    with torch.no_grad():
        want = src_model.log_prob(x, generator=torch.Generator().manual_seed(0))
        got = model.log_prob(x, generator=torch.Generator().manual_seed(0))
    got = got - model.log_label_probs()[new]
    want = want - src_model.log_label_probs()[old]
    torch.testing.assert_close(got[same], want[same], rtol=1e-6, atol=1e-3)
    # p(c): the new clusters' frequencies over the training images, a pair's the product
    counts = model.clusters.label_counts(train_set.digits).double()
    table = torch.zeros(base, base, dtype=torch.float64)
    table[:k, :k] = counts[:, None] * counts[None, :] / counts.sum() ** 2
    torch.testing.assert_close(model.log_label_probs().exp().double(), table.flatten(),
                               rtol=0, atol=1e-6)  # fmt: skip


def test_cli_splits_a_cluster_flow_into_more_clusters_than_ten(tiny_mnist_root, tmp_path):
    """--set clusters=12 on a 3-cluster flow: its conditioning (not the preset's) and label
    dropout kept, labels in base 12, sampled guided; a count that is no multiple of the
    source's is refused (exit 2)."""
    source, run = tmp_path / "source", tmp_path / "run"
    common = ["--batch-size", "16", "--num-pairs", "64", "--test-pairs", "32",
              "--data-dir", str(tiny_mnist_root), "--device", "cpu", "--precision", "fp32",
              "--sample-n", "4", "--no-progress", "--set", "hidden_channels=8", "--set",
              "num_blocks=1"]  # fmt: skip
    pairflow("train", "--preset", "multiscale", "--set", "clusters=3", "--set",
             "conditioning=embedding", "--set", "label_dropout=0.2", "--epochs", "1", "--out",
             str(source), *common)  # fmt: skip
    bad = pairflow("train", "--init-from", str(source), "--set", "clusters=4", "--max-steps",
                   "1", "--out", str(tmp_path / "bad"), *common, check=False)  # fmt: skip
    assert bad.returncode == 2 and "multiple of 3" in bad.stderr
    assert not (tmp_path / "bad" / "last.pt").exists()
    proc = pairflow("train", "--init-from", str(source), "--set", "clusters=12", "--max-steps",
                    "2", "--out", str(run), *common)  # fmt: skip
    assert "split in 4" in proc.stdout
    model, _ = load_model(run)
    config = model.config
    assert (config.clusters, config.conditioning, config.label_dropout) == (12, "embedding", 0.2)
    assert model.embedding.weight.shape[0] == 24 and model.log_label_probs().shape == (144,)
    out = tmp_path / "s.npz"
    proc = pairflow("sample", str(run), "--n", "4", "--guidance", "1", "--out", str(out))
    assert np.load(out)["images"].shape == (4, 28, 56) and "guidance 1" in proc.stdout


def test_cluster_purity_benchmark_reports_the_models_clusters_and_their_splits(
    tiny_mnist_root, tmp_path
):
    """benchmarks/cluster_purity.py: the purity of the model's own clusters, computed here by
    hand from the digit labels, and of a split into twice as many."""
    import subprocess
    import sys
    from pathlib import Path

    from pairflow.data import PairedDataset

    train(tiny_run(tiny_mnist_root, tmp_path / "a", max_steps=1), progress=False)
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "cluster_purity.py"
    args = [sys.executable, str(script), "--model", str(tmp_path / "a"),
            "--data-dir", str(tiny_mnist_root)]  # fmt: skip
    proc = subprocess.run([*args, "--splits", "2"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["rows"]
    assert [r["clusters_per_side"] for r in rows] == [3, 6]
    model, _ = load_model(tmp_path / "a")
    data = PairedDataset("mnist", tiny_mnist_root, train=True, num_pairs=1)
    own = model.clusters.side_labels(torch.cat([data.digits[:, None]] * 2, -1))[:, 0]
    pure = sum(int(torch.bincount(data.digit_labels[own == j], minlength=10).max())
               for j in range(3) if (own == j).any())  # fmt: skip
    assert rows[0]["purity"] == pytest.approx(pure / len(own), abs=1e-4)
    assert rows[1]["purity"] >= rows[0]["purity"]  # finer clusters, purer on these images
    bad = subprocess.run([*args, "--splits", "1"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "m >= 2" in bad.stderr
