"""`pairflow evaluate --samples` and `pairflow compare` end to end on tiny data and tiny runs.

The runs are 4-step seed flows (hidden width 16), so their samples are noise: the tests check
that every number is there, finite and paired with its real-vs-real floor, not that it is good.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

SAMPLE_KEYS = ("fd", "inception_score", "precision", "recall", "coverage", "kl_uniform")
COND_KEYS = ("conditional_accuracy", "conditional_accuracy_min")
REPORT_LABELS = (
    "Fréchet distance",
    "inception score",
    "precision (k=3)",
    "recall (k=3)",
    "coverage",
    "KL of the class histogram",
)


def pairflow(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return pairflow_together([args], check=check)[0]


def pairflow_together(commands: list, check: bool = True) -> list[subprocess.CompletedProcess]:
    """Run ``pairflow`` commands as concurrent processes (their start-up is single-threaded)."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "pairflow", *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in commands
    ]
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    for proc in done:
        if check and proc.returncode != 0:
            raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return done


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """The same entry point in this process (no torch import per call): exit code, out, err."""
    from pairflow.cli import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def train_args(root: Path, out: Path, *extra: str) -> list:
    return [
        "train", "--preset", "seed", "--epochs", "1", "--batch-size", "16", "--num-pairs", "64",
        "--test-pairs", "32", "--data-dir", root, "--out", out, "--device", "cpu",
        "--precision", "fp32", "--sample-n", "4", "--no-progress", "--set", "hidden_features=16",
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_mnist_root):
    """Two tiny runs (unconditional, conditional), each evaluated with --samples."""
    base = tmp_path_factory.mktemp("evaluate")
    uncond, cond = base / "uncond", base / "cond"
    pairflow_together(
        [train_args(tiny_mnist_root, uncond), train_args(tiny_mnist_root, cond, "--conditional")]
    )
    common = ["--data-dir", tiny_mnist_root, "--num-pairs", "32", "--device", "cpu"]
    _, capped = pairflow_together(
        [
            ["evaluate", uncond, "--samples", "64", *common],
            # The tiny root has 128 test digits: asking for more is capped, with a message.
            ["evaluate", cond, "--samples", "500", "--seed", "3", *common],
        ]
    )
    return {"uncond": uncond, "cond": cond, "capped_stderr": capped.stderr}


def _links(report: Path) -> list[Path]:
    return [report.parent / m for m in re.findall(r"!\[[^]]*\]\(([^)]+)\)", report.read_text())]


def _check_metrics(data: dict, keys: tuple[str, ...]) -> None:
    assert set(data["metrics"]) == set(keys)
    for key in keys:
        pair = data["metrics"][key]
        assert math.isfinite(pair["model"]) and math.isfinite(pair["floor"]), (key, pair)


def test_evaluate_samples_writes_json_report_and_pngs(evaluated):
    run = evaluated["uncond"]
    data = json.loads((run / "eval_test.json").read_text())
    # bits/dim keys as without --samples
    assert data["split"] == "test" and data["num_pairs"] == 32
    assert math.isfinite(data["bits_per_dim"]) and data["bits_per_dim_stderr"] > 0
    assert data["params"] > 0 and data["conditional"] is False and data["preset"] == "seed"
    s = data["samples"]
    assert s["num_samples"] == s["num_real"] == 64
    # the default temperature is sample's (0.7), the one the README's numbers use
    assert s["temperature"] == 0.7 and s["seed"] == 0 and s["nonfinite_samples"] == 0
    assert s["samples_per_second"] > 0 and s["floor_cached"] is False
    assert s["floor_held_out"] == "64 training pairs, seed 1"
    _check_metrics(data, SAMPLE_KEYS)
    # the real floor is far better than a 4-step model's noise
    assert data["metrics"]["fd"]["floor"] < data["metrics"]["fd"]["model"]
    assert data["metrics"]["precision"]["floor"] > data["metrics"]["precision"]["model"]

    report = run / "report.md"
    text = report.read_text()
    for label in REPORT_LABELS:
        assert label in text
    assert "real-vs-real floor" in text and "bits/dim" in text
    assert f"{data['bits_per_dim']:.4f}" in text
    assert "conditional accuracy" not in text
    links = _links(report)
    assert [p.name for p in links] == ["report_samples.png", "curves.png"]
    for path in links:
        with Image.open(path) as img:
            assert img.format == "PNG"
    with Image.open(run / "report_samples.png") as img:
        assert img.width > 8 * 56 and img.height > 8 * 28  # 64 samples, 8 per row
    assert (run / "floor_n64_seed0.json").is_file()


def test_label_free_samples_default_to_their_own_temperature(evaluated, tiny_mnist_root, capsys):
    run = evaluated["cond"]
    asked = json.loads((run / "eval_test.json").read_text())["samples"]
    assert asked["temperature"] == 0.7  # each label asked for in turn: sample's default
    code, _, err = cli(capsys, "evaluate", run, "--samples", "64", "--labels", "prior",
                       "--data-dir", tiny_mnist_root, "--num-pairs", "8",
                       "--out", run / "free.json")  # fmt: skip
    assert code == 0, err
    free = json.loads((run / "free.json").read_text())["samples"]
    assert free["temperature"] == 0.8 and "p(label)" in free["requested_labels"]
    assert "samples at T=0.8" in err


def test_second_evaluation_reuses_the_cached_floor(evaluated, tiny_mnist_root, capsys):
    run = evaluated["uncond"]
    first = json.loads((run / "eval_test.json").read_text())
    # Same output folder (the run), so the same floor_n64_seed0.json; its own JSON file.
    code, out, _ = cli(capsys, "evaluate", run, "--samples", "64", "--data-dir", tiny_mnist_root,
                       "--num-pairs", "8", "--temperature", "0.5",
                       "--out", run / "t05.json")  # fmt: skip
    assert code == 0
    second = json.loads((run / "t05.json").read_text())
    assert second["samples"]["floor_cached"] is True and second["samples"]["temperature"] == 0.5
    for key in SAMPLE_KEYS:
        assert second["metrics"][key]["floor"] == first["metrics"][key]["floor"]
    # a changed data root (or seed, or N) is not served from the cache
    (run / "floor_n64_seed0.json").write_text(
        (run / "floor_n64_seed0.json").read_text().replace(str(tiny_mnist_root), "/elsewhere")
    )
    cli(capsys, "evaluate", run, "--samples", "64", "--data-dir", tiny_mnist_root,
        "--num-pairs", "8", "--out", run / "t10.json")  # fmt: skip
    third = json.loads((run / "t10.json").read_text())
    assert third["samples"]["floor_cached"] is False
    # seeded: the same pairs give the same floor. To float rounding only: after other
    # in-process commands (tests/test_datasets_cli.py) the recomputed FD differed in its 9th
    # digit; other pairs would move it by far more than 1e-6.
    assert third["metrics"]["fd"]["floor"] == pytest.approx(
        first["metrics"]["fd"]["floor"], rel=1e-6
    )
    assert "per_pair" not in out


def test_conditional_model_reports_conditional_accuracy(evaluated):
    assert "more than the 128 test pairs" in evaluated["capped_stderr"]
    run = evaluated["cond"]
    data = json.loads((run / "eval_test.json").read_text())
    s = data["samples"]
    assert data["conditional"] is True and s["num_samples"] == s["num_real"] == 128
    assert s["seed"] == 3 and (run / "floor_n128_seed3.json").is_file()
    _check_metrics(data, SAMPLE_KEYS + COND_KEYS)
    per_pair = s["conditional_accuracy_per_pair"]
    assert len(per_pair) == 100 and all(a is not None for a in per_pair)  # every pair asked
    text = (run / "report.md").read_text()
    assert "conditional accuracy (mean over pairs)" in text and "Worst pair" in text
    for path in _links(run / "report.md"):
        assert path.is_file()


def test_out_json_places_report_beside_it(evaluated, tiny_mnist_root, tmp_path, capsys):
    out = tmp_path / "elsewhere" / "uncond.json"
    code, _, _ = cli(capsys, "evaluate", evaluated["uncond"] / "best.pt", "--samples", "16",
                     "--out", out, "--data-dir", tiny_mnist_root, "--num-pairs", "8")  # fmt: skip
    assert code == 0
    data = json.loads(out.read_text())
    assert data["samples"]["grid"] == "uncond_samples.png"
    links = _links(out.with_suffix(".md"))
    assert [p.name for p in links] == ["uncond_samples.png", "uncond_curves.png"]
    assert all(p.is_file() for p in links)


def test_split_test_evaluates_the_test_digits(evaluated, tiny_mnist_root, tmp_path, capsys):
    # The tiny root has 256 training and 128 test digits: one pair per digit by default.
    for split, pairs in (("test", 128), ("train", 256)):
        out = tmp_path / f"{split}.json"
        code, _, _ = cli(capsys, "evaluate", evaluated["uncond"], "--split", split, "--out", out,
                         "--data-dir", tiny_mnist_root)  # fmt: skip
        assert code == 0
        assert json.loads(out.read_text())["num_pairs"] == pairs


def test_compare_two_runs(evaluated, tmp_path):
    out = tmp_path / "cmp"
    # A third, VAE-like model with only a bound on bits/dim, given as its eval JSON file.
    vae = json.loads((evaluated["uncond"] / "eval_test.json").read_text())
    vae["bits_per_dim_bound"] = vae.pop("bits_per_dim") + 0.5
    vae["kind"] = "vae"
    vae_file = evaluated["uncond"] / "vae_eval.json"
    vae_file.write_text(json.dumps(vae))
    proc = pairflow("compare", evaluated["uncond"], evaluated["cond"], vae_file,
                    "--names", "flow,flow-cond,vae", "--out", out)  # fmt: skip
    text = (out / "compare.md").read_text()
    assert text == proc.stdout
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    header = rows[0]
    for column in ("bits/dim", "FD", "IS", "precision", "recall", "coverage", "KL",
                   "cond. accuracy", "params", "samples/s", "samples", "T"):  # fmt: skip
        assert f" {column} |" in header
    by_name = {row.split(" | ")[0][2:]: row for row in rows[1:]}
    # each row says how many samples it was judged on, and at which temperature
    cells = header.split(" | ")
    flow = dict(zip(cells, by_name["flow"].split(" | "), strict=True))
    assert flow["samples"] == "64" and flow["T"] == "0.7"
    assert set(by_name) == {"flow", "flow-cond", "vae", "real vs real (N=64)",
                            "real vs real (N=128)"}  # fmt: skip
    assert "| ≤ " in by_name["vae"] and "| ≤ " not in by_name["flow"]
    assert " ± " in by_name["flow"]
    with Image.open(out / "compare.png") as img:
        assert img.format == "PNG" and img.width > img.height

    proc = pairflow("compare", evaluated["uncond"], evaluated["cond"], "--out", out, "--json")
    data = json.loads(proc.stdout)
    assert [r["name"] for r in data["runs"]] == ["uncond", "cond"]
    assert data["runs"][1]["metrics"]["conditional_accuracy"] is not None
    assert [f["num_samples"] for f in data["floors"]] == [64, 128]


@pytest.mark.parametrize(
    "args, message",
    [
        (["compare", "EMPTY", "--out", "OUT"], "run `pairflow evaluate"),
        (["compare", "/no/such/run", "--out", "OUT"], "does not exist"),
        (["compare", "RUN", "RUN", "--names", "a", "--out", "OUT"], "--names gives 1 names"),
        (["evaluate", "RUN", "--samples", "-1"], "--samples must be a number of samples >= 1"),
        (["evaluate", "RUN", "--samples", "8", "--temperature", "0"], "--temperature must be"),
        (["evaluate", "RUN", "--labels", "prior"], "--labels prior chooses the labels of the sa"),
        (["evaluate", "RUN", "--samples", "8", "--labels", "prior"], "is unconditional (its sa"),
    ],
)
def test_bad_arguments_exit_2(evaluated, tmp_path, args, message):
    names = {"EMPTY": tmp_path, "OUT": tmp_path / "out", "RUN": evaluated["uncond"]}
    args = [a.replace("RUN", str(names["RUN"])) if "RUN" in a else names.get(a, a) for a in args]
    proc = pairflow(*args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_the_floor_cache_is_used_only_while_it_holds_every_metric(
    tiny_mnist_root, tmp_path, monkeypatch
):
    """A cached floor missing a metric (written before the metric existed) is computed anew,
    never read as if it held it; a metric added to the table needs no cache version bump."""
    import torch

    import pairflow.metrics
    from pairflow.classifier import SHIPPED_WEIGHTS, load_classifier
    from pairflow.data import PairedDataset
    from pairflow.evaluation import cached_floor
    from pairflow.metrics import table

    test = PairedDataset("mnist", tiny_mnist_root, train=False, num_pairs=16, seed=0)
    reference, _ = test.get_batch(torch.arange(16))
    classifier = load_classifier(SHIPPED_WEIGHTS["mnist"], device="cpu", dataset="mnist")

    def floor():
        return cached_floor(reference, tiny_mnist_root, classifier, 0, tmp_path, batch_size=16)

    first, info = floor()
    assert info["floor_cached"] is False
    path = tmp_path / "floor_n16_seed0.json"
    saved = json.loads(path.read_text())
    assert saved["key"]["metrics"] == [m.key for m in table.METRICS]  # what it holds
    assert floor()[1]["floor_cached"] is True
    # A cache from before "coverage" existed: the same key otherwise, as files were written.
    del saved["floor"]["coverage"], saved["key"]["metrics"]
    path.write_text(json.dumps(saved))
    again, info = floor()
    assert info["floor_cached"] is False and again["coverage"] == pytest.approx(first["coverage"])
    # A metric added to the table: the cache of the others is computed anew with it.
    extra = table.Metric("sharpness", "sharpness", "sharp", ".3f", False)
    monkeypatch.setattr(table, "METRICS", (*table.METRICS, extra))
    real = pairflow.metrics.real_vs_real_floor
    monkeypatch.setattr(
        pairflow.metrics, "real_vs_real_floor", lambda *a, **k: {**real(*a, **k), "sharpness": 0.5}
    )
    with_new, info = floor()
    assert info["floor_cached"] is False and with_new["sharpness"] == 0.5
    assert floor()[1]["floor_cached"] is True
    # Unreadable or of another shape: computed again, never a KeyError.
    for text in ("{", json.dumps({"key": saved["key"]}), json.dumps([1, 2])):
        path.write_text(text)
        assert floor()[1]["floor_cached"] is False
