"""The ``multiscale`` train step against this machine's convolution ceiling, levers interleaved.

Candidates (each one timed chunk per round, in turn, A, B, C, A, B, C ..., medians):

- ``eager``: the training loop's step as it is (channels-last conditioners);
- ``contiguous``: the same with the conditioners in the default (NCHW) memory format;
- ``compile``: the loss through ``torch.compile`` (its first step, compiling included, is
  reported as ``first_step_s``, and ``compile_pays_after_steps`` is that extra time over the
  per-step saving: the run length from which compiling is worth it);
- ``convs``: only the convolutions of the same step (forward, gradient of the input and of
  the weight, the model's own shapes, channels-last): the ceiling the step can approach;
- ``square<N>``: an N x N fp32 matmul, the machine's best-case matmul rate.

Prints one JSON object with the machine (CPU, capability, AMX, cores, load) and, per
candidate, pairs/s, seconds per epoch of 60,000 pairs, achieved GFLOP/s and the fraction of
the convolutions-only rate.

Usage (from the repository root):
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/multiscale_step.py --threads 1
    .venv/bin/python benchmarks/multiscale_step.py --quick   # a tiny model, a smoke test
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from machine import load, machine_info  # this script's folder is on sys.path
from pairflow.flows import build_flow
from pairflow.flows.nets import ConvResNet
from pairflow.options import PRECISIONS
from seed_step import EPOCH_PAIRS, FlowStep, SquareMatmul


def log(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


class ConvsOnly:
    """The convolutions of one multiscale train step, with the shapes the model gives them."""

    def __init__(self, batch: int, overrides: dict, precision: str):
        flow = build_flow("multiscale", precision=precision, **overrides)
        shapes = []

        def record(module, inputs):
            shapes.append((tuple(inputs[0].shape), module))

        hooks = [
            m.register_forward_pre_hook(record) for m in flow.modules() if isinstance(m, nn.Conv2d)
        ]
        flow.bits_per_dim(torch.randint(0, 256, (batch, 1, 28, 56), dtype=torch.uint8))
        for h in hooks:
            h.remove()
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.convs = []
        cl = torch.channels_last
        for shape, m in shapes:
            x = torch.randn(shape, dtype=dtype).contiguous(memory_format=cl).requires_grad_()
            w = torch.randn_like(m.weight, dtype=dtype).contiguous(memory_format=cl)
            w.requires_grad_()
            self.convs.append((x, w, m.padding))
        self.batch = batch
        self.flops = 0
        for x, w, _ in self.convs:  # 2 * MACs, times 3: forward, grad input, grad weight
            out_pixels = x.shape[0] * x.shape[2] * x.shape[3]
            self.flops += 3 * 2 * out_pixels * w.numel()
        self.first_step_s = None

    def __call__(self) -> None:
        for x, w, padding in self.convs:
            y = F.conv2d(x, w, padding=padding)
            y.backward(torch.ones_like(y))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default all)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (median)")
    parser.add_argument("--steps", type=int, default=2, help="steps per candidate per round")
    parser.add_argument(
        "--candidates", nargs="+", default=["eager", "contiguous", "compile", "convs"]
    )
    parser.add_argument("--quick", action="store_true", help="a tiny model (smoke test)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    overrides = {"hidden_channels": 8} if args.quick else {}
    rounds = 2 if args.quick else args.rounds
    result = {"benchmark": "multiscale_step", "machine": machine_info(), "quick": args.quick}
    made = {}
    for name in args.candidates:
        log("building", name)
        kw = dict(preset="multiscale")
        if name == "eager":
            made[name] = FlowStep(args.batch, args.precision, overrides, **kw)
        elif name == "contiguous":
            step = FlowStep(args.batch, args.precision, overrides, **kw)
            for m in step.flow.modules():
                if isinstance(m, ConvResNet):
                    m.channels_last = False
                    m.to(memory_format=torch.contiguous_format)
            made[name] = step
        elif name == "compile":
            made[name] = FlowStep(args.batch, args.precision, overrides, compile=True, **kw)
        elif name == "convs":
            made[name] = ConvsOnly(args.batch, overrides, args.precision)
        elif name.startswith("square"):  # the machine's best-case fp32 matmul rate
            made[name] = SquareMatmul(int(name[6:]))
        else:
            raise SystemExit(f"unknown candidate {name!r}")
    times: dict[str, list[float]] = {name: [] for name in made}
    for r in range(rounds + 1):  # round 0 warms up
        for name, step in made.items():
            start = time.perf_counter()
            for _ in range(3 if isinstance(step, SquareMatmul) else args.steps):
                step()
            if r:
                n = 3 if isinstance(step, SquareMatmul) else args.steps
                times[name].append((time.perf_counter() - start) / n)
        log(f"round {r}:", {k: round(v[-1], 4) for k, v in times.items() if v})
    out = {}
    for name, step in made.items():
        t = statistics.median(times[name])
        rate = step.batch / t
        out[name] = {
            "batch": step.batch,
            "precision": args.precision,
            "step_s": round(t, 4),
            "pairs_per_s": round(rate, 1),
            "s_per_epoch": round(EPOCH_PAIRS / rate, 1),
            "gflop_per_step": round(step.flops / 1e9, 3),
            "achieved_gflop_s": round(step.flops / t / 1e9, 1),
            "spread_step_s": [round(min(times[name]), 4), round(max(times[name]), 4)],
        }
        if step.first_step_s is not None:
            out[name]["first_step_s"] = step.first_step_s
    if "convs" in out:
        for entry in out.values():
            entry["fraction_of_convs_rate"] = round(
                entry["achieved_gflop_s"] / out["convs"]["achieved_gflop_s"], 3
            )
    squares = [entry for name, entry in out.items() if name.startswith("square")]
    if squares:
        for entry in out.values():
            entry["fraction_of_square_matmul_rate"] = round(
                entry["achieved_gflop_s"] / squares[0]["achieved_gflop_s"], 3
            )
    if "compile" in out and "eager" in out:
        saving = out["eager"]["step_s"] - out["compile"]["step_s"]
        extra = out["compile"]["first_step_s"] - out["eager"]["first_step_s"]
        out["compile"]["speedup_over_eager"] = round(
            out["eager"]["step_s"] / out["compile"]["step_s"], 3
        )
        out["compile"]["compile_pays_after_steps"] = round(extra / saving) if saving > 0 else None
    result["method"] = (
        f"{rounds} interleaved rounds of {args.steps} steps per candidate after a warm-up round; "
        "medians"
    )
    result["candidates"] = out
    result["machine"]["load_at_end"] = load()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
