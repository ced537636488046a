"""Test bits/dim against CPU-hours of training, for several runs on one figure.

Each run is a run folder (its ``metrics.jsonl``) or a recipe's output folder (its stages'
``stage-*/metrics.jsonl`` in order, one curve across the stages). A point is each test pass
the training logged (the EMA weights where the run keeps an average); its x is the training
time up to that pass. Wall-clock is converted to CPU time with ``--cpu-log`` where one was
kept (``benchmarks/cpu_log.sh`` beside the runs: lines ``UNIX_TIME PID TICKS recipes/NAME``
from ``/proc/PID/stat``, ``TICKS`` = utime + stime in clock ticks, summed over the run's
processes; a run folder is matched to its recipe by name); without one, the wall-clock
of a one-thread run stands for its CPU time (true when it had a core to itself).

Prints one JSON object: per run, its points ``[cpu_hours, wall_hours, step, test_bpd, key]``,
its last and whether it was given the label; with ``--plot FILE`` the curves on one figure,
the runs without a label on the left, those given it on the right. ``--earlier FILE`` adds
the curves of an earlier window (this script's JSON output from then), drawn dashed.

Usage (from the repository root):
    .venv/bin/python benchmarks/bpd_per_cpu_hour.py runs/tarflow runs/multiscale-spline \\
        --label tarflow "multiscale, spline" --plot bpd_per_cpu_hour.png
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
from pathlib import Path

KEYS = ("test_bpd", "test_bpd_bound")


def metrics_files(run: Path) -> list[Path]:
    """The run's metrics files in training order: its own, or its recipe stages'."""
    if (run / "metrics.jsonl").is_file():
        return [run / "metrics.jsonl"]
    stages = sorted(
        (p for p in run.glob("stage-*") if (p / "metrics.jsonl").is_file()),
        key=lambda p: int(p.name.split("-")[1]),
    )
    if not stages:
        raise ValueError(f"{run}: no metrics.jsonl, and no stage-*/metrics.jsonl of a recipe")
    return [p / "metrics.jsonl" for p in stages]


def cpu_clock(log: Path, name: str):
    """wall time -> CPU seconds of the processes logged under ``name`` (None: not logged)."""
    tick = os.sysconf("SC_CLK_TCK")
    samples: dict[str, list[tuple[float, float]]] = {}
    for line in log.read_text().splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[1].isdigit() and parts[3].endswith("/" + name):
            samples.setdefault(parts[1], []).append((float(parts[0]), float(parts[2]) / tick))
    if not samples:
        return None
    series = [sorted(points) for points in samples.values()]

    def one(points: list[tuple[float, float]], wall: float) -> float:
        """A process's CPU seconds at ``wall``: 0 before it was seen, held after its end."""
        times = [t for t, _ in points]
        i = bisect.bisect_right(times, wall)
        if i == 0:
            return 0.0
        if i == len(points):
            return points[-1][1]
        (t0, c0), (t1, c1) = points[i - 1], points[i]
        return c0 + (c1 - c0) * (wall - t0) / (t1 - t0)

    # Processes one after another (a resumed run is a new one) or side by side (ranks): the
    # run's CPU time is the sum of theirs.
    return lambda wall: sum(one(points, wall) for points in series)


def curve(run: Path, cpu_at) -> list[list]:
    """[cpu_hours, wall_hours, step, bpd, key] for each test pass, the stages one after another."""
    points, wall_offset, step_offset = [], 0.0, 0
    for path in metrics_files(run):
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        timed = [r for r in records if "time" in r]
        if not timed:
            continue
        # The stage started when its folder got its config.json, before its first logged step.
        config = path.parent / "config.json"
        start = min([r["time"] for r in timed] + ([config.stat().st_mtime] if config.is_file()
                                                   else []))  # fmt: skip
        last_step = 0
        for r in records:
            key = next((k for k in KEYS if k in r), None)
            if r.get("type") != "test" or key is None:
                continue
            if r.get("start") and points:  # a stage's step-0 test repeats the last stage's end
                continue
            wall = wall_offset + (r["time"] - start)
            # The log's CPU seconds count from the start of the process(es) that trained it.
            cpu = cpu_at(r["time"]) if cpu_at else wall
            points.append([cpu / 3600, wall / 3600, step_offset + r["step"], r[key], key])
            last_step = r["step"]
        wall_offset += max(r["time"] for r in timed) - start
        step_offset += last_step
    return points


def conditional(run: Path) -> bool:
    """Whether the run (its first stage) was trained given the label."""
    first = metrics_files(run)[0].parent / "config.json"
    try:
        return bool(json.loads(first.read_text()).get("conditional", False))
    except (OSError, ValueError):
        return False


def earlier_curves(path: Path) -> dict:
    """The curves of an earlier window: this script's JSON output, checked."""
    if not path.is_file():
        raise ValueError(f"--earlier {path}: no such file")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"--earlier {path}: not this script's JSON output ({err})") from err
    if not isinstance(data, dict) or not all(
        isinstance(e, dict) and isinstance(e.get("points"), list) for e in data.values()
    ):
        raise ValueError(f"--earlier {path}: not this script's JSON output (label -> points)")
    return {label: {**e, "earlier": True} for label, e in data.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--label", nargs="+", default=None, help="a label per run")
    parser.add_argument("--cpu-log", type=Path, default=None)
    parser.add_argument("--plot", default=None)
    parser.add_argument(
        "--earlier", type=Path, default=None, help="curves of an earlier window (this JSON)"
    )
    parser.add_argument("--title", default="MNIST pairs: test bits/dim per CPU-hour")
    args = parser.parse_args()
    labels = args.label or [p.name for p in args.runs]
    if len(labels) != len(args.runs):
        parser.error(f"{len(args.runs)} runs but {len(labels)} labels")
    if len(set(labels)) != len(labels):
        parser.error(f"labels must differ (each names one curve): {labels}")
    if args.cpu_log is not None and not args.cpu_log.is_file():
        parser.error(f"--cpu-log {args.cpu_log}: no such file")
    for run in args.runs:  # every run readable before any is read
        try:
            metrics_files(run)
        except ValueError as err:
            parser.error(str(err))
    try:
        earlier = earlier_curves(args.earlier) if args.earlier is not None else {}
    except ValueError as err:
        parser.error(str(err))
    result = {}
    for run, label in zip(args.runs, labels, strict=True):
        cpu_at = cpu_clock(args.cpu_log, run.name) if args.cpu_log else None
        points = curve(run, cpu_at)
        result[label] = {
            "run": str(run),
            "cpu_time_from": "cpu log" if cpu_at else "wall-clock (one thread)",
            "points": [[round(a, 4), round(b, 4), s, round(v, 4), k] for a, b, s, v, k in points],
            "last": points[-1][:4] if points else None,
            "conditional": conditional(run),
        }
    print(json.dumps(result, indent=1))
    result.update({k: v for k, v in earlier.items() if k not in result})
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        panels = [(False, "no label"), (True, "given the pair label")]
        panels = [(c, t) for c, t in panels if any(e.get("conditional", False) == c
                                                   for e in result.values())]  # fmt: skip
        fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5),
                                 sharex=True, sharey=True, squeeze=False)  # fmt: skip
        # One colour per family in both panels: a label's text before any " (" names it
        # ("glow" and "glow (given the label)" are one family).
        colours: dict[str, str] = {}
        for label in result:
            colours.setdefault(label.split(" (")[0], f"C{len(colours)}")
        for ax, (given, what) in zip(axes[0], panels, strict=True):
            for label, entry in result.items():
                if entry.get("conditional", False) != given:
                    continue
                pts = entry["points"]
                style = "--" if entry.get("earlier") else "-"
                ax.plot([p[0] for p in pts], [p[3] for p in pts], style, marker=".", label=label,
                        color=colours[label.split(" (")[0]])  # fmt: skip
            for name, value in (("Glow 1.05 (MNIST)", 1.05), ("Residual Flows 0.97", 0.97)):
                ax.axhline(value, color="grey", linestyle=":", linewidth=1)
                ax.text(0.99, value, name, fontsize=7, va="bottom", ha="right", color="grey",
                        transform=ax.get_yaxis_transform())  # fmt: skip
            ax.set(xlabel="CPU-hours of training", title=what)
            ax.legend(fontsize=7, loc="upper right")
        axes[0][0].set_ylabel("test bits/dim")
        axes[0][0].set_ylim(top=min(1.6, axes[0][0].get_ylim()[1]))
        fig.suptitle(args.title)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)


if __name__ == "__main__":
    main()
