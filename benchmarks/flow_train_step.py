"""Train-step throughput (pairs/s) of flow configurations: forward + backward + Adam step.

Usage:
    python benchmarks/flow_train_step.py --preset multiscale --precision fp32 bf16 \
        --set hidden_channels=64 --batch 64 --steps 10

Prints one JSON object per (config, precision) with the median step time over ``--steps``
timed steps (after 2 warm-up steps) on random pixel batches, and the machine it ran on (CPU,
capability, AMX, cores, load).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from machine import machine_info  # this script's folder is on sys.path
from pairflow.flows import build_flow
from pairflow.options import PRECISIONS


def parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="multiscale")
    parser.add_argument("--set", nargs="*", default=[], help="FlowConfig overrides key=value")
    parser.add_argument("--precision", nargs="+", default=list(PRECISIONS))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--fused-adam", action="store_true", help="torch.optim.Adam(fused=True)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides = dict(kv.split("=", 1) for kv in args.set)
    overrides = {k: parse_value(v) for k, v in overrides.items()}
    torch.manual_seed(0)
    x = torch.randint(0, 256, (args.batch, 1, 28, 56), dtype=torch.uint8)
    for precision in args.precision:
        flow = build_flow(args.preset, precision=precision, **overrides)
        with FlopCounterMode(display=False) as counter:
            flow.bits_per_dim(x[:1]).sum().backward()
        train_flops = counter.get_total_flops()  # forward + backward, one pair
        flow.zero_grad(set_to_none=True)
        opt = torch.optim.Adam(flow.parameters(), lr=1e-4, fused=args.fused_adam or None)
        times = []
        for i in range(args.steps + 2):
            t = time.perf_counter()
            loss = flow.bits_per_dim(x).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if i >= 2:
                times.append(time.perf_counter() - t)
        step = statistics.median(times)
        result = {
            "preset": args.preset,
            "overrides": overrides,
            "precision": precision,
            "params": sum(p.numel() for p in flow.parameters()),
            "batch": args.batch,
            "fused_adam": args.fused_adam,
            "median_step_s": round(step, 4),
            "pairs_per_s": round(args.batch / step, 1),
            "gflop_per_pair_fwd_bwd": round(train_flops / 1e9, 3),
            "achieved_gflop_s": round(train_flops * args.batch / step / 1e9, 1),
            "threads": args.threads,
            "machine": machine_info(),
        }
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
