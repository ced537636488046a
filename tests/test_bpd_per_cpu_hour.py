"""benchmarks/bpd_per_cpu_hour.py: test bits/dim against training CPU-hours, the stages of a
recipe one after another, wall-clock turned into CPU time by a log of /proc samples."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bpd_per_cpu_hour.py"
TICK = os.sysconf("SC_CLK_TCK")


def _stage(folder: Path, start: float, records: list[dict]) -> None:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    os.utime(folder / "config.json", (start, start))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def _run(*args) -> dict:
    proc = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_a_recipes_stages_make_one_curve_in_cpu_hours(tmp_path):
    t0 = 1_000_000.0
    run = tmp_path / "spline"
    _stage(run / "stage-1-pretrain", t0, [
        {"type": "train", "step": 50, "bpd": 2.0, "time": t0 + 600},
        {"type": "test", "step": 100, "test_bpd": 1.5, "time": t0 + 3600},
    ])  # fmt: skip
    _stage(run / "stage-2-vd", t0 + 3700, [
        {"type": "test", "step": 0, "start": True, "test_bpd_bound": 1.9, "time": t0 + 3800},
        {"type": "test", "step": 60, "test_bpd_bound": 1.2, "time": t0 + 7300},
    ])  # fmt: skip
    # One process ran both stages at half a core: CPU seconds grow at half the wall's pace.
    log = tmp_path / "cpu.txt"
    log.write_text("".join(
        f"{t0 + s} 4242 {int(s / 2 * TICK)} recipes/spline\n{t0 + s} load 2.0 2.0 2.0\n"
        for s in range(0, 7400, 100)
    ))  # fmt: skip
    result = _run(run, "--label", "spline", "--cpu-log", log)["spline"]
    assert result["cpu_time_from"] == "cpu log"
    # The step-0 test of stage 2 repeats stage 1's end: left out; steps add up across stages.
    (c1, w1, s1, b1, k1), (c2, w2, s2, b2, k2) = result["points"]
    assert (s1, b1, k1) == (100, 1.5, "test_bpd") and (s2, b2, k2) == (160, 1.2, "test_bpd_bound")
    assert abs(w1 - 1.0) < 1e-3 and abs(w2 - (1.0 + 3600 / 3600)) < 1e-3  # gaps are not counted
    assert abs(c1 - 0.5) < 1e-3 and abs(c2 - 7300 / 2 / 3600) < 1e-3  # the log's CPU seconds
    # Without a log, a one-thread run's wall-clock stands for its CPU time.
    plain = _run(run, "--label", "spline")["spline"]
    assert plain["cpu_time_from"].startswith("wall-clock")
    assert [p[0] for p in plain["points"]] == [p[1] for p in plain["points"]]


def test_runs_and_labels_must_pair_up(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), "--label", "a", "b"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 2 and "1 runs but 2 labels" in proc.stderr
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), str(tmp_path), "--label",
                           "a", "a"], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 2 and "labels must differ" in proc.stderr


def test_processes_side_by_side_or_one_after_another_add_up(tmp_path):
    t0 = 2_000_000.0
    run = tmp_path / "ranks"
    _stage(run, t0, [{"type": "test", "step": 10, "test_bpd": 1.3, "time": t0 + 1800},
                     {"type": "test", "step": 20, "test_bpd": 1.2, "time": t0 + 5400}])  # fmt: skip
    # Two processes on a core each for the first hour, then a third (a resume) alone.
    lines = []
    for s in range(0, 3601, 60):
        lines += [f"{t0 + s} 11 {s * TICK} recipes/ranks", f"{t0 + s} 12 {s * TICK} recipes/ranks"]
    for s in range(3600, 7201, 60):
        lines.append(f"{t0 + s} 13 {(s - 3600) * TICK} recipes/ranks")
    log = tmp_path / "cpu.txt"
    log.write_text("\n".join(lines) + "\n")
    points = _run(run, "--label", "ranks", "--cpu-log", log)["ranks"]["points"]
    assert abs(points[0][0] - 1.0) < 1e-3  # 1,800 s on each of two processes: one CPU-hour
    assert abs(points[1][0] - 2.5) < 1e-3  # 2 CPU-hours, then 1,800 s of the third


def test_a_missing_run_or_cpu_log_is_refused_before_any_work(tmp_path):
    for args in ([tmp_path / "no-run"], [tmp_path, "--cpu-log", tmp_path / "no-log.txt"]):
        proc = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert "no metrics.jsonl" in proc.stderr or "--cpu-log" in proc.stderr


def test_every_curve_recipe_trains_30_minutes_on_one_thread_its_family_from_scratch():
    from pairflow.training import TrainConfig
    from pairflow.training.recipe import load_recipe

    curves = sorted((SCRIPT.parent / "recipes").glob("curve-*.toml"))
    families = set()
    for path in curves:
        (stage,) = load_recipe(path).stages
        config = TrainConfig.from_dict(stage.settings).validate()
        assert stage.init_from is None and config.threads == 1, path.name
        assert (config.time_budget, config.test_every, config.test_pairs) == (30.0, 300, 2000)
        families.add((config.preset, config.model_overrides.get("coupling"), config.conditional))
    # Each a family of its own: the affine and spline multi-scale flows, Glow and the
    # transformer flow given the label; without it, affine multi-scale and Glow (the spline
    # flow's and the transformer flow's own recipes give theirs).
    assert len(families) == len(curves) == 6


def test_earlier_curves_and_the_label_given_runs_go_on_the_figure(tmp_path):
    t0 = 3_000_000.0
    run = tmp_path / "glow-cond"
    _stage(run, t0, [{"type": "test", "step": 300, "test_bpd": 1.4, "time": t0 + 600}])
    (run / "config.json").write_text(json.dumps({"conditional": True}))
    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps({"tarflow": {"points": [[0.26, 0.62, 937, 1.4892, "test_bpd"]]}}))
    plot = tmp_path / "curves.png"
    result = _run(run, "--earlier", earlier, "--plot", plot)
    # The output is this window's runs; the earlier ones are drawn, not printed again.
    assert list(result) == ["glow-cond"] and result["glow-cond"]["conditional"] is True
    from PIL import Image

    with Image.open(plot) as img:  # two panels: no label (the earlier tarflow), given it
        assert img.width > 1.8 * img.height
    earlier.write_text("[1, 2]")
    proc = subprocess.run([sys.executable, str(SCRIPT), str(run), "--earlier", str(earlier)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 2 and "not this script's JSON output" in proc.stderr
