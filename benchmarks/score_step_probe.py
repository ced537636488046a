"""Probe: one score step on the samples of a flow trained without noise.

TarFlow ends sampling with one denoising step, h + sigma^2 grad log p(h), with the flow's own
score, for a flow trained on data with N(0, sigma^2) noise. This probe asks what the same step
does to the samples of a flow trained *without* noise (the speckled strokes of the MLP flow):
for each ``--sigmas`` value it gives the flow that step in logit space
(``NoiseAugmentation(sigma, in_training=False)``: the score is not changed, only the samples)
and judges ``--samples`` samples at ``--temperature`` with the project's classifier, as
``pairflow evaluate --samples`` does. sigma 0 is the flow as it samples today.

Usage (prints one JSON object, a row per sigma):

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/score_step_probe.py --model seed \\
        --sigmas 0 0.1 0.2 0.3 --temperature 0.7 --samples 2000 --data-dir ../shared/data \\
        --threads 1
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
from pairflow.flows.noise import NoiseAugmentation
from pairflow.loading import load_trained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a shipped name, run folder or checkpoint")
    parser.add_argument("--sigmas", nargs="+", type=float, default=[0.0, 0.1, 0.2, 0.3])
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if any(s < 0 for s in args.sigmas):
        parser.error(f"--sigmas must be >= 0, got {args.sigmas}")
    if args.threads:
        torch.set_num_threads(args.threads)
    root = resolve_root(args.data_dir)
    model = load_trained(args.model, precision=args.precision).model
    if getattr(model, "noise", None) is not None:
        parser.error(f"{args.model} was trained with noise: it denoises its samples already")
    if model.config.conditional:
        parser.error(f"{args.model} is conditional: this probe is of unconditional flows")
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for sigma in args.sigmas:
            model.noise = NoiseAugmentation(sigma, in_training=False) if sigma else None
            start = time.perf_counter()
            result = sample_metrics(model, False, args.samples, root, Path(work) / "grid.png",
                                    Path(work), temperature=args.temperature,
                                    seed=args.seed)  # fmt: skip
            row = {"sigma": sigma, "temperature": args.temperature, "samples": args.samples}
            row.update({k: round(float(v["model"]), 4) for k, v in result["metrics"].items()})
            row["floor_fd"] = round(float(result["metrics"]["fd"]["floor"]), 4)
            row["seconds"] = round(time.perf_counter() - start, 1)
            print(json.dumps(row), file=sys.stderr, flush=True)
            rows.append(row)
    print(json.dumps({"machine": machine_info(), "load": load(), "model": args.model,
                      "rows": rows}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
