"""What a label-free mixture prior does to a trained flow before any training: the probe
behind ``--set prior=mixture``.

A flow trained with the N(0, I) prior is given other base distributions fitted to the
latents of the first ``--fit-pairs`` training pairs (its own dequantization noise, as in
training; no labels anywhere in the fits), and each is scored on the same test pairs and
samples:

- ``normal``: the flow as trained, N(0, I);
- ``one_gaussian``: one diagonal Gaussian fitted to the latents (the mean and scale alone);
- ``latent_kmeans``: 100 position-aware components from k-means of each half of the latent;
- ``pixel_kmeans``: the same from k-means of each half's pixels: where ``prior=mixture``
  training starts (:meth:`pairflow.flows.mixture.ClusterMixture.fit_clusters`).

For the k-means variants it also prints how well the clusters agree with the digits they
were not told (purity: the share of the fitted pairs whose cluster's majority digit is theirs;
10 equal random clusters give 0.1). One JSON object on stdout.

Usage (from the repository root; the shipped ``multiscale`` has the mixture prior itself since
2026-12-03, so the probe takes the N(0, I) flow shipped before it):
    git show ada46ef:src/pairflow/weights/multiscale.pt > runs/multiscale-normal.pt
    .venv/bin/python benchmarks/mixture_init.py --model runs/multiscale-normal.pt \\
        --samples 2000 --temperature 0.7 0.8 --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

import pairflow
from pairflow.data import PairedMNIST
from pairflow.evaluation.samples import sample_metrics
from pairflow.flows import PairFlow
from pairflow.flows.distributions import Distribution, log_diagonal_normal
from pairflow.flows.mixture import ClusterMixture, kmeans
from pairflow.flows.prepare import train_latents

sys.path.insert(0, str(Path(__file__).parent))
from machine import machine_info  # noqa: E402


class OneGaussian(Distribution):
    """N(mu, diag sigma^2) with fixed mean and scale (the control without a mixture)."""

    def __init__(self, loc: torch.Tensor, log_scale: torch.Tensor):
        super().__init__(tuple(loc.shape))
        self.register_buffer("loc", loc)
        self.register_buffer("log_scale", log_scale)

    def log_prob(self, z, cond=None):
        return log_diagonal_normal(z, self.loc, self.log_scale)

    def sample(self, n, cond=None, temperature=1.0, generator=None):
        return self.loc + self.log_scale.exp() * self._noise(n, temperature, generator)


def purity(clusters: torch.Tensor, digits: torch.Tensor) -> float:
    """Share of points whose cluster's most common digit is their own."""
    hits = sum(
        int(torch.bincount(digits[clusters == c], minlength=10).max())
        for c in clusters.unique().tolist()
    )
    return hits / len(digits)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", required=True,
        help="an unconditional N(0, I)-prior flow: a checkpoint, run folder or shipped name",
    )  # fmt: skip
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--fit-pairs", type=int, default=2000)
    parser.add_argument("--test-pairs", type=int, default=500)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--temperature", type=float, nargs="+", default=[0.7, 0.8])
    variants = ["normal", "one_gaussian", "latent_kmeans", "pixel_kmeans"]
    parser.add_argument("--variants", nargs="+", default=variants)
    args = parser.parse_args(argv)
    if args.fit_pairs < 20 or args.samples < 10 or args.test_pairs < 1:
        parser.error("--fit-pairs >= 20, --samples >= 10 and --test-pairs >= 1 are needed")
    start = time.perf_counter()
    try:
        base = pairflow.load(args.model)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    if base.config.conditional or base.config.prior != "normal":
        parser.error(f"--model {args.model}: an unconditional flow with the N(0, I) prior")
    base.precision = "fp32"
    base.eval()
    root = Path(args.data_dir)
    train = PairedMNIST(root, train=True, seed=0)
    test = PairedMNIST(root, train=False)
    cpu = torch.device("cpu")
    images, labels, z = train_latents(base, train, cpu, args.fit_pairs)
    x_test, _ = test.get_batch(torch.arange(args.test_pairs))

    def with_prior(distribution: Distribution | None) -> PairFlow:
        if distribution is None:
            return base
        flow = PairFlow(dataclasses.replace(base.config))
        flow.load_state_dict(base.state_dict())
        flow.distribution = distribution
        return flow.eval()

    halves = [slice(0, z.shape[-1] // 2), slice(z.shape[-1] // 2, None)]
    digits = [labels // 10, labels % 10]
    results: dict[str, dict] = {}
    for variant in args.variants:
        row: dict = {}
        if variant == "normal":
            prior = None
        elif variant == "one_gaussian":
            prior = OneGaussian(z.mean(0), z.std(0, correction=0).clamp_min(1e-2).log())
        elif variant in ("latent_kmeans", "pixel_kmeans"):
            prior = ClusterMixture(tuple(z.shape[1:]))
            if variant == "pixel_kmeans":
                clusters = prior.fit_clusters(z, images)
            else:
                per_side = [kmeans(z[..., h].flatten(1), 10) for h in halves]
                clusters = per_side[0] * 10 + per_side[1]
                prior.fit(z, clusters)
                prior.set_class_counts(torch.bincount(clusters, minlength=100))
            row["purity_left_right"] = [
                purity(clusters // 10, digits[0]),
                purity(clusters % 10, digits[1]),
            ]
        else:
            parser.error(f"unknown variant {variant!r}")
        flow = with_prior(prior)
        with torch.no_grad():
            bpd = flow.bits_per_dim(x_test, generator=torch.Generator().manual_seed(0))
        row["test_bpd_bound"] = bpd.mean().item()
        row["test_bpd_stderr"] = bpd.std().item() / math.sqrt(len(bpd))
        for t in args.temperature:
            with tempfile.TemporaryDirectory() as tmp:
                r = sample_metrics(
                    flow, False, args.samples, root, Path(tmp) / "grid.png",
                    Path("runs") / "floor-cache", temperature=t,
                )  # fmt: skip
            row[f"T{t}"] = {k: round(v["model"], 4) for k, v in r["metrics"].items()}
            row[f"T{t}"]["floor_fd"] = round(r["metrics"]["fd"]["floor"], 4)
        results[variant] = row
        print(variant, json.dumps(row), file=sys.stderr, flush=True)
    out = {
        "benchmark": "mixture_init",
        "model": args.model,
        "fit_pairs": args.fit_pairs,
        "test_pairs": args.test_pairs,
        "samples": args.samples,
        "results": results,
        "seconds": round(time.perf_counter() - start, 1),
        "machine": machine_info(),
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
