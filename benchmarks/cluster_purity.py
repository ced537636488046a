"""How pure a flow's own clusters are, and how pure they get when split into more.

A flow that reads its own clusters (``FlowConfig.clusters``) sees each side's nearest k-means
centre of pixels, never a digit label. This script reads the digit labels of the 60,000
training images only to report, for the model's clusters and for each split of them into m
times as many (``PixelClusters.split_from``: each parent's images split by k-means, as a
fine-tune with ``--set clusters=k`` does), the purity (the share of images whose cluster's most
common digit is their own digit) and the smallest cluster's size. Prints JSON.

Usage:

    .venv/bin/python benchmarks/cluster_purity.py --model multiscale-clusters-noise \
        --splits 2 3 4 --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from pairflow.data import PairedDataset, resolve_root
from pairflow.flows import PixelClusters
from pairflow.loading import load


def purity(images: torch.Tensor, labels: torch.Tensor, centres: torch.Tensor) -> dict:
    """Purity and smallest size of the clusters that ``centres`` (k, C, H, W) give images."""
    k = len(centres)
    assign = torch.cdist(images.flatten(1).double(), centres.flatten(1).double()).argmin(1)
    counts = torch.zeros(k, 10, dtype=torch.int64)
    counts.index_put_((assign, labels), torch.ones_like(assign), accumulate=True)
    sizes = counts.sum(1)
    return {
        "clusters_per_side": k,
        "purity": round(float(counts.max(1).values.sum()) / len(labels), 4),
        "smallest_cluster": int(sizes.min()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a shipped name, run folder or checkpoint")
    parser.add_argument("--splits", type=int, nargs="*", default=[2, 3, 4])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if any(m < 2 for m in args.splits):
        parser.error(f"--splits: each split makes m >= 2 clusters of one, got {args.splits}")
    torch.set_num_threads(args.threads)
    from pairflow.flows.config import MAX_CLUSTERS

    try:
        model = load(args.model, precision="fp32")
    except (OSError, ValueError) as err:
        parser.error(str(err))
    clusters = getattr(model, "clusters", None)
    if clusters is None:
        parser.error(f"{args.model} reads no clusters of its own (FlowConfig.clusters)")
    if any(clusters.k * m > MAX_CLUSTERS for m in args.splits):
        parser.error(
            f"--splits {' '.join(map(str, args.splits))}: {clusters.k} clusters per side split "
            f"into more than {MAX_CLUSTERS}, the most a flow reads"
        )
    train = PairedDataset("mnist", resolve_root(args.data_dir), train=True, num_pairs=1)
    images, labels = train.digits, train.digit_labels
    if images.dim() == 3:
        images = images[:, None]
    rows = [dict(purity(images, labels, clusters.centres), split=1, seconds=0.0)]
    for m in args.splits:
        start = time.perf_counter()
        finer = PixelClusters(clusters.k * m, tuple(model.config.shape), clusters.sides)
        finer.split_from(clusters.centres)
        finer.fit(images)
        seconds = round(time.perf_counter() - start, 1)
        rows.append(dict(purity(images, labels, finer.centres), split=m, seconds=seconds))
    print(json.dumps({"model": args.model, "images": len(labels), "rows": rows}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
