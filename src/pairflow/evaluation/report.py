"""Rendering evaluations: numbers, the bits/dim sentence, the Markdown report."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from pairflow.metrics.table import METRICS

__all__ = ["format_number", "relative", "bpd_markdown", "report_markdown", "summary_line"]


def relative(path: Path, start: Path) -> str:
    """``path`` relative to ``start``, with forward slashes (for Markdown links)."""
    return Path(os.path.relpath(path, start)).as_posix()


def format_number(value: Any, spec: str) -> str:
    """``value`` with ``spec``; NaN shows as ``NaN`` and a missing value as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return format(value, spec)


def bpd_markdown(report: dict) -> str:
    """The report's bits/dim sentence: exact (flows), a bound (VAE) or none (GAN)."""
    if "bits_per_dim" in report:
        return (
            f"{report['split']} bits/dim: **{report['bits_per_dim']:.4f}** "
            f"± {report['bits_per_dim_stderr']:.4f} (standard error over "
            f"{report['num_pairs']:,} pairs, {report['dequantization_draws']} dequantisation "
            "draw(s) each)."
        )
    if "bits_per_dim_bound" in report and "bound" in report:
        return (
            f"{report['split']} bits/dim ≤ **{report['bits_per_dim_bound']:.4f}** "
            f"± {report['bits_per_dim_bound_stderr']:.4f}: a bound ({report['bound']}), not "
            "the exact likelihood of the continuous model "
            f"(standard error over {report['num_pairs']:,} pairs, "
            f"{report['dequantization_draws']} dequantisation draw(s) each)."
        )
    if "bits_per_dim_bound" in report:
        return (
            f"{report['split']} bits/dim ≤ **{report['bits_per_dim_bound']:.4f}** "
            f"± {report['bits_per_dim_bound_stderr']:.4f}: the negative ELBO, an upper bound "
            f"on the model's bits/dim (standard error over {report['num_pairs']:,} pairs, "
            f"{report['latent_draws']} latent draw(s) each)."
        )
    return f"None: a {report['kind']} model has no likelihood."


def importance_weighted_markdown(report: dict) -> list[str]:
    """The importance-weighted bound's sentence (``evaluate --importance-samples K``)."""
    iw = report.get("importance_weighted")
    if iw is None:
        return []
    given = " given the label" if iw["given_label"] else ""
    return [
        f"Importance-weighted{given}, K = {iw['samples']} weights per pair on the first "
        f"{iw['num_pairs']:,} pairs: ≤ **{iw['bits_per_dim_bound']:.4f}** "
        f"± {iw['bits_per_dim_bound_stderr']:.4f} bits/dim, a bound on the discrete model's "
        f"bits/dim that tightens to it as K grows (Burda et al. 2016); the usual figure on "
        f"the same draws is {iw['mean_of_draws']:.4f}.",
        "",
    ]


def mixture_markdown(report: dict) -> list[str]:
    """A class-mixture flow's lines: bits/dim given the label, its own classification."""
    key = next((k for k in ("bits_per_dim_given_label", "bits_per_dim_bound_given_label")
                if k in report), None)  # fmt: skip
    if not report.get("class_mixture") or key is None:
        return []
    c = report["classification"]
    bound = " (a variational bound)" if "bound" in key else ""
    theirs = c["classifier_accuracy"]
    return [
        f"Given the label: {report[key]:.4f} ± {report[key + '_stderr']:.4f} bits/dim{bound}. "
        f"As a pair classifier (argmax p(y | x)) the flow reads {c['flow_accuracy']:.4f} of "
        "the pairs right; the pair classifier "
        + (f"{theirs:.4f}." if theirs is not None else "was not run (single images)."),
        "",
    ]


def report_markdown(report: dict, outputs: dict[str, Path], curves: Path | None) -> str:
    """The Markdown report of ``evaluate --samples``: bits/dim, the metric table beside the
    floor, the sample grid and the training curves (``outputs``: paths of report and grid)."""
    s = report["samples"]
    here = outputs["report"].parent
    kind = "conditional" if report["conditional"] else "unconditional"
    if report.get("class_mixture"):
        kind = "class-mixture prior (samples drawn without labels)"
    elif report.get("mixture_prior"):
        kind = "unconditional, label-free mixture prior (components from k-means clusters)"
    asked = s["requested_labels"] is not None
    lines = [
        f"# Evaluation of `{report['source']}`",
        "",
        f"{report['kind']} model, preset `{report['preset']}`, {kind}, "
        f"{report['params']:,} parameters, checkpoint step {report['step']}; trained on "
        f"{report.get('trained_on', 'mnist')} {report.get('layout', 'pair')}s.",
        "",
        "## Bits/dim",
        "",
        bpd_markdown(report),
        "",
        *importance_weighted_markdown(report),
        *mixture_markdown(report),
        "## Sample metrics",
        "",
        f"{s['num_samples']:,} samples at temperature {s['temperature']}"
        + (f", classifier-free guidance {s['guidance']:g}" if "guidance" in s else "")
        + f" (seed {s['seed']})"
        + (", asked for the 100 pair labels in turn" if asked else "")
        + f", judged by the {s['classifier']} against {s['reference']}. "
        f"The real-vs-real floor is the same metrics for real pairs in place of the samples "
        f"({s['floor_held_out']}): the best a model can reach with this many samples.",
        "",
        "| metric | model | real-vs-real floor |",
        "|---|---:|---:|",
    ]
    for metric in METRICS:
        if metric.key in report["metrics"]:
            m = report["metrics"][metric.key]
            lines.append(
                f"| {metric.label} | {format_number(m['model'], metric.spec)} | "
                f"{format_number(m['floor'], metric.spec)} |"
            )
    lines += [""]
    if asked:
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
        f"![samples]({relative(outputs['grid'], here)})",
        "",
        "## Training curves",
        "",
    ]
    if curves is not None:
        lines.append(f"![training curves]({relative(curves, here)})")
    else:
        lines.append("No training curves: no `metrics.jsonl` or `curves.png` beside the model.")
    return "\n".join(lines) + "\n"


def summary_line(report: dict) -> str:
    """One line for people, before the JSON: what was measured, the headline numbers beside
    their floors, and the time."""
    parts = []
    noisy = f" (of noisy data, sigma {report['noise_sigma']:g})" if "noise_sigma" in report else ""
    items = "images" if report.get("layout") == "single" else "pairs"  # what num_pairs counts
    if "bits_per_dim" in report:
        parts.append(
            f"{report['split']} bits/dim{noisy} {report['bits_per_dim']:.4f} ± "
            f"{report['bits_per_dim_stderr']:.4f} on {report['num_pairs']:,} {items}"
        )
    elif "bits_per_dim_bound" in report:
        parts.append(
            f"{report['split']} bits/dim ≤ {report['bits_per_dim_bound']:.4f} on "
            f"{report['num_pairs']:,} {items}"
        )
    if "importance_weighted" in report:
        iw = report["importance_weighted"]
        parts.append(
            f"≤ {iw['bits_per_dim_bound']:.4f} importance-weighted (K = {iw['samples']}, "
            f"{iw['num_pairs']:,} {items}; {iw['mean_of_draws']:.4f} the usual figure on "
            "those draws)"
        )
    seconds = report["seconds"]
    if "samples" in report:
        s, m = report["samples"], report["metrics"]
        seconds += s["sampling_seconds"] + s["metrics_seconds"] + s["floor_seconds"]
        fd = m["fd"]
        text = (
            f"{s['num_samples']:,} samples at T={s['temperature']:g}"
            + (f", guidance {s['guidance']:g}" if "guidance" in s else "")
            + ": FD "
            f"{format_number(fd['model'], '.1f')} (floor {format_number(fd['floor'], '.1f')})"
        )
        if "conditional_accuracy" in m:
            c = m["conditional_accuracy"]
            text += (
                f", conditional accuracy {format_number(c['model'], '.3f')} "
                f"(floor {format_number(c['floor'], '.3f')})"
            )
        parts.append(text)
    return f"{Path(report['source']).stem}: " + "; ".join(parts) + f"; {seconds:.0f} s"
