"""The ``seed`` train step against this machine's ceiling, its levers measured interleaved.

Every candidate (a batch size, fused or for-each Adam, ``torch.compile``, ...) runs one timed
chunk of the same number of pairs per round, in turn (A, B, C, A, B, C, ...), so that a load
that changes during the run hits all of them alike; each figure is the median over rounds.
Beside them runs the ceiling: only the matmuls of the same step (forward ``baddbmm`` and the
two backward products of every layer, with the model's own shapes), whose rate bounds the
step's.

Prints one JSON object: the machine (CPU, capability, AMX, cores, load at start and end), the
candidates' pairs/s, seconds per epoch of 60,000 pairs, achieved GFLOP/s and fraction of the
matmul-only rate at the same batch.

Usage (from the repository root):
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/seed_step.py --threads 1 --rounds 5
    .venv/bin/python benchmarks/seed_step.py --quick   # seconds: a tiny model, a smoke test
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from machine import load, machine_info  # this script's folder is on sys.path
from pairflow.flows import build_flow
from pairflow.training.speed import CompileOrEager, clip_grad_norm, make_adam

EPOCH_PAIRS = 60_000


def log(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


class FlowStep:
    """The training loop's step of a flow (loss, backward, clipping, check, Adam)."""

    def __init__(
        self, batch, precision, overrides, fused=True, compile=False, preset="seed"
    ) -> None:
        torch.manual_seed(0)
        self.flow = build_flow(preset, precision=precision, **overrides).train()
        self.opt = make_adam(self.flow.parameters(), lr=1e-5, fused=fused)
        self.batch = batch
        self.x = torch.randint(0, 256, (batch, 1, 28, 56), dtype=torch.uint8)
        self.noise = torch.Generator().manual_seed(0)
        self.loss = CompileOrEager(self._loss) if compile else self._loss
        with FlopCounterMode(display=False) as counter:
            self.flow.bits_per_dim(self.x).mean().backward()
        self.flow.zero_grad(set_to_none=True)
        self.flops = counter.get_total_flops()
        self.first_step_s = None
        start = time.perf_counter()
        self()
        self.first_step_s = round(time.perf_counter() - start, 2)

    def _loss(self, x, generator):
        return self.flow.bits_per_dim(x, None, generator).mean()

    def __call__(self) -> None:
        loss = self.loss(self.x, self.noise)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = clip_grad_norm(self.flow.parameters(), 100.0)
        if not (torch.isfinite(loss) and torch.isfinite(norm)):
            raise RuntimeError("non-finite loss in the benchmark")
        self.opt.step()


class MatmulsOnly:
    """The matmuls of the same step and nothing else: the step's ceiling at this batch."""

    def __init__(self, batch: int, overrides: dict):
        flow = build_flow("seed", **overrides)
        self.batch = batch
        self.layers = []  # (input (K, B, i), weight (K, i, o), grad of output (K, B, o))
        for w in (p for n, p in flow.named_parameters() if ".weights." in n):
            k, i, o = w.shape
            self.layers.append(
                (torch.randn(k, batch, i), torch.randn(k, i, o), torch.randn(k, batch, o))
            )
        self.flops = sum(3 * 2 * h.numel() * w.shape[2] for h, w, _ in self.layers)
        self.first_step_s = None

    def __call__(self) -> None:
        for h, w, g in self.layers:
            torch.bmm(h, w)  # forward
            torch.bmm(g, w.transpose(1, 2))  # gradient of the input
            torch.bmm(h.transpose(1, 2), g)  # gradient of the weights


class SquareMatmul:
    """An n x n by n x n fp32 matmul: the machine's best-case matmul rate, for reference."""

    def __init__(self, n: int):
        self.a, self.b = torch.randn(n, n), torch.randn(n, n)
        self.flops, self.batch, self.first_step_s = 2 * n**3, 1, None

    def __call__(self) -> None:
        self.a @ self.b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default all)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (median)")
    parser.add_argument("--pairs", type=int, default=2048, help="pairs per candidate per round")
    parser.add_argument(
        "--candidates",
        nargs="+",
        default=[
            "b128",
            "b256",
            "b512",
            "foreach",
            "compile",
            "matmul128",
            "matmul256",
            "matmul512",
        ],
        help="b<N>: the step at batch N; foreach: for-each Adam, batch 128; compile: "
        "torch.compile of the loss, batch 128; bf16: batch 128 in bf16; "
        "matmul<N>: the matmuls only; square<N>: an N x N matmul (the machine's best case)",
    )
    parser.add_argument("--quick", action="store_true", help="a tiny model (smoke test)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    overrides = {"hidden_features": 32} if args.quick else {}
    rounds = 2 if args.quick else args.rounds
    pairs = 512 if args.quick else args.pairs
    result = {"benchmark": "seed_step", "machine": machine_info(), "quick": args.quick}

    made = {}
    for name in args.candidates:
        log("building", name)
        if name.startswith("square"):
            made[name] = SquareMatmul(int(name[6:]))
        elif name.startswith("matmul"):
            made[name] = MatmulsOnly(int(name[6:]), overrides)
        elif name.startswith("b"):
            made[name] = FlowStep(int(name[1:]), "fp32", overrides)
        elif name == "foreach":
            made[name] = FlowStep(128, "fp32", overrides, fused=False)
        elif name == "compile":
            made[name] = FlowStep(128, "fp32", overrides, compile=True)
        elif name == "bf16":
            made[name] = FlowStep(128, "bf16", overrides)
        else:
            raise SystemExit(f"unknown candidate {name!r}")
    times: dict[str, list[float]] = {name: [] for name in made}
    for r in range(rounds + 1):  # round 0 warms up
        for name, step in made.items():
            n = 3 if isinstance(step, SquareMatmul) else max(1, pairs // step.batch)
            start = time.perf_counter()
            for _ in range(n):
                step()
            if r:
                times[name].append((time.perf_counter() - start) / n)
        log(f"round {r}:", {k: round(v[-1], 4) for k, v in times.items() if v})
    out = {}
    for name, step in made.items():
        t = statistics.median(times[name])
        rate = step.batch / t
        out[name] = {
            "batch": step.batch,
            "step_s": round(t, 4),
            "pairs_per_s": round(rate, 1),
            "s_per_epoch": round(EPOCH_PAIRS / rate, 1),
            "gflop_per_step": round(step.flops / 1e9, 3),
            "achieved_gflop_s": round(step.flops / t / 1e9, 1),
            "spread_step_s": [round(min(times[name]), 4), round(max(times[name]), 4)],
        }
        if step.first_step_s is not None:
            out[name]["first_step_s"] = step.first_step_s
    squares = [entry for name, entry in out.items() if name.startswith("square")]
    for name, entry in out.items():
        if squares:
            entry["fraction_of_square_matmul_rate"] = round(
                entry["achieved_gflop_s"] / squares[0]["achieved_gflop_s"], 3
            )
        ceiling = out.get(f"matmul{entry['batch']}")
        if ceiling and not name.startswith("matmul"):
            entry["fraction_of_matmul_rate"] = round(
                entry["achieved_gflop_s"] / ceiling["achieved_gflop_s"], 3
            )
    result["method"] = (
        f"{rounds} interleaved rounds of {pairs} pairs per candidate after a warm-up round; medians"
    )
    result["candidates"] = out
    result["machine"]["load_at_end"] = load()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
