"""Write a copy of MNIST whose labels are k-means clusters of the images, not digits.

A conditional flow trained on this copy (``pairflow train --conditional --data-dir OUT``)
conditions its couplings and its prior on clusters found without any label, and samples
without one by drawing a cluster pair from their frequencies first (``evaluate --labels
prior``): a label-free model in the sense of the sample targets, since no digit label is read
in training or in sampling. The clusters are Lloyd's k-means (``pairflow.flows.mixture.kmeans``,
k-means++ seeding) of the 60,000 training images' pixels, 10 of them as there are 10 digits;
each test image takes its nearest training centre. The images are linked, not copied.

The digit labels are read once, after the clustering, only to print how pure the clusters are
(each cluster's most common digit, over all images): the written labels never depend on them.

Usage (prints JSON; the copy is MNIST in torchvision's layout under OUT):

    .venv/bin/python benchmarks/cluster_labels.py --data-dir ../shared/data \
        --out runs/mnist-clusters
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import struct
import sys
from pathlib import Path

import torch

from pairflow.data import resolve_root
from pairflow.data.mnist import MNIST_FILES, find_mnist_file, read_mnist
from pairflow.flows.mixture import kmeans


def write_labels(path: Path, labels: torch.Tensor) -> None:
    """An IDX1 label file (gzip), written atomically."""
    tmp = path.with_name(path.name + ".tmp")
    with gzip.open(tmp, "wb") as out:
        out.write(struct.pack(">II", 0x00000801, len(labels)))
        out.write(labels.to(torch.uint8).numpy().tobytes())
    os.replace(tmp, path)


def purity(clusters: torch.Tensor, digits: torch.Tensor, k: int) -> float:
    """The fraction of images whose digit is their cluster's most common one."""
    hits = 0
    for c in range(k):
        members = digits[clusters == c]
        if len(members):
            hits += int(torch.bincount(members, minlength=10).max())
    return hits / len(digits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", required=True, help="the copy's root (MNIST/raw/ inside)")
    parser.add_argument("--k", type=int, default=10, help="clusters (the labels 0..k-1; <= 10)")
    parser.add_argument("--iters", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not 2 <= args.k <= 10:
        parser.error(f"--k must be in 2..10 (a pair label has 10 classes per side), got {args.k}")
    root = resolve_root(args.data_dir)
    train_x, train_digits = read_mnist(root, train=True)
    test_x, test_digits = read_mnist(root, train=False)

    points = train_x.flatten(1).double()
    train_c = kmeans(points, args.k, iters=args.iters, seed=args.seed)
    centres = torch.stack([points[train_c == c].mean(0) for c in range(args.k)])
    test_c = torch.cdist(test_x.flatten(1).double(), centres).argmin(1)

    raw = Path(args.out) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, clusters in (("train", train_c), ("test", test_c)):
        image = find_mnist_file(root, MNIST_FILES[(split, "images")])
        link = raw / image.name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(image.resolve())
        write_labels(raw / (MNIST_FILES[(split, "labels")] + ".gz"), clusters)
    print(json.dumps({
        "out": str(raw),
        "k": args.k,
        "train_cluster_sizes": torch.bincount(train_c, minlength=args.k).tolist(),
        "purity_train": round(purity(train_c, train_digits.long(), args.k), 4),
        "purity_test": round(purity(test_c, test_digits.long(), args.k), 4),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
