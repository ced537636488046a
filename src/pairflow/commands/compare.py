"""``pairflow compare``: several evaluated runs (models) in one table and one figure.

Reads each run's ``eval_test.json`` as written by ``pairflow evaluate RUN --samples N`` and
writes ``DIR/compare.md`` (one table, with the real-vs-real floor row) and ``DIR/compare.png``
(bars of the main metrics with each run's floor marked, and the runs' sample grids).

Any model kind fits: a likelihood model writes ``bits_per_dim`` (exact), a model with only a
variational bound (VAE) writes ``bits_per_dim_bound`` (shown as "≤ x"), a model with neither
(GAN) shows "-".
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from pairflow.cli import UsageError
from pairflow.evaluation.report import format_number
from pairflow.metrics.table import METRICS

# (key in eval JSON "metrics", column, number format, lower is better), from the one table;
# the worst pair stays in each run's own report (one column per table is enough here).
COLUMNS: tuple[tuple[str, str, str, bool], ...] = tuple(
    (m.key, m.column, m.spec, m.lower_is_better)
    for m in METRICS
    if m.key != "conditional_accuracy_min"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "runs",
        nargs="+",
        metavar="RUN",
        help="run folders (each with eval_test.json from `pairflow evaluate RUN --samples N`) "
        "or eval JSON files",
    )
    parser.add_argument("--names", help="comma-separated names, one per run (default: folders)")
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="folder for compare.md and compare.png"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the table as JSON instead of Markdown"
    )


def _eval_file(run: str) -> Path:
    path = Path(run)
    if path.suffix.lower() == ".json":
        if not path.is_file():
            raise UsageError(f"{path} does not exist")
        return path
    if not path.is_dir():
        raise UsageError(f"{path} does not exist (give a run folder or an eval JSON file)")
    found = path / "eval_test.json"
    if not found.is_file():
        raise UsageError(
            f"{path} has no eval_test.json: run `pairflow evaluate {path} --samples N` first "
            "(e.g. --samples 10000), then compare"
        )
    return found


def load_row(name: str, path: Path) -> dict[str, Any]:
    """One table row from an eval JSON: name, model facts, bits/dim, metrics and floors."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UsageError(f"{path} is not a readable eval JSON ({err}); run evaluate again") from err
    if not isinstance(data, dict):
        raise UsageError(f"{path} is not an eval JSON object; run `pairflow evaluate` again")
    if "bits_per_dim" in data:
        bpd, bound = data["bits_per_dim"], False
    else:  # models with only an upper bound (ELBO) on the negative log-likelihood
        bpd, bound = data.get("bits_per_dim_bound"), "bits_per_dim_bound" in data
    metrics = data.get("metrics") or {}
    samples = data.get("samples") or {}
    grid = samples.get("grid")
    grid_path = (path.parent / grid) if grid else None
    return {
        "name": name,
        "eval_json": str(path),
        "kind": data.get("kind", "flow"),
        "preset": data.get("preset"),
        "conditional": data.get("conditional"),
        "params": data.get("params"),
        "bits_per_dim": bpd,
        "bits_per_dim_stderr": data.get("bits_per_dim_stderr"),
        "bits_per_dim_is_bound": bound,
        "num_samples": samples.get("num_samples"),
        "temperature": samples.get("temperature"),
        "samples_per_second": samples.get("samples_per_second"),
        "metrics": {k: m.get("model") for k, m in metrics.items()},
        "floor": {k: m.get("floor") for k, m in metrics.items()},
        "floor_held_out": samples.get("floor_held_out"),
        "grid": str(grid_path) if grid_path is not None and grid_path.is_file() else None,
    }


def run(args: argparse.Namespace) -> int:
    names = [Path(r).parent.name if r.endswith(".json") else Path(r).name for r in args.runs]
    if args.names is not None:
        names = [n.strip() for n in args.names.split(",")]
        if len(names) != len(args.runs) or not all(names):
            raise UsageError(
                f"--names gives {len(names)} names for {len(args.runs)} runs; give one "
                "non-empty name per run, comma-separated"
            )
    rows = [load_row(name, _eval_file(r)) for name, r in zip(names, args.runs, strict=True)]
    for row in rows:
        if not row["metrics"]:
            print(
                f"pairflow compare: {row['eval_json']} has bits/dim only; for sample metrics "
                f"run `pairflow evaluate RUN --samples N` on it",
                file=sys.stderr,
            )
    floors = _floor_rows(rows)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a folder")
    from pairflow.utils import atomic_write_text

    figure = compare_figure(rows, out / "compare.png")
    markdown = compare_markdown(rows, floors, figure)
    atomic_write_text(out / "compare.md", markdown)
    if args.json:
        print(json.dumps({"runs": rows, "floors": floors}, indent=2))
    else:
        print(markdown, end="")
    print(f"wrote {out / 'compare.md'} and {out / 'compare.png'}", file=sys.stderr)
    return 0


def _floor_rows(rows: list[dict]) -> list[dict]:
    """One real-vs-real row per sample count N (the floor depends on N)."""
    floors: dict[int, dict] = {}
    for row in rows:
        n = row["num_samples"]
        if n is not None and n not in floors and row["floor"]:
            floors[n] = {
                "num_samples": n,
                "held_out": row["floor_held_out"],
                "metrics": dict(row["floor"]),
            }
    return [floors[n] for n in sorted(floors)]


def _bpd_text(row: dict) -> str:
    if row["bits_per_dim"] is None:
        return "-"
    text = format_number(row["bits_per_dim"], ".4f")
    if row["bits_per_dim_is_bound"]:
        return f"≤ {text}"
    stderr = row["bits_per_dim_stderr"]
    if isinstance(stderr, float) and math.isfinite(stderr):
        text += f" ± {stderr:.4f}"
    return text


def compare_markdown(rows: list[dict], floors: list[dict], figure: Path | None) -> str:
    """The comparison table (runs, then the floor rows) with a short legend."""
    head = ["model", "kind", "preset", "conditional", "params", "bits/dim", "samples", "T"]
    head += [label for _, label, _, _ in COLUMNS] + ["samples/s"]
    lines = [
        "# Model comparison",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * 4 + "---:|" * (len(head) - 4),
    ]
    for row in rows:
        cond = {True: "yes", False: "no"}.get(row["conditional"], "-")
        cells = [
            row["name"],
            row["kind"] or "-",
            row["preset"] or "-",
            cond,
            format_number(row["params"], ","),
            _bpd_text(row),
            format_number(row["num_samples"], ","),
            format_number(row["temperature"], "g"),
        ]
        cells += [format_number(row["metrics"].get(k), spec) for k, _, spec, _ in COLUMNS]
        cells.append(format_number(row["samples_per_second"], ".1f"))
        lines.append("| " + " | ".join(cells) + " |")
    for floor in floors:
        cells = [f"real vs real (N={floor['num_samples']:,})", "-", "-", "-", "-", "-"]
        cells += [format_number(floor["num_samples"], ","), "-"]
        cells += [format_number(floor["metrics"].get(k), spec) for k, _, spec, _ in COLUMNS]
        cells.append("-")
        lines.append("| " + " | ".join(cells) + " |")
    lower = ", ".join(label for _, label, _, low in COLUMNS if low)
    lines += [
        "",
        f"Lower is better for bits/dim, {lower}; higher for the rest. Each run's samples "
        "(N of them, drawn at temperature T) are judged by the shipped pair classifier "
        "against N real test pairs; the real-vs-real "
        "rows put N real training pairs in place of the samples (the best reachable at that "
        'N; FD grows as N shrinks, so compare runs at the same N). "≤" marks a bound on '
        "bits/dim (e.g. a VAE's ELBO), not an exact likelihood.",
        "",
        "Sources: " + "; ".join(f"{r['name']}: `{r['eval_json']}`" for r in rows) + ".",
        "",
    ]
    if figure is not None:
        lines += [f"![comparison]({figure.name})", ""]
    return "\n".join(lines)


def compare_figure(rows: list[dict], path: Path) -> Path | None:
    """Bars of bits/dim and the sample metrics (floor as a black line on each bar), then the
    runs' sample grids side by side. matplotlib is imported here, with the Agg backend."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pairflow.utils import atomic_write_bytes

    panels = [("bits_per_dim", "bits/dim (hatched: bound)", True)]
    panels += [
        (k, label + (" (lower better)" if low else ""), low)
        for k, label, _, low in COLUMNS
        if any(r["metrics"].get(k) is not None for r in rows)
    ]
    grids = [r for r in rows if r["grid"]]
    cols = max(len(panels), 1)
    fig = plt.figure(figsize=(2.6 * cols, 6.0 if grids else 3.0), dpi=100, layout="constrained")
    spec = fig.add_gridspec(2 if grids else 1, cols, height_ratios=[1, 1.2] if grids else [1])
    x = list(range(len(rows)))
    colors = [plt.get_cmap("tab10")(i % 10) for i in x]
    for i, (key, title, _) in enumerate(panels):
        ax = fig.add_subplot(spec[0, i])
        if key == "bits_per_dim":
            raw = [r["bits_per_dim"] for r in rows]
            floors = [math.nan] * len(rows)
            hatches = ["//" if r["bits_per_dim_is_bound"] else "" for r in rows]
        else:
            raw = [r["metrics"].get(key) for r in rows]
            floors = [_float(r["floor"].get(key)) for r in rows]
            hatches = [""] * len(rows)
        values = [_float(v) for v in raw]
        bars = ax.bar(x, [0 if math.isnan(v) else v for v in values], color=colors)
        for bar, hatch, value, given in zip(bars, hatches, values, raw, strict=True):
            bar.set_hatch(hatch)
            # NaN (a diverged model) and "not measured" must not look like a zero.
            label = "n/a" if given is None else "NaN" if math.isnan(value) else f"{value:.3g}"
            ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=7)  # fmt: skip
        for xi, floor in zip(x, floors, strict=True):
            if not math.isnan(floor):
                ax.hlines(floor, xi - 0.4, xi + 0.4, colors="black", linestyles="--")
        positive = [v for v in values + floors if not math.isnan(v) and v > 0]
        if key == "fd" and positive and max(positive) / min(positive) > 50:
            ax.set_yscale("log")  # a poor model's FD dwarfs the floor
        ax.set_title(title, fontsize=8)
        ax.set_xticks(x, [r["name"] for r in rows], rotation=30, ha="right", fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
    if any(r["floor"] for r in rows):
        fig.suptitle("dashed line on each bar: that run's real-vs-real floor", fontsize=8)
    if grids:
        from PIL import Image

        inner = spec[1, :].subgridspec(1, len(grids))
        for i, row in enumerate(grids):
            ax = fig.add_subplot(inner[0, i])
            with Image.open(row["grid"]) as img:
                ax.imshow(img.convert("L"), cmap="gray", vmin=0, vmax=255)
            drawn = (
                f"{format_number(row['num_samples'], ',')} samples at "
                f"T = {format_number(row['temperature'], 'g')}"
            )
            ax.set_title(f"{row['name']}\n{drawn}", fontsize=8)
            ax.axis("off")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)
