"""The fault suite: every way a user or the machine can break a run, through the CLI.

Each case asserts the exit code, that the message names the problem (and no traceback came
out), and that files which existed are byte-identical afterwards where nothing should change.

Most cases call ``pairflow.cli.main`` in this process (the console script's entry point, with
stdout/stderr captured): an exception escaping it is the traceback a user would have seen, and
the test fails on it. Cases that need their own process (a lock held by another ``train``,
``kill -9`` inside a checkpoint write, Ctrl-C, dropped file permissions) run ``python -m
pairflow`` in a subprocess; the kill cases use the atomic writer's test hook
``PAIRFLOW_FAULT`` (see ``pairflow.utils._injected_fault``).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from pairflow.cli import main
from pairflow.training import load_checkpoint


def cli(*args) -> tuple[int, str, str]:
    """Run ``pairflow ARGS`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse errors
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def run_subprocess(*args, env=None, prefix=()) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "pairflow", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


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


def refused(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_mnist_root) -> Path:
    """A finished 1-epoch run (4 steps). Copy it before changing it (see ``run_copy``)."""
    out = tmp_path_factory.mktemp("faults") / "run"
    code, _, err = cli(*train_args(tiny_mnist_root, out))
    assert code == 0, err
    return out


@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    return run


# ---- data loss ----------------------------------------------------------------------------


def test_train_into_an_existing_run_is_refused_and_changes_nothing(run_copy, tiny_mnist_root):
    before = snapshot(run_copy)
    code, _, err = cli(*train_args(tiny_mnist_root, run_copy, "--max-steps", "2"))
    refused(code, err, "already holds a run", "--resume", "--overwrite")
    assert snapshot(run_copy) == before


def test_overwrite_starts_over_and_keeps_other_files(run_copy, tiny_mnist_root):
    (run_copy / "eval_test.json").write_text("{}")
    (run_copy / "notes.txt").write_text("mine")
    code, _, err = cli(*train_args(tiny_mnist_root, run_copy, "--max-steps", "2", "--overwrite"))
    assert code == 0, err
    records = [json.loads(line) for line in (run_copy / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2], records  # the old run's records are gone
    assert load_checkpoint(run_copy / "last.pt")["step"] == 2
    assert not (run_copy / "eval_test.json").exists()  # the old model's report went with it
    assert (run_copy / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--set", "hidden_features=true"], "hidden_features: expected an integer, got True"),
        (["--set", "hidden_channels=true"], "hidden_channels: expected an integer, got True"),
        (["--set", "no_such_field=3"], "no_such_field"),
        (["--data-dir", "MISSING"], "MNIST file not found"),
    ],
)
def test_a_train_that_fails_before_its_first_step_leaves_nothing(
    tiny_mnist_root, tmp_path, extra, message
):
    out = tmp_path / "new" / "run"
    extra = [tmp_path / "nodata" if a == "MISSING" else a for a in extra]
    code, _, err = cli(*train_args(tiny_mnist_root, out, *extra))
    refused(code, err, message)
    assert not (tmp_path / "new").exists()


def test_a_failure_after_the_folder_is_taken_removes_what_it_wrote(tiny_mnist_root, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    # Passes every check up front, then fails building the data: the batch exceeds the pairs.
    code, _, err = cli(*train_args(tiny_mnist_root, out, "--batch-size", "128"))
    refused(code, err, "batch size 128 exceeds")
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_train_out_that_is_a_file_is_refused(tiny_mnist_root, tmp_path):
    target = tmp_path / "results.txt"
    target.write_text("precious")
    code, _, err = cli(*train_args(tiny_mnist_root, target))
    refused(code, err, f"--out {target} is a file")
    assert target.read_text() == "precious"
    code, _, err = cli(*train_args(tiny_mnist_root, target / "run"))
    refused(code, err, f"{target} is a file, not a folder")


@pytest.mark.slow
def test_second_train_on_one_out_is_refused_naming_the_holder(tiny_mnist_root, tmp_path):
    """Also: after Ctrl-C, metrics.jsonl holds a train record for the interrupted step."""
    out = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", "pairflow",
         *map(str, train_args(tiny_mnist_root, out, "--epochs", "1000", "--log-every", "3"))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 90
        while not (out / "last.pt").exists() and time.time() < deadline:
            time.sleep(0.1)  # the first epoch's checkpoint: training is under way
        assert (out / ".lock").read_text().strip() == str(first.pid)
        before = (out / "config.json").read_bytes()
        code, _, err = cli(*train_args(tiny_mnist_root, out, "--resume", "--epochs", "2000"))
        refused(code, err, "in use by another pairflow train", f"PID {first.pid}")
        assert (out / "config.json").read_bytes() == before
    finally:
        first.send_signal(signal.SIGINT)
        stdout, stderr = first.communicate(timeout=60)
    assert first.returncode == 130, stderr
    assert not (out / ".lock").exists()  # released on exit
    state = load_checkpoint(out / "last.pt")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["type"] == "train"]
    assert steps == sorted(steps) and steps[-1] == state["step"], (steps, state["step"])


def test_a_stale_lock_of_a_dead_process_is_taken_over(run_copy, tiny_mnist_root):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run_copy / ".lock").write_text(f"{dead.pid}\n")
    code, _, err = cli(*train_args(tiny_mnist_root, run_copy, "--resume", "--epochs", "2"))
    assert code == 0, err
    assert load_checkpoint(run_copy / "last.pt")["epoch"] == 2
    assert not (run_copy / ".lock").exists()


@pytest.mark.parametrize(
    "extra, names",
    [
        (["--set", "hidden_features=32"], ["--set", "hidden_features"]),
        (["--lr", "0.5"], ["--lr", "0.5"]),
        (["--batch-size", "8"], ["--batch-size"]),
        (["--num-pairs", "32", "--seed", "3"], ["--num-pairs", "--seed"]),
        (["--precision", "bf16"], ["--precision"]),
    ],
)
def test_resume_refuses_what_it_cannot_change(run_copy, tiny_mnist_root, extra, names):
    before = snapshot(run_copy)
    args = train_args(tiny_mnist_root, run_copy, "--resume", "--epochs", "2")
    for flag in ("--batch-size", "--num-pairs", "--precision", "--set"):
        if flag in extra:  # drop the default given by train_args so that the new value counts
            i = args.index(flag)
            del args[i : i + 2]
    code, _, err = cli(*args, *extra)
    refused(code, err, "--resume cannot change", *names)
    assert snapshot(run_copy) == before


def test_resume_applies_and_records_what_it_can(run_copy, tiny_mnist_root):
    saved = load_checkpoint(run_copy / "last.pt")["train_config"]
    extra = ["--resume", "--epochs", "2", "--grad-clip", "5", "--warmup-steps", "1"]
    code, _, err = cli(*train_args(tiny_mnist_root, run_copy, *extra))
    assert code == 0, err
    state = load_checkpoint(run_copy / "last.pt")
    assert state["epoch"] == 2 and state["step"] == 8  # --epochs applied
    recorded = json.loads((run_copy / "config.json").read_text())
    for config in (recorded, state["train_config"]):
        assert (config["epochs"], config["grad_clip"], config["warmup_steps"]) == (2, 5.0, 1)
        changed = ("epochs", "grad_clip", "warmup_steps", "out")  # out: run_copy moved it
        fixed = {k: v for k, v in config.items() if k not in changed}
        assert fixed == {k: v for k, v in saved.items() if k in fixed}


# ---- tracebacks that became messages -------------------------------------------------------


@pytest.mark.parametrize(
    "line, key",
    [
        ('lr = "fast"', "lr"),
        ('warmup_steps = "10"', "warmup_steps"),
        ('grad_clip = "big"', "grad_clip"),
        ("sample_temperature = true", "sample_temperature"),
        ('time_budget = "1h"', "time_budget"),
        ("model_overrides = [1, 2]", "model_overrides"),
        ("epochs = 1.5", "epochs"),
    ],
)
def test_wrong_typed_config_values_name_file_key_and_type(tiny_mnist_root, tmp_path, line, key):
    config = tmp_path / "run.toml"
    config.write_text(f"[train]\n{line}\n")
    code, _, err = cli(*train_args(tiny_mnist_root, tmp_path / "run", "--config", config))
    refused(code, err, str(config), f"key {key}: expected")
    assert not (tmp_path / "run").exists()


def test_malformed_toml_names_the_file(tiny_mnist_root, tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("lr = = 3\n")
    code, _, err = cli(*train_args(tiny_mnist_root, tmp_path / "run", "--config", config))
    refused(code, err, f"config file {config} could not be parsed", "line 1")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--set", "scale_bound=inf"], "scale_bound: expected a finite number, got inf"),
        (["--set", "scale_bound=NaN"], "scale_bound: expected a finite number, got nan"),
        (["--set", "scale_bound=-1"], "scale_bound must be > 0"),
        (["--set", "logit_alpha=0"], "logit_alpha must be in (0, 0.5), got 0"),
        (["--grad-clip", "nan"], "grad_clip (--grad-clip): expected a finite number, got nan"),
        (["--lr", "inf"], "lr (--lr): expected a finite number"),
        (["--seed", "-1"], "--seed"),
        (["--resume", "--overwrite"], "--resume and --overwrite exclude each other"),
    ],
)
def test_bad_train_values_are_refused_before_anything_is_written(
    tiny_mnist_root, tmp_path, extra, message
):
    code, _, err = cli(*train_args(tiny_mnist_root, tmp_path / "run", *extra))
    refused(code, err, message)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["sample", "RUN", "--temperature", "inf"], "--temperature must be > 0 and finite"),
        (["sample", "RUN", "--seed", "-1"], "--seed: must be a whole number in 0..4294967295"),
        (["evaluate", "RUN", "--temperature", "inf"], "--temperature must be > 0 and finite"),
        (["evaluate", "RUN", "--seed", "-2"], "--seed: must be a whole number in 0..4294967295"),
        # The --out checks come before the model is loaded (a missing run is not reported).
        (["sample", "/no/run", "--out", "/proc/foo.png"], "cannot write in /proc"),
        (["sample", "/no/run", "--out", "FILE/x.png"], "is a file, not a folder"),
        (["sample", "/no/run", "--out", "samples.jpg"], "use a .png file, a .npz file or a"),
        (["sample", "RUN", "--n", "10000000"], "at most 10,000 samples, asked 10,000,000"),
    ],
)
def test_bad_sample_and_evaluate_arguments(trained, tmp_path, args, message):
    existing = tmp_path / "file.txt"
    existing.write_text("x")
    args = [
        trained if a == "RUN" else a.replace("FILE", str(existing)) if "FILE" in a else a
        for a in args
    ]
    code, _, err = cli(*args)
    refused(code, err, message)
    assert existing.read_text() == "x"
    if "10000000" in args:
        assert "15.7 GB" in err  # the estimate of the .npz it suggests instead


def test_disk_full_while_checkpointing_is_a_message_and_keeps_checkpoints(
    run_copy, tiny_mnist_root, monkeypatch
):
    import pairflow.utils

    before = {name: (run_copy / name).read_bytes() for name in ("last.pt", "best.pt")}
    monkeypatch.setenv("PAIRFLOW_FAULT", "enospc:*.pt")
    monkeypatch.setattr(pairflow.utils, "_FAULT_COUNTS", {})
    code, _, err = cli(*train_args(tiny_mnist_root, run_copy, "--resume", "--epochs", "2"))
    assert code == 1 and "Traceback" not in err
    assert "No space left on device" in err and "--resume" in err
    assert {name: (run_copy / name).read_bytes() for name in before} == before
    assert not list(run_copy.glob(".*.tmp"))


def _without_read_permission() -> tuple[str, ...]:
    """A command prefix under which chmod 000 files are unreadable (root ignores the mode)."""
    if os.geteuid() != 0:
        return ()
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot make a file unreadable")
    return ("setpriv", "--bounding-set=-dac_override,-dac_read_search")


@pytest.mark.slow
def test_unreadable_data_file_is_named(tiny_mnist_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_mnist_root, root)
    locked = root / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    locked.chmod(0)
    prefix = _without_read_permission()
    probe = subprocess.run([*prefix, "cat", str(locked)], capture_output=True)
    if probe.returncode == 0:
        pytest.skip("the file stays readable here")
    proc = run_subprocess("data", "--root", root, prefix=prefix)
    refused(proc.returncode, proc.stderr, str(locked), "cannot be read (Permission denied)")


def test_zero_image_idx_file_is_named(tiny_mnist_root, tmp_path):
    from pairflow.data import write_idx

    root = tmp_path / "data"
    shutil.copytree(tiny_mnist_root, root)
    raw = root / "MNIST" / "raw"
    write_idx(raw / "t10k-images-idx3-ubyte.gz", np.zeros((0, 28, 28), np.uint8))
    write_idx(raw / "t10k-labels-idx1-ubyte.gz", np.zeros((0,), np.uint8))
    code, _, err = cli("data", "--root", root)
    refused(code, err, "t10k-images-idx3-ubyte.gz: holds 0 images")


def test_directory_where_an_mnist_file_should_be_is_named(tiny_mnist_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_mnist_root, root)
    raw = root / "MNIST" / "raw"
    (raw / "t10k-labels-idx1-ubyte.gz").unlink()
    (raw / "t10k-labels-idx1-ubyte").mkdir()
    code, _, err = cli("data", "--root", root)
    refused(code, err, "t10k-labels-idx1-ubyte: is a directory, not an MNIST file")


def test_train_download_fetches_missing_data(tiny_mnist_root, tmp_path, monkeypatch):
    import hashlib

    import pairflow.data.download as download_module
    from test_download import Mirror

    files = {p.name: p.read_bytes() for p in (tiny_mnist_root / "MNIST" / "raw").iterdir()}
    mirror = Mirror()
    try:
        monkeypatch.setattr(download_module, "MNIST_MIRRORS", (mirror.serve("m", files),))
        md5s = {name: hashlib.md5(body).hexdigest() for name, body in files.items()}
        monkeypatch.setattr(download_module, "MNIST_RESOURCES", md5s)
        root = tmp_path / "data"
        args = train_args(root, tmp_path / "run", "--max-steps", "1", "--download")
        code, _, err = cli(*args)
    finally:
        mirror.close()
    assert code == 0, err
    assert sorted(p.name for p in (root / "MNIST" / "raw").iterdir()) == sorted(files)


# ---- sampling in bounded memory ----------------------------------------------------------


@pytest.mark.parametrize("suffix", [".npz", ""])
def test_sample_streams_batches_to_npz_and_folder(trained, tmp_path, suffix):
    out = tmp_path / f"s{suffix}"
    code, _, err = cli("sample", trained, "--n", "23", "--batch-size", "5", "--out", out)
    assert code == 0, err
    reference = tmp_path / "ref.npz"
    code, _, err = cli("sample", trained, "--n", "23", "--batch-size", "5", "--out", reference)
    expected = np.load(reference)["images"]
    assert expected.shape == (23, 28, 56) and expected.dtype == np.uint8
    if suffix:
        assert np.array_equal(np.load(out)["images"], expected)
    else:
        from PIL import Image

        files = sorted(out.iterdir())
        assert len(files) == 23
        assert np.array_equal(np.asarray(Image.open(files[22])), expected[22])


def test_npz_writer_holds_one_batch_in_memory(tmp_path):
    """50 batches of 1000 images (78 MB) stream through at most a few batches of memory."""
    import tracemalloc

    import torch

    from pairflow.commands.sample import _write_npz

    def batches():
        for k in range(50):
            images = np.full((1000, 1, 28, 56), k, np.uint8)  # numpy memory: traced
            yield k * 1000, torch.from_numpy(images)

    tracemalloc.start()
    try:
        _write_npz(tmp_path / "big.npz", batches(), 50_000, None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1568 * 1000, peak  # < 8 batches; the whole array would be 50
    images = np.load(tmp_path / "big.npz")["images"]
    assert images.shape == (50_000, 28, 56)
    assert images[::1000, 0, 0].tolist() == list(range(50))


# ---- unclear or silent ---------------------------------------------------------------------


def test_torn_last_metrics_line_is_dropped_with_a_warning(run_copy, tiny_mnist_root):
    metrics = run_copy / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join(lines) + '\n{"type": "train", "st')  # a kill mid-append
    torn = re.escape(f"{metrics}: line {len(lines) + 1} is torn")
    with pytest.warns(UserWarning, match=torn + ".*dropped"):
        code, out, err = cli(*train_args(tiny_mnist_root, run_copy, "--resume", "--epochs", "2"))
    assert code == 0, err
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert records[: len(lines)] == [json.loads(line) for line in lines]


def test_malformed_metrics_line_in_the_middle_is_named(run_copy, tiny_mnist_root):
    metrics = run_copy / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("garbage\n" + "\n".join(lines) + "\n")
    before = snapshot(run_copy)
    code, _, err = cli(*train_args(tiny_mnist_root, run_copy, "--resume", "--epochs", "2"))
    refused(code, err, f"{metrics}: line 1 is not a JSON record")
    assert snapshot(run_copy) == before


def test_leftover_checkpoint_temporaries_are_removed(run_copy, tiny_mnist_root):
    (run_copy / ".last.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    code, out, err = cli(*train_args(tiny_mnist_root, run_copy, "--resume", "--epochs", "2"))
    assert code == 0, err
    assert not list(run_copy.glob(".*.tmp"))
    assert "removed 1 temporary file" in out


@pytest.mark.slow
def test_kill_during_the_first_last_pt_write_then_resume(tiny_mnist_root, tmp_path):
    out = tmp_path / "run"
    proc = run_subprocess(*train_args(tiny_mnist_root, out), env={"PAIRFLOW_FAULT": "kill:last.pt"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (out / "best.pt").is_file() and not (out / "last.pt").exists()
    assert list(out.glob(".last.pt.*.tmp")) and (out / ".lock").exists()  # a dead owner's lock
    code, stdout, err = cli(*train_args(tiny_mnist_root, out, "--resume", "--epochs", "2"))
    assert code == 0, err
    assert "resuming from" in stdout and "best.pt" in stdout
    assert load_checkpoint(out / "last.pt")["epoch"] == 2
    assert not list(out.glob(".*.tmp")) and not (out / ".lock").exists()


def test_divergence_never_overwrites_a_good_checkpoint(tiny_mnist_root, tmp_path):
    # lr 1e4 behind a warmup of a million steps is a sane rate for the first epoch; resuming
    # without the warmup applies the full 1e4, which turns the weights NaN within steps.
    run = tmp_path / "run"
    slow_start = ["--lr", "1e4", "--warmup-steps", "1000000"]
    code, _, err = cli(*train_args(tiny_mnist_root, run, *slow_start))
    assert code == 0, err
    before = {name: (run / name).read_bytes() for name in ("last.pt", "best.pt")}
    good = load_checkpoint(run / "best.pt")
    resume = ["--resume", "--epochs", "3", "--warmup-steps", "0"]
    code, out, err = cli(*train_args(tiny_mnist_root, run, *resume))
    assert code == 1, out + err
    assert "Traceback" not in err
    assert {name: (run / name).read_bytes() for name in before} == before
    assert "the model diverged and was not saved" in out
    assert f"{run / 'best.pt'} (step {good['step']}, test bpd {good['best_test_bpd']:.4f})" in out
    assert "the run ended with a diverged model" in out
