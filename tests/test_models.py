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
