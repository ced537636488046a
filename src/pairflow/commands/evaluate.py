"""``pairflow evaluate``: test bits/dim of a flow and, with ``--samples N``, its sample metrics.

Without ``--samples`` it prints (and, for a run folder, writes ``RUN/eval_SPLIT.json``) the
bits/dim mean, standard error, pair count and time. A VAE's number is its negative ELBO, an
upper bound, written as ``bits_per_dim_bound``; a GAN has no likelihood and only
``--samples``. With ``--samples N`` it also draws N samples, judges them against N real
test pairs with the shipped pair classifier (:func:`pairflow.metrics.evaluate_samples`),
computes the same metrics for N real *training* pairs against the same test pairs (the
real-vs-real floor, cached in ``floor_nN_seedS.json`` beside the outputs) and writes a
Markdown report with the metric table, a sample grid and the training curves.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from pairflow.cli import UsageError
from pairflow.commands._common import add_model_arguments, load_model_from_args

# (key in evaluate_samples' dict, label in tables, number format). Shared with `compare`.
METRIC_ROWS: tuple[tuple[str, str, str], ...] = (
    ("fd", "Fréchet distance (lower is better)", ".3f"),
    ("inception_score", "inception score (max 100)", ".2f"),
    ("precision", "precision (k=3)", ".3f"),
    ("recall", "recall (k=3)", ".3f"),
    ("coverage", "coverage of the 100 pair classes", ".2f"),
    ("kl_uniform", "KL of the class histogram to uniform (nats)", ".4f"),
    ("conditional_accuracy", "conditional accuracy (mean over pairs)", ".3f"),
    ("conditional_accuracy_min", "conditional accuracy (worst pair)", ".3f"),
)
CONDITIONAL_KEYS = ("conditional_accuracy", "conditional_accuracy_min")
REFERENCE_SEED = 0  # the test pairing every evaluation compares with, so runs compare
FLOOR_CACHE_VERSION = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--split", default="test", help="bits/dim on test (default) or train")
    parser.add_argument("--data-dir", help="MNIST root (default $PAIRFLOW_DATA or ./data)")
    parser.add_argument("--num-pairs", type=int, help="bits/dim on only the first N pairs")
    parser.add_argument(
        "--draws",
        type=int,
        default=1,
        help="dequantisation (flow) or latent (VAE) draws averaged per pair (default 1)",
    )
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument(
        "--samples",
        type=int,
        default=0,
        metavar="N",
        help="also draw N samples and judge them against N real test pairs, with the "
        "real-vs-real floor, and write a Markdown report (default 0: bits/dim only)",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help="sampling temperature for --samples (default 1.0: the model's own distribution)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the samples and of the floor (default 0)"
    )
    parser.add_argument(
        "--out",
        help="FILE.json, or a folder (gets eval_SPLIT.json, report.md, PNGs); default: the "
        "run folder; without it, --pretrained and checkpoint files only print the JSON",
    )


def _outputs(args: argparse.Namespace) -> dict[str, Path] | None:
    """Where the JSON, report, sample grid, curves and floor cache go (None: print only)."""
    out = args.out
    if out is None:
        if args.run is None or not Path(args.run).is_dir():
            if args.samples:
                raise UsageError(
                    "--samples writes a report: give --out DIR (needed with --pretrained or "
                    "a checkpoint file; a run folder is its own default)"
                )
            return None
        out = args.run
    out = Path(out)
    if out.suffix.lower() == ".json":
        stem = out.stem
        return {
            "json": out,
            "dir": out.parent,
            "report": out.with_suffix(".md"),
            "grid": out.with_name(f"{stem}_samples.png"),
            "curves": out.with_name(f"{stem}_curves.png"),
        }
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give FILE.json or a folder")
    return {
        "json": out / f"eval_{args.split}.json",
        "dir": out,
        "report": out / "report.md",
        "grid": out / "report_samples.png",
        "curves": out / "report_curves.png",
    }


def run(args: argparse.Namespace) -> int:
    if args.split not in ("test", "train"):
        raise UsageError(f"unknown --split {args.split!r}; valid: test, train")
    if args.draws < 1 or args.batch_size < 1:
        raise UsageError("--draws and --batch-size must be >= 1")
    if args.num_pairs is not None and args.num_pairs < 1:
        raise UsageError(f"--num-pairs must be >= 1, got {args.num_pairs}")
    if args.samples < 0:
        raise UsageError(
            f"--samples must be a number of samples >= 1 (or 0 for bits/dim only), "
            f"got {args.samples}"
        )
    if not args.temperature > 0:
        raise UsageError(f"--temperature must be > 0, got {args.temperature}")
    outputs = _outputs(args)
    from pairflow.data import PairedMNIST, resolve_root
    from pairflow.training import evaluate_bpd

    model, state, source = load_model_from_args(args)
    kind = state.get("kind", "flow")
    from pairflow.models import kind_spec

    has_likelihood = kind_spec(kind).likelihood is not None
    if not has_likelihood and not args.samples:
        raise UsageError(
            f"{source} is a {kind} model: it has no likelihood, so no bits/dim to evaluate; "
            "use --samples N for its sample metrics"
        )
    root = resolve_root(args.data_dir)
    device = next(model.parameters()).device
    conditional = bool(state["model_config"].get("conditional", False))
    report: dict[str, Any] = {
        "source": str(source),
        "kind": kind,
        "preset": state["model_config"].get("preset"),
        "conditional": conditional,
        "params": sum(p.numel() for p in model.parameters()),
        "split": args.split,
    }
    start = time.perf_counter()
    if has_likelihood:
        try:
            dataset = PairedMNIST(root, train=args.split == "train", num_pairs=args.num_pairs)
        except (FileNotFoundError, ValueError) as err:
            raise UsageError(str(err)) from err
        result = evaluate_bpd(
            model,
            dataset,
            batch_size=args.batch_size,
            device=device,
            draws=args.draws,
            conditional=conditional,
        )
        if getattr(model, "bits_per_dim_is_bound", False):  # a VAE: the negative ELBO
            report["bits_per_dim_bound"] = result["bpd"]
            report["bits_per_dim_bound_stderr"] = result["bpd_stderr"]
            report["num_pairs"] = result["num_pairs"]
            report["latent_draws"] = result["draws"]
        else:
            report["bits_per_dim"] = result["bpd"]
            report["bits_per_dim_stderr"] = result["bpd_stderr"]
            report["num_pairs"] = result["num_pairs"]
            report["dequantization_draws"] = result["draws"]
    report["seconds"] = time.perf_counter() - start
    report["step"] = state.get("step")
    if args.samples:
        report.update(_sample_metrics(model, conditional, args, root, outputs))
    shown = report
    if "samples" in report:  # stdout skips the 100 per-pair accuracies (the file has them)
        samples = {k: v for k, v in report["samples"].items() if not k.endswith("_per_pair")}
        shown = {**report, "samples": samples}
    print(json.dumps(shown, indent=2))
    if outputs is not None:
        from pairflow.utils import atomic_write_text

        atomic_write_text(outputs["json"], json.dumps(report, indent=2) + "\n")
        print(f"wrote {outputs['json']}")
        if args.samples:
            text = _report_markdown(report, outputs, _curves(args, outputs))
            atomic_write_text(outputs["report"], text)
            print(f"wrote {outputs['report']}")
    return 0


def _sample_metrics(model, conditional: bool, args, root: Path, outputs: dict[str, Path]):
    """Draw ``--samples`` samples, judge them, and give ``{"samples": ..., "metrics": ...}``."""
    import torch

    from pairflow.classifier import load_classifier
    from pairflow.data import PairedMNIST
    from pairflow.images import save_grid
    from pairflow.metrics import evaluate_samples

    n = args.samples
    try:
        test = PairedMNIST(root, train=False, num_pairs=n, seed=REFERENCE_SEED)
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(str(err)) from err
    if n > len(test.digits):
        # N test pairs from fewer test digits would reuse digits and shrink the floor.
        print(
            f"pairflow evaluate: --samples {n} is more than the {len(test.digits)} test pairs "
            f"of {root}; using N = {len(test.digits)} samples and real pairs",
            file=sys.stderr,
        )
        n = len(test.digits)
        test = PairedMNIST(root, train=False, num_pairs=n, seed=REFERENCE_SEED)
    reference, _ = test.get_batch(torch.arange(n))  # (N, 1, 28, 56) uint8
    device = next(model.parameters()).device
    classifier = load_classifier(device=device)

    # Conditional models are asked for every pair label in turn: 00, 01, ..., 99, 00, ...
    labels = torch.arange(n) % 100 if conditional else None
    generator = torch.Generator(device=device).manual_seed(args.seed)
    start = time.perf_counter()
    chunks = []
    with torch.no_grad():
        for lo in range(0, n, args.batch_size):
            hi = min(lo + args.batch_size, n)
            cond = None if labels is None else labels[lo:hi].to(device)
            chunks.append(
                model.sample(
                    hi - lo, temperature=args.temperature, generator=generator, cond=cond
                ).cpu()
            )
    samples = torch.cat(chunks)  # (N, 1, 28, 56) uint8
    sampling_seconds = time.perf_counter() - start

    start = time.perf_counter()
    metrics = evaluate_samples(
        samples, reference, classifier, requested_labels=labels, batch_size=args.batch_size
    )
    metrics_seconds = time.perf_counter() - start
    floor, floor_info = _floor(reference, root, classifier, args.seed, outputs, args.batch_size)

    shown = 100 if conditional else 64
    grid_images = samples[: min(n, shown)]
    grid_labels = None if labels is None else [f"{int(v):02d}" for v in labels[: len(grid_images)]]
    save_grid(grid_images, outputs["grid"], nrow=10 if conditional else 8, labels=grid_labels)

    table = {}
    for key, _, _ in METRIC_ROWS:
        if key in CONDITIONAL_KEYS and not conditional:
            continue
        table[key] = {"model": metrics[key], "floor": floor[key]}
    details = {
        "num_samples": n,
        "num_real": metrics["num_real"],
        "temperature": args.temperature,
        "seed": args.seed,
        "requested_labels": "00..99 in turn (evenly)" if conditional else None,
        "reference": f"{n} test pairs (pairing seed {REFERENCE_SEED})",
        "floor_held_out": floor["held_out"],
        "classifier": "shipped (pairflow/weights/classifier.pt)",
        "nonfinite_samples": metrics["nonfinite_samples"],
        "sampling_seconds": sampling_seconds,
        "samples_per_second": n / sampling_seconds if sampling_seconds > 0 else math.inf,
        "metrics_seconds": metrics_seconds,
        **floor_info,
        "grid": _relative(outputs["grid"], outputs["json"].parent),
    }
    if conditional:
        details["conditional_accuracy_min_pair"] = metrics["conditional_accuracy_min_pair"]
        details["conditional_accuracy_overall"] = metrics["conditional_accuracy_overall"]
        details["conditional_accuracy_per_pair"] = metrics["conditional_accuracy_per_pair"]
    return {"samples": details, "metrics": table}


def _floor(reference, root: Path, classifier, seed: int, outputs, batch_size: int):
    """The real-vs-real floor for ``reference``, from the cache file when it matches.

    It depends only on N, the seed, the data and the classifier (not on the model), and
    costs two classifier passes over N pairs (~20 s at N = 10,000), so it is kept in
    ``floor_nN_seedS.json`` and reused while the data root and classifier stay the same.
    """
    import hashlib

    from pairflow.classifier import DEFAULT_WEIGHTS
    from pairflow.metrics import real_vs_real_floor
    from pairflow.utils import atomic_write_text

    n = int(reference.shape[0])
    key = {
        "version": FLOOR_CACHE_VERSION,
        "num_pairs": n,
        "seed": seed,
        "reference_seed": REFERENCE_SEED,
        "root": str(Path(root).resolve()),
        "classifier_sha256": hashlib.sha256(DEFAULT_WEIGHTS.read_bytes()).hexdigest(),
    }
    path = outputs["dir"] / f"floor_n{n}_seed{seed}.json"
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        if cached.get("key") == key:
            return cached["floor"], {"floor_cached": True, "floor_seconds": 0.0}
    except (OSError, ValueError, AttributeError):
        pass  # absent or unreadable: compute it again
    start = time.perf_counter()
    # Held-out training pairs seeded apart from the samples' seed (seed + 1, as in
    # benchmarks/real_floor.py, so seed 0 reproduces the floor in BENCHMARKS.md).
    floor = real_vs_real_floor(
        reference, root=root, classifier=classifier, seed=seed + 1, batch_size=batch_size
    )
    seconds = time.perf_counter() - start
    atomic_write_text(path, json.dumps({"key": key, "floor": floor}, indent=1) + "\n")
    return floor, {"floor_cached": False, "floor_seconds": seconds}


def _relative(path: Path, start: Path) -> str:
    import os

    return Path(os.path.relpath(path, start)).as_posix()


def _curves(args: argparse.Namespace, outputs: dict[str, Path]) -> Path | None:
    """The training curves PNG for the report: the run's own, or plotted from metrics.jsonl."""
    if args.run is None:
        return None
    run_dir = Path(args.run) if Path(args.run).is_dir() else Path(args.run).parent
    own = run_dir / "curves.png"
    if own.is_file() and outputs["dir"].resolve() == run_dir.resolve():
        return own
    log = run_dir / "metrics.jsonl"
    if log.is_file():
        from pairflow.training.plots import plot_curves

        records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        drawn = plot_curves(records, outputs["curves"], title=run_dir.name)
        if drawn is not None:
            return Path(drawn)
    if own.is_file():
        from pairflow.utils import atomic_write_bytes

        return atomic_write_bytes(outputs["curves"], own.read_bytes())
    return None


def format_number(value: Any, spec: str) -> str:
    """``value`` with ``spec``; NaN shows as ``NaN`` and a missing value as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return format(value, spec)


def _bpd_markdown(report: dict) -> str:
    """The report's bits/dim sentence: exact (flows), a bound (VAE) or none (GAN)."""
    if "bits_per_dim" in report:
        return (
            f"{report['split']} bits/dim: **{report['bits_per_dim']:.4f}** "
            f"± {report['bits_per_dim_stderr']:.4f} (standard error over "
            f"{report['num_pairs']:,} pairs, {report['dequantization_draws']} dequantisation "
            "draw(s) each)."
        )
    if "bits_per_dim_bound" in report:
        return (
            f"{report['split']} bits/dim ≤ **{report['bits_per_dim_bound']:.4f}** "
            f"± {report['bits_per_dim_bound_stderr']:.4f}: the negative ELBO, an upper bound "
            f"on the model's bits/dim (standard error over {report['num_pairs']:,} pairs, "
            f"{report['latent_draws']} latent draw(s) each)."
        )
    return f"None: a {report['kind']} model has no likelihood."


def _report_markdown(report: dict, outputs: dict[str, Path], curves: Path | None) -> str:
    s = report["samples"]
    here = outputs["report"].parent
    kind = "conditional" if report["conditional"] else "unconditional"
    lines = [
        f"# Evaluation of `{report['source']}`",
        "",
        f"{report['kind']} model, preset `{report['preset']}`, {kind}, "
        f"{report['params']:,} parameters, checkpoint step {report['step']}.",
        "",
        "## Bits/dim",
        "",
        _bpd_markdown(report),
        "",
        "## Sample metrics",
        "",
        f"{s['num_samples']:,} samples at temperature {s['temperature']} (seed {s['seed']})"
        + (", asked for the 100 pair labels in turn" if report["conditional"] else "")
        + f", judged by the shipped pair classifier against {s['reference']}. "
        f"The real-vs-real floor is the same metrics for real pairs in place of the samples "
        f"({s['floor_held_out']}): the best a model can reach with this many samples.",
        "",
        "| metric | model | real-vs-real floor |",
        "|---|---:|---:|",
    ]
    for key, label, spec in METRIC_ROWS:
        if key in report["metrics"]:
            m = report["metrics"][key]
            lines.append(
                f"| {label} | {format_number(m['model'], spec)} | "
                f"{format_number(m['floor'], spec)} |"
            )
    lines += [""]
    if report["conditional"]:
        lines += [
            f"Worst pair: {format_number(s['conditional_accuracy_min_pair'], '02d')}; "
            f"fraction of all samples read as requested: "
            f"{format_number(s['conditional_accuracy_overall'], '.3f')}.",
            "",
        ]
    if s["nonfinite_samples"]:
        lines += [f"**{s['nonfinite_samples']} samples were not finite**: the model diverged.", ""]
    lines += [
        f"Sampling: {s['samples_per_second']:.1f} samples/s ({s['sampling_seconds']:.1f} s); "
        f"metrics {s['metrics_seconds']:.1f} s; floor "
        + ("from the cache" if s["floor_cached"] else f"{s['floor_seconds']:.1f} s")
        + ".",
        "",
        "## Samples",
        "",
        f"![samples]({_relative(outputs['grid'], here)})",
        "",
        "## Training curves",
        "",
    ]
    if curves is not None:
        lines.append(f"![training curves]({_relative(curves, here)})")
    else:
        lines.append("No training curves: no `metrics.jsonl` or `curves.png` beside the model.")
    return "\n".join(lines) + "\n"
