"""The model contract: every registered kind satisfies the protocols it declares, and the
Python API (pairflow.load, log_prob's input conventions, sample's shapes) does what it says."""

from __future__ import annotations

import pytest
import torch

import pairflow
from flowtools import one_thread, randomize
from pairflow.models import (
    REGISTRY,
    Autoencoding,
    DataInitialised,
    GenerativeModel,
    LikelihoodModel,
    PairClassifier,
    SelfUpdating,
    kind_of,
    kind_spec,
)
from pairflow.training.checkpoint import save_checkpoint

TINY = {
    "flow": dict(preset="multiscale", height=4, width=8, hidden_channels=4, num_blocks=1),
    "vae": dict(preset="conv", height=4, width=8, hidden_channels=4, hidden_features=8),
    "gan": dict(preset="dcgan", height=4, width=8),
}


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def _tiny(kind: str, **overrides) -> torch.nn.Module:
    spec = kind_spec(kind)
    values = {**TINY.get(kind, {"preset": spec.default_preset}), **overrides}
    return spec.build(spec.config_class.from_preset(values.pop("preset"), **values))


@pytest.mark.parametrize("kind", list(REGISTRY))
def test_every_kind_satisfies_exactly_what_it_declares(kind):
    spec = kind_spec(kind)
    model = _tiny(kind)
    assert kind_of(model) is not None and kind_of(model).name == kind
    for protocol in spec.protocols():
        assert isinstance(model, protocol), (kind, protocol.__name__)
    # What a kind does not declare, the loop must not rely on: the declarations are not
    # looser than the models (a GAN has no likelihood, a flow no update of its own).
    assert isinstance(model, LikelihoodModel) == (spec.likelihood is not None)
    assert isinstance(model, SelfUpdating) == spec.own_update
    assert isinstance(model, Autoencoding) == spec.encodes
    assert isinstance(model, DataInitialised) == spec.data_init
    assert isinstance(model, PairClassifier) == spec.classifies
    assert spec.default_preset in spec.presets
    # The protocol's calls work with its keywords.
    images = model.sample((3,), cond=None, temperature=0.8, generator=torch.Generator())
    assert images.shape == (3, 1, 4, 8) and images.dtype == torch.uint8
    assert model.device == torch.device("cpu")
    if spec.likelihood:
        assert model.bits_per_dim_is_bound == (spec.likelihood == "bound")
        bpd = model.bits_per_dim(images, cond=None, generator=torch.Generator().manual_seed(0))
        assert bpd.shape == (3,) and torch.isfinite(bpd).all()


def test_registry_rejects_unknown_kinds_listing_the_valid_ones():
    with pytest.raises(ValueError, match="unknown model kind 'vea'; valid: flow, vae, gan"):
        kind_spec("vea")
    with pytest.raises(TypeError, match="not a registered"):
        kind_of(torch.nn.Linear(2, 2))


def _flow(**overrides):
    return randomize(_tiny("flow", **overrides), seed=3).eval()


def test_log_prob_takes_uint8_and_float_images_and_single_images():
    flow = _flow()
    x = torch.randint(0, 256, (2, 1, 4, 8), generator=torch.Generator().manual_seed(0))
    x = x.to(torch.uint8)

    def lp(images, **kw):
        return flow.log_prob(images, generator=torch.Generator().manual_seed(5), **kw)

    reference = lp(x)
    # float images in [0, 1] holding levels k / 255 (torchvision's ToTensor) are the same input
    torch.testing.assert_close(lp(x.float() / 255), reference)
    # one image (C, H, W) and, for one channel, (H, W): a 0-d result
    single = lp(x[:1])[0]
    assert lp(x[0]).shape == () and torch.equal(lp(x[0]), single)
    assert torch.equal(lp(x[0, 0]), single)
    with pytest.raises(ValueError, match="scaled to \\[0, 1\\]"):
        flow.log_prob(x.float())  # float pixel values 0..255 are not the float convention
    # the dequantisation draw: the same generator seed gives the same value; draws average
    again = lp(x)
    assert torch.equal(again, reference)
    two = flow.log_prob(x, generator=torch.Generator().manual_seed(5), draws=2)
    g = torch.Generator().manual_seed(5)
    first, second = flow.log_prob(x, generator=g), flow.log_prob(x, generator=g)
    torch.testing.assert_close(two, (first + second) / 2)
    with pytest.raises(ValueError, match="draws must be an int >= 1"):
        flow.log_prob(x, draws=0)


def test_sample_follows_torch_distributions_shapes():
    flow = _flow()
    g = torch.Generator().manual_seed(1)
    assert flow.sample().shape == (1, 4, 8)
    assert flow.sample(5).shape == (5, 1, 4, 8)
    assert flow.sample((2, 3), generator=g).shape == (2, 3, 1, 4, 8)
    a = flow.sample((4,), generator=torch.Generator().manual_seed(2))
    b = flow.sample(4, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    cond_flow = _flow(conditional=True, conditioning="both")
    assert cond_flow.sample((3,), cond=37).shape == (3, 1, 4, 8)
    with pytest.raises(ValueError, match="temperature must be finite"):
        flow.sample(2, temperature=float("inf"))


def test_load_takes_a_shipped_name_a_run_folder_and_a_checkpoint(tmp_path):
    shipped = pairflow.load("multiscale-cond")
    assert kind_of(shipped).name == "flow" and not shipped.training
    assert shipped.config.conditional and shipped.device == torch.device("cpu")
    flow = _flow()
    state = {"kind": "flow", "model_config": flow.config.to_dict(), "model": flow.state_dict()}
    save_checkpoint(state, tmp_path / "run" / "best.pt")
    x = flow.sample(2, generator=torch.Generator().manual_seed(0))
    for where in (tmp_path / "run", tmp_path / "run" / "best.pt", str(tmp_path / "run")):
        # fp32 as the reference flow: auto is bf16 on an AMX CPU, 6e-4 off in log p(x)
        loaded = pairflow.load(where, map_location="cpu", precision="fp32")
        g = torch.Generator().manual_seed(0)
        torch.testing.assert_close(
            loaded.log_prob(x, generator=g), flow.log_prob(x, generator=g.manual_seed(0))
        )
    from pairflow.precision import choose_model_precision

    # the fast one here (measured, and cached, on AVX512-BF16 CPUs without AMX)
    assert shipped.precision == choose_model_precision(shipped, "auto").precision
    assert pairflow.load("multiscale", precision=None).precision == "bf16"  # as trained
    assert pairflow.load("multiscale", precision="fp32").precision == "fp32"
    model, state = pairflow.models.load_with_checkpoint("multiscale-cond", precision=None)
    assert model.precision == state["model_config"]["precision"] == "bf16"  # its last run's
    model, state = pairflow.models.load_with_checkpoint("fashion-multiscale-cond", precision=None)
    assert model.precision == state["model_config"]["precision"] == "fp32"  # trained in fp32
    with pytest.raises(ValueError, match="neither a file, a run folder nor a shipped model"):
        pairflow.load("multiscale-cnd")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            pairflow.load("multiscale-cond", map_location="cuda")


def test_version_1_checkpoints_are_migrated(tmp_path):
    """Weights saved before the base distribution became a module still load."""
    flow = _flow(conditional=True, conditioning="both")
    old_names = {"distribution.loc": "prior_loc", "distribution.log_scale": "prior_log_scale"}
    weights = {
        old_names.get(
            k, k.replace("embedding.", "digit_embedding.", 1) if k.startswith("embedding.") else k
        ): v
        for k, v in flow.state_dict().items()
    }
    assert "prior_loc" in weights and "digit_embedding.weight" in weights
    path = tmp_path / "v1.pt"
    torch.save(
        {
            "format": "pairflow-checkpoint",
            "version": 1,
            "kind": "flow",
            "model_config": flow.config.to_dict(),
            "model": weights,
        },
        path,
    )
    loaded = pairflow.load(path)
    for name, value in flow.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


def test_generative_protocol_is_the_common_ground():
    for kind in REGISTRY:
        assert isinstance(_tiny(kind), GenerativeModel)


# ---------------------------------------------------------------------- what only a kind knows
class _TinyPairs:
    """Training pairs of 1x4x8 images, their labels 10 * left + right (a stand-in for a
    ``PairedDataset``: ``get_batch``, ``pair_label_counts``, ``len``)."""

    def __init__(self, n: int = 40, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 100, (n,), generator=g)
        self.images = torch.randint(0, 256, (n, 1, 4, 8), generator=g).to(torch.uint8)
        self.images[:, :, :, :4] //= (self.labels // 10 + 1)[:, None, None, None].to(torch.uint8)

    def __len__(self) -> int:
        return len(self.labels)

    def get_batch(self, idx):
        return self.images[idx], self.labels[idx]

    def pair_label_counts(self):
        return torch.bincount(self.labels, minlength=100).reshape(10, 10)


class _TinyLoader:
    """Batches of the first 16 pairs; counts the epochs it was set to."""

    def __init__(self, pairs: _TinyPairs):
        self.pairs, self.epochs = pairs, []

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)

    def __iter__(self):
        yield self.pairs.get_batch(torch.arange(16))


def _prepared(model, world_size: int = 1, **fine_tune):
    from pairflow.models import Preparation

    pairs = _TinyPairs()
    loader = _TinyLoader(pairs)
    preparation = Preparation(pairs, loader, torch.device("cpu"), world_size, **fine_tune)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lines = kind_of(model).prepare(model, preparation)
    changed = sorted(k for k, v in model.state_dict().items() if not torch.equal(v, before[k]))
    return lines, changed, pairs, loader


@pytest.mark.parametrize("kind", list(REGISTRY))
def test_every_kind_prepares_a_new_model_and_says_what_it_did(kind):
    """The row's preparation runs for every kind; what it changes is the kind's own."""
    model = _tiny(kind)
    lines, changed, _, loader = _prepared(model)
    assert isinstance(lines, list) and all(isinstance(line, str) for line in lines)
    # An unconditional model of one process: nothing to fit, nothing to start from the data
    # (a flow's ActNorm starts on its first training step, from the same first batch).
    assert changed == [] and lines == [] and loader.epochs == []
    conditional = _tiny(kind, conditional=True)
    _, changed, pairs, _ = _prepared(conditional)
    if kind_spec(kind).classifies:  # p(y): the training pairs' label frequencies
        assert changed == ["distribution.class_probs"]
        counts = pairs.pair_label_counts().flatten().double()
        torch.testing.assert_close(
            conditional.log_label_probs().double(), torch.log(counts / counts.sum())
        )
    else:
        assert changed == []  # the baselines draw their labels uniformly


def test_flow_preparation_fits_its_priors_and_starts_actnorm_before_ranks_sync():
    # A label-free mixture starts from k-means clusters of the training images, and says so.
    mixture = _tiny("flow", prior="mixture")
    lines, changed, _, _ = _prepared(mixture)
    assert lines == ["mixture prior: 100 components started from k-means clusters (no labels)"]
    assert "distribution.loc" in changed
    # ... unless a fine-tune brought its own clusters; a new one under a trained body is fitted.
    kept = _tiny("flow", prior="mixture")
    lines, changed, _, _ = _prepared(kept, init_from="src.pt", inherited={"prior": "mixture"})
    assert changed == [] and lines == [
        "it keeps its label-free mixture prior (--set prior=normal drops it)"
    ]
    # A class mixture is fitted to the body only where a fine-tune gave it new Gaussians.
    classes = _tiny("flow", conditional=True, conditioning="mixture")
    _, changed, _, _ = _prepared(classes, init_from="src.pt")
    assert changed == ["distribution.class_probs"]
    _, changed, _, _ = _prepared(classes, init_from="src.pt", new_weights=("distribution.loc",))
    assert {"distribution.loc", "distribution.log_scale"} <= set(changed)
    # Under torchrun a new flow's ActNorm starts from the loader's first batch of epoch 0.
    flow = _tiny("flow")
    _, changed, _, loader = _prepared(flow, world_size=2)
    assert loader.epochs == [0] and any(k.endswith("initialized") for k in changed)
    assert all(m.initialized for m in flow.modules() if hasattr(m, "initialized"))
    # A fine-tune's data-dependent start is its source's: not redone.
    _, changed, _, loader = _prepared(_tiny("flow"), world_size=2, init_from="src.pt")
    assert loader.epochs == [] and changed == []
    # The dequantizer's lines: left out (the run asked for uniform noise) or kept.
    lines, _, _, _ = _prepared(_tiny("flow"), init_from="s", left_out=("dequantizer.net.w",))
    assert lines[0].startswith("its variational dequantizer is left out")
    lines, _, _, _ = _prepared(
        _tiny("flow"), init_from="s", inherited={"dequantization": "variational"}
    )
    assert lines[0].startswith("it keeps its variational dequantization")


def test_too_few_pairs_for_the_mixture_prior_are_refused_by_name():
    from pairflow.models import Preparation

    pairs = _TinyPairs(n=9)
    with pytest.raises(ValueError, match="at least 10 training pairs, got 9 \\(--num-pairs\\)"):
        kind_spec("flow").prepare(
            _tiny("flow", prior="mixture"), Preparation(pairs, _TinyLoader(pairs), "cpu")
        )


def _checkpoint(kind: str, **overrides) -> dict:
    model = _tiny(kind, **overrides)
    return {
        "format": "pairflow-checkpoint",
        "kind": kind,
        "model_config": model.config.to_dict(),
        "model": model.state_dict(),
    }


@pytest.mark.parametrize("kind", list(REGISTRY))
@pytest.mark.parametrize("version", [1, 2, 3])
def test_every_kind_migrates_its_checkpoints_and_leaves_current_ones_alone(kind, version):
    """Every kind's migrations bring a checkpoint of any format version up to the current
    one, and change nothing that is already current (and nothing twice)."""
    from pairflow.training.checkpoint import VERSION, upgrade_state

    spec = kind_spec(kind)
    assert all(callable(m) for m in spec.migrations)
    current = {**_checkpoint(kind), "version": VERSION}
    upgraded = upgrade_state({**current, "model": dict(current["model"])})
    assert upgraded["version"] == VERSION and upgraded["model_config"] == current["model_config"]
    assert upgraded["model"].keys() == current["model"].keys()
    # An older checkpoint of this kind (saved as the current code would, under an old
    # version number): the migrations that apply to it change only what they must, and
    # running them again changes nothing.
    old = {**_checkpoint(kind, conditional=True), "version": version}
    once = upgrade_state({**old, "model": dict(old["model"])})
    model = spec.build(spec.config_class.from_dict(once["model_config"]))
    model.load_state_dict(once["model"])  # loads: every name fits
    again = spec.upgrade({**once, "model": dict(once["model"])})
    assert again["model"].keys() == once["model"].keys()
    for name, value in once["model"].items():
        assert torch.equal(again["model"][name], value), name


def test_a_flow_of_before_p_label_gets_the_uniform_prior_and_says_so():
    state = {**_checkpoint("flow", conditional=True, conditioning="both"), "version": 2}
    del state["model"]["distribution.class_probs"]
    state["ema"] = {"shadow": dict(state["model"])}
    upgraded = kind_spec("flow").upgrade(state)
    for weights in (upgraded["model"], upgraded["ema"]["shadow"]):
        torch.testing.assert_close(weights["distribution.class_probs"], torch.full((100,), 0.01))
        assert "label_probs" not in weights  # version 4: p(label) lives in the distribution
    assert upgraded["label_probs"].startswith("uniform")


@pytest.mark.parametrize("kind", list(REGISTRY))
def test_every_kind_declares_the_settings_its_config_has(kind):
    """The loop reads a kind's settings from its row (conditional, precision, layout), not
    from the names of its config's fields; the row must say what the config holds."""
    from dataclasses import fields

    spec = kind_spec(kind)
    names = {f.name for f in fields(spec.config_class)}
    assert spec.conditions == ("conditional" in names)
    assert spec.precisions == ("precision" in names)
    assert spec.layouts == ("layout" in names)
    model = _tiny(kind)
    facts = spec.facts(model)
    if spec.likelihood is None:
        assert facts == {}
    for key in facts:
        assert isinstance(key, str)
    if spec.dequantized:  # rescored with uniform noise: the exact likelihood, said so
        exact = model.with_uniform_dequantization()
        assert spec.facts(exact)["dequantization"] == "uniform" and "bound" not in facts


def test_a_variational_flow_says_which_bound_it_reports():
    flow = _tiny("flow", dequantization="variational")
    facts = kind_spec("flow").facts(flow)
    assert facts["dequantization"] == "variational" and "Flow++" in facts["bound"]
    noisy = kind_spec("flow").facts(_tiny("flow", noise_sigma=0.1))
    assert noisy["noise_sigma"] == 0.1 and "noise-augmented" in noisy["likelihood_of"]
    assert kind_spec("vae").facts(_tiny("vae")) == {}  # its bound is the ELBO, by its row
    assert kind_spec("vae").draws == "latent" and kind_spec("flow").draws == "dequantization"


def test_only_the_registry_names_a_model_kind():
    """No module but the contract compares a kind's name: a new kind touches its row."""
    import re
    from pathlib import Path

    src = Path(pairflow.__file__).parent
    kinds = "|".join(REGISTRY)
    compare = re.compile(
        rf"""[!=]=\s*["']({kinds})["']|["']({kinds})["']\s*[!=]=|in\s*[(\[{{]\s*["']({kinds})["']"""
    )
    found = [
        f"{path.relative_to(src)}:{i}: {line.strip()}"
        for path in sorted(src.rglob("*.py"))
        if path.name != "models.py" or path.parent != src
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if compare.search(line)
    ]
    assert found == [], found
