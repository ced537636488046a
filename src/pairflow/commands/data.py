"""``pairflow data``: check the MNIST root, print counts and histograms, write a pair preview.

Example:
    pairflow data --root ../shared/data --preview pairs.png
"""

from __future__ import annotations

import argparse
import json

from pairflow.cli import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root",
        "--data-dir",
        dest="root",
        metavar="DIR",
        help="data root containing MNIST/raw/ (default $PAIRFLOW_DATA, else ./data)",
    )
    parser.add_argument(
        "--download", action="store_true", help="fetch the MNIST files into the root if missing"
    )
    parser.add_argument("--preview", metavar="FILE", help="write a PNG of labelled pairs here")
    parser.add_argument(
        "--preview-split",
        choices=("train", "test"),
        default="train",
        help="split shown in the preview (default train)",
    )
    parser.add_argument(
        "--num-pairs",
        type=int,
        metavar="N",
        help="pairs drawn per split for the histogram (default: the split's size)",
    )
    parser.add_argument("--seed", type=int, default=0, help="pairing seed (default 0)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON instead")


def _pair_table(counts: list[list[int]]) -> str:
    """A 10x10 table: row = left digit, column = right digit."""
    width = max(4, len(f"{max(max(row) for row in counts):,}") + 1)
    lines = ["left\\right" + "".join(f"{r:>{width}}" for r in range(10))]
    for left, row in enumerate(counts):
        lines.append(f"{left:>10}" + "".join(f"{c:>{width},}" for c in row))
    return "\n".join(lines)


def format_summary(info: dict) -> str:
    """Human-readable text of :func:`pairflow.data.summary`'s dict."""
    lines = [f"MNIST root: {info['root']}"]
    lines += [f"  {path}" for path in info["files"].values()]
    lines += ["", "split   images   mean    std   digits 0..9"]
    for split, s in info["splits"].items():
        digits = " ".join(f"{c:>5}" for c in s["digit_counts"])
        lines.append(
            f"{split:<6}{s['images']:>8,}  {s['pixel_mean']:.4f} {s['pixel_std']:.4f}  {digits}"
        )
    for split, s in info["splits"].items():
        pairs = s["pairs"]
        lines += [
            "",
            f"{split} pair labels (10*left + right) over {pairs['num_pairs']:,} pairs, "
            f"seed {pairs['seed']}, epoch 0:",
            _pair_table(pairs["counts"]),
        ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from pairflow.data import (
        MNISTDownloadError,
        MNISTFormatError,
        PairedMNIST,
        download_mnist,
        resolve_root,
        summary,
        write_preview,
    )

    if args.num_pairs is not None and args.num_pairs <= 0:
        raise UsageError(f"--num-pairs must be a positive integer, got {args.num_pairs}")
    root = resolve_root(args.root)
    try:
        if args.download:
            download_mnist(root, verbose=True)
        info = summary(root, num_pairs=args.num_pairs, seed=args.seed)
    except (FileNotFoundError, MNISTFormatError, MNISTDownloadError) as err:
        raise UsageError(str(err)) from err

    if args.preview:
        dataset = PairedMNIST(
            root, train=args.preview_split == "train", num_pairs=args.num_pairs, seed=args.seed
        )
        path = write_preview(dataset, args.preview)
        info["preview"] = str(path)
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        print(format_summary(info))
        if args.preview:
            print(f"\npreview: {info['preview']} (first 32 {args.preview_split} pairs, labelled)")
    return 0
