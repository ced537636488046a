"""Long commands say what they are doing: progress bars on a terminal (evaluate, sample, the
training's test pass), ``--threads`` for sample and evaluate, outputs checked before the work,
and help that gives the defaults. End to end on a tiny run (a 4-step seed flow)."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from clitools import pairflow


def on_terminal(*args, size: tuple[int, int] = (24, 100), timeout: float = 300):
    """Run ``pairflow`` with stderr on a pseudo-terminal of ``size`` (rows, columns), as a
    user at a terminal sees it: (exit code, what the terminal showed, stdout)."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", *size, 0, 0))
    with tempfile.TemporaryFile(mode="w+") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pairflow", *map(str, args)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=slave,
        )
        os.close(slave)
        shown, deadline = [], time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([master], [], [], 0.5)
                if ready:
                    try:
                        data = os.read(master, 65536)
                    except OSError:  # EIO: the command closed its terminal
                        break
                    if not data:
                        break
                    shown.append(data)
                elif proc.poll() is not None:
                    break
        finally:
            os.close(master)
            if proc.poll() is None:
                proc.kill()
            code = proc.wait()
        out.seek(0)
        return code, b"".join(shown).decode("utf-8", "replace"), out.read()


def cli(capsys, *args) -> tuple[int, str, str]:
    """The entry point in this process: exit code, stdout, stderr."""
    from pairflow.cli import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_mnist_root):
    """A 4-step seed flow on the tiny root, and what its training printed."""
    out = tmp_path_factory.mktemp("feedback") / "run"
    proc = pairflow(
        "train", "--preset", "seed", "--epochs", "1", "--batch-size", "16", "--num-pairs", "64",
        "--test-pairs", "32", "--data-dir", str(tiny_mnist_root), "--out", str(out),
        "--device", "cpu", "--precision", "fp32", "--sample-n", "4", "--no-progress",
        "--set", "hidden_features=16",
    )  # fmt: skip
    return {"out": out, "stdout": proc.stdout, "root": tiny_mnist_root}


def test_training_says_what_it_does_after_the_bar(tiny_run):
    """The test pass after the bar's last batch is no silent pause."""
    lines = tiny_run["stdout"].splitlines()
    said = "testing: bits/dim of 32 test pairs at step 4, then 4 samples and the checkpoints"
    assert said in lines
    result = next(i for i, line in enumerate(lines) if line.startswith("epoch 1: test bits/dim"))
    assert lines.index(said) < result


def test_evaluate_shows_progress_on_a_terminal_and_not_in_pipes(tiny_run, tmp_path):
    common = [tiny_run["out"], "--data-dir", tiny_run["root"], "--device", "cpu"]
    code, shown, stdout = on_terminal("evaluate", *common, "--out", tmp_path / "a.json")
    assert code == 0, shown
    assert "bits/dim" in shown and "128/128" in shown and "100%" in shown  # the bar, finished
    # A terminal that reports no size (an unsized pseudo-terminal) still gets its bar.
    code, shown, _ = on_terminal("evaluate", *common, "--out", tmp_path / "z.json", size=(0, 0))
    assert code == 0 and "128/128" in shown and "100%" in shown
    assert json.loads(stdout[: stdout.rindex("}") + 1])["num_pairs"] == 128  # stdout stays JSON
    code, shown, _ = on_terminal("evaluate", *common, "--out", tmp_path / "b.json", "--no-progress")
    assert code == 0 and "128/128" not in shown and "100%" not in shown
    piped = pairflow("evaluate", *map(str, common), "--out", str(tmp_path / "c.json"))
    assert "128/128" not in piped.stderr and "100%" not in piped.stderr


def test_sample_shows_progress_on_a_terminal(tiny_run, tmp_path):
    args = ["sample", tiny_run["out"], "--n", "300", "--batch-size", "100", "--device", "cpu"]
    code, shown, _ = on_terminal(*args, "--out", tmp_path / "s.npz")
    assert code == 0, shown
    assert "sampling at T=0.7" in shown and "300/300" in shown
    code, shown, _ = on_terminal(*args, "--out", tmp_path / "t.npz", "--no-progress")
    assert code == 0 and "300/300" not in shown
    assert (tmp_path / "t.npz").is_file()


@pytest.mark.parametrize("command", ["sample", "evaluate"])
def test_threads_sets_torch_threads(tiny_run, tmp_path, capsys, command):
    import torch

    threads = torch.get_num_threads() + 1  # other than now (conftest puts it back)
    extra = ["--n", "4"] if command == "sample" else ["--num-pairs", "8"]
    code, _, err = cli(capsys, command, tiny_run["out"], *extra, "--threads", threads,
                       "--data-dir", tiny_run["root"], "--out", tmp_path / f"{command}.json"
                       if command == "evaluate" else tmp_path / "s.png")  # fmt: skip
    assert code == 0, err
    assert torch.get_num_threads() == threads
    code, _, err = cli(capsys, command, tiny_run["out"], "--threads", "0")
    assert code == 2 and "--threads must be a positive number of threads, got 0" in err


def _unwritable(tmp_path: Path) -> dict[str, Path]:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    return {
        "proc": Path("/proc/x.json"),  # /proc takes no new files, even for root
        "under a file": blocker / "x.json",
        "under a file, a folder": blocker / "reports",
    }


@pytest.mark.parametrize("case", ["proc", "under a file", "under a file, a folder"])
def test_evaluate_refuses_an_unwritable_out_before_loading_anything(
    tiny_run, tmp_path, capsys, monkeypatch, case
):
    import pairflow.commands.evaluate as evaluate

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(evaluate, "load_model_from_args", never)
    out = _unwritable(tmp_path)[case]
    code, _, err = cli(capsys, "evaluate", tiny_run["out"], "--samples", "16", "--out", out,
                       "--data-dir", tiny_run["root"])  # fmt: skip
    assert code == 2 and f"--out {out}" in err


def test_evaluate_out_in_proc_exits_2_naming_it(tiny_run):
    """The user's case: no evaluation, no errno of a temporary file, no traceback."""
    start = time.perf_counter()
    proc = pairflow("evaluate", str(tiny_run["out"]), "--out", "/proc/x.json", check=False)
    assert proc.returncode == 2, proc.stderr
    assert "--out /proc/x.json: cannot write in /proc" in proc.stderr
    assert "Traceback" not in proc.stderr and ".tmp" not in proc.stderr
    assert proc.stdout == "" and time.perf_counter() - start < 60


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_evaluate_refuses_a_read_only_run_folder_as_its_default_output(tiny_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "read-only-run"
    shutil.copytree(tiny_run["out"], run)
    run.chmod(0o555)
    try:
        code, _, err = cli(capsys, "evaluate", run, "--data-dir", tiny_run["root"])
    finally:
        run.chmod(0o755)
    assert code == 2 and f"output {run / 'eval_test.json'}: cannot write in {run}" in err


def test_help_gives_the_defaults():
    evaluate = pairflow("evaluate", "--help").stdout
    assert "pairs per pass through the model and the classifier (default 500" in " ".join(
        evaluate.split()
    )
    sample = " ".join(pairflow("sample", "--help").stdout.split())
    assert "samples per inverse pass (default 1000" in sample
    assert "--data-dir DATA_DIR data root for --interpolate's test pairs" in sample
    assert "(default $PAIRFLOW_DATA or ./data)" in sample
    for text in (evaluate, sample):
        assert "--threads THREADS" in text and "--no-progress" in text
