"""``pairflow data``: check a data root, print counts and histograms, write a pair preview.

Example:
    pairflow data --root ../shared/data --preview pairs.png
    pairflow data --dataset fashion-mnist --root ../shared/data --preview fashion.png
    pairflow data --dataset cifar10 --layout single --download --preview cifar.png
"""

from __future__ import annotations

import argparse
import json

from pairflow.cli import UsageError, seed_arg
from pairflow.commands._common import (
    add_dataset_arguments,
    check_output_path,
    data_usage_error,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root",
        "--data-dir",
        dest="root",
        metavar="DIR",
        help="data root containing MNIST/raw/ (or the dataset's folder; default "
        "$PAIRFLOW_DATA, else ./data)",
    )
    add_dataset_arguments(parser)
    parser.add_argument(
        "--download",
        action="store_true",
        help="fetch the dataset's files into the root if missing (checked against the "
        "published checksums)",
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
    parser.add_argument("--seed", type=seed_arg, default=0, help="pairing seed (default 0)")
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
    from pairflow.data.datasets import get_dataset

    spec = get_dataset(info.get("dataset", "mnist"))
    shape = "x".join(map(str, info.get("image_shape", (1, 28, 28))))
    lines = [f"{spec.title} root: {info['root']}"]
    lines += [f"  {path}" for path in info["files"].values()]
    if spec.name != "mnist":
        classes = ", ".join(f"{i} {name}" for i, name in enumerate(spec.classes))
        lines += [f"images {shape}; classes: {classes}"]
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
        PairedDataset,
        get_dataset,
        resolve_root,
        summary,
        write_preview,
    )

    if args.num_pairs is not None and args.num_pairs <= 0:
        raise UsageError(f"--num-pairs must be a positive integer, got {args.num_pairs}")
    if args.preview:
        check_output_path(args.preview, flag="--preview")  # before reading any data
    root = resolve_root(args.root)
    try:
        if args.download:
            get_dataset(args.dataset).download(root, verbose=True)
        info = summary(root, num_pairs=args.num_pairs, seed=args.seed, dataset=args.dataset)
    except (FileNotFoundError, MNISTFormatError, MNISTDownloadError) as err:
        raise data_usage_error(err, root, download_flag="add --download") from err

    if args.preview:
        dataset = PairedDataset(
            args.dataset,
            root,
            train=args.preview_split == "train",
            num_pairs=args.num_pairs,
            seed=args.seed,
            layout=args.layout,
        )
        path = write_preview(dataset, args.preview)
        info["preview"] = str(path)
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        print(format_summary(info))
        if args.preview:
            what = "pairs" if args.layout == "pair" else "images"
            print(f"\npreview: {info['preview']} (first 32 {args.preview_split} {what}, labelled)")
    return 0
