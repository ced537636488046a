"""One loading path: shipped names, run folders and checkpoint files load the same way, and a
shipped weight file is read only if its bytes are the ones shipped (SHA-256)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import pairflow
from flowtools import one_thread
from pairflow import pretrained
from pairflow.flows import build_flow
from pairflow.loading import TrainedModel, load_trained
from pairflow.pretrained import ChecksumError, file_sha256, list_pretrained, recorded_sha256
from pairflow.training.checkpoint import CheckpointError, save_checkpoint


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture
def tampered(tmp_path, monkeypatch):
    """A copy of the shipped weights folder in which one byte of ``multiscale.pt`` and one of
    ``classifier.pt`` are flipped, made the package's weights folder."""
    folder = tmp_path / "weights"
    shutil.copytree(pretrained.WEIGHTS_DIR, folder)
    for name in ("multiscale.pt", "classifier.pt"):
        data = bytearray((folder / name).read_bytes())
        data[len(data) // 2] ^= 0x01  # one bit of one byte in the middle of the file
        (folder / name).write_bytes(bytes(data))
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", folder)
    return folder


def test_every_shipped_file_matches_its_recorded_sha256():
    files = sorted(p.name for p in pretrained.WEIGHTS_DIR.glob("*.pt"))
    recorded = recorded_sha256()
    assert sorted(recorded) == files  # each shipped file, and only those, has its SHA-256
    for name in files:
        assert file_sha256(pretrained.WEIGHTS_DIR / name) == recorded[name], name
    assert {meta["file"] for meta in list_pretrained().values()} <= set(recorded)


def test_load_refuses_a_shipped_file_with_one_byte_changed(tampered):
    with pytest.raises(ChecksumError, match="multiscale.pt is damaged or was changed") as err:
        pairflow.load("multiscale")
    assert str(tampered / "multiscale.pt") in str(err.value) and "reinstall" in str(err.value)
    with pytest.raises(ChecksumError, match="multiscale.pt"):
        pairflow.models.load_with_checkpoint("multiscale")  # the former home, same path
    assert pairflow.load("multiscale-cond").config.conditional  # the untouched ones still load


def test_load_refuses_a_shipped_file_without_a_recorded_sha256(tampered):
    sums = json.loads((tampered / "sha256.json").read_text())
    del sums["seed.pt"]
    (tampered / "sha256.json").write_text(json.dumps(sums))
    with pytest.raises(ChecksumError, match="seed.pt has no SHA-256"):
        load_trained("seed")


def test_the_shipped_classifier_is_checked_too(tampered, monkeypatch):
    from pairflow import classifier

    shipped = dict(classifier.SHIPPED_WEIGHTS, mnist=tampered / "classifier.pt")
    monkeypatch.setattr(classifier, "SHIPPED_WEIGHTS", shipped)
    with pytest.raises(ChecksumError, match="classifier.pt is damaged or was changed"):
        classifier.load_classifier(dataset="mnist")
    # the same bytes as a file of the user's own are not shipped weights: no check
    own = tampered.parent / "mine.pt"
    shutil.copy(pretrained.WEIGHTS_DIR / "classifier-fashion-mnist.pt", own)
    assert classifier.load_classifier(own).meta is not None


@pytest.mark.parametrize("command", ["sample", "evaluate"])
def test_cli_exits_2_naming_a_damaged_shipped_file(tampered, tmp_path, capsys, command):
    from pairflow.cli import main

    out = tmp_path / "out" / ("s.npz" if command == "sample" else "report")
    args = [command, "--pretrained", "multiscale", "--out", str(out)]
    args += ["--n", "2"] if command == "sample" else ["--num-pairs", "4"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"pairflow {command}: error: shipped weight file " in err
    assert "multiscale.pt is damaged or was changed" in err and "Traceback" not in err
    assert not out.exists()  # refused before any work


def test_train_init_from_a_damaged_shipped_file_exits_2(tampered, tmp_path, capsys):
    from pairflow.cli import main

    out = tmp_path / "ft"
    code = main(["train", "--preset", "multiscale", "--init-from", "multiscale", "--out", str(out)])
    assert code == 2 and "multiscale.pt is damaged or was changed" in capsys.readouterr().err
    assert not out.exists()


def _saved_flow(folder, precision="fp32"):
    flow = build_flow("seed", hidden_features=8, precision=precision)
    state = {
        "kind": "flow",
        "model_config": flow.config.to_dict(),
        "model": flow.state_dict(),
        "train_config": {"dataset": "fashion-mnist", "preset": "seed"},
    }
    save_checkpoint(state, folder / "last.pt")
    return flow


def test_load_trained_returns_the_model_with_its_checkpoint_and_origin(tmp_path):
    shipped = load_trained("fashion-multiscale-cond", precision="fp32")
    assert isinstance(shipped, TrainedModel) and shipped.name == "fashion-multiscale-cond"
    assert shipped.dataset == "fashion-mnist" and shipped.layout == "pair"
    assert shipped.test_bpd == list_pretrained()["fashion-multiscale-cond"]["test_bpd"]
    assert shipped.checkpoint == pretrained.WEIGHTS_DIR / "fashion-multiscale-cond.pt"
    assert shipped.precision.precision == shipped.model.precision == "fp32"
    assert shipped.train_config["dataset"] == "fashion-mnist" and not shipped.model.training

    flow = _saved_flow(tmp_path / "run", precision="bf16")
    run = load_trained(tmp_path / "run", precision="saved")  # the folder: last.pt, no best.pt
    assert run.name is None and run.shipped == {} and run.test_bpd is None
    assert run.checkpoint == tmp_path / "run" / "last.pt" and run.dataset == "fashion-mnist"
    assert run.precision is None and run.model.precision == "bf16"  # as trained
    for name, value in flow.state_dict().items():
        assert torch.equal(run.model.state_dict()[name], value), name


def test_load_trained_keeps_shipped_names_and_paths_apart(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="checkpoint or run folder seed does not exist"):
        load_trained("seed", shipped=False)  # a RUN argument is a path, never a name
    _saved_flow(tmp_path / "seed")
    assert load_trained("seed").name is None  # a folder of that name wins over the shipped one
    assert load_trained("seed", shipped=True).name == "seed"  # --pretrained: the shipped one
    with pytest.raises(ValueError, match="unknown pretrained model 'no-such'; valid names: "):
        load_trained("no-such", shipped=True)
    with pytest.raises(ValueError, match="neither a file, a run folder nor a shipped model"):
        load_trained("no-such")
    with pytest.raises(ValueError, match="unknown precision 'half'; valid: auto, fp32, bf16"):
        load_trained("seed", precision="half")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load_trained("~/seed").checkpoint == tmp_path / "seed" / "last.pt"


def test_shipped_sampling_temperatures_are_well_formed():
    # A sweep's choice per shipped model (BENCHMARKS.md, "Sampling temperature of each shipped
    # model"): "default" for its unconditional or given-label samples, "label_free" only for a
    # conditional flow.
    # Above 1 only for a guided model, whose guidance sharpens as a lower temperature does
    # (`seed-clusters`: T 1.5 with guidance 1.25), and never off the app's slider.
    from pairflow.app.inputs import TEMPERATURE_RANGE

    shipped = list_pretrained()
    chosen = {name: meta["temperature"] for name, meta in shipped.items()
              if "temperature" in meta}  # fmt: skip
    assert chosen, "no shipped model records the temperature its sweep chose"
    for name, temperatures in chosen.items():
        assert set(temperatures) <= {"default", "label_free"}, name
        top = 1.0 if "guidance" not in shipped[name] else TEMPERATURE_RANGE[1]
        assert all(0 < t <= top for t in temperatures.values()), name
        if "label_free" in temperatures:
            assert list_pretrained()[name]["conditional"], name


def test_shipped_guidance_weights_are_well_formed_and_reach_the_state():
    # A guidance sweep's choice (BENCHMARKS.md, "Label dropout and classifier-free guidance"),
    # only for a conditional flow trained with label dropout, each weight one it takes.
    from pairflow.flows.guidance import check_guidance

    chosen = {name: meta["guidance"] for name, meta in list_pretrained().items()
              if "guidance" in meta}  # fmt: skip
    for name, weights in chosen.items():
        assert set(weights) <= {"default", "label_free"} and weights, name
        assert all(check_guidance(w) == w for w in weights.values()), name
        loaded = load_trained(name, precision="fp32")
        assert loaded.model.config.label_dropout > 0 and loaded.model.guidable, name
        assert loaded.state["sampling_guidance"] == weights, name
    others = next(n for n, meta in list_pretrained().items() if "guidance" not in meta)
    assert "sampling_guidance" not in load_trained(others, precision="fp32").state


def test_a_shipped_models_sampling_temperatures_reach_the_state(tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    shutil.copytree(pretrained.WEIGHTS_DIR, folder)
    index = json.loads((folder / "index.json").read_text())
    index["fashion-multiscale-cond"]["temperature"] = {"default": 0.9, "label_free": 0.6}
    index["fashion-multiscale"].pop("temperature", None)
    (folder / "index.json").write_text(json.dumps(index))
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", folder)
    chosen = load_trained("fashion-multiscale-cond", precision="fp32").state
    assert chosen["sampling_temperatures"] == {"default": 0.9, "label_free": 0.6}
    assert "sampling_temperatures" not in load_trained("fashion-multiscale", precision="fp32").state
    # The shipped file given by its path is the shipped model; a copy elsewhere is a checkpoint.
    by_path = load_trained(folder / "fashion-multiscale-cond.pt", precision="fp32")
    assert by_path.name == "fashion-multiscale-cond"
    assert by_path.state["sampling_temperatures"] == {"default": 0.9, "label_free": 0.6}
    copy = tmp_path / "copy.pt"
    shutil.copy(folder / "fashion-multiscale-cond.pt", copy)
    assert "sampling_temperatures" not in load_trained(copy, precision="fp32").state
    _saved_flow(tmp_path / "run")
    assert "sampling_temperatures" not in load_trained(tmp_path / "run").state  # runs: global ones
