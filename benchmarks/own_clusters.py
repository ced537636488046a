"""Turn a conditional flow trained on `cluster_labels.py`'s relabelled copy into the flow that
reads its own clusters (``FlowConfig.clusters``), and check that they are one model.

A flow fine-tuned with ``--conditional --data-dir COPY`` (COPY written by
``benchmarks/cluster_labels.py``) reads the k-means cluster of each side as its label. The
same weights, with the cluster centres inside the model, are a flow that takes no label at
all: ``pairflow train --set clusters=10`` trains that model directly. This script writes the
converted checkpoint (the run's evaluation weights, its moving average where it kept one; the
centres from the same k-means of the training images; p(c) each side's cluster frequencies
over the training images, as training sets it) and prints JSON that checks, on the first
``--check-pairs`` test pairs, that

- the converted model's clusters of the test images are the labels of the copy (test images
  took their nearest centre there too), and
- its log p(x) equals the conditional flow's log p(x | c) + log p(c) at those clusters.

Usage:

    .venv/bin/python benchmarks/own_clusters.py RUN --data-dir ../shared/data \
        --copy runs/mnist-clusters --out runs/own-clusters
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from pairflow.data import PairedDataset, resolve_root
from pairflow.flows import FlowConfig, build_flow
from pairflow.flows.prepare import fit_own_clusters
from pairflow.training.checkpoint import (
    CheckpointError,
    evaluation_state_dict,
    load_checkpoint,
    save_checkpoint,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="the conditional flow's run folder or checkpoint")
    parser.add_argument("--data-dir", default=None, help="the real data root")
    parser.add_argument("--copy", required=True, help="cluster_labels.py's relabelled copy")
    parser.add_argument("--out", required=True, help="a new run folder for the converted model")
    parser.add_argument("--k", type=int, default=10, help="clusters per side (as in the copy)")
    parser.add_argument("--check-pairs", type=int, default=200)
    args = parser.parse_args()
    out = Path(args.out)
    if out.exists():
        parser.error(f"--out {out} exists: give a new folder")
    if not Path(args.copy, "MNIST", "raw").is_dir():
        parser.error(f"--copy {args.copy} holds no MNIST/raw: write it with cluster_labels.py")
    try:
        state = load_checkpoint(args.run)
    except (CheckpointError, OSError, ValueError) as err:
        parser.error(str(err))
    source = state["model_config"]
    if not source.get("conditional") or source.get("clusters"):
        parser.error(f"{args.run} is not a conditional flow trained on a relabelled copy")
    weights = dict(evaluation_state_dict(state))

    conditional = build_flow(FlowConfig.from_dict(source)).eval()
    conditional.load_state_dict(weights)
    config = dataclasses.replace(FlowConfig.from_dict(source), conditional=False, clusters=args.k)
    flow = build_flow(config).eval()
    missing, unexpected = flow.load_state_dict(weights, strict=False)
    if unexpected or missing != ["clusters.centres"]:
        parser.error(f"unexpected weights: missing {missing}, unexpected {unexpected}")
    root = resolve_root(args.data_dir)
    train_set = PairedDataset("mnist", root, train=True)
    lines = fit_own_clusters(flow, train_set)  # the same k-means as cluster_labels.py

    # One model: the same clusters as the copy's test labels, the same density.
    copy = PairedDataset("mnist", resolve_root(args.copy), train=False, num_pairs=args.check_pairs)
    real = PairedDataset("mnist", root, train=False, num_pairs=args.check_pairs)
    x, copy_labels = copy.get_batch(torch.arange(len(copy)))
    x_real, _ = real.get_batch(torch.arange(len(real)))
    own = flow.own_labels(x)
    with torch.no_grad():
        a = flow.log_prob(x, generator=torch.Generator().manual_seed(0))
        b = conditional.log_prob(x, own, generator=torch.Generator().manual_seed(0))
    gap = (a - b - flow.log_label_probs()[own]).abs().max().item()

    model_config = flow.config.to_dict()
    train_config = dict(state.get("train_config") or {})
    train_config.update(
        conditional=False,
        data_dir=None,
        model_overrides={**train_config.get("model_overrides", {}), "clusters": args.k},
    )
    out.mkdir(parents=True)
    save_checkpoint(
        {
            "kind": state["kind"],
            "model_config": model_config,
            "train_config": train_config,
            "model": flow.state_dict(),
            "step": state.get("step"),
            "epoch": state.get("epoch"),
            "converted_from": {
                "source": str(args.run),
                "what": "a conditional flow trained on cluster_labels.py's relabelled copy; "
                "its label is each side's k-means cluster, now found by the model itself",
            },
        },
        out / "best.pt",
    )
    print(json.dumps({
        "out": str(out / "best.pt"),
        "fitted": lines,
        "same_images": bool(torch.equal(x, x_real)),
        "clusters_equal_copy_labels": float((own == copy_labels.to(own)).double().mean()),
        "max_abs_log_prob_gap": gap,
        "pairs_checked": len(copy),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
