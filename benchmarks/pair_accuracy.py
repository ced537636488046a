"""Per-pair conditional accuracy with enough samples per pair to rank the worst one.

``pairflow evaluate --samples 10000`` asks for each of the 100 pairs 100 times, so each
pair's accuracy has a standard error of about 0.03 and the *lowest* of 100 such estimates is
biased low: pairs whose true accuracy is 0.93 show a minimum near 0.86 by chance alone. This
script asks each pair ``--per-pair`` times (default 500), reads the samples with the shipped
pair classifier, and prints one JSON object: the mean accuracy, the worst pairs with Wilson
95% intervals, how many pairs lie significantly below ``--threshold`` (upper end of the
interval below it) and the same for real test pairs of each label (the classifier's own
floor).

Usage (from the repository root):
    .venv/bin/python benchmarks/pair_accuracy.py --model multiscale-cond --per-pair 500 \\
        --temperature 0.7 --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time

import torch

import pairflow
from pairflow.classifier import load_classifier, pair_labels
from pairflow.evaluation import draw_samples
from pairflow.metrics import conditional_accuracy, real_pairs
from pairflow.progress import bars


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion hits / n."""
    if n == 0:
        return float("nan"), float("nan")
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def summarise(pred: torch.Tensor, requested: torch.Tensor, threshold: float, worst: int) -> dict:
    result = conditional_accuracy(pred, requested)
    asked = torch.bincount(requested, minlength=100).tolist()
    right = torch.bincount(requested[pred == requested], minlength=100).tolist()
    rows = [
        {"pair": f"{label:02d}", "accuracy": hits / n, "n": n, "ci95": list(wilson(hits, n))}
        for label, (hits, n) in enumerate(zip(right, asked, strict=True))
        if n
    ]
    rows.sort(key=lambda r: r["accuracy"])
    return {
        "mean": result.mean,
        "overall": result.overall,
        "worst": rows[:worst],
        "pairs_below_threshold": sum(r["accuracy"] < threshold for r in rows),
        "pairs_significantly_below_threshold": sum(r["ci95"][1] < threshold for r in rows),
        "pairs_measured": len(rows),
        "min_samples_per_pair": min(r["n"] for r in rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="multiscale-cond", help="shipped name or run folder")
    parser.add_argument("--data-dir", help="MNIST root (default $PAIRFLOW_DATA)")
    parser.add_argument("--per-pair", type=int, default=500, help="samples asked per pair")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--threshold", type=float, default=0.90)
    parser.add_argument("--guidance", type=float, default=None, metavar="W",
                        help="classifier-free guidance weight (a flow trained with label "
                        "dropout; default: off)")  # fmt: skip
    parser.add_argument("--worst", type=int, default=8, help="worst pairs listed")
    parser.add_argument("--precision", default="fp32", help="fp32 (default), bf16 or auto")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--real-pairs", type=int, default=50000, help="real test pairs read")
    args = parser.parse_args()
    if args.per_pair < 1 or args.real_pairs < 100:
        parser.error(
            f"--per-pair must be >= 1 and --real-pairs >= 100, got {args.per_pair}, "
            f"{args.real_pairs}"
        )
    try:
        model = pairflow.load(args.model, precision=args.precision)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    if not getattr(model.config, "conditional", False):
        parser.error(f"{args.model} is not a conditional model: it takes no pair label")
    if args.guidance is not None:
        from pairflow.evaluation import check_guidance_for

        try:
            check_guidance_for(model, model.config.to_dict(), args.model, args.guidance)
        except ValueError as err:
            parser.error(f"--guidance {args.guidance:g}: {err}")
    guided = {} if args.guidance is None else {"guidance": args.guidance}
    classifier = load_classifier()
    labels = torch.arange(100).repeat(args.per_pair)  # every pair per_pair times
    generator = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    images = draw_samples(
        model, len(labels), args.batch_size, temperature=args.temperature,
        generator=generator, labels=labels, progress=bars(), **guided,
    )  # fmt: skip
    sampling = time.perf_counter() - start
    pred = pair_labels(classifier.embed(images)[1])

    real, real_labels = real_pairs(
        args.data_dir, args.real_pairs, train=False, seed=args.seed, balanced=True
    )
    real_pred = pair_labels(classifier.embed(real)[1])

    print(
        json.dumps(
            {
                "model": args.model,
                "temperature": args.temperature,
                "guidance": args.guidance,
                "samples_per_pair": args.per_pair,
                "threshold": args.threshold,
                "model_accuracy": summarise(pred, labels, args.threshold, args.worst),
                "real_test_pairs": summarise(real_pred, real_labels, args.threshold, args.worst),
                "sampling_seconds": round(sampling, 1),
                "samples_per_second": round(len(labels) / sampling, 1),
                "precision": model.precision,
                "machine": f"{platform.processor() or platform.machine()}, "
                f"{torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}",
                "torch": torch.__version__,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
