"""The last bad inputs, signals and wordings a new user met, each end to end through the CLI.

Each bad input exits 2 with a message that names the problem and the value (no traceback),
before any long work starts, and leaves nothing behind. Most cases run ``pairflow.cli.main``
in this process; the signal case runs ``python -m pairflow`` in a subprocess.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch

from pairflow.cli import main


def cli(*args) -> tuple[int, str, str]:
    """Run ``pairflow ARGS`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse errors
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def refused(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"


def train_args(root: Path, out: Path, *extra) -> list:
    return [
        "train", "--preset", "seed", "--epochs", "1", "--batch-size", "16", "--num-pairs", "64",
        "--test-pairs", "32", "--data-dir", root, "--out", out, "--device", "cpu",
        "--precision", "fp32", "--sample-n", "4", "--no-progress", "--threads", "1",
        "--set", "hidden_features=16", *extra,
    ]  # fmt: skip


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes)."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_mnist_root) -> Path:
    """A finished 1-epoch run (4 steps). Copy it before changing it (see ``run_copy``)."""
    out = tmp_path_factory.mktemp("edges") / "run"
    code, _, err = cli(*train_args(tiny_mnist_root, out))
    assert code == 0, err
    return out


@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    return run


# ---- data ------------------------------------------------------------------------------------


def _empty_cifar_root(root: Path, test_images: int = 0) -> Path:
    """CIFAR-10 batches in the real format (protocol 2, bytes keys) holding no training images
    (and ``test_images`` blank test images)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = test_images if name == "test_batch" else 0
        batch = {
            b"batch_label": name.encode(),
            b"labels": [i % 10 for i in range(n)],
            b"data": np.zeros((n, 3072), np.uint8),
            b"filenames": [f"{i}.png".encode() for i in range(n)],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    names = [f"class{i}".encode() for i in range(10)]
    meta = {b"label_names": names, b"num_cases_per_batch": 0, b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return root


def test_cifar_batches_holding_no_images_are_named_by_data_and_train(tmp_path):
    root = _empty_cifar_root(tmp_path / "data")
    folder = root / "cifar-10-batches-py"
    expected = f"{folder}: data_batch_1, data_batch_2, data_batch_3, data_batch_4, data_batch_5 "
    code, out, err = cli("data", "--dataset", "cifar10", "--root", root)
    refused(code, err, expected + "hold 0 images", "the train split needs images")
    assert out == ""
    run = tmp_path / "run"
    code, _, err = cli(*train_args(root, run, "--dataset", "cifar10"))
    refused(code, err, expected + "hold 0 images")
    assert not run.exists()


def test_a_cifar_test_batch_holding_no_images_is_named(tmp_path):
    root = tmp_path / "data"
    _empty_cifar_root(root)
    batch = {b"data": np.zeros((10, 3072), np.uint8), b"labels": list(range(10))}
    for i in range(1, 6):  # training images, but still no test images
        (root / "cifar-10-batches-py" / f"data_batch_{i}").write_bytes(pickle.dumps(batch, 2))
    code, _, err = cli("data", "--dataset", "cifar10", "--root", root)
    refused(code, err, "test_batch holds 0 images", "the test split needs images")


def test_an_unwritable_preview_is_refused_before_reading_any_data(tmp_path):
    # The data root does not exist: had the data been read first, the message would be
    # about the missing MNIST files.
    missing_root = tmp_path / "nowhere"
    code, out, err = cli("data", "--root", missing_root, "--preview", "/proc/p.png")
    refused(code, err, "--preview /proc/p.png: cannot write in /proc")
    assert out == ""
    (tmp_path / "file").write_text("")
    code, _, err = cli("data", "--root", missing_root, "--preview", tmp_path / "file" / "p.png")
    refused(code, err, f"--preview {tmp_path / 'file' / 'p.png'}", "is a file, not a folder")


# ---- seeds -----------------------------------------------------------------------------------

SEED_RANGE = "must be a whole number in 0..4294967295 (2**32 - 1)"


@pytest.mark.parametrize("seed", ["18446744073709551616", "4294967296", "-1", "1.5", "x"])
@pytest.mark.parametrize(
    "command",
    [
        ["sample", "--pretrained", "seed", "--out", "OUT/s.png"],
        ["evaluate", "--pretrained", "seed", "--out", "OUT/e"],
        ["data", "--root", "OUT"],
        ["classifier", "train", "--out", "OUT/c.pt"],
        ["classifier", "eval"],
        ["train", "--out", "OUT/run"],
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_every_seed_outside_its_range_is_refused_with_the_range(command, seed, tmp_path):
    args = [a.replace("OUT", str(tmp_path)) for a in command]
    code, out, err = cli(*args, "--seed", seed)
    refused(code, err, f"argument --seed: {SEED_RANGE}, got {seed}")
    assert out == "" and not list(tmp_path.iterdir())


def test_the_largest_seed_samples_and_a_config_file_seed_is_checked(tiny_mnist_root, tmp_path):
    options = ["--n", "2", "--device", "cpu", "--precision", "fp32", "--out", tmp_path / "s.png"]
    code, _, err = cli("sample", "--pretrained", "seed", "--seed", "4294967295", *options)
    assert code == 0, err
    assert (tmp_path / "s.png").is_file()
    config = tmp_path / "config.toml"
    config.write_text("seed = 18446744073709551616\n")
    code, _, err = cli(*train_args(tiny_mnist_root, tmp_path / "run", "--config", config))
    refused(code, err, f"seed (--seed) {SEED_RANGE}, got 18446744073709551616")
    assert not (tmp_path / "run").exists()


# ---- signals ---------------------------------------------------------------------------------


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize(
    "sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"]
)
def test_a_signal_stops_sample_removes_its_temporary_file_and_says_so(tmp_path, sig, code):
    out = tmp_path / "big.npz"
    args = ["sample", "--pretrained", "seed", "--n", "1000000", "--batch-size", "100",
            "--out", out, "--device", "cpu", "--precision", "fp32"]  # fmt: skip
    # Ctrl-C at a terminal reaches a process whose SIGINT is at its default; a test worker
    # may itself run with SIGINT ignored, which a child inherits (and Python then keeps).
    proc = subprocess.Popen([sys.executable, "-m", "pairflow", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"},
                            preexec_fn=_default_sigint)  # fmt: skip
    deadline = time.time() + 120
    while not list(tmp_path.glob(".big.npz.*.tmp")) and time.time() < deadline:
        time.sleep(0.1)  # the streamed .npz is being written
    assert list(tmp_path.glob(".big.npz.*.tmp")), proc.communicate(timeout=60)
    time.sleep(0.5)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    assert f"stopped by {sig.name}: {out} was not written, and no partial file of it is left" in (
        stderr
    )
    assert list(tmp_path.iterdir()) == []


# ---- config files ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, text",
    [
        ("mixed.toml", 'epochs = 3\nlr = 0.01\n\n[train]\npreset = "seed"\n'),
        ("mixed.json", '{"epochs": 3, "lr": 0.01, "train": {"preset": "seed"}}'),
    ],
)
def test_a_config_file_with_keys_outside_its_train_table_is_refused(
    tiny_mnist_root, tmp_path, name, text
):
    config = tmp_path / name
    config.write_text(text)
    code, out, err = cli(*train_args(tiny_mnist_root, tmp_path / "run", "--config", config))
    refused(code, err, f"config file {config} has settings both in its [train] table and outside",
            "(epochs, lr)", "put them all in [train]")  # fmt: skip
    assert not (tmp_path / "run").exists()
    # Either form alone is read whole.
    for text in ("epochs = 1\nlr = 0.01\n", "[train]\nepochs = 1\nlr = 0.01\n"):
        config = tmp_path / "one.toml"
        config.write_text(text)
        run = tmp_path / "run"
        code, _, err = cli(*train_args(tiny_mnist_root, run, "--config", config, "--max-steps=1"))
        assert code == 0, err
        saved = json.loads((run / "config.json").read_text())
        assert saved["lr"] == 0.01 and saved["max_steps"] == 1
        shutil.rmtree(run)


# ---- metrics.jsonl ---------------------------------------------------------------------------


def test_a_metrics_log_of_binary_garbage_is_named(run_copy, tiny_mnist_root, tmp_path):
    metrics = run_copy / "metrics.jsonl"
    metrics.write_bytes(bytes(range(256)) * 4)  # byte 0x80 at offset 128, on line 2
    before = snapshot(run_copy)
    code, _, err = cli(*train_args(tiny_mnist_root, run_copy, "--resume", "--epochs", "2"))
    refused(code, err, f"{metrics}: line 2 is not text (byte 0x80 at offset 128)")
    assert snapshot(run_copy) == before
    # evaluate has done its work when it reads the log: it reports, without those curves.
    report = tmp_path / "report"
    code, _, err = cli("evaluate", run_copy, "--data-dir", tiny_mnist_root, "--out", report,
                       "--samples", "20", "--device", "cpu", "--no-progress")  # fmt: skip
    assert code == 0, err
    assert f"warning: no curves from it: {metrics}: line 2 is not text" in err
    assert (report / "report.md").is_file() and (report / "eval_test.json").is_file()


# ---- resume ----------------------------------------------------------------------------------


def test_resuming_a_finished_run_says_so_and_changes_nothing(run_copy, tiny_mnist_root):
    before = snapshot(run_copy)
    code, out, err = cli(*train_args(tiny_mnist_root, run_copy, "--resume"))
    assert code == 0, err
    assert out == (
        f"pairflow train: the run in {run_copy} already finished: its 1 epoch trained "
        "(step 4); raise --epochs to train on\n"
    )
    assert "diverged" not in out + err
    assert snapshot(run_copy) == before


def _test_steps(run: Path) -> list[int]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in records if r["type"] == "test"]


def _weights(run: Path) -> dict:
    from pairflow.training import load_checkpoint

    return load_checkpoint(run / "last.pt")["model"]


def test_max_steps_at_an_epochs_end_resumes_exactly_without_a_second_test(
    tiny_mnist_root, tmp_path
):
    # 4 steps an epoch: --max-steps 4 stops at the first epoch's end.
    straight, split = tmp_path / "straight", tmp_path / "split"
    code, _, err = cli(*train_args(tiny_mnist_root, straight, "--epochs", "3", "--max-steps", "6"))
    assert code == 0, err
    code, out, err = cli(*train_args(tiny_mnist_root, split, "--epochs", "3", "--max-steps", "4"))
    assert code == 0, err
    assert '"epoch": 1' in out and "epoch 1: test bits/dim" in out
    assert sorted(p.name for p in (split / "samples").iterdir()) == ["epoch_001.png"]
    # Resumed as it was: nothing left, nothing trained, nothing logged.
    before = snapshot(split)
    code, out, err = cli(*train_args(tiny_mnist_root, split, "--resume", "--epochs", "3"))
    assert code == 0, err
    assert "already finished: --max-steps 4 is reached (step 4); raise it to train on" in out
    assert snapshot(split) == before
    # Resumed further: the same weights and test records as training straight to step 6.
    further = ["--resume", "--epochs", "3", "--max-steps", "6"]
    code, out, err = cli(*train_args(tiny_mnist_root, split, *further))
    assert code == 0, err
    assert json.loads(out[out.index("{") : out.rindex("}") + 1])["step"] == 6
    assert _test_steps(split) == _test_steps(straight) == [4, 6]
    a, b = _weights(straight), _weights(split)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_saved_mid_epoch_at_its_last_batch_resumes_as_complete(
    tiny_mnist_root, tmp_path
):
    """Earlier versions saved a --max-steps stop at an epoch's last batch as mid-epoch
    (batch 4 of 4): a resume neither trains nor tests that epoch again."""
    from pairflow.training import load_checkpoint
    from pairflow.utils import atomic_save

    run = tmp_path / "run"
    code, _, err = cli(*train_args(tiny_mnist_root, run, "--epochs", "3", "--max-steps", "4"))
    assert code == 0, err
    state = load_checkpoint(run / "last.pt")
    assert (state["epoch"], state["batch_in_epoch"]) == (1, 0)
    atomic_save({**state, "epoch": 0, "batch_in_epoch": 4}, run / "last.pt")
    code, out, err = cli(*train_args(tiny_mnist_root, run, "--resume", "--epochs", "3"))
    assert code == 0, err
    assert "already finished: --max-steps 4 is reached (step 4); raise it to train on" in out
    assert "diverged" not in out and _test_steps(run) == [4]
    # Only the checkpoint's batch count says the epochs are done: found once the data is read.
    code, out, err = cli(*train_args(tiny_mnist_root, run, "--resume", "--max-steps", "10"))
    assert code == 0, err
    assert out.endswith(
        "already finished: its 1 epoch trained (step 4); raise --epochs to train on\n"
    )
    assert "diverged" not in out and _test_steps(run) == [4]
    further = ["--resume", "--epochs", "3", "--max-steps", "5"]
    code, out, err = cli(*train_args(tiny_mnist_root, run, *further))
    assert code == 0, err
    assert load_checkpoint(run / "last.pt")["step"] == 5 and _test_steps(run) == [4, 5]


def test_the_final_json_counts_epochs_as_the_bar_does(tiny_mnist_root, tmp_path):
    code, out, err = cli(*train_args(tiny_mnist_root, tmp_path / "run", "--max-steps", "2"))
    assert code == 0, err
    summary = json.loads(out[out.index("{") : out.rindex("}") + 1])
    assert summary["epoch"] == 1 and summary["step"] == 2 and summary["stopped"] == "max_steps"
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert {r["epoch"] for r in records} == {1}


# ---- models too large for memory -------------------------------------------------------------


@pytest.mark.parametrize(
    "preset, override, parameters",
    [("seed", "hidden_features=100000000", "120,001,884,000,009,408"),
     ("multiscale", "hidden_channels=100000", "1,800,081,600,168")],
)  # fmt: skip
def test_a_model_too_large_for_memory_is_refused_before_allocating(
    tiny_mnist_root, tmp_path, preset, override, parameters
):
    run = tmp_path / "run"
    args = [a if a != "hidden_features=16" else override for a in train_args(tiny_mnist_root, run)]
    start = time.perf_counter()
    code, out, err = cli(*args, "--preset", preset)
    refused(code, err, "the model would need ", f" GB to train ({parameters} parameters",
            "more than the ", " GB free on cpu")  # fmt: skip
    assert time.perf_counter() - start < 60  # nothing of that size was allocated
    assert not run.exists() and out == ""


def test_the_parameter_count_is_exact_without_building_the_model():
    from dataclasses import asdict

    from pairflow.models import REGISTRY, kind_spec
    from pairflow.training.checkpoint import build_model
    from pairflow.training.memory import parameter_size

    for kind in REGISTRY:
        config_class = kind_spec(kind).config_class
        for preset in config_class.PRESETS:
            config = asdict(config_class.from_preset(preset))
            params = list(build_model(kind, config).parameters())
            expected = (sum(p.numel() for p in params), sum(p.nbytes for p in params))
            assert parameter_size(kind, config) == expected, (kind, preset)


def test_a_model_is_refused_exactly_when_its_training_state_exceeds_free_memory(monkeypatch):
    from dataclasses import asdict

    from pairflow.flows import FlowConfig
    from pairflow.training import memory

    config = asdict(FlowConfig.from_preset("seed", hidden_features=16))
    count, nbytes = memory.parameter_size("flow", config)
    cpu = torch.device("cpu")
    monkeypatch.setattr(memory, "available_memory", lambda device: 4 * nbytes)
    memory.check_model_fits("flow", config, cpu)  # weights, gradients, two moments: it fits
    with pytest.raises(ValueError, match=rf"would need 0\.\d+ GB to train \({count:,} param"):
        memory.check_model_fits("flow", config, cpu, ema=True)  # one copy more does not
    monkeypatch.setattr(memory, "available_memory", lambda device: None)
    memory.check_model_fits("flow", config, cpu, ema=True)  # unknown: no refusal


# ---- what train says -------------------------------------------------------------------------


def test_a_vae_run_says_why_it_is_not_compiled(tiny_mnist_root, tmp_path):
    sizes = ["--set", "latent_dim=4", "--set", "hidden_channels=4"]  # hidden_features=16 given
    model = ["--model", "vae", "--preset", "conv", "--max-steps", "1"]
    code, out, err = cli(*train_args(tiny_mnist_root, tmp_path / "run"), *model, *sizes)
    assert code == 0, err
    assert (
        "compile: no (auto: not a multiscale flow, the one model compiling was measured to "
        "pay for)\n" in out
    )
    assert "None" not in out


def test_the_top_level_help_says_what_pairflow_does_today():
    code, out, _ = cli("--help")
    assert code == 0
    text = " ".join(out.split())
    for words in ("image pairs", "single images", "MNIST (pairs 28x56), Fashion-MNIST, and "
                  "CIFAR-10 where its files are in the data root", "RealNVP", "Glow",
                  "a VAE and a GAN", "--layout pair|single",
                  "draw pairs or images from a trained or shipped model"):  # fmt: skip
        assert words in text, words
    assert "MNIST digit pairs" not in text and "on MNIST pairs" not in text


# ---- the Datasets example of docs/datasets.md ---------------------------------------------------


def _datasets_example() -> str:
    import re

    page = Path(__file__).resolve().parents[1] / "docs" / "datasets.md"
    section = page.read_text(encoding="utf-8").split("## Datasets\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]


def _run_example(cwd: Path, data: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PAIRFLOW_DATA": str(data), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", _datasets_example()], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_the_datasets_page_example_runs_in_a_fresh_clone(tiny_mnist_root, tmp_path):
    # A clone's data root holds MNIST only: the others are named, with how to fetch them.
    proc = _run_example(tmp_path, tiny_mnist_root)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("Fashion-MNIST file not found: ") and "download=True" in lines[0]
    assert lines[1].startswith(f"CIFAR-10 not found in {tiny_mnist_root}: ")
    assert "download=True" in lines[1] and len(lines) == 2


def test_the_datasets_page_example_reads_every_dataset_where_present(roots, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "MNIST").symlink_to(roots["mnist"] / "MNIST")
    (data / "FashionMNIST").symlink_to(roots["fashion-mnist"] / "FashionMNIST")
    archive = "cifar-10-python.tar.gz"
    (data / archive).symlink_to(roots["cifar10"] / archive)
    proc = _run_example(tmp_path, data)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "fashion-mnist single (1, 28, 28) 256 items",
        "cifar10 pair (3, 32, 64) 250 items",
    ]
