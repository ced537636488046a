"""The real-vs-real floor of every sample metric, and how long evaluate_samples takes.

Draws N real training pairs (standing in for a perfect generator's samples) and N real test
pairs (the reference), and prints one JSON object with the metrics of
``pairflow.metrics.real_vs_real_floor`` under the shipped classifier, plus the wall time.
Label-balanced pairs with ``--balanced`` (the reference for conditional models asked for all
100 pairs equally often).

Usage:
    .venv/bin/python benchmarks/real_floor.py [--root DIR] [--num-pairs 10000] [--balanced]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from pairflow.classifier import load_classifier
from pairflow.metrics import real_pairs, real_vs_real_floor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", help="MNIST root (default $PAIRFLOW_DATA or ./data)")
    parser.add_argument("--num-pairs", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--balanced", action="store_true")
    args = parser.parse_args()

    classifier = load_classifier()
    reference, _ = real_pairs(
        args.root, args.num_pairs, train=False, seed=args.seed, balanced=args.balanced
    )
    start = time.perf_counter()
    floor = real_vs_real_floor(
        reference,
        root=args.root,
        classifier=classifier,
        seed=args.seed + 1,
        balanced=args.balanced,
    )
    seconds = time.perf_counter() - start
    floor.pop("conditional_accuracy_per_pair", None)
    print(
        json.dumps(
            {
                "num_pairs": args.num_pairs,
                "balanced": args.balanced,
                "floor": floor,
                "seconds": round(seconds, 1),
                "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
