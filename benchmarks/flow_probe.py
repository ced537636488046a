"""Short training probe: test bits/dim of a flow configuration against training wall-clock.

Trains on real MNIST training pairs (fresh random pairs each step) with Adam (linear warm-up,
gradient clipping at norm 50) and every minute evaluates bits/dim on the first 1,000 fixed
test pairs (one dequantization draw, fixed generator). Prints the curve and a final JSON line.
Used to size the ``multiscale`` preset; run two probes at once (one thread each) for a
comparison at equal wall-clock under the same machine load.

Usage:
    python benchmarks/flow_probe.py --preset multiscale --minutes 5 --threads 1 \
        --set hidden_channels=96 --tag wide
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch

from flow_train_step import parse_value  # this script's folder is on sys.path
from pairflow.data import PairedMNIST
from pairflow.flows import build_flow


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=os.environ.get("PAIRFLOW_DATA", "../shared/data"))
    p.add_argument("--preset", default="multiscale")
    p.add_argument("--set", nargs="*", default=[], help="FlowConfig overrides key=value")
    p.add_argument("--minutes", type=float, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--precision", default="bf16")
    p.add_argument("--tag", default="")
    a = p.parse_args()
    overrides = {k: parse_value(v) for k, v in (kv.split("=", 1) for kv in a.set)}
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    train = PairedMNIST(a.data_root, train=True, seed=0)
    test = PairedMNIST(a.data_root, train=False, seed=0)
    x_test, _ = test.get_batch(torch.arange(1000))  # (1000, 1, 28, 56)
    flow = build_flow(a.preset, precision=a.precision, **overrides)
    opt = torch.optim.Adam(flow.parameters(), lr=a.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / a.warmup))
    g = torch.Generator().manual_seed(0)

    @torch.no_grad()
    def evaluate() -> float:
        flow.eval()
        ge = torch.Generator().manual_seed(123)
        bpd = torch.cat(
            [flow.bits_per_dim(x_test[i : i + 250], generator=ge) for i in range(0, 1000, 250)]
        )
        flow.train()
        return float(bpd.mean())

    train_s, step, next_eval, curve = 0.0, 0, 60.0, []
    while train_s < a.minutes * 60:
        t = time.perf_counter()
        x, _ = train.get_batch(torch.randint(0, len(train.targets), (a.batch,), generator=g))
        loss = flow.bits_per_dim(x).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(flow.parameters(), 50.0)
        opt.step()
        sched.step()
        step += 1
        train_s += time.perf_counter() - t
        if not math.isfinite(loss.item()):
            print(json.dumps({"tag": a.tag, "diverged_at_step": step}))
            return
        if train_s >= next_eval:
            curve.append([round(train_s), step, round(loss.item(), 3), round(evaluate(), 4)])
            print(a.tag, curve[-1], flush=True)
            next_eval += 60
    result = {
        "tag": a.tag,
        "preset": a.preset,
        "overrides": overrides,
        "params": sum(q.numel() for q in flow.parameters()),
        "precision": a.precision,
        "threads": a.threads,
        "steps": step,
        "train_s": round(train_s),
        "pairs_per_s": round(step * a.batch / train_s, 1),
        "test_bpd_1000": evaluate(),
        "curve_s_step_loss_testbpd": curve,
        "loadavg_1min": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
