"""Fine-tunes (``--init-from``): gentle defaults, a test of the starting weights at step 0,
``best.pt`` keeping the better model, and a closing line that compares the two numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from clitools import pairflow
from pairflow.training import TrainConfig, load_checkpoint, merge_config, train
from pairflow.training.config import FINE_TUNE_DEFAULTS

TINY_FLAGS = ["--preset", "seed", "--set", "hidden_features=16", "--num-pairs", "64",
              "--test-pairs", "32", "--batch-size", "16", "--sample-n", "4", "--threads", "1",
              "--precision", "fp32", "--device", "cpu", "--no-progress"]  # fmt: skip


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def source_run(tiny_mnist_root, tmp_path_factory) -> Path:
    """A tiny trained run to fine-tune from."""
    out = tmp_path_factory.mktemp("source") / "run"
    pairflow("train", *TINY_FLAGS, "--epochs", "2", "--data-dir", str(tiny_mnist_root),
             "--out", str(out))  # fmt: skip
    return out


def test_a_fine_tune_that_gets_worse_keeps_its_start_in_best_pt_and_says_so(
    source_run, tiny_mnist_root, tmp_path
):
    out = tmp_path / "ft"
    # lr 0.2 without an average wrecks the tiny flow in a step, while it stays finite.
    proc = pairflow("train", *TINY_FLAGS, "--epochs", "1", "--max-steps", "2", "--lr", "0.2",
                    "--warmup-steps", "0", "--ema-decay", "0", "--init-from", str(source_run),
                    "--data-dir", str(tiny_mnist_root), "--out", str(out))  # fmt: skip
    tests = [r for r in _records(out) if r["type"] == "test"]
    start = tests[0]
    assert start["step"] == 0 and start["start"] is True and len(tests) == 2
    source_best = load_checkpoint(source_run / "best.pt")["best_test_bpd"]
    assert start["test_bpd"] == pytest.approx(source_best, abs=1e-9)  # the same test pairs
    end = tests[-1]["test_bpd"]
    assert end > start["test_bpd"]  # the forced failure did fail
    # best.pt holds the starting weights, bit for bit; last.pt the worse fine-tuned ones.
    best = load_checkpoint(out / "best.pt")
    source = load_checkpoint(source_run / "best.pt")["model"]
    assert best["step"] == 0 and best["best_test_bpd"] == start["test_bpd"]
    assert all(torch.equal(best["model"][k], v) for k, v in source.items())
    assert load_checkpoint(out / "last.pt")["step"] >= 1
    summary = json.loads(proc.stdout[proc.stdout.index("{") : proc.stdout.rindex("}") + 1])
    assert summary["start_test_bpd"] == start["test_bpd"] and summary["best_step"] == 0
    line = next(x for x in proc.stdout.splitlines() if x.startswith("fine-tune: started"))
    assert f"started at test bits/dim {start['test_bpd']:.4f}, ended at {end:.4f}" in line
    assert "WORSE" in line and "best.pt holds the starting weights" in line
    assert "--lr 0.2 is above the fine-tune default" in line and "--ema-decay 0" in line


def test_a_fine_tune_that_gets_better_says_by_how_much(source_run, tiny_mnist_root, tmp_path):
    out = tmp_path / "ft"
    proc = pairflow("train", *TINY_FLAGS, "--epochs", "1", "--lr", "0.01", "--ema-decay", "0",
                    "--warmup-steps", "0", "--init-from", str(source_run),
                    "--data-dir", str(tiny_mnist_root), "--out", str(out))  # fmt: skip
    tests = [r for r in _records(out) if r["type"] == "test"]
    start, end = tests[0]["test_bpd"], tests[-1]["test_bpd"]
    assert end < start
    line = next(x for x in proc.stdout.splitlines() if x.startswith("fine-tune: started"))
    assert line == (f"fine-tune: started at test bits/dim {start:.4f}, ended at {end:.4f} "
                    f"(better by {start - end:.4f})")  # fmt: skip
    assert load_checkpoint(out / "best.pt")["step"] == 4  # the better, fine-tuned weights


def test_a_run_from_scratch_has_no_step_0_test_and_no_comparison(source_run):
    assert all(r["step"] > 0 for r in _records(source_run) if r["type"] == "test")


def test_fine_tune_defaults_apply_only_where_not_given(source_run, tiny_mnist_root, tmp_path):
    # Flags and a config file win; the defaults fill only what neither gives.
    assert FINE_TUNE_DEFAULTS["lr"] < TrainConfig().lr
    tuned = merge_config({}, {"init_from": "x"})
    assert (tuned.lr, tuned.warmup_steps, tuned.ema_decay) == (
        FINE_TUNE_DEFAULTS["lr"], FINE_TUNE_DEFAULTS["warmup_steps"],
        FINE_TUNE_DEFAULTS["ema_decay"],
    )  # fmt: skip
    flag = merge_config({}, {"init_from": "x", "lr": 1e-3, "ema_decay": None})
    assert flag.lr == 1e-3 and flag.ema_decay == FINE_TUNE_DEFAULTS["ema_decay"]
    from_file = merge_config({"lr": 5e-4, "ema_decay": 0.0}, {"init_from": "x", "lr": None})
    assert from_file.lr == 5e-4 and from_file.ema_decay == 0.0
    scratch = merge_config({}, {"lr": None})
    assert (scratch.lr, scratch.warmup_steps, scratch.ema_decay) == (1e-3, 200, 0.0)
    # End to end: the run's config.json holds what applied, and the run says which it set.
    config_file = tmp_path / "ft.toml"
    config_file.write_text("[train]\nwarmup_steps = 7\n")
    proc = pairflow("train", *TINY_FLAGS, "--epochs", "1", "--max-steps", "1", "--lr", "0.003",
                    "--config", str(config_file), "--init-from", str(source_run),
                    "--data-dir", str(tiny_mnist_root), "--out", str(tmp_path / "ft"))  # fmt: skip
    saved = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert (saved["lr"], saved["warmup_steps"]) == (0.003, 7)
    assert saved["ema_decay"] == FINE_TUNE_DEFAULTS["ema_decay"]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("fine-tune defaults"))
    assert "--ema-decay" in line and "--lr" not in line and "--warmup-steps" not in line


def test_a_resumed_fine_tune_is_bit_exact_and_tests_its_start_once(
    source_run, tiny_mnist_root, tmp_path
):
    def config(out: Path, max_steps: int) -> TrainConfig:
        return merge_config({}, {
            "preset": "seed", "model_overrides": {"hidden_features": 16}, "epochs": 2,
            "batch_size": 16, "num_pairs": 64, "test_pairs": 32, "sample_n": 4,
            "precision": "fp32", "device": "cpu", "data_dir": str(tiny_mnist_root),
            "out": str(out), "max_steps": max_steps, "init_from": str(source_run),
        })  # fmt: skip

    whole = train(config(tmp_path / "whole", 6), progress=False)
    train(config(tmp_path / "parts", 3), progress=False)
    parts = train(config(tmp_path / "parts", 6), resume=True, progress=False)
    assert parts["start_test_bpd"] == whole["start_test_bpd"]
    assert parts["test_bpd"] == whole["test_bpd"]
    a, b = (load_checkpoint(tmp_path / name / "last.pt") for name in ("whole", "parts"))
    assert all(torch.equal(a["model"][k], v) for k, v in b["model"].items())
    assert all(torch.equal(a["ema"]["shadow"][k], v) for k, v in b["ema"]["shadow"].items())
    starts = [r for r in _records(tmp_path / "parts") if r["type"] == "test" and r["step"] == 0]
    assert len(starts) == 1


def test_the_closing_line_for_a_tie_and_for_a_best_step_between():
    from pairflow.commands.train import fine_tune_verdict

    config = TrainConfig(init_from="multiscale", lr=2e-4, ema_decay=0.999)
    # 1.07646 and 1.07642 print as 1.0765 and 1.0764, but their difference as 0.0000.
    tie = {"start_test_bpd_bound": 1.07646, "test_bpd_bound": 1.07642, "step": 17}
    assert fine_tune_verdict(tie, config) == (
        "fine-tune: started at test bits/dim <= 1.0765, ended at 1.0764 (unchanged to within "
        "0.0001)"
    )
    worse = {"start_test_bpd": 1.2, "test_bpd": 1.3, "step": 5000, "best_step": 1000,
             "best_test_bpd": 1.1}  # fmt: skip
    line = fine_tune_verdict(worse, config)
    assert "WORSE by 0.1000" in line and "best.pt holds step 1000 (1.1000)" in line
    assert "too few" not in line and "above the fine-tune default" not in line
    assert fine_tune_verdict({"test_bpd": 1.3, "step": 5}, config) is None


def test_a_fine_tune_without_preset_builds_its_sources(source_run, tiny_mnist_root, tmp_path):
    # The source is a `seed` (MLP) flow; the default preset is the convolutional multiscale,
    # whose weights it would not fit. Without --preset, the fine-tune takes the source's.
    flags = [f for f in TINY_FLAGS if f not in ("--preset", "seed")]
    out = tmp_path / "ft"
    proc = pairflow("train", *flags, "--epochs", "1", "--max-steps", "1",
                    "--init-from", str(source_run), "--data-dir", str(tiny_mnist_root),
                    "--out", str(out))  # fmt: skip
    assert "preset: seed, the --init-from source's (--preset chooses another)" in proc.stdout
    state = load_checkpoint(out / "last.pt")
    assert state["train_config"]["preset"] == "seed"
    assert state["model"].keys() == load_checkpoint(source_run / "best.pt")["model"].keys()
    # An explicit --preset still wins, and is judged against the source's weights.
    other = pairflow("train", *flags, "--preset", "multiscale", "--epochs", "1",
                     "--max-steps", "1", "--init-from", str(source_run),
                     "--data-dir", str(tiny_mnist_root), "--out", str(tmp_path / "ms"),
                     check=False)  # fmt: skip
    assert other.returncode == 2 and "do not fit this model" in other.stderr
    assert "preset: seed" not in other.stdout
