"""Temperature (and guidance) sweeps of shipped or trained models: sample metrics per setting.

For each model and each sampling mode it can take, draws ``--samples`` pairs at every
temperature of ``--temperatures`` (and, for flows trained with label dropout, every guidance
weight of ``--guidance``, given a label or with the label drawn from p(y); w = -1 is the null
label's unconditional model) and judges them with the project's classifier, exactly as
``pairflow evaluate --samples`` does (same reference pairs, same floor). The modes:

- ``unconditional``: a model that never reads a label;
- ``given-label``: a conditional model asked for 00..99 in turn (mean and worst-pair accuracy);
- ``label-free``: a conditional model whose labels are drawn from its own p(y).

Prints one JSON object: the machine, the settings and one row per (model, mode, temperature,
guidance) with FD, precision, recall, coverage and, given a label, the accuracies; with
``--plot FILE`` also the curves (FD and accuracy against temperature, and against the
guidance weight where there are guided rows) in one figure.

Usage (from the repository root):
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/sample_sweep.py \\
        --data-dir ../shared/data --models seed multiscale multiscale-cond --samples 2000 \\
        --temperatures 0.5 0.6 0.7 0.8 0.9 1.0 --threads 1 --plot /tmp/sweep.png
    .venv/bin/python benchmarks/sample_sweep.py --data-dir ../shared/data --models \\
        runs/my-run --samples 200 --temperatures 0.7    # a run folder: seconds
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from machine import load, machine_info  # this script's folder is on sys.path
from pairflow.data import resolve_root
from pairflow.evaluation.samples import sample_metrics
from pairflow.loading import load_trained
from pairflow.models import has_label_mixture, has_label_prior

MODES = ("unconditional", "given-label", "label-free")


def modes_of(model, config: dict, asked: list[str] | None) -> list[str]:
    """The sampling modes the model takes, as ``pairflow evaluate`` samples it (those of
    ``asked`` only, if given): a class mixture only label-free, without labels."""
    if not config.get("conditional", False):
        own = ["unconditional"]
    elif has_label_mixture(model):
        own = ["label-free"]
    elif has_label_prior(model):
        own = ["given-label", "label-free"]
    else:
        own = ["given-label"]
    return [m for m in own if asked is None or m in asked]


def sweep_model(name: str, args, root: Path, work: Path) -> list[dict]:
    trained = load_trained(name, precision=args.precision)
    model, checkpoint = trained.model, trained.state
    config = checkpoint["model_config"]
    dataset = (checkpoint.get("train_config") or {}).get("dataset") or "mnist"
    guided = float(config.get("label_dropout", 0.0) or 0.0) > 0
    mixture = has_label_mixture(model)
    modes = modes_of(model, config, args.modes)
    if not modes:
        raise ValueError(f"{name} takes none of --modes {' '.join(args.modes)}")
    rows = []
    for mode in modes:
        # guidance steers a given label and the label drawn from p(y) alike (w = -1: the
        # null label's unconditional model, whatever the label), and the clusters a flow
        # reading its own draws from p(c), without a label
        own_clusters = bool(config.get("clusters"))
        steers = guided and (mode != "unconditional" or own_clusters)
        weights = [None] + (args.guidance if steers else [])
        for temperature in args.temperatures:
            for guidance in weights:
                start = time.perf_counter()
                result = sample_metrics(
                    model,
                    mode != "unconditional" and not mixture,  # a mixture: no labels
                    args.samples,
                    root,
                    work / "grid.png",
                    work,
                    temperature=temperature,
                    seed=args.seed,
                    dataset=dataset,
                    labels_from="prior" if mode == "label-free" else "even",
                    guidance=guidance,
                )
                metrics = {k: v["model"] for k, v in result["metrics"].items()}
                row = {
                    "model": name,
                    "mode": mode,
                    "temperature": temperature,
                    "guidance": guidance,
                    "samples": result["samples"]["num_samples"],
                    **{k: round(float(v), 4) for k, v in metrics.items()},
                    "floor_fd": round(float(result["metrics"]["fd"]["floor"]), 4),
                    "seconds": round(time.perf_counter() - start, 1),
                }
                print(json.dumps(row), file=sys.stderr, flush=True)
                rows.append(row)
    return rows


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    guided = [row for row in rows if row["guidance"] is not None]
    fig, axes = plt.subplots(1, 4 if guided else 2, figsize=(22 if guided else 11, 4))
    ax_fd, ax_acc = axes[0], axes[1]
    curves: dict[tuple, list[dict]] = {}
    for row in rows:
        if row["guidance"] is None:
            curves.setdefault((row["model"], row["mode"]), []).append(row)
    if guided:
        _plot_guidance(rows, axes[2], axes[3])
    for (model, mode), points in curves.items():
        points.sort(key=lambda r: r["temperature"])
        t = [p["temperature"] for p in points]
        ax_fd.plot(t, [p["fd"] for p in points], marker="o", label=f"{model} ({mode})")
        if mode == "given-label":
            ax_acc.plot(t, [p["conditional_accuracy"] for p in points], marker="o",
                        label=f"{model} mean")  # fmt: skip
            ax_acc.plot(t, [p["conditional_accuracy_min"] for p in points], marker="x",
                        linestyle="--", label=f"{model} worst pair")  # fmt: skip
    ax_fd.set(xlabel="temperature", ylabel="FD (classifier features, lower is better)",
              yscale="log", title="Fréchet distance")  # fmt: skip
    ax_acc.set(xlabel="temperature", ylabel="accuracy of the asked pair",
               title="conditional accuracy")  # fmt: skip
    ax_fd.legend(fontsize=7)
    if ax_acc.lines:
        ax_acc.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _plot_guidance(rows: list[dict], ax_fd, ax_acc) -> None:
    """FD and accuracy against the guidance weight, one curve per (model, mode, T); the
    unguided row of the same setting is w = 0, the conditional model."""
    curves: dict[tuple, list[tuple[float, dict]]] = {}
    guided_settings = {
        (r["model"], r["mode"], r["temperature"]) for r in rows if r["guidance"] is not None
    }
    for row in rows:
        key = (row["model"], row["mode"], row["temperature"])
        if key in guided_settings:
            w = 0.0 if row["guidance"] is None else row["guidance"]
            curves.setdefault(key, []).append((w, row))
    for (model, mode, t), points in curves.items():
        points.sort(key=lambda p: p[0])
        w = [p[0] for p in points]
        ax_fd.plot(w, [p[1]["fd"] for p in points], marker="o", label=f"{model} ({mode}, T {t:g})")
        if mode == "given-label":
            ax_acc.plot(w, [p[1]["conditional_accuracy"] for p in points], marker="o",
                        label=f"{model} mean, T {t:g}")  # fmt: skip
            ax_acc.plot(w, [p[1]["conditional_accuracy_min"] for p in points], marker="x",
                        linestyle="--", label=f"{model} worst pair, T {t:g}")  # fmt: skip
    ax_fd.set(xlabel="guidance weight w (0: conditional, -1: unconditional)",
              ylabel="FD (lower is better)", yscale="log", title="FD against guidance")  # fmt: skip
    ax_acc.set(xlabel="guidance weight w", ylabel="accuracy of the asked pair",
               title="conditional accuracy against guidance")  # fmt: skip
    ax_fd.legend(fontsize=7)
    if ax_acc.lines:
        ax_acc.legend(fontsize=7)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True,
                        help="shipped model names or run folders")  # fmt: skip
    parser.add_argument("--modes", nargs="+", choices=MODES, default=None,
                        help="only these sampling modes (default: all a model takes)")  # fmt: skip
    parser.add_argument("--temperatures", nargs="+", type=float, default=[0.6, 0.7, 0.8, 0.9, 1.0])
    parser.add_argument("--guidance", nargs="+", type=float, default=[0.5, 1.0, 2.0],
                        help="guidance weights, for flows trained with label dropout")  # fmt: skip
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--plot", default=None, help="also write the curves to this PNG")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    if args.samples < 100:
        parser.error("--samples must be at least 100 (one per pair label)")
    if any(not 0 < t <= 2 for t in args.temperatures):
        parser.error("--temperatures must lie in (0, 2]")
    if args.threads:
        torch.set_num_threads(args.threads)
    root = resolve_root(args.data_dir)
    start_load = load()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            try:
                rows += sweep_model(name, args, root, Path(tmp))
            except ValueError as err:  # an unknown model, a mode it lacks, missing data
                parser.error(str(err))
    result = {
        "machine": machine_info(),
        "load_start": start_load,
        "load_end": load(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("plot", "out")},
        "rows": rows,
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
