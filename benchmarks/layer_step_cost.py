"""Cost per training step of the flow's optional layers, timed interleaved in one process.

Each configuration's step (bits/dim of a random batch of 64 pairs, backward, Adam) is timed in
turn, round after round, so that a changing machine load hits every configuration alike; the
first round is a warm-up. Prints one JSON object per configuration, with its median step time
relative to ``multiscale``.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/layer_step_cost.py --rounds 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from pairflow.flows import build_flow

CONFIGS = {
    "multiscale": ("multiscale", {}, False),
    "glow": ("glow", {}, False),
    "glow additive": ("glow", {"coupling": "additive"}, False),
    "multiscale + variational dequantization": (
        "multiscale",
        {"dequantization": "variational"},
        False,
    ),
    "multiscale + class mixture (given y)": (
        "multiscale",
        {"conditional": True, "conditioning": "mixture"},
        True,
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="timed rounds + 1 warm-up")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", default="fp32")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randint(0, 256, (args.batch, 1, 28, 56), dtype=torch.uint8)
    y = torch.randint(0, 100, (args.batch,))
    flows = {k: build_flow(p, precision=args.precision, **o) for k, (p, o, _) in CONFIGS.items()}
    opts = {k: torch.optim.Adam(f.parameters(), lr=1e-4) for k, f in flows.items()}
    times: dict[str, list[float]] = {k: [] for k in flows}
    load = [os.getloadavg()[0]]
    for r in range(args.rounds):
        for k, flow in flows.items():
            cond = y if CONFIGS[k][2] else None
            t = time.perf_counter()
            loss = flow.bits_per_dim(x, cond=cond).mean()
            opts[k].zero_grad(set_to_none=True)
            loss.backward()
            opts[k].step()
            if r >= 1:
                times[k].append(time.perf_counter() - t)
        load.append(os.getloadavg()[0])
    base = statistics.median(times["multiscale"])
    for k, flow in flows.items():
        step = statistics.median(times[k])
        print(json.dumps({
            "config": k, "params": sum(p.numel() for p in flow.parameters()),
            "median_step_s": round(step, 3), "relative_to_multiscale": round(step / base, 3),
            "batch": args.batch, "threads": args.threads, "precision": args.precision,
            "rounds": len(times[k]), "loadavg_1min_start_end": [load[0], load[-1]],
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
