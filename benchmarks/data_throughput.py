"""Pairs per second of batch assembly: PairedMNIST.get_batch / PairLoader vs a per-item PIL loop.

Prints one JSON object: the median pairs/s over several runs of whole shuffled epochs for
get_batch (several batch sizes) and PairLoader, for the torch index_select + cat alternative
(default torch threads and 1 thread), and for a torchvision-style per-item loop (a PIL image
per digit, pasted side by side, to a tensor, collated), and a description of the machine.

Usage:
    .venv/bin/python benchmarks/data_throughput.py [--root DIR] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np
import torch

from pairflow.data import PairedMNIST, PairLoader, make_synthetic_mnist, read_mnist, resolve_root


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


CPU_RATES: dict[str, int] = {}


def median_rate(fn, items: int, runs: int, name: str | None = None) -> float:
    """Median items per wall-clock second; also records items per CPU-second of this process
    under ``name`` (the cost, unaffected by other jobs competing for the cores)."""
    fn()  # warm-up
    rates, cpu_rates = [], []
    for _ in range(runs):
        start, cpu_start = time.perf_counter(), time.process_time()
        fn()
        rates.append(items / (time.perf_counter() - start))
        cpu_rates.append(items / max(time.process_time() - cpu_start, 1e-9))
    if name is not None:
        CPU_RATES[name] = round(statistics.median(cpu_rates))
    return statistics.median(rates)


def get_batch_epoch(ds: PairedMNIST, batch_size: int, order: torch.Tensor):
    def epoch():
        for start in range(0, len(order), batch_size):
            ds.get_batch(order[start : start + batch_size])

    return epoch


def torch_cat_epoch(ds: PairedMNIST, batch_size: int, order: torch.Tensor):
    digits, pairs = ds.digits, ds.pairs

    def epoch():
        for start in range(0, len(order), batch_size):
            p = pairs[order[start : start + batch_size]]
            left, right = digits.index_select(0, p[:, 0]), digits.index_select(0, p[:, 1])
            torch.cat((left, right), dim=2).unsqueeze(1)

    return epoch


def per_item_pil_epoch(ds: PairedMNIST, batch_size: int, count: int):
    """What a torchvision-style Dataset + collate does: one PIL image per digit and item."""
    from PIL import Image

    digits, pairs, targets = ds.digits, ds.pairs, ds.targets

    def item(i: int):
        left, right = pairs[i].tolist()
        a = Image.fromarray(digits[left].numpy())  # torchvision MNIST.__getitem__
        b = Image.fromarray(digits[right].numpy())
        pair = Image.new("L", (56, 28))
        pair.paste(a, (0, 0))
        pair.paste(b, (28, 0))
        x = torch.from_numpy(np.array(pair)).unsqueeze(0)  # ToTensor without the float scaling
        return x, int(targets[i])

    def epoch():
        for start in range(0, count, batch_size):
            batch = [item(i) for i in range(start, min(start + batch_size, count))]
            torch.stack([x for x, _ in batch]), torch.tensor([t for _, t in batch])

    return epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", help="MNIST root (default $PAIRFLOW_DATA, ../shared/data)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per figure (median)")
    parser.add_argument("--pil-items", type=int, default=10000, help="items for the PIL loop")
    args = parser.parse_args()

    root = resolve_root(args.root or os.environ.get("PAIRFLOW_DATA") or "../shared/data")
    try:
        read_mnist(root, train=False)
        data = f"MNIST at {root}"
    except (FileNotFoundError, ValueError):
        root = make_synthetic_mnist("/tmp/pairflow_bench_data", 60000, 10000)
        data = "synthetic 60,000 digits (real MNIST not found)"
    ds = PairedMNIST(root, train=True, seed=0)
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))
    default_threads = torch.get_num_threads()

    result: dict = {"benchmark": "data_throughput", "data": data, "pairs_per_epoch": len(ds)}
    figures: dict = {}
    for batch_size in (64, 256, 1024):
        name = f"get_batch_b{batch_size}"
        rate = median_rate(get_batch_epoch(ds, batch_size, order), len(order), args.runs, name)
        figures[name] = round(rate)
    loader = PairLoader(ds, batch_size=256, shuffle=True, seed=0)

    def loader_epoch():
        for _ in loader:
            pass

    rate = median_rate(loader_epoch, len(ds), args.runs, "pair_loader_b256")
    figures["pair_loader_b256"] = round(rate)
    # The alternative get_batch does not use: torch index_select + cat, whose speed depends
    # on torch's intra-op threads (and on what else runs on the cores).
    for threads in sorted({default_threads, 1}, reverse=True):
        torch.set_num_threads(threads)
        name = f"torch_index_select_cat_b256_threads{threads}"
        rate = median_rate(torch_cat_epoch(ds, 256, order), len(order), args.runs, name)
        figures[name] = round(rate)
    torch.set_num_threads(default_threads)
    count = min(args.pil_items, len(ds))
    pil_runs = max(1, args.runs // 2)
    pil = median_rate(per_item_pil_epoch(ds, 256, count), count, pil_runs, "per_item_pil_b256")
    figures["per_item_pil_b256"] = round(pil)

    result["pairs_per_s"] = figures
    result["pairs_per_cpu_s"] = CPU_RATES
    result["speedup_get_batch_b256_vs_pil"] = round(figures["get_batch_b256"] / pil, 1)
    result["method"] = (
        f"median of {args.runs} timed whole epochs (after one warm-up) over a fixed shuffled "
        f"order; PIL loop over {count} items, median of {pil_runs}; pairs_per_s is wall-clock, "
        "pairs_per_cpu_s divides by this process's CPU time"
    )
    result["machine"] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_threads_default": default_threads,
        "python": platform.python_version(),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
