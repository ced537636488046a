"""CIFAR-10 with the project's own commands: train a flow, test bits/dim, samples; JSON out.

Where CIFAR-10 exists (``<root>/cifar-10-batches-py/`` or ``cifar-10-python.tar.gz``, or
``--download``), this trains the ``multiscale`` preset on CIFAR-10, which is the multi-scale
RealNVP of Dinh et al. (2017) there: 8 residual blocks of 64 feature maps, two scales,
logit boundary 0.05. It reports the test bits/dim beside the published ones (RealNVP 3.49,
Glow 3.35, on single 3x32x32 images, ``--layout single``; pairs are 3x32x64) and writes a
sample grid:

    PYTHONPATH=src python benchmarks/cifar10.py --data-dir data --download \
        --layout single --minutes 600 --device cuda --out runs/cifar10

``--smoke`` runs the same path on a small archive written in the real format with a tiny
network (seconds, any machine): it proves the commands end to end, not the model; its
numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pairflow.options import Layout, choices

REFERENCE_BPD = {"RealNVP (Dinh et al. 2017)": 3.49, "Glow (Kingma and Dhariwal 2018)": 3.35}


def pairflow(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "pairflow", *args], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"pairflow {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="root holding cifar-10-batches-py/ or the archive")
    parser.add_argument("--download", action="store_true", help="fetch the archive if missing")
    parser.add_argument("--layout", default="single", choices=choices(Layout))
    parser.add_argument("--minutes", type=float, default=60.0, help="training time budget")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="runs/cifar10")
    parser.add_argument("--smoke", action="store_true", help="tiny written archive, tiny net")
    args = parser.parse_args()

    extra: list[str] = []
    tmp = None
    if args.smoke:
        from pairflow.data.synthetic import make_synthetic_cifar10

        tmp = tempfile.TemporaryDirectory()
        args.data_dir = str(make_synthetic_cifar10(Path(tmp.name) / "data", 250, 50, archive=True))
        args.out = str(Path(tmp.name) / "run")
        extra = ["--max-steps", "4", "--num-pairs", "32", "--test-pairs", "16", "--sample-n", "4"]
        extra += ["--set", "hidden_channels=8", "--set", "num_blocks=1", "--batch-size", "8"]
    elif args.data_dir is None:
        raise SystemExit("give --data-dir (the root holding CIFAR-10), or --smoke")
    if args.download:
        pairflow("data", "--dataset", "cifar10", "--root", args.data_dir, "--download", "--json")
    threads = ["--threads", str(args.threads)] if args.threads else []
    start = time.perf_counter()
    train = ["train", "--dataset", "cifar10", "--layout", args.layout, "--preset", "multiscale"]
    train += ["--data-dir", args.data_dir, "--out", args.out, "--device", args.device]
    train += ["--no-progress", *threads]
    if not args.smoke:
        train += ["--epochs", "1000", "--time-budget", str(args.minutes)]
        train += ["--batch-size", str(args.batch_size)]
    pairflow(*train, *extra)
    train_seconds = time.perf_counter() - start
    evaluate = ["evaluate", args.out, "--data-dir", args.data_dir, "--device", args.device]
    if args.smoke:
        evaluate += ["--num-pairs", "16"]
    report = (
        json.loads((Path(args.out) / "eval_test.json").read_text()) if pairflow(*evaluate) else {}
    )
    grid = Path(args.out) / "samples_t1.0.png"
    pairflow("sample", args.out, "--n", "64", "--temperature", "1.0", "--out", str(grid),
             "--device", args.device)  # fmt: skip
    result = {
        "smoke": args.smoke,
        "layout": args.layout,
        "test_bits_per_dim": report.get("bits_per_dim"),
        "test_bits_per_dim_stderr": report.get("bits_per_dim_stderr"),
        "num_test": report.get("num_pairs"),
        "params": report.get("params"),
        "train_seconds": round(train_seconds, 1),
        "reference_test_bits_per_dim": REFERENCE_BPD,
        "samples": str(grid) + (" (temporary: removed after the smoke run)" if args.smoke else ""),
        "out": args.out,
    }
    print(json.dumps(result, indent=1))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
