"""Flows, VAE and GAN trained for the same wall-clock on this machine, judged the same way.

For each model (both flow presets, the VAE and the GAN; unconditional and conditional) this
runs, with the project's own commands:

1. ``pairflow train --model M [--preset P] [--conditional] --time-budget B --threads 1``
   (``--jobs`` runs at a time, each on one torch thread, so concurrent runs do not fight over
   the cores);
2. ``pairflow evaluate RUN --samples N --temperature T``: bits/dim (or the VAE's bound) on the
   10,000 test pairs, the sample metrics under the shipped classifier, sampling speed and
   parameter count;
3. ``pairflow compare`` over all runs: ``OUT/compare.md`` and ``OUT/compare.png``.

It prints one JSON object: the machine, the settings, each run's command, wall time and
training summary, and the comparison table (``pairflow compare --json``).

Usage (from the repository root):
    .venv/bin/python benchmarks/compare_models.py --data-dir ../shared/data --budget 10 \\
        --out runs/compare
    .venv/bin/python benchmarks/compare_models.py --data-dir ../shared/data --budget 10 \\
        --jobs 1 --runs flow-multiscale flow-multiscale-cond flow-glow vae vae-cond gan gan-cond
    .venv/bin/python benchmarks/compare_models.py --budget 0.2 --samples 200 --only flow-seed
    .venv/bin/python benchmarks/compare_models.py --data-dir ../shared/data --budget 30 \
        --runs flow-multiscale-vardeq vae gan --importance-samples 64      # + the K-sample bound
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from speed import cpu_model  # benchmarks/speed.py: this script's folder is on sys.path

# name -> the model's flags. Each model trains with its own default recipe; `seed` gets the
# batch size it was specified with and a lower learning rate (constant 1e-3 in bf16 diverged
# once, see BENCHMARKS.md), the flows' multiscale preset its defaults.
# The multiscale and glow flows train with the recipe of the shipped flows (an EMA of the
# weights, decay 0.999, for evaluation and sampling); their conditional variants use the
# shipped conditioning, "both" (label embeddings in the couplings and the position-aware
# label prior, which also lets them sample without a label: y ~ p(y)).
FLOW_RECIPE = ["--ema-decay", "0.999"]
MULTISCALE = ["--model", "flow", "--preset", "multiscale", *FLOW_RECIPE]
MODELS: dict[str, list[str]] = {
    "flow-multiscale": MULTISCALE,
    "flow-glow": ["--model", "flow", "--preset", "glow", *FLOW_RECIPE],
    # probes on the multiscale flow (not in the README table): Flow++'s variational
    # dequantization (bits/dim is then a bound) and TarFlow's noise augmentation with a
    # denoising step after sampling (bits/dim of noisy data: in logit space, or in the data's
    # [-1, 1] space), and rational-quadratic spline couplings in place of affine ones
    "flow-multiscale-vardeq": [*MULTISCALE, "--set", "dequantization=variational"],
    "flow-multiscale-noise": [*MULTISCALE, "--set", "noise_sigma=0.2"],
    "flow-multiscale-gaussian": [
        *MULTISCALE,
        "--set",
        "dequantization=gaussian",
        "--set",
        "noise_sigma=0.1",
    ],
    "flow-multiscale-spline": [*MULTISCALE, "--set", "coupling=spline"],
    # the flow's own clusters (below) with TarFlow's noise in the data's space in place of
    # the learned dequantization
    "flow-multiscale-clusters-gaussian": [
        *MULTISCALE,
        "--set",
        "dequantization=gaussian",
        "--set",
        "noise_sigma=0.1",
        "--set",
        "clusters=10",
        "--set",
        "conditioning=both",
    ],
    # the shipped recipe (variational dequantization) with couplings and a prior that read
    # the flow's own k-means clusters of each side (no label anywhere; FlowConfig.clusters)
    "flow-multiscale-clusters": [
        *MULTISCALE,
        "--set",
        "dequantization=variational",
        "--set",
        "clusters=10",
        "--set",
        "conditioning=both",
    ],
    # FlowGMM's class-mixture prior (run it as flow-multiscale-mixture-cond): the body never
    # sees the label; against flow-multiscale-cond, the shipped conditioning
    "flow-multiscale-mixture": [*MULTISCALE, "--set", "conditioning=mixture"],
    "flow-seed": ["--model", "flow", "--preset", "seed", "--batch-size", "128", "--lr", "5e-4"],
    "flow-seed-spline": [
        "--model",
        "flow",
        "--preset",
        "seed",
        "--batch-size",
        "128",
        "--lr",
        "5e-4",
        "--set",
        "coupling=spline",
    ],
    "vae": ["--model", "vae"],
    "gan": ["--model", "gan"],
}


def log(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


def pairflow(*args: str) -> list[str]:
    return [sys.executable, "-m", "pairflow", *args]


def run(cmd: list[str], log_path: Path) -> float:
    """Run ``cmd`` with one OpenMP thread, output to ``log_path``; return its wall seconds."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    start = time.perf_counter()
    with open(log_path, "w") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log_path.read_text()[-2000:]
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{tail}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="MNIST root (default $PAIRFLOW_DATA)")
    parser.add_argument("--budget", type=float, default=10.0, help="training minutes per model")
    parser.add_argument("--samples", type=int, default=10000, help="samples per evaluation")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
    parser.add_argument("--out", default="runs/compare")
    parser.add_argument(
        "--only", nargs="+", choices=sorted(MODELS), help="a subset of the models (default all)"
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["uncond", "cond"],
        choices=["uncond", "cond"],
        help="unconditional and/or conditional (default both)",
    )
    parser.add_argument(
        "--runs",
        nargs="+",
        metavar="KEY",
        help="exactly these runs, e.g. flow-glow gan-cond (a model name, -cond for its "
        "conditional variant); default every model in both variants",
    )
    parser.add_argument(
        "--skip-train", action="store_true", help="reuse the run folders already in --out"
    )
    parser.add_argument(
        "--importance-samples",
        type=int,
        default=0,
        metavar="K",
        help="also bound each flow's and VAE's bits/dim with K importance samples on the "
        "first --iw-pairs test pairs (pairflow evaluate --importance-samples; default 0: off)",
    )
    parser.add_argument("--iw-pairs", type=int, default=500, help="pairs for --importance-samples")
    args = parser.parse_args()
    if args.importance_samples < 0 or args.iw_pairs < 1:
        parser.error(
            f"--importance-samples must be >= 0 and --iw-pairs >= 1, got "
            f"{args.importance_samples}, {args.iw_pairs}"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = ["--data-dir", args.data_dir] if args.data_dir else []

    runs: dict[str, dict] = {}
    for name in args.only or MODELS:
        for variant in args.variants:
            key = name if variant == "uncond" else f"{name}-cond"
            flags = MODELS[name] + (["--conditional"] if variant == "cond" else [])
            chosen = any(str(f).startswith("conditioning=") for f in flags)
            if variant == "cond" and FLOW_RECIPE[0] in flags and not chosen:
                flags += ["--set", "conditioning=both"]
            runs[key] = {"flags": flags, "folder": str(out / key)}
    if args.runs:
        unknown = sorted(set(args.runs) - set(runs))
        if unknown:
            parser.error(f"--runs: unknown {', '.join(unknown)} (choose from {', '.join(runs)})")
        runs = {key: runs[key] for key in args.runs}

    def train_one(key: str) -> None:
        info = runs[key]
        cmd = pairflow(
            "train",
            *info["flags"],
            "--time-budget",
            str(args.budget),
            "--epochs",
            "1000",
            "--threads",
            "1",
            "--test-pairs",
            "2000",
            "--out",
            info["folder"],
            "--no-progress",
            *data,
        )
        info["train_command"] = " ".join(cmd[2:])
        log(f"train {key} ({args.budget} min)")
        info["train_seconds"] = round(run(cmd, out / f"{key}.train.log"), 1)
        text = (out / f"{key}.train.log").read_text()
        summary = text[text.index("{") : text.rindex("}") + 1]
        info["train_summary"] = json.loads(summary)

    def evaluate_one(key: str) -> None:
        info = runs[key]
        cmd = pairflow(
            "evaluate",
            info["folder"],
            "--samples",
            str(args.samples),
            "--temperature",
            str(args.temperature),
            *data,
        )
        info["evaluate_command"] = " ".join(cmd[2:])
        log(f"evaluate {key}")
        info["evaluate_seconds"] = round(run(cmd, out / f"{key}.evaluate.log"), 1)
        if args.importance_samples and not key.startswith("gan"):  # GANs have no likelihood
            k = str(args.importance_samples)
            folder = Path(info["folder"]) / f"iw{k}"
            cmd = pairflow(
                "evaluate", info["folder"], "--importance-samples", k,
                "--num-pairs", str(args.iw_pairs), "--precision", "fp32", "--out", str(folder),
                *data,
            )  # fmt: skip
            info["importance_command"] = " ".join(cmd[2:])
            log(f"importance-weighted bound {key} (K = {k})")
            run(cmd, out / f"{key}.iw.log")
            report = json.loads((folder / f"eval_test_iw{k}.json").read_text())
            info["importance_weighted"] = report["importance_weighted"]

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        if not args.skip_train:
            list(pool.map(train_one, runs))
        list(pool.map(evaluate_one, runs))

    names = list(runs)
    compare = pairflow(
        "compare",
        *(runs[k]["folder"] for k in names),
        "--names",
        ",".join(names),
        "--out",
        str(out),
    )
    subprocess.run(compare, check=True, stdout=subprocess.DEVNULL)
    table = subprocess.run(compare + ["--json"], check=True, capture_output=True, text=True)

    import torch

    result = {
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads_per_run": 1,
            "concurrent_runs": args.jobs,
            "load_average_end": os.getloadavg(),
        },
        "budget_minutes": args.budget,
        "samples": args.samples,
        "temperature": args.temperature,
        "runs": runs,
        "compare_command": " ".join(compare[2:]),
        "table": json.loads(table.stdout),
    }
    text = json.dumps(result, indent=2)
    (out / "compare_models.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
