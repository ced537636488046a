"""``pairflow train --tensorboard``: the event files hold what metrics.jsonl holds, step by step,
through a resume that replays steps; the optional package is asked for before any work."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pairflow.cli import main
from pairflow.training.logger import read_metrics
from pairflow.training.runfolder import open_run_folder
from pairflow.training.tensorboard import scalar_tags


def _train(root: Path, out: Path, *extra: str) -> None:
    args = ["train", "--preset", "seed", "--set", "hidden_features=16", "--batch-size", "16",
            "--num-pairs", "64", "--test-pairs", "32", "--warmup-steps", "2", "--log-every", "1",
            "--sample-n", "4", "--device", "cpu", "--precision", "fp32", "--data-dir",
            str(root), "--out", str(out), "--no-progress", *extra]  # fmt: skip
    assert main(args) == 0


def _events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def test_events_match_metrics_through_a_resume_that_replays_steps(
    tiny_mnist_root, tmp_path, capsys
):
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    _train(tiny_mnist_root, out, "--epochs", "1", "--tensorboard")
    assert "metrics.jsonl, tensorboard/," in capsys.readouterr().out
    epoch_one = tmp_path / "epoch_one.pt"
    shutil.copy(out / "last.pt", epoch_one)
    # The flag is the run's setting now: a resume without it keeps writing events.
    _train(tiny_mnist_root, out, "--epochs", "2", "--resume")
    logged_twice = read_metrics(out / "metrics.jsonl")
    # As if the process died after logging epoch 2 but before its checkpoint: the resume
    # replays epoch 2, and each step must be shown once (the replay's values), not twice.
    shutil.copy(epoch_one, out / "last.pt")
    _train(tiny_mnist_root, out, "--epochs", "2", "--resume")

    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records if r["type"] == "test"] == [4, 8]
    assert len(records) == len(logged_twice)
    expected: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        for tag, value in scalar_tags(record).items():
            expected.setdefault(tag, []).append((record["step"], value))
    for tag in ("train/loss", "train/bpd", "train/lr", "train/grad_norm", "train/pairs_per_s",
                "test/bpd", "test/bpd_stderr"):  # fmt: skip
        assert tag in expected
    assert [step for step, _ in expected["train/loss"]] == list(range(1, 9))

    events = _events(out / "tensorboard")
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 3
    assert sorted(events.Tags()["scalars"]) == sorted(expected)
    for tag, values in expected.items():
        shown = [(e.step, e.value) for e in events.Scalars(tag)]
        assert [s for s, _ in shown] == [s for s, _ in values], tag
        assert [v for _, v in shown] == pytest.approx([v for _, v in values], rel=1e-6), tag

    # Each epoch's sample grid, as the PNG in samples/ holds it.
    images = events.Images("samples")
    assert [image.step for image in images] == [4, 8]
    from PIL import Image

    with Image.open(out / "samples" / "epoch_002.png") as grid:
        assert (images[-1].width, images[-1].height) == grid.size


@pytest.mark.parametrize("how", ["flag", "config file"])
def test_without_the_package_the_run_is_refused_before_any_work(
    tiny_mnist_root, tmp_path, monkeypatch, capsys, how
):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if it were not installed
    out = tmp_path / "run"
    args = ["train", "--preset", "seed", "--max-steps", "1", "--data-dir", str(tiny_mnist_root),
            "--out", str(out), "--device", "cpu", "--no-progress"]  # fmt: skip
    if how == "flag":
        args.append("--tensorboard")
    else:
        config = tmp_path / "run.toml"
        config.write_text("[train]\ntensorboard = true\n")
        args += ["--config", str(config)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "needs the tensorboard package" in err and "pip install" in err
    assert "Traceback" not in err
    assert not out.exists()


def test_no_tensorboard_turns_a_config_files_setting_off(tiny_mnist_root, tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text("[train]\ntensorboard = true\n")
    out = tmp_path / "run"
    _train(tiny_mnist_root, out, "--max-steps", "2", "--config", str(config), "--no-tensorboard")
    assert "tensorboard/" not in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["tensorboard"] is False
    assert not (out / "tensorboard").exists()


def test_overwrite_removes_the_old_runs_events(tmp_path):
    out = tmp_path / "run"
    (out / "tensorboard").mkdir(parents=True)
    (out / "tensorboard" / "events.out.tfevents.1.host.1.0").write_bytes(b"old")
    (out / "metrics.jsonl").write_text('{"type": "train", "step": 1}\n')
    with open_run_folder(out, overwrite=True):
        assert not (out / "tensorboard").exists()


def test_importing_pairflow_and_its_training_loads_no_tensorboard():
    code = (
        "import sys, pairflow, pairflow.training, pairflow.training.loop, "
        "pairflow.commands.train\n"
        "loaded = [m for m in sys.modules if 'tensorboard' in m and m != "
        "'pairflow.training.tensorboard']\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
