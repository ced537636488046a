"""The command line end to end on tiny data: train, resume, sample, evaluate, errors."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clitools import pairflow
from pairflow.training import load_checkpoint

TINY_SET = ["--set", "hidden_features=16"]


def tiny_train_args(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train", "--preset", "seed", "--epochs", "1", "--batch-size", "16", "--num-pairs", "64",
        "--test-pairs", "32", "--data-dir", str(root), "--out", str(out), "--device", "cpu",
        "--precision", "fp32", "--sample-n", "4", "--no-progress", *TINY_SET, *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_mnist_root):
    out = tmp_path_factory.mktemp("cli") / "run"
    pairflow(*tiny_train_args(tiny_mnist_root, out))
    return out


def test_train_then_resume_for_more_epochs(trained_run, tiny_mnist_root, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    proc = pairflow(*tiny_train_args(tiny_mnist_root, run, "--epochs", "2", "--resume"))
    assert '"step": 8' in proc.stdout
    assert load_checkpoint(run / "last.pt")["epoch"] == 2


def test_config_file_values_are_overridden_by_flags(tiny_mnist_root, tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text("[train]\nlr = 0.0005\nbatch_size = 32\nwarmup_steps = 3\n")
    out = tmp_path / "run"
    pairflow(*tiny_train_args(tiny_mnist_root, out, "--config", str(cfg), "--max-steps", "1"))
    saved = json.loads((out / "config.json").read_text())
    assert saved["lr"] == 0.0005 and saved["warmup_steps"] == 3
    assert saved["batch_size"] == 16  # the flag wins over the file


@pytest.mark.parametrize("suffix", [".png", ".npz", ""])
def test_sample_writes_png_npz_and_folder(trained_run, tmp_path, suffix):
    out = tmp_path / f"samples{suffix}"
    pairflow("sample", str(trained_run), "--n", "6", "--temperature", "0.8", "--out", str(out))
    if suffix == ".png":
        with Image.open(out) as img:
            assert img.mode == "L" and img.width > img.height
    elif suffix == ".npz":
        data = np.load(out)
        assert data["images"].shape == (6, 28, 56) and data["images"].dtype == np.uint8
        assert "labels" not in data
    else:
        files = sorted(out.iterdir())
        assert len(files) == 6
        with Image.open(files[0]) as img:
            assert img.size == (56, 28)


def test_sample_is_reproducible_with_a_seed(trained_run, tmp_path):
    a, b, c = (tmp_path / f"{k}.npz" for k in "abc")
    pairflow("sample", str(trained_run), "--n", "3", "--seed", "5", "--out", str(a))
    pairflow("sample", str(trained_run), "--n", "3", "--seed", "5", "--out", str(b))
    pairflow("sample", str(trained_run), "--n", "3", "--seed", "6", "--out", str(c))
    assert np.array_equal(np.load(a)["images"], np.load(b)["images"])
    assert not np.array_equal(np.load(a)["images"], np.load(c)["images"])


def test_interpolate_writes_a_grid(trained_run, tiny_mnist_root, tmp_path):
    out = tmp_path / "interp.png"
    pairflow("sample", str(trained_run), "--interpolate", "--n", "2", "--steps", "5",
             "--data-dir", str(tiny_mnist_root), "--out", str(out))  # fmt: skip
    with Image.open(out) as img:
        assert img.width > 5 * 56 and img.height > 2 * 28


def test_evaluate_prints_and_writes_json(trained_run, tiny_mnist_root):
    proc = pairflow("evaluate", str(trained_run), "--split", "test",
                    "--data-dir", str(tiny_mnist_root), "--num-pairs", "40")  # fmt: skip
    report = json.loads((trained_run / "eval_test.json").read_text())
    assert report["num_pairs"] == 40 and report["split"] == "test"
    assert 0 < report["bits_per_dim"] < 100 and report["bits_per_dim_stderr"] > 0
    assert str(report["bits_per_dim"])[:6] in proc.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["sample", "RUN", "--n", "-3"], "--n must be a positive"),
        (["sample", "RUN", "--temperature", "0"], "--temperature must be > 0"),
        (["sample", "/no/such/run"], "does not exist"),
        (["sample", "RUN", "--pair", "37"], "--pair needs a conditional model"),
        (["sample", "--pretrained", "nonsense"], "unknown pretrained model 'nonsense'"),
        (["train", "--preset", "resnet"], "unknown preset 'resnet'; valid presets: seed"),
        (["train", "--precision", "fp8"], "unknown precision 'fp8'"),
        (["train", "--test-every", "0"], "test_every must be a positive integer, got 0"),
        (["train", "--config", "/no/such.toml"], "does not exist"),
        (["evaluate", "RUN", "--split", "val"], "unknown --split 'val'"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(trained_run, args, message):
    args = [str(trained_run) if a == "RUN" else a for a in args]
    proc = pairflow(*args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "best.pt"
    bad.write_bytes(b"garbage")
    proc = pairflow("sample", str(bad), check=False)
    assert proc.returncode == 2 and "corrupt" in proc.stderr


def test_resume_with_another_preset_is_refused(trained_run, tiny_mnist_root, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    args = tiny_train_args(tiny_mnist_root, run, "--resume")
    args[args.index("seed")] = "multiscale"
    proc = pairflow(*args, check=False)
    assert proc.returncode == 2 and "trained with preset='seed'" in proc.stderr


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_saves_a_checkpoint_that_resumes(tiny_mnist_root, tmp_path, sig, code):
    out = tmp_path / "run"
    args = tiny_train_args(tiny_mnist_root, out, "--epochs", "1000")
    proc = subprocess.Popen([sys.executable, "-m", "pairflow", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 120
    while not (out / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.2)  # wait for the first epoch's checkpoint: training is under way
    time.sleep(0.5)
    proc.send_signal(sig)  # SIGTERM: what kill, a scheduler's time limit or a container sends
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert "checkpoint saved" in stdout and sig.name in stderr
    state = load_checkpoint(out / "last.pt")
    assert state["step"] >= 4
    pairflow(*tiny_train_args(tiny_mnist_root, out, "--epochs", str(state["epoch"] + 1),
                              "--resume"))  # fmt: skip
    assert load_checkpoint(out / "last.pt")["epoch"] == state["epoch"] + 1
