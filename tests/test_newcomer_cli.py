"""What a new user meets first: the demo, defaults that are said out loud, refused
ambiguities, near-square grids, errors in flags, and a training bar that follows the clock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pairflow.images import grid_columns, make_grid

SRC = str(Path(__file__).resolve().parents[1] / "src")


def pairflow_in(cwd: Path, *args, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m pairflow ARGS`` run from folder ``cwd`` (defaults are relative to it)."""
    path = [SRC, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    env.pop("PAIRFLOW_DATA", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pairflow", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


# ---- layout ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, columns", [(1, 1), (2, 2), (3, 3), (8, 4), (10, 5), (12, 4), (16, 4), (64, 8), (100, 10)]
)
def test_grid_columns_are_near_square_without_needless_gaps(n, columns):
    assert grid_columns(n) == columns


def test_sixteen_images_tile_four_by_four():
    images = torch.randint(0, 256, (16, 1, 28, 56), dtype=torch.uint8)
    grid = make_grid(images, padding=2)
    assert grid.shape == (4 * 30 + 2, 4 * 58 + 2)
    assert torch.equal(grid[2:30, 2 + 3 * 58 : 2 + 3 * 58 + 56], images[3, 0])  # row 0, col 3
    assert torch.equal(grid[2 + 3 * 30 : 2 + 3 * 30 + 28, 2 : 2 + 56], images[12, 0])


# ---- sample: refused ambiguities and the default --out --------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--pair", "3"], "give 03 (a left 0 and a right 3) or 30"),
        (["--pair", "37,5"], "give 05"),
        (["--pair", "37", "--grid"], "--pair and --grid exclude each other"),
    ],
)
def test_sample_refuses_ambiguous_pairs(tmp_path, args, message):
    proc = pairflow_in(tmp_path, "sample", "--pretrained", "multiscale-cond", *args, check=False)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.iterdir())  # refused before writing anything


def test_sample_announces_its_default_out_and_help_shows_it(tmp_path):
    proc = pairflow_in(tmp_path, "sample", "--pretrained", "seed", "--n", "16")
    assert "no --out given: writing samples.png" in proc.stdout
    with Image.open(tmp_path / "samples.png") as img:  # 4x4 tiles of 28x56, scaled 2x
        assert img.size == (2 * (4 * 58 + 2), 2 * (4 * 30 + 2))
    help_text = pairflow_in(tmp_path, "sample", "--help").stdout
    assert "default samples.png" in " ".join(help_text.split())


def test_one_row_per_requested_pair(tmp_path):
    pairflow_in(tmp_path, "sample", "--pretrained", "multiscale-cond", "--pair", "37,05",
                "--n", "3", "--out", "two.png")  # fmt: skip
    with Image.open(tmp_path / "two.png") as img:
        assert img.width == 2 * (3 * 58 + 2)  # 3 per row: one row of 37s, one of 05s


def test_conditional_interpolation_keeps_one_label_and_ends_on_the_real_pairs(
    tmp_path, tiny_mnist_root
):
    from pairflow.data import PairedMNIST

    proc = pairflow_in(tmp_path, "sample", "--pretrained", "multiscale-cond", "--interpolate",
                       "--n", "2", "--steps", "3", "--seed", "4", "--data-dir", tiny_mnist_root,
                       "--out", "walk.png")  # fmt: skip
    assert "decoded under its start pair's label" in proc.stdout
    # The rows start and end on the real test pairs (the same ones the command drew).
    test = PairedMNIST(tiny_mnist_root, train=False)
    idx = torch.randperm(len(test), generator=torch.Generator().manual_seed(4))[:4]
    x, _ = test.get_batch(idx)
    with Image.open(tmp_path / "walk.png") as img:
        grid = torch.from_numpy(np.array(img))[::2, ::2]  # undo the 2x scale
    for row, (start, end) in enumerate([(x[0], x[2]), (x[1], x[3])]):
        top = 2 + row * 30
        first = grid[top : top + 28, 2 : 2 + 56].int()
        last = grid[top : top + 28, 2 + 2 * 58 : 2 + 2 * 58 + 56].int()
        # Up to a few levels where the fast precision is bf16 (exact in fp32; test_app.py)
        assert (first - start[0].int()).abs().max() <= 10
        assert (last - end[0].int()).abs().max() <= 10


# ---- errors speak in flags -------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, flag",
    [
        (["data", "--root", "NOWHERE"], "add --download"),
        (["evaluate", "--pretrained", "seed", "--data-dir", "NOWHERE"], "pairflow data --root"),
        (["sample", "--pretrained", "seed", "--interpolate", "--data-dir", "NOWHERE"], "--data"),
    ],
)
def test_missing_mnist_message_speaks_in_flags(tmp_path, args, flag):
    args = [str(tmp_path / "nowhere") if a == "NOWHERE" else a for a in args]
    proc = pairflow_in(tmp_path, *args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "MNIST file not found" in proc.stderr and flag in proc.stderr
    assert "download=True" not in proc.stderr and "Traceback" not in proc.stderr


# ---- evaluate defaults -----------------------------------------------------------------------


def test_evaluate_pretrained_writes_a_default_report_folder(tmp_path, tiny_mnist_root):
    proc = pairflow_in(tmp_path, "evaluate", "--pretrained", "seed", "--samples", "16",
                       "--num-pairs", "8", "--data-dir", tiny_mnist_root)  # fmt: skip
    out = tmp_path / "runs" / "pretrained-seed"
    assert "no --out given: writing the evaluation to runs/pretrained-seed/" in proc.stderr
    data = json.loads((out / "eval_test.json").read_text())
    # seed's own default temperature, chosen by its sweep (1.0; the global default is 0.7)
    assert data["samples"]["temperature"] == 1.0 and data["samples"]["num_samples"] == 16
    assert (out / "report.md").is_file()
    help_text = " ".join(pairflow_in(tmp_path, "evaluate", "--help").stdout.split())
    assert "the model's own where a sweep chose one, else 0.7" in help_text
    assert "runs/pretrained-NAME" in help_text


def test_evaluate_checkpoint_file_reports_beside_it(tmp_path, tiny_mnist_root):
    from pairflow.pretrained import pretrained_path

    ckpt = tmp_path / "mine" / "seed.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(pretrained_path("seed").read_bytes())
    pairflow_in(tmp_path, "evaluate", ckpt, "--samples", "16", "--num-pairs", "8",
                "--data-dir", tiny_mnist_root)  # fmt: skip
    assert (tmp_path / "mine" / "eval_seed" / "eval_test.json").is_file()


# ---- training: --init-from NAME and a bar of the time budget ----------------------------------


def test_init_from_a_shipped_name_and_the_time_budget_bar(tmp_path, tiny_mnist_root):
    proc = pairflow_in(tmp_path, "train", "--preset", "seed", "--init-from", "seed",
                       "--time-budget", "5", "--max-steps", "2", "--num-pairs", "64",
                       "--test-pairs", "16", "--sample-n", "4", "--threads", "1",
                       "--data-dir", tiny_mnist_root, "--out", "ft")  # fmt: skip
    assert "initialised from" in proc.stdout and "seed.pt" in proc.stdout
    assert "s of the time budget" in proc.stderr and "/300 s" in proc.stderr
    assert "epoch 1/" not in proc.stderr  # not the epochs the clock will never reach
    bad = pairflow_in(tmp_path, "train", "--init-from", "no-such-model", "--out", "x",
                      check=False)  # fmt: skip
    assert bad.returncode == 2 and "shipped: " in bad.stderr and "multiscale-cond" in bad.stderr


def test_time_budget_bar_counts_seconds_from_the_budget_start():
    from pairflow.training.progress import TimeBudgetBar, training_bar

    bar = TimeBudgetBar(1.0, time.perf_counter() - 30, epoch=2, step=5, disable=True)
    assert bar._bar.total == 60 and 29 <= bar._bar.n <= 31
    bar.update(1)
    assert bar.step == 6 and bar._describe() == "epoch 3, step 6"
    bar.close()
    plain = training_bar(epoch=0, epochs=4, steps_per_epoch=10, batch_in_epoch=0, step=0,
                         time_budget=None, start_time=time.perf_counter())  # fmt: skip
    assert plain.total == 10 and plain.desc.startswith("epoch 1/4")
    plain.close()


# ---- the demo, end to end on tiny sizes ------------------------------------------------------


@pytest.mark.slow
def test_demo_end_to_end_tiny(tmp_path, tiny_mnist_root):
    proc = pairflow_in(tmp_path, "demo", "--data-dir", tiny_mnist_root, "--max-steps", "2",
                       "--test-pairs", "16", "--threads", "1", "--no-progress",
                       "--minutes", "1")  # fmt: skip
    out = tmp_path / "runs" / "demo"
    assert "fine-tuning the shipped multiscale flow" in proc.stdout
    assert ") for 1 minute; --from-scratch" in proc.stdout
    # The run's line (and the figure's caption) sets its end beside the shipped start.
    line = next(x for x in proc.stdout.splitlines() if "steps, test bits/dim" in x)
    assert "; the shipped weights it started from: " in line and " on the same pairs" in line
    verdicts = (", better by ", "(best.pt keeps the shipped weights)", ", unchanged to within ")
    assert any(x in line for x in verdicts)
    for name in ("demo.png", "pairs.png", "demo_run_samples.png", "train/curves.png",
                 "train/last.pt", "train/samples/step_000002.png",
                 "pretrained_multiscale.png", "pretrained_multiscale-cond.png",
                 "pretrained_seed.png"):  # fmt: skip
        assert (out / name).is_file(), name
        assert f"runs/demo/{name}" in proc.stdout  # listed where the demo says what it wrote
    with Image.open(out / "demo.png") as img:
        assert img.format == "PNG" and img.width > 1000


def test_the_demo_draws_each_shipped_model_at_its_own_default_temperature():
    from pairflow.commands.demo import _temperature
    from pairflow.pretrained import list_pretrained

    shipped = list_pretrained()
    assert _temperature(shipped["seed"]) == shipped["seed"]["temperature"]["default"] == 1.0
    assert _temperature({}) == 0.7  # a model no sweep has chosen for: the global default


# ---- evaluate: progress bars and a summary line ----------------------------------------------


def test_evaluate_bars_count_every_pass_and_stay_off_without_a_terminal(tiny_mnist_root):
    from pairflow.classifier import load_classifier
    from pairflow.metrics import evaluate_samples, real_vs_real_floor
    from pairflow.metrics.evaluate import real_pairs
    from pairflow.progress import bars

    opened: list[list] = []

    class Counting:  # a real bar's interface; records what it was told
        def __init__(self, total: int, desc: str) -> None:
            opened.append([desc, total, 0, False])

        def update(self, n: int = 1) -> None:
            opened[-1][2] += n

        def close(self) -> None:
            opened[-1][3] = True

    real, _ = real_pairs(tiny_mnist_root, 24)
    fake = torch.randint(0, 256, (20, 1, 28, 56), dtype=torch.uint8)
    classifier = load_classifier()
    plain = evaluate_samples(fake, real, classifier, batch_size=7)
    counted = evaluate_samples(fake, real, classifier, batch_size=7, progress=Counting)
    assert counted["fd"] == pytest.approx(plain["fd"], rel=1e-5)  # chunking changes nothing
    real_vs_real_floor(real, root=tiny_mnist_root, classifier=classifier, progress=Counting)
    assert opened == [["classifier features", 44, 44, True], ["real-vs-real floor", 48, 48, True]]
    assert bars(enabled=False) is None and bars(enabled=True) is not None
    assert bars() is None  # pytest's stderr is not a terminal


def test_evaluate_prints_a_summary_line_before_the_json(tmp_path, tiny_mnist_root):
    proc = pairflow_in(tmp_path, "evaluate", "--pretrained", "seed", "--samples", "16",
                       "--num-pairs", "8", "--data-dir", tiny_mnist_root,
                       "--out", "ev")  # fmt: skip
    summary = [line for line in proc.stderr.splitlines() if line.startswith("seed: ")]
    assert len(summary) == 1, proc.stderr
    assert "test bits/dim" in summary[0] and "16 samples at T=1: FD" in summary[0]
    assert "%|" not in proc.stderr  # no bar when stderr is not a terminal
    json.loads(proc.stdout[: proc.stdout.rindex("}") + 1])  # stdout stays JSON


def test_a_shipped_model_samples_at_the_temperature_its_sweep_chose(tmp_path):
    import numpy as np

    from pairflow.pretrained import list_pretrained

    chosen = list_pretrained()["seed"]["temperature"]["default"]
    assert chosen != 0.7  # the global default: else this test could not tell the two apart
    proc = pairflow_in(tmp_path, "sample", "--pretrained", "seed", "--n", "4", "--out", "a.npz")
    assert f"(temperature {chosen:g}, the default of this model)" in proc.stdout
    pairflow_in(tmp_path, "sample", "--pretrained", "seed", "--n", "4", "--temperature",
                str(chosen), "--out", "b.npz")  # fmt: skip
    assert np.array_equal(np.load(tmp_path / "a.npz")["images"],
                          np.load(tmp_path / "b.npz")["images"])  # fmt: skip
