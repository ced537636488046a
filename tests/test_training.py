"""The training loop: exact resume, the non-finite guard, checkpoints that survive crashes."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from pairflow.training import (
    CheckpointError,
    TrainConfig,
    TrainingDiverged,
    load_checkpoint,
    load_model,
    train,
)
from pairflow.utils import atomic_save

# Small enough that a step takes milliseconds; same code paths as the full presets.
TINY = {
    "seed": {"hidden_features": 16},
    "multiscale": {"hidden_channels": 8, "num_blocks": 1},
}


def tiny_config(root: Path, out: Path, preset: str = "seed", **kw) -> TrainConfig:
    values = dict(
        preset=preset,
        epochs=2,
        batch_size=16,
        lr=1e-3,
        warmup_steps=5,
        num_pairs=64,
        test_pairs=32,
        data_dir=str(root),
        out=str(out),
        device="cpu",
        precision="fp32",
        sample_n=4,
        log_every=1,
        model_overrides=dict(TINY[preset]),
    )
    values.update(kw)
    return TrainConfig(**values)


def test_run_folder_holds_everything(tiny_mnist_root, tmp_path):
    summary = train(tiny_config(tiny_mnist_root, tmp_path / "run"), progress=False)
    run = tmp_path / "run"
    assert summary["step"] == 2 * (64 // 16) and summary["stopped"] == "epochs"
    for name in ("config.json", "metrics.jsonl", "curves.png", "last.pt", "best.pt"):
        assert (run / name).is_file(), name
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["epoch_001.png", "epoch_002.png"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["type"] == "test"] == [1, 2]
    assert all(r["step"] >= 1 for r in records if r["type"] == "train")
    state = load_checkpoint(run / "last.pt")
    assert state["step"] == 8 and state["epoch"] == 2 and state["batch_in_epoch"] == 0
    assert state["train_config"]["preset"] == "seed"


@pytest.mark.parametrize("preset", ["seed", "multiscale"])
def test_resume_gives_the_same_weights_as_training_straight(tiny_mnist_root, tmp_path, preset):
    straight = tiny_config(tiny_mnist_root, tmp_path / "a", preset, epochs=4)
    train(straight, progress=False)
    half = tiny_config(tiny_mnist_root, tmp_path / "b", preset, epochs=2)
    train(half, progress=False)
    rest = tiny_config(tiny_mnist_root, tmp_path / "b", preset, epochs=4)
    summary = train(rest, resume=True, progress=False)
    assert summary["step"] == 16
    a = load_checkpoint(tmp_path / "a" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "last.pt")
    assert a["step"] == b["step"] == 16
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    # The metrics of the resumed run continue the first part's, with no duplicate steps.
    steps = [
        json.loads(line)["step"]
        for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["type"] == "train"
    ]
    assert steps == list(range(1, 17))


def test_resume_mid_epoch_after_max_steps(tiny_mnist_root, tmp_path):
    train(tiny_config(tiny_mnist_root, tmp_path / "a", epochs=2), progress=False)
    train(tiny_config(tiny_mnist_root, tmp_path / "b", epochs=2, max_steps=3), progress=False)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["batch_in_epoch"] == 3
    train(tiny_config(tiny_mnist_root, tmp_path / "b", epochs=2), resume=True, progress=False)
    a = load_checkpoint(tmp_path / "a" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "b" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_another_preset(tiny_mnist_root, tmp_path):
    train(tiny_config(tiny_mnist_root, tmp_path / "run", max_steps=1), progress=False)
    with pytest.raises(CheckpointError, match="preset='seed'"):
        train(tiny_config(tiny_mnist_root, tmp_path / "run", "multiscale"), resume=True)
    singles = dataclasses.replace(tiny_config(tiny_mnist_root, tmp_path / "run"), layout="single")
    with pytest.raises(CheckpointError, match="layout='pair'"):  # pairs, not single images
        train(singles, resume=True)


def test_init_from_fine_tunes_with_a_new_label_prior(tiny_mnist_root, tmp_path):
    from pairflow.training.evaluation import evaluate_bpd

    source = tmp_path / "source"
    embedding_only = dict(TINY["seed"], conditioning="embedding")
    cfg = tiny_config(
        tiny_mnist_root, source, conditional=True, max_steps=6, model_overrides=embedding_only
    )
    train(cfg, progress=False)
    # a 0-step fine-tune is impossible; compare the initialised model to the source directly
    from pairflow.data import PairedMNIST
    from pairflow.training.loop import init_weights

    src_model, _ = load_model(source / "last.pt")
    config = dict(src_model.config.to_dict(), conditioning="both")
    from pairflow.flows import FlowConfig, build_flow

    model = build_flow(FlowConfig.from_dict(config))
    assert init_weights(model, source) == (["distribution.loc", "distribution.log_scale"], [], [])
    test = PairedMNIST(tiny_mnist_root, train=False, num_pairs=32)
    a = evaluate_bpd(src_model, test, conditional=True)["bpd"]
    b = evaluate_bpd(model.eval(), test, conditional=True)["bpd"]
    assert a == pytest.approx(b, abs=1e-6)  # the zero prior is the standard normal
    # a run fine-tuned from it trains the prior and keeps going from the source's weights
    tuned = tmp_path / "tuned"
    overrides = dict(TINY["seed"], conditioning="both")
    cfg = tiny_config(
        tiny_mnist_root,
        tuned,
        conditional=True,
        max_steps=4,
        init_from=str(source),
        model_overrides=overrides,
    )
    train(cfg, progress=False)
    state = load_checkpoint(tuned / "last.pt")
    assert state["step"] == 4 and state["model"]["distribution.loc"].abs().sum() > 0
    assert state["model_config"]["conditioning"] == "both"


@pytest.mark.parametrize("preset", ["seed", "multiscale"])
def test_init_from_an_unconditional_flow_reads_the_label_through_zero_inputs(
    preset, tiny_mnist_root, tmp_path
):
    """A flow whose couplings read a label, fine-tuned from one whose couplings did not,
    starts as its source for every label: each conditioner's first layer gets the label's
    inputs appended at zero weight (MLP features, convolution channels), nothing else moves."""
    from pairflow.data import PairedMNIST
    from pairflow.flows import FlowConfig, build_flow
    from pairflow.training.loop import init_weights

    source = tmp_path / "source"
    cfg = tiny_config(tiny_mnist_root, source, preset, max_steps=4, lr=1e-2,
                      model_overrides=TINY[preset])  # fmt: skip
    train(cfg, progress=False)
    src_model, _ = load_model(source / "last.pt")
    src_model.eval()
    config = dict(src_model.config.to_dict(), conditional=True, conditioning="embedding")
    model = build_flow(FlowConfig.from_dict(config)).eval()
    fresh, dropped, widened = init_weights(model, source)
    assert widened and dropped == [] and fresh == ["distribution.class_probs", "embedding.weight"]
    before, after = src_model.state_dict(), model.state_dict()
    for name in widened:
        old = before[name].shape[1]
        torch.testing.assert_close(after[name][:, :old], before[name], rtol=0, atol=0)
        assert after[name][:, old:].abs().max() == 0
    x, _ = PairedMNIST(tiny_mnist_root, train=False, num_pairs=8).get_batch(torch.arange(8))
    with torch.no_grad():
        want = src_model.log_prob(x, generator=torch.Generator().manual_seed(0))
        assert want.std() > 0
        for label in (0, 37, 99):
            got = model.log_prob(x, torch.full((8,), label),
                                 generator=torch.Generator().manual_seed(0))  # fmt: skip
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-4)
        # the label then matters once the new inputs move off zero
        for name in widened:
            after[name][:, before[name].shape[1] :].normal_(0, 0.5)
        model.load_state_dict(after)
        a = model.log_prob(x, torch.full((8,), 0), generator=torch.Generator().manual_seed(0))
        b = model.log_prob(x, torch.full((8,), 99), generator=torch.Generator().manual_seed(0))
        assert (a - b).abs().max() > 1e-3
    # a conditional fine-tune of it runs end to end from those weights
    tuned = tmp_path / "tuned"
    overrides = dict(TINY[preset], conditioning="embedding")
    cfg = tiny_config(tiny_mnist_root, tuned, preset, conditional=True, max_steps=2,
                      init_from=str(source), model_overrides=overrides)  # fmt: skip
    train(cfg, progress=False)
    assert load_checkpoint(tuned / "last.pt")["step"] == 2


def test_init_from_a_variational_dequantization_flow_with_or_without_its_dequantizer(
    tiny_mnist_root, tmp_path
):
    """The dequantizer is no part of p(x): a run asking for uniform noise leaves it out and
    keeps the flow's density exactly; any other fine-tune keeps it."""
    from pairflow.data import PairedMNIST
    from pairflow.flows import build_flow
    from pairflow.training.evaluation import evaluate_bpd
    from pairflow.training.loop import init_weights

    source = tmp_path / "source"
    variational = dict(TINY["seed"], dequantization="variational", dequant_channels=4)
    train(tiny_config(tiny_mnist_root, source, max_steps=3, model_overrides=variational),
          progress=False)  # fmt: skip
    trained, _ = load_model(source / "last.pt")
    uniform_set = dict(TINY["seed"], dequantization="uniform")
    uniform = build_flow("seed", **uniform_set)
    fresh, dropped, widened = init_weights(uniform, source)
    assert widened == []
    assert fresh == [] and dropped and all(k.startswith("dequantizer.") for k in dropped)
    test = PairedMNIST(tiny_mnist_root, train=False, num_pairs=32)
    a = evaluate_bpd(trained.with_uniform_dequantization(), test)["bpd"]
    assert evaluate_bpd(uniform.eval(), test)["bpd"] == pytest.approx(a, rel=1e-6)
    again = build_flow("seed", **variational)
    assert init_weights(again, source) == ([], [], [])
    for name, value in trained.state_dict().items():
        torch.testing.assert_close(again.state_dict()[name], value)
    # A fine-tune keeps the learned noise unless --set says otherwise, and says which.
    for overrides, kept in ((TINY["seed"], "variational"), (uniform_set, "uniform")):
        out = tmp_path / f"tuned-{kept}"
        cfg = tiny_config(tiny_mnist_root, out, max_steps=1, init_from=str(source),
                          model_overrides=overrides)  # fmt: skip
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            train(cfg, progress=False)
        said = "it keeps its variational" if kept == "variational" else "dequantizer is left out"
        assert said in printed.getvalue()
        saved = load_checkpoint(out / "last.pt")["model_config"]
        assert saved["dequantization"] == kept
        if kept == "variational":
            assert saved["dequant_channels"] == 4  # the source's q, not the default's


def test_init_from_refuses_weights_that_do_not_fit(tiny_mnist_root, tmp_path):
    source = tmp_path / "source"
    train(tiny_config(tiny_mnist_root, source, max_steps=1), progress=False)
    wider = dict(TINY["seed"], hidden_features=24)
    cfg = tiny_config(
        tiny_mnist_root,
        tmp_path / "b",
        max_steps=1,
        init_from=str(source),
        model_overrides=wider,
    )
    with pytest.raises(CheckpointError, match="do not fit this model.*other shape"):
        train(cfg, progress=False)
    cfg = tiny_config(
        tiny_mnist_root, tmp_path / "c", "multiscale", max_steps=1, init_from=str(source)
    )
    with pytest.raises(CheckpointError, match="not in this model"):
        train(cfg, progress=False)
    with pytest.raises(CheckpointError, match="does not exist"):
        train(tiny_config(tiny_mnist_root, tmp_path / "d", init_from=str(tmp_path / "nope")))


def test_nonfinite_steps_are_skipped_and_counted(tiny_mnist_root, tmp_path, monkeypatch):
    from pairflow.flows import PairFlow

    real = PairFlow.bits_per_dim
    calls = {"n": 0}

    def sometimes_nan(self, x, cond=None, generator=None):
        out = real(self, x, cond=cond, generator=generator)
        if self.training:
            calls["n"] += 1
            if calls["n"] in (2, 3):  # two poisoned training batches
                out = out * float("nan")
        return out

    monkeypatch.setattr(PairFlow, "bits_per_dim", sometimes_nan)
    summary = train(tiny_config(tiny_mnist_root, tmp_path / "run", epochs=1), progress=False)
    assert summary["nonfinite_skipped"] == 2
    assert summary["step"] == 64 // 16 - 2  # skipped batches make no optimiser step
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    records = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert records.count('"type": "nonfinite"') == 2


def test_persistent_nonfinite_stops_with_last_good_checkpoint(
    tiny_mnist_root, tmp_path, monkeypatch
):
    from pairflow.flows import PairFlow

    run = tmp_path / "run"
    train(tiny_config(tiny_mnist_root, run, epochs=1), progress=False)
    good = load_checkpoint(run / "last.pt")
    real = PairFlow.bits_per_dim

    def always_nan(self, x, cond=None, generator=None):
        out = real(self, x, cond=cond, generator=generator)
        return out * float("nan") if self.training else out

    monkeypatch.setattr(PairFlow, "bits_per_dim", always_nan)
    config = tiny_config(tiny_mnist_root, run, epochs=3, max_nonfinite=3)
    with pytest.raises(TrainingDiverged, match="3 consecutive steps"):
        train(config, resume=True, progress=False)
    after = load_checkpoint(run / "last.pt")
    assert after["step"] == good["step"]
    assert all(torch.equal(good["model"][k], after["model"][k]) for k in good["model"])


def test_corrupt_and_foreign_checkpoints_give_clear_errors(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x80\x02 not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a pairflow checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_checkpoint_with_code_is_refused(tmp_path):
    """weights_only=True: a pickle that would run code is not loaded."""
    evil = tmp_path / "evil.pt"

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"format": "pairflow-checkpoint", "payload": Evil()}, evil)
    with pytest.raises(CheckpointError, match="could not be read"):
        load_checkpoint(evil)


def test_failed_write_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_save({"a": torch.ones(3)}, path)

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"a": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary left over


def test_kill_9_during_checkpoint_writes_leaves_a_loadable_checkpoint(tmp_path):
    """A process rewriting a large checkpoint in a loop is killed with SIGKILL mid-loop."""
    path = tmp_path / "last.pt"
    script = textwrap.dedent(
        f"""
        import torch
        from pairflow.utils import atomic_save
        i = 0
        while True:
            atomic_save({{"step": i, "w": torch.full((2_000_000,), float(i))}}, {str(path)!r})
            i += 1
        """
    )
    for delay in (0.05, 0.3, 0.7):
        proc = subprocess.Popen([sys.executable, "-c", script])
        deadline = time.time() + 60
        while not path.exists() and time.time() < deadline:
            time.sleep(0.01)  # the first checkpoint is written: the loop is rewriting it now
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        state = torch.load(path, weights_only=True)
        assert torch.all(state["w"] == float(state["step"]))


def test_load_model_round_trip(tiny_mnist_root, tmp_path):
    train(tiny_config(tiny_mnist_root, tmp_path / "run", max_steps=2), progress=False)
    model, state = load_model(tmp_path / "run")
    x = torch.randint(0, 256, (3, 1, 28, 56), dtype=torch.uint8)
    gen = torch.Generator().manual_seed(0)
    first = model.log_prob(x, generator=gen)
    model2, _ = load_model(tmp_path / "run" / "best.pt")
    second = model2.log_prob(x, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(first, second)
    assert not model.training


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    from pairflow.utils import atomic_write_text

    umask = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "int8"])
def test_export_keeps_the_model_and_shrinks_the_file(tiny_mnist_root, tmp_path, dtype):
    from pairflow.training.export import export_checkpoint, pack_state_dict, unpack_state_dict

    run = tmp_path / "run"
    train(tiny_config(tiny_mnist_root, run, max_steps=3, model_overrides={"hidden_features": 64}))
    out = export_checkpoint(run, tmp_path / f"model_{dtype}.pt", dtype=dtype)
    original, _ = load_model(run)
    exported, state = load_model(out)
    assert state["export"]["dtype"] == dtype and "optimizer" not in state
    assert out.stat().st_size < (run / "best.pt").stat().st_size / (2.5 if dtype == "fp32" else 4)
    # int8: each weight is within half a quantisation step of the original.
    weights = original.state_dict()
    restored = unpack_state_dict(pack_state_dict(weights, dtype))
    for name, w in weights.items():
        if w.is_floating_point() and w.dim() >= 2 and dtype == "int8":
            step = w.reshape(w.shape[0], -1).abs().amax(1) / 127
            err = (restored[name] - w).reshape(w.shape[0], -1).abs().amax(1)
            assert torch.all(err <= step / 2 + 1e-7), name
    x = torch.randint(0, 256, (4, 1, 28, 56), dtype=torch.uint8)
    a = original.bits_per_dim(x, generator=torch.Generator().manual_seed(1))
    b = exported.bits_per_dim(x, generator=torch.Generator().manual_seed(1))
    tol = {"fp32": 1e-6, "fp16": 1e-2, "int8": 5e-2}[dtype]
    assert torch.allclose(a, b, rtol=tol), (a, b)
    # The exported flow is still exactly invertible.
    y = (x.double() + torch.rand(x.shape, dtype=torch.float64)) / 256
    exported.double()
    z, ld = exported(y)
    y_back, ld_back = exported.inverse(z)
    assert torch.allclose(y_back, y, atol=1e-9)
    assert torch.allclose(ld + ld_back, torch.zeros_like(ld))


def test_a_budget_spent_in_an_epochs_test_stops_there(tiny_mnist_root, tmp_path, monkeypatch):
    """The clock running out during an epoch's test ends the run at that epoch: no step of a
    new epoch, and no second test of nearly the same weights."""
    import pairflow.training.loop as loop

    original = loop.end_of_epoch

    def slow_test(run, complete):
        fields = original(run, complete)
        time.sleep(7)  # the test pass outlasts the 6-second budget
        return fields

    monkeypatch.setattr(loop, "end_of_epoch", slow_test)
    config = tiny_config(tiny_mnist_root, tmp_path / "run", epochs=3, time_budget=0.1)
    summary = train(config, progress=False)
    assert summary["stopped"] == "time_budget" and summary["step"] == 4  # one epoch of 4 steps
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["step"] for r in records if r["type"] == "test"] == [4]


def test_test_every_adds_tests_within_epochs_and_leaves_training_as_it_was(
    tiny_mnist_root, tmp_path
):
    plain = tiny_config(tiny_mnist_root, tmp_path / "a", "multiscale")
    train(plain, progress=False)
    tested = tiny_config(tiny_mnist_root, tmp_path / "b", "multiscale", test_every=3)
    train(tested, progress=False)
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    # 4 steps an epoch: a test at steps 3 and 6 within the epochs, 4 and 8 at their ends.
    assert [r["step"] for r in records if r["type"] == "test"] == [3, 4, 6, 8]
    assert sorted(p.name for p in (tmp_path / "b" / "samples").iterdir()) == [
        "epoch_001.png",
        "epoch_002.png",
        "step_000003.png",
        "step_000006.png",
    ]
    # The tests draw nothing from the training's random streams: the same weights either way.
    a = load_checkpoint(tmp_path / "a" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "last.pt")
    assert b["step"] == 8 and b["batch_in_epoch"] == 0
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_test_every_must_be_a_positive_number_of_steps(tiny_mnist_root, tmp_path):
    with pytest.raises(ValueError, match="test_every must be a positive integer, got 0"):
        tiny_config(tiny_mnist_root, tmp_path / "run", test_every=0).validate()
