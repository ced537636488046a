"""Speed of pairflow on this machine: training, sampling and data throughput, against its ceiling.

Prints one JSON object (and writes it to ``--out`` if given) with:

- ``machine``: CPU model, cores, torch's capability string, AMX and AVX512-BF16, torch
  version, torch threads, OMP_WAIT_POLICY, load averages (and ``uptime``) at start and end;
- ``matmul_ceiling_gflop_s``: the best fp32 and bf16 rate of this process on large products:
  square matrix multiplies and 3x3 convolutions (median of several runs per size, best size).
  Both count: torch multiplies fp32 matrices with MKL and convolves with oneDNN, and on an
  AVX512 AMD EPYC the fp32 convolution ran 1.5 to 2.1 times as fast as the fp32 matmul;
- ``train``: for each family x conditional x precision, pairs/s and seconds per epoch of
  60,000 pairs of the training loop's step (real batches from ``PairLoader``, loss, backward,
  gradient clipping, finiteness check, fused Adam step), the FLOPs of the step counted by
  ``torch.utils.flop_counter`` (by kind of op and by dtype), the fraction of the ceiling of
  that precision (its best product timed again before and after every timed run, so that a
  load that comes and goes hits the step and its ceiling alike), and, from up to three
  profiled steps, the share of the step's time spent in matmuls, convolutions and attention,
  the rate those reach on their own, and the five ops of most time;
- ``levers``: the same step with one lever changed (for-each Adam instead of fused, one
  thread, ``torch.compile``), to show what each pays;
- ``sample``: for each family x conditional x precision, pairs/s of ``PairFlow.sample`` at
  batch 1 and 100, temperature 0.7 (a conditional flow with given labels 0, 1, 2, ...), and
  seconds to sample 10,000 pairs from ``seed`` (10 batches of 1,000);
- ``data``: the output of ``benchmarks/data_throughput.py`` (run as a subprocess).

A family is a preset with optional ``FlowConfig`` overrides, ``PRESET[:FIELD=VALUE,...]``
(``--families seed multiscale multiscale:coupling=spline glow tarflow``); each runs in fp32
and, where its networks run under autocast (``runs_in_low_precision``), in bf16.

Every figure is the median of ``--runs`` timed runs after warm-up.

Usage (from the repository root):
    .venv/bin/python benchmarks/speed.py --data-dir ../shared/data --out /tmp/speed.json
    .venv/bin/python benchmarks/speed.py --threads 1 --sections matmul train sample \
        --families seed multiscale multiscale:coupling=spline glow tarflow
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
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from flow_train_step import parse_value  # this script's folder is on sys.path
from machine import load, machine_info
from pairflow.data import PairedMNIST, PairLoader, make_synthetic_mnist, read_mnist, resolve_root
from pairflow.flows import PRESETS, FlowConfig, build_flow
from pairflow.flows.base import Transform
from pairflow.options import PRECISIONS
from pairflow.training.loop import _NLL
from pairflow.training.speed import CompileOrEager, clip_grad_norm, make_adam

EPOCH_PAIRS = 60_000
BATCH = {"seed": 128, "multiscale": 64, "glow": 64, "tarflow": 64}  # each preset's batch
SAMPLE_BATCHES = (1, 100)
TEMPERATURE = 0.7
# Tiny sizes of each preset for --quick (seconds per family).
QUICK = {
    "seed": {"hidden_features": 32},
    "multiscale": {"hidden_channels": 8},
    "glow": {"hidden_channels": 8, "glow_steps": 2},
    "tarflow": {"tar_width": 8, "tar_heads": 2, "tar_layers": 1, "tar_blocks": 2},
}
# Ops whose self time is the step's matmul work: dense and batched products, convolutions
# (forward and backward) and fused attention; the rest is elementwise work, casts, copies,
# reductions and the optimiser.
MATMUL_OPS = {
    "aten::mm", "aten::addmm", "aten::addmm_", "aten::_addmm_activation", "aten::bmm",
    "aten::baddbmm", "aten::baddbmm_", "aten::addbmm",  # CPU baddbmm may run addmm_ per item
    "aten::mkldnn_convolution", "aten::mkldnn_convolution_backward",
    "aten::convolution_backward", "aten::_slow_conv2d_forward", "aten::_slow_conv2d_backward",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
    "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
}  # fmt: skip


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


@dataclass(frozen=True)
class Family:
    """A preset with ``FlowConfig`` overrides, named as on the command line."""

    name: str
    preset: str
    overrides: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Family:
        """``PRESET[:FIELD=VALUE,...]``, checked by building its config (ValueError if bad)."""
        preset, _, rest = text.partition(":")
        if preset not in PRESETS:
            raise ValueError(
                f"unknown preset {preset!r} in family {text!r}; valid: {list(PRESETS)}"
            )
        overrides = {}
        for item in filter(None, rest.split(",")):
            key, eq, value = item.partition("=")
            if not eq:
                raise ValueError(f"family {text!r}: expected FIELD=VALUE, got {item!r}")
            overrides[key] = parse_value(value)
        FlowConfig.from_preset(preset, **overrides)  # raises on an unknown field or value
        return cls(text, preset, overrides)

    def precisions(self) -> tuple[str, ...]:
        """fp32, and bf16 where some of the flow's parts run under autocast."""
        flow = build_flow(self.preset, **self.overrides)
        low = any(isinstance(m, Transform) and m.runs_in_low_precision for m in flow.modules())
        return tuple(PRECISIONS) if low else ("fp32",)


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
class Product:
    """One large product in one dtype, for the ceiling: an n x n by n x n matmul (``n``), or a
    3x3 convolution of a (batch, channels, side, side) input onto as many channels (``conv``).
    Calling it runs it once and returns its GFLOP/s."""

    def __init__(self, dtype: torch.dtype, n: int = 0, conv: tuple[int, int, int] = ()):
        if conv:
            batch, channels, side = conv
            self.name = f"conv3x3 {batch}x{channels}x{side}x{side}"
            x = torch.randn(batch, channels, side, side).to(dtype)
            w = torch.randn(channels, channels, 3, 3).to(dtype)
            self.run = lambda: torch.nn.functional.conv2d(x, w, padding=1)
            self.flops = 2 * batch * channels**2 * 9 * side**2
        else:
            self.name = f"matmul n={n}"
            a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
            self.run = lambda: [a @ b for _ in range(3)]
            self.flops = 3 * 2 * n**3

    def __call__(self) -> float:
        start = time.perf_counter()
        self.run()
        return self.flops / (time.perf_counter() - start) / 1e9


def matmul_ceiling(sizes: list[int], convs: list[tuple[int, int, int]], runs: int):
    """Best median GFLOP/s of a large product per dtype (a :class:`Product` for each n of
    ``sizes`` and each of ``convs``): the report (the best, which product gave it, the best of
    each kind) and, per precision, the product that gave it, to time again beside each step."""
    result, best_products = {}, {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        products = [Product(dtype, n=n) for n in sizes] + [Product(dtype, conv=c) for c in convs]
        rates = {}
        for product in products:
            product()  # warm-up
            rates[product.name] = statistics.median(product() for _ in range(runs))
            log(f"{product.name} {name}: {rates[product.name]:.1f} GFLOP/s")
        best = max(products, key=lambda product: rates[product.name])
        best_products[name] = best
        result[name] = {
            "gflop_s": round(rates[best.name], 1),
            "by": best.name,
            "matmul_gflop_s": round(max(v for k, v in rates.items() if k.startswith("matmul")), 1),
            "conv_gflop_s": round(max(v for k, v in rates.items() if k.startswith("conv")), 1),
        }
    return result, best_products


# ------------------------------------------------------------------------------ training
def _cpu_attention_flops(query, key, value, dropout_p=0.0, is_causal=False, **_):
    """FLOPs of ``F.scaled_dot_product_attention``'s CPU kernel, which ``flop_counter`` does
    not count: its two products (scores and output), halved when causal, since the kernel
    skips the masked half (a lower bound on its work, so the fractions below are too).
    ``flop_counter`` hands the tensors' shapes, not the tensors."""
    flops = sdpa_flop_count(query, key, value)
    return flops // 2 if is_causal else flops


def _cpu_attention_backward_flops(grad, query, key, value, out, lse, dropout_p, is_causal, **_):
    """FLOPs of the CPU attention kernel's backward (see :func:`_cpu_attention_flops`)."""
    flops = sdpa_backward_flop_count(grad, query, key, value)
    return flops // 2 if is_causal else flops


class _FlopsByDtype(FlopCounterMode):
    """``FlopCounterMode`` that also sums each op's FLOPs by the dtype of its first input,
    and counts the CPU attention kernel."""

    def __init__(self):
        aten = torch.ops.aten
        super().__init__(
            display=False,
            custom_mapping={
                aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops,
                aten._scaled_dot_product_flash_attention_for_cpu_backward: (
                    _cpu_attention_backward_flops
                ),
            },
        )
        self.by_dtype: dict[str, int] = defaultdict(int)

    def _count_flops(self, func_packet, out, args, kwargs):
        if func_packet in self.flop_registry:
            first = next((a for a in args if isinstance(a, torch.Tensor)), None)
            dtype = str(first.dtype).removeprefix("torch.") if first is not None else "?"
            flops = self.flop_registry[func_packet](*args, **kwargs, out_val=out)
            self.by_dtype[dtype] += flops
        return super()._count_flops(func_packet, out, args, kwargs)


def step_flops(flow, x, cond) -> dict:
    """Matmul/conv/attention FLOPs of forward + backward for the batch (flop_counter):
    ``total``, ``by_op`` (op name -> FLOPs) and ``by_dtype`` (the inputs' dtype -> FLOPs)."""
    with _FlopsByDtype() as counter:
        flow.bits_per_dim(x, cond).mean().backward()
    flow.zero_grad(set_to_none=True)
    by_op = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    return {"total": counter.get_total_flops(), "by_op": by_op, "by_dtype": dict(counter.by_dtype)}


def matmul_time(step, steps: int) -> dict:
    """Seconds per ``step()`` over ``steps`` profiled steps: ``step_s``, the wall time,
    ``matmul_s``, the self CPU time of :data:`MATMUL_OPS` in it (both in the same window, so
    under the same load; the profiler's overhead, microseconds per op, is in ``step_s``), and
    ``top_ops``, the five ops of most self time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        wall = time.perf_counter() - start
    events = prof.key_averages()
    matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS) / 1e6
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:5]
    return {
        "matmul_s": matmul / steps,
        "step_s": wall / steps,
        "top_ops": {e.key: round(e.self_cpu_time_total / 1e6 / steps, 4) for e in top},
    }


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
    profile: bool = False,
    ceiling: Product | None = None,
) -> dict:
    """pairs/s of the training loop's step (median over runs of ``steps`` steps); with
    ``profile``, also the share of the step's time spent in matmuls and their own rate; with
    ``ceiling``, that product's GFLOP/s timed before and after every run (median), so that
    the step and its ceiling see the same load."""
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
    counted = step_flops(flow, x0, y0 if conditional else None)
    flops = counted["total"]
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
    [step() for _ in range(steps)]  # warm-up
    times, ceilings = [], []
    for _ in range(runs):
        if ceiling is not None:
            ceilings.append(ceiling())
        start = time.perf_counter()
        [step() for _ in range(steps)]
        times.append(time.perf_counter() - start)
        if ceiling is not None:
            ceilings.append(ceiling())
    t = statistics.median(times)
    rate = steps * batch / t
    result = {
        "preset": preset,
        "overrides": overrides,
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
        "gflop_by_op": {op: round(n / 1e9, 3) for op, n in counted["by_op"].items()},
        "gflop_by_dtype": {d: round(n / 1e9, 3) for d, n in counted["by_dtype"].items()},
    }
    if ceiling is not None:
        result["ceiling_beside"] = {
            "by": ceiling.name,
            "gflop_s": round(statistics.median(ceilings), 1),
            "spread": [round(min(ceilings), 1), round(max(ceilings), 1)],
        }
    if profile:  # after the timing, so the profiler's overhead stays out of it
        spent = matmul_time(step, min(steps, 3))
        result["matmul_s_per_step"] = round(spent["matmul_s"], 4)
        result["matmul_share_of_step"] = round(spent["matmul_s"] / spent["step_s"], 3)
        result["matmul_only_gflop_s"] = round(flops / max(spent["matmul_s"], 1e-9) / 1e9, 1)
        result["top_ops_s_per_step"] = spent["top_ops"]
    if compile_s is not None:
        result["first_step_s_with_compile"] = compile_s
    log(json.dumps(result))
    return result


# ------------------------------------------------------------------------------ sampling
def sample_rates(
    preset: str, conditional: bool, precision: str, overrides: dict, runs: int, batches
) -> dict:
    """pairs/s of ``flow.sample`` at each batch size, at temperature 0.7; a conditional flow
    is given the labels 0, 1, 2, ... (as ``pairflow sample --label`` does)."""
    torch.manual_seed(0)
    flow = build_flow(preset, precision=precision, conditional=conditional, **overrides).eval()
    gen = torch.Generator().manual_seed(0)
    result = {
        "preset": preset,
        "overrides": overrides,
        "conditional": conditional,
        "precision": precision,
        "threads": torch.get_num_threads(),
        "temperature": TEMPERATURE,
    }
    for n in batches:
        cond = torch.arange(n) % flow.config.num_classes if conditional else None

        def draw(n=n, cond=cond):
            flow.sample(n, cond=cond, temperature=TEMPERATURE, generator=gen)

        # A batch of 1 takes milliseconds on most flows: more runs steady its median.
        t = median_time(draw, max(runs, 10) if n == 1 else runs, warmup=2 if n == 1 else 1)
        result[f"pairs_per_s_batch_{n}"] = round(n / t, 1)
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
    parser.add_argument(
        "--families", "--presets", nargs="+", default=["seed", "multiscale"],
        metavar="PRESET[:FIELD=VALUE,...]",
        help="flows to time: a preset, optionally with FlowConfig overrides, e.g. "
        "multiscale:coupling=spline (default: seed multiscale)",
    )  # fmt: skip
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile lever")
    parser.add_argument("--quick", action="store_true", help="tiny models and few steps (smoke)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    try:
        families = [Family.parse(text) for text in args.families]
    except ValueError as error:
        parser.error(f"--families: {error}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    quick = args.quick
    runs = 2 if quick else args.runs

    def sizes(family: Family) -> dict:
        return {**(QUICK[family.preset] if quick else {}), **family.overrides}

    def batch(family: Family) -> int:
        return 8 if quick else BATCH[family.preset]

    # Steps per timed run: a tenth of an epoch for seed (10-step runs swung by +-15% between
    # runs); the convolutional and transformer steps are long enough on their own.
    steps = {"seed": 2 if quick else 47, "multiscale": 1 if quick else 3}
    steps.update(glow=steps["multiscale"], tarflow=steps["multiscale"])
    result: dict = {
        "benchmark": "speed",
        "quick": quick,
        "machine": {**machine_info(), "cpu_flags": cpu_flags()},
        "method": f"median of {runs} timed runs after warm-up per figure",
        "families": {f.name: {"preset": f.preset, "overrides": sizes(f)} for f in families},
    }

    root = resolve_root(args.data_dir or os.environ.get("PAIRFLOW_DATA") or "../shared/data")
    try:
        read_mnist(root, train=False)
        result["data_source"] = f"MNIST at {root}"
    except (FileNotFoundError, ValueError):
        root = make_synthetic_mnist("/tmp/pairflow_bench_data", 60000, 10000)
        result["data_source"] = "synthetic digits (real MNIST not found)"

    if "matmul" in args.sections:
        sizes_n = [256] if quick else [1024, 2048, 3072]
        convs = [(8, 32, 14)] if quick else [(64, 256, 14), (32, 512, 14)]
        result["matmul_ceiling_gflop_s"], probes = matmul_ceiling(sizes_n, convs, runs)
    ceiling = result.get("matmul_ceiling_gflop_s")

    def with_fraction(entry: dict) -> dict:
        """The fractions of the ceiling timed beside the step (else at the start)."""
        if ceiling:
            peak = entry.get("ceiling_beside", ceiling[entry["precision"]])["gflop_s"]
            entry["fraction_of_matmul_ceiling"] = round(entry["achieved_gflop_s"] / peak, 3)
            if "matmul_only_gflop_s" in entry:
                entry["matmul_only_fraction_of_ceiling"] = round(
                    entry["matmul_only_gflop_s"] / peak, 3
                )
        return entry

    needs_data = {"train", "levers"} & set(args.sections)
    dataset = PairedMNIST(root, train=True, seed=0) if needs_data else None
    precisions = {f.name: f.precisions() for f in families}
    save(result, args.out)  # partial results survive an interrupted run
    if "train" in args.sections:
        result["train"] = []
        for family in families:
            for cond in (False, True):
                for precision in precisions[family.name]:
                    entry = train_rate(
                        dataset, family.preset, cond, precision, sizes(family),
                        batch(family), steps[family.preset], runs, profile=True,
                        ceiling=probes[precision] if ceiling else None,
                    )  # fmt: skip
                    result["train"].append({"family": family.name, **with_fraction(entry)})
                    save(result, args.out)

    if "sample" in args.sections:
        batches = (1, 10) if quick else SAMPLE_BATCHES
        result["sample"] = []
        for family in families:
            for cond in (False, True):
                for precision in precisions[family.name]:
                    entry = sample_rates(
                        family.preset, cond, precision, sizes(family), runs, batches
                    )
                    result["sample"].append({"family": family.name, **entry})
                    save(result, args.out)
        seed = next((f for f in families if f.preset == "seed"), None)
        if seed is not None:
            big = 50 if quick else 1000
            result["sample_10000_seed_s"] = {
                precision: round(seconds_for_10000("seed", precision, sizes(seed), 3, big), 2)
                for precision in precisions[seed.name]
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

        def lever(name: str, family: Family, precision: str, **kw) -> None:
            entry = train_rate(
                dataset, family.preset, False, precision, sizes(family), batch(family),
                steps[family.preset], runs, **kw,
            )  # fmt: skip
            levers.append({"lever": name, "family": family.name, **with_fraction(entry)})
            save(result, args.out)

        seeds = [f for f in families if f.preset == "seed"]
        for family in seeds:  # the Adam update is a large share of seed's step
            for precision in precisions[family.name]:
                lever("for-each Adam (not fused)", family, precision, fused=False)
            for precision in precisions[family.name]:
                lever(
                    "torch clip_grad_norm_ (multiplies every step)", family, precision,
                    clip=torch.nn.utils.clip_grad_norm_,
                )  # fmt: skip
        if threads > 1:
            torch.set_num_threads(1)
            for family in families:
                for precision in precisions[family.name]:
                    lever("1 thread", family, precision)
            torch.set_num_threads(threads)
        if not args.no_compile:  # last: compiling takes minutes
            for family in families:
                low = [p for p in precisions[family.name] if p == "bf16"] or ["fp32"]
                for precision in precisions[family.name] if family.preset == "seed" else low:
                    lever("torch.compile", family, precision, compile=True)

    result["machine"]["load_at_end"] = load()
    save(result, args.out)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
