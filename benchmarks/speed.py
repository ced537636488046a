"""Speed of pairflow on this machine: training, sampling and data throughput, against its ceiling.

Prints one JSON object (and writes it to ``--out`` if given) with:

- ``machine``: CPU model, cores, torch's capability string, AMX and AVX512-BF16, torch
  version, torch threads, OMP_WAIT_POLICY, load averages (and ``uptime``) at start and end;
- ``matmul_ceiling_gflop_s``: the best fp32 and bf16 matrix multiply rate of this process
  (square matrices, median of several runs per size, best size);
- ``train``: for each preset x conditional x precision, pairs/s and seconds per epoch of
  60,000 pairs of the training loop's step (real batches from ``PairLoader``, loss, backward,
  gradient clipping, finiteness check, fused Adam step), the FLOPs of the step counted by
  ``torch.utils.flop_counter`` and the fraction of the matmul ceiling of that precision;
- ``levers``: the same step with one lever changed (for-each Adam instead of fused, one
  thread, ``torch.compile``), to show what each pays;
- ``sample``: pairs/s of ``PairFlow.sample`` at batch 1 and 1,000, and seconds to sample
  10,000 pairs from ``seed`` (10 batches of 1,000);
- ``data``: the output of ``benchmarks/data_throughput.py`` (run as a subprocess).

Every figure is the median of ``--runs`` timed runs after warm-up.

Usage (from the repository root):
    .venv/bin/python benchmarks/speed.py --data-dir ../shared/data --out /tmp/speed.json
    .venv/bin/python benchmarks/speed.py --quick   # seconds: tiny models, a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from machine import load, machine_info  # this script's folder is on sys.path
from pairflow.data import PairedMNIST, PairLoader, make_synthetic_mnist, read_mnist, resolve_root
from pairflow.flows import build_flow
from pairflow.options import PRECISIONS
from pairflow.training.loop import _NLL
from pairflow.training.speed import CompileOrEager, clip_grad_norm, make_adam

EPOCH_PAIRS = 60_000
BATCH = {"seed": 128, "multiscale": 64}  # the batch each preset trains with


def log(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    return [f for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f" {f}" in text]


def median_time(fn, runs: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ------------------------------------------------------------------------------ ceiling
def matmul_ceiling(sizes: list[int], runs: int) -> dict:
    """Best median GFLOP/s of an n x n by n x n matmul, per dtype, and the size that gave it."""
    result = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        best, best_n = 0.0, None
        for n in sizes:
            a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
            reps = 3
            t = median_time(lambda a=a, b=b, reps=reps: [a @ b for _ in range(reps)], runs)
            rate = reps * 2 * n**3 / t / 1e9
            log(f"matmul {name} n={n}: {rate:.1f} GFLOP/s")
            if rate > best:
                best, best_n = rate, n
        result[name] = {"gflop_s": round(best, 1), "n": best_n}
    return result


# ------------------------------------------------------------------------------ training
def step_flops(flow, x, cond) -> int:
    """Matmul/conv FLOPs of forward + backward for the batch (flop_counter)."""
    with FlopCounterMode(display=False) as counter:
        flow.bits_per_dim(x, cond).mean().backward()
    flow.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def train_rate(
    dataset,
    preset: str,
    conditional: bool,
    precision: str,
    overrides: dict,
    batch: int,
    steps: int,
    runs: int,
    fused: bool = True,
    compile: bool = False,
    clip=clip_grad_norm,
) -> dict:
    """pairs/s of the training loop's step (median over runs of ``steps`` steps)."""
    torch.manual_seed(0)
    flow = build_flow(preset, precision=precision, conditional=conditional, **overrides)
    flow.train()
    loader = PairLoader(dataset, batch_size=batch, shuffle=True, drop_last=True, seed=0)
    batches = iter(loader)

    def next_batch():
        nonlocal batches
        try:
            return next(batches)
        except StopIteration:
            batches = iter(loader)
            return next(batches)

    x0, y0 = next_batch()
    flow.data_init(x0, y0 if conditional else None)
    flops = step_flops(flow, x0, y0 if conditional else None)
    opt = make_adam(flow.parameters(), lr=1e-4, fused=fused)
    loss_module = _NLL(flow)
    loss_fn = CompileOrEager(loss_module) if compile else loss_module
    noise = torch.Generator().manual_seed(0)

    def step():
        x, y = next_batch()  # (B, 1, 28, 56) uint8, (B,)
        loss = loss_fn(x, y if conditional else None, noise).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = clip(flow.parameters(), 100.0)
        if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
            raise RuntimeError(f"non-finite loss in the benchmark: {float(loss)}")
        opt.step()

    compile_s = None
    if compile:
        start = time.perf_counter()
        step()  # compiles
        compile_s = round(time.perf_counter() - start, 1)
    t = median_time(lambda: [step() for _ in range(steps)], runs, warmup=1)
    rate = steps * batch / t
    result = {
        "preset": preset,
        "conditional": conditional,
        "precision": precision,
        "batch": batch,
        "threads": torch.get_num_threads(),
        "fused_adam": bool(opt.defaults.get("fused")),
        "compile": compile and getattr(loss_fn, "is_compiled", False),
        "params": sum(p.numel() for p in flow.parameters()),
        "pairs_per_s": round(rate, 1),
        "s_per_epoch": round(EPOCH_PAIRS / rate, 1),
        "gflop_per_step": round(flops / 1e9, 2),
        "achieved_gflop_s": round(flops / (t / steps) / 1e9, 1),
    }
    if compile_s is not None:
        result["first_step_s_with_compile"] = compile_s
    log(json.dumps(result))
    return result


# ------------------------------------------------------------------------------ sampling
def sample_rates(preset: str, precision: str, overrides: dict, runs: int, big: int) -> dict:
    torch.manual_seed(0)
    flow = build_flow(preset, precision=precision, **overrides).eval()
    gen = torch.Generator().manual_seed(0)
    one = median_time(lambda: flow.sample(1, generator=gen), max(runs, 10), warmup=2)
    many = median_time(lambda: flow.sample(big, generator=gen), runs)
    result = {
        "preset": preset,
        "precision": precision,
        "threads": torch.get_num_threads(),
        "pairs_per_s_batch_1": round(1 / one, 1),
        f"pairs_per_s_batch_{big}": round(big / many, 1),
    }
    log(json.dumps(result))
    return result


def seconds_for_10000(preset: str, precision: str, overrides: dict, runs: int, big: int) -> float:
    flow = build_flow(preset, precision=precision, **overrides).eval()
    gen = torch.Generator().manual_seed(0)
    n = 10_000 if big >= 1000 else 10 * big

    def draw():
        for _ in range(n // big):
            flow.sample(big, generator=gen)

    return median_time(draw, runs, warmup=0 if big >= 1000 else 1)


# ------------------------------------------------------------------------------ main
def save(result: dict, path: str | None) -> None:
    if path:
        from pairflow.utils import atomic_write_text

        atomic_write_text(path, json.dumps(result, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="MNIST root (default $PAIRFLOW_DATA, ../shared/data)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per figure (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default all)")
    parser.add_argument(
        "--sections",
        nargs="+",
        default=["matmul", "train", "levers", "sample", "data"],
        choices=["matmul", "train", "levers", "sample", "data"],
    )
    parser.add_argument("--presets", nargs="+", default=["seed", "multiscale"])
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile lever")
    parser.add_argument("--quick", action="store_true", help="tiny models and few steps (smoke)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    quick = args.quick
    runs = 2 if quick else args.runs
    small = {
        "seed": {"hidden_features": 32} if quick else {},
        "multiscale": {"hidden_channels": 8} if quick else {},
    }
    # Steps per timed run: a tenth of an epoch for seed (10-step runs swung by +-15% between
    # runs); multiscale steps are long enough on their own.
    steps = {"seed": 2 if quick else 47, "multiscale": 1 if quick else 3}
    result: dict = {
        "benchmark": "speed",
        "quick": quick,
        "machine": {**machine_info(), "cpu_flags": cpu_flags()},
        "method": f"median of {runs} timed runs after warm-up per figure",
    }

    root = resolve_root(args.data_dir or os.environ.get("PAIRFLOW_DATA") or "../shared/data")
    try:
        read_mnist(root, train=False)
        result["data_source"] = f"MNIST at {root}"
    except (FileNotFoundError, ValueError):
        root = make_synthetic_mnist("/tmp/pairflow_bench_data", 60000, 10000)
        result["data_source"] = "synthetic digits (real MNIST not found)"

    if "matmul" in args.sections:
        sizes = [256] if quick else [1024, 2048, 3072]
        result["matmul_ceiling_gflop_s"] = matmul_ceiling(sizes, runs)
    ceiling = result.get("matmul_ceiling_gflop_s")

    def with_fraction(entry: dict) -> dict:
        if ceiling:
            peak = ceiling[entry["precision"]]["gflop_s"]
            entry["fraction_of_matmul_ceiling"] = round(entry["achieved_gflop_s"] / peak, 3)
        return entry

    needs_data = {"train", "levers"} & set(args.sections)
    dataset = PairedMNIST(root, train=True, seed=0) if needs_data else None
    save(result, args.out)  # partial results survive an interrupted run
    if "train" in args.sections:
        result["train"] = [
            with_fraction(
                train_rate(
                    dataset, preset, cond, precision, small[preset], BATCH[preset],
                    steps[preset], runs,
                )
            )
            for preset in args.presets
            for cond in (False, True)
            for precision in PRECISIONS
        ]  # fmt: skip

    save(result, args.out)
    if "sample" in args.sections:
        big = 50 if quick else 1000
        result["sample"] = [
            sample_rates(preset, precision, small[preset], runs, big)
            for preset in args.presets
            for precision in PRECISIONS
        ]
        if "seed" in args.presets:
            result["sample_10000_seed_s"] = {
                precision: round(seconds_for_10000("seed", precision, small["seed"], 3, big), 2)
                for precision in PRECISIONS
            }
            log("sample 10,000 seed:", result["sample_10000_seed_s"])

    save(result, args.out)
    if "data" in args.sections:
        script = Path(__file__).with_name("data_throughput.py")
        cmd = [sys.executable, str(script), "--root", str(root), "--runs", str(min(runs, 3))]
        if quick:
            cmd += ["--pil-items", "500"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        result["data"] = json.loads(out)

    save(result, args.out)
    if "levers" in args.sections:
        levers = result["levers"] = []

        def lever(name: str, preset: str, precision: str, **kw) -> None:
            entry = train_rate(
                dataset, preset, False, precision, small[preset], BATCH[preset], steps[preset],
                runs, **kw,
            )  # fmt: skip
            levers.append({"lever": name, **with_fraction(entry)})
            save(result, args.out)

        if "seed" in args.presets:  # the Adam update is a large share of seed's step
            for precision in PRECISIONS:
                lever("for-each Adam (not fused)", "seed", precision, fused=False)
            for precision in PRECISIONS:
                lever(
                    "torch clip_grad_norm_ (multiplies every step)", "seed", precision,
                    clip=torch.nn.utils.clip_grad_norm_,
                )  # fmt: skip
        if threads > 1:
            torch.set_num_threads(1)
            for preset in args.presets:
                for precision in PRECISIONS:
                    lever("1 thread", preset, precision)
            torch.set_num_threads(threads)
        if not args.no_compile:  # last: compiling takes minutes
            for preset in args.presets:
                for precision in PRECISIONS if preset == "seed" else ("bf16",):
                    lever("torch.compile", preset, precision, compile=True)

    result["machine"]["load_at_end"] = load()
    save(result, args.out)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
