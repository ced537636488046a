"""``pairflow demo``: the main job on its embedded defaults.

1. checks the MNIST root (downloading it when missing and allowed) and writes a preview of
   labelled pairs;
2. fine-tunes the shipped flow of the preset for a few minutes on the CPU (or, with
   ``--from-scratch``, trains a fresh one: a few minutes from scratch teach little more than
   strokes), writing its curves and samples every (short) epoch;
3. draws samples from each shipped pretrained model;
4. puts the run's samples beside the shipped models' in one figure, ``demo.png``, with a
   caption under each panel saying how that model was made;
and lists every file it wrote.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pairflow.cli import UsageError

TEMPERATURE = 0.7  # of the run's grids during training; samples in the figure take the
# shipped model's own default (pairflow.options.default_temperature), the run its base's
NUM_SAMPLES = 32  # samples per model in the figure
EPOCH_PAIRS = 6400  # pairs per demo epoch: 100 steps, so curves and grids come every ~2 min


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="MNIST root (default $PAIRFLOW_DATA or ./data)")
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument(
        "--minutes",
        type=float,
        default=4.0,
        help="training wall-clock budget in minutes (default 4)",
    )
    parser.add_argument(
        "--no-download",
        action="store_true",
        help="fail instead of downloading MNIST when the root lacks it",
    )
    parser.add_argument(
        "--preset", default="multiscale", help="preset to train: multiscale (default) or seed"
    )
    parser.add_argument(
        "--from-scratch",
        action="store_true",
        help="train fresh weights instead of fine-tuning the shipped model of the preset",
    )
    parser.add_argument(
        "--max-steps", type=int, help="also stop after this many steps (tiny runs, tests)"
    )
    parser.add_argument(
        "--test-pairs",
        type=int,
        default=2000,
        help="fixed test pairs evaluated each epoch (default 2000)",
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: one per core)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:

    from pairflow.commands._common import data_usage_error
    from pairflow.data import PairedMNIST, resolve_root, write_preview

    if not args.minutes > 0:
        raise UsageError(f"--minutes must be > 0, got {args.minutes}")
    if args.max_steps is not None and args.max_steps < 1:
        raise UsageError(f"--max-steps must be >= 1, got {args.max_steps}")
    if args.test_pairs < 1:
        raise UsageError(f"--test-pairs must be >= 1, got {args.test_pairs}")
    out = Path(args.out)
    root = resolve_root(args.data_dir)
    try:
        train_set = PairedMNIST(root, train=True, download=not args.no_download)
        test_set = PairedMNIST(root, train=False, download=False)
    except (FileNotFoundError, ValueError, OSError) as err:
        raise data_usage_error(err, root, download_flag="(leave out --no-download)") from err
    print(
        f"[1/4] MNIST at {root}: {len(train_set.digits)} train and {len(test_set.digits)} "
        "test digits"
    )
    preview = write_preview(test_set, out / "pairs.png")
    print(f"      preview of labelled test pairs: {preview}")

    summary, how, base, minutes = _train(args, root, out)
    panels, figure = _figure(args, root, out, summary, how, base, minutes)
    _print_listing(out, panels, figure)
    return 0


def _train(args: argparse.Namespace, root: Path, out: Path):
    """[2/4]: the demo's own short run; (summary, how it was made, shipped base, minutes)."""
    from pairflow.pretrained import list_pretrained, pretrained_path, shipped_bpd_text
    from pairflow.training import CheckpointError, TrainConfig, train
    from pairflow.training.config import FINE_TUNE_DEFAULTS

    shipped = list_pretrained()
    base = None if args.from_scratch else _shipped_of_preset(shipped, args.preset)
    if base is None:
        how = "from scratch"
        print(f"[2/4] training a {args.preset} flow from scratch for {_minutes(args.minutes)}")
    else:
        how = f"the shipped `{base}` fine-tuned"
        print(
            f"[2/4] fine-tuning the shipped {base} flow (test bits/dim "
            f"{shipped_bpd_text(shipped[base])}) for {_minutes(args.minutes)}; "
            "--from-scratch trains fresh weights instead"
        )
    config = TrainConfig(
        preset=args.preset,
        epochs=1000,  # the clock (or --max-steps) ends the run
        time_budget=args.minutes,
        max_steps=args.max_steps,
        batch_size=64,
        # A fine-tune takes the gentle defaults of `train --init-from` (docs/cli.md, "Fine-tuning").
        **(dict(lr=1e-3, warmup_steps=100) if base is None else FINE_TUNE_DEFAULTS),
        num_pairs=EPOCH_PAIRS,
        data_dir=str(root),
        out=str(out / "train"),
        test_pairs=args.test_pairs,
        sample_n=64,
        sample_temperature=TEMPERATURE,
        log_every=10,
        threads=args.threads,
        init_from=None if base is None else str(pretrained_path(base)),
    )
    from pairflow.training.runfolder import RunFolderError, open_run_folder

    started = time.perf_counter()
    try:
        # A demo run starts over each time (its old files go first) and owns its folder.
        with open_run_folder(config.out, overwrite=True):
            summary = train(config, progress=not args.no_progress)
    except (ValueError, CheckpointError, RunFolderError) as err:
        raise UsageError(str(err)) from err
    minutes = (time.perf_counter() - started) / 60
    print(f"      {summary['step']} steps, test bits/dim {_run_bpd_text(summary)} (on "
          f"{args.test_pairs:,} fixed test pairs){start_end_text(summary)}")  # fmt: skip
    return summary, how, base, minutes


def _figure(args, root: Path, out: Path, summary: dict, how: str, base, minutes: float):
    """[3/4] and [4/4]: samples of the run and of each shipped MNIST model, in one figure."""
    import torch

    import pairflow
    from pairflow.images import save_grid
    from pairflow.pretrained import list_pretrained, shipped_bpd_text

    shipped = list_pretrained()
    steps = summary["step"]
    print("[3/4] samples from the shipped pretrained models (each at its default temperature)")
    panels = []
    run_dir = out / "train"
    model = pairflow.load(run_dir / "last.pt")  # at the precision that is fast here
    # The run at its base's temperature: the same latents and temperature as that panel.
    run_temperature = _temperature(shipped[base] if base else {})
    images = _draw(model, torch, False, run_temperature)
    same = "; the same latents as the shipped panel of its preset" if base else ""
    caption = run_caption(how, steps, args.minutes, minutes, root) + (
        f"; test bits/dim {_run_bpd_text(summary)} on {args.test_pairs:,} test pairs"
        f"{start_end_text(summary)}{same}; T = {run_temperature:g}"
    )
    panels.append(
        ("this demo's run", caption, save_grid(images, out / "demo_run_samples.png", nrow=8))
    )
    for name, meta in sorted(shipped.items()):
        if meta.get("dataset", "mnist") != "mnist":
            continue  # the demo is about MNIST pairs; `pairflow sample --list-pretrained` has all
        model = pairflow.load(name)
        conditional = bool(meta.get("conditional"))
        temperature = _temperature(meta)
        images, labels = _draw(model, torch, conditional, temperature), None
        if conditional:
            labels = [f"{int(c):02d}" for c in _labels(torch)]
        path = save_grid(images, out / f"pretrained_{name}.png", nrow=8, labels=labels)
        caption = (
            f"{_how_trained(meta)}; test bits/dim {shipped_bpd_text(meta)} on 10,000 pairs; "
            f"T = {temperature:g}"
        )
        if conditional:
            caption += _asked_text(meta)
        panels.append((f"shipped `{name}`", caption, path))
    print(f"[4/4] all samples side by side, captioned: {out / 'demo.png'}")
    figure = demo_figure(panels, out / "demo.png")

    return panels, figure


def _asked_text(meta: dict) -> str:
    """What a conditional panel's labels are: pairs a model whose couplings read the label
    draws, or, for a model with only a label prior, labels it was given and rarely draws.

    Example:
        >>> _asked_text({"conditioning": "both"})
        '; asked for the pair under each image'
        >>> "one time in ten" in _asked_text({"conditioning": "prior"})
        True
    """
    if meta.get("conditioning") == "prior":
        return (
            "; given the pair under each image, though it draws the asked pair only about "
            "one time in ten (only its prior reads the label)"
        )
    return "; asked for the pair under each image"


def _minutes(minutes: float) -> str:
    """``"1 minute"``, ``"4 minutes"``, ``"0.5 minutes"``."""
    return f"{minutes:g} minute{'' if minutes == 1 else 's'}"


def run_caption(how: str, steps: int, budget: float, wall_minutes: float, root) -> str:
    """How the demo's run was made: its steps within the training budget, and the wall time
    of all of it (loading the model and data, and testing after the budget, come on top).

    Example:
        >>> print(run_caption("from scratch", 120, 1, 1.5, "data"))
        from scratch for 120 steps of 64 pairs within a 1-minute budget (1.5 min in all,
        with setup and the final test) on data
    """
    return (
        f"{how} for {steps:,} steps of 64 pairs within a {budget:g}-minute budget "
        f"({wall_minutes:.1f} min in all, with setup and the final test) on {root}"
    )


def _print_listing(out: Path, panels: list, figure) -> None:
    run_dir = out / "train"
    print("\nwhere things are:")
    listing = [
        (figure, "the run's samples beside the shipped models', each captioned"),
        (out / "pairs.png", "labelled real test pairs"),
        (run_dir / "curves.png", "the run's train/test bits/dim against steps"),
    ]
    listing += [(p, "the run's samples at an epoch's end (or the stop)") for p in _grids(run_dir)]
    listing += [
        (run_dir / "last.pt", f"its checkpoint: pairflow sample {run_dir} (or evaluate)"),
        (run_dir / "best.pt", "its best checkpoint by test bits/dim"),
    ]
    listing += [(path, "") for _, _, path in panels]
    width = max(len(str(p)) for p, _ in listing)
    for path, what in listing:
        if Path(path).is_file():
            print(f"  {str(path):{width}s}  {what}".rstrip())


def _shipped_of_preset(shipped: dict, preset: str) -> str | None:
    """The unconditional shipped model trained with ``preset`` (its name is the preset)."""
    meta = shipped.get(preset)
    if meta is None or meta.get("conditional") or meta.get("preset") != preset:
        return None
    return preset


def _labels(torch):
    return torch.arange(NUM_SAMPLES) * 3 % 100  # 00, 03, ..., 93: pairs from every row


def _temperature(meta: dict) -> float:
    """A shipped model's default temperature for its given-label or unconditional samples
    (its own where a sweep chose one, else the global default) from its index entry."""
    from pairflow.options import default_temperature

    return default_temperature(False, meta.get("temperature"))


def _draw(model, torch, conditional: bool, temperature: float):
    """NUM_SAMPLES samples at ``temperature``, seed 0: the same latents for every model."""
    gen = torch.Generator().manual_seed(0)
    cond = _labels(torch) if conditional else None
    with torch.no_grad():
        return model.sample(NUM_SAMPLES, temperature=temperature, generator=gen, cond=cond).cpu()


def _run_bpd_text(summary: dict) -> str:
    """The demo run's test bits/dim: exact, or ``<= X (variational bound)`` for a fine-tune
    that kept the shipped flow's variational dequantization."""
    from pairflow.pretrained import bpd_text

    bound = "test_bpd_bound" in summary
    return bpd_text(summary["test_bpd_bound" if bound else "test_bpd"], bound, digits=3)


def start_end_text(summary: dict) -> str:
    """A fine-tune's start beside its end, for the demo's line and caption: what the shipped
    weights it started from scored on the same test pairs, whether the run improved on them,
    and which checkpoint keeps the better; "" for a run from scratch.

    Example:
        >>> print(start_end_text({"start_test_bpd_bound": 1.0765, "test_bpd_bound": 1.079}))
        ; the shipped weights it started from: 1.0765 on the same pairs, so this short run
        is worse by 0.0025 (best.pt keeps the shipped weights)
        >>> print(start_end_text({"start_test_bpd": 1.2, "test_bpd": 1.1}))
        ; the shipped weights it started from: 1.2000 on the same pairs, better by 0.1000
        >>> print(start_end_text({"start_test_bpd": 1.07646, "test_bpd": 1.07642}))
        ; the shipped weights it started from: 1.0765 on the same pairs, unchanged to within 0.0001
        >>> start_end_text({"test_bpd": 1.1})
        ''
    """
    key = "test_bpd_bound" if "test_bpd_bound" in summary else "test_bpd"
    if f"start_{key}" not in summary:
        return ""
    start, end = summary[f"start_{key}"], summary[key]
    text = f"; the shipped weights it started from: {start:.4f} on the same pairs"
    if f"{abs(end - start):.4f}" == "0.0000":  # the same in the digits shown
        return f"{text}, unchanged to within 0.0001"
    if end < start:
        return f"{text}, better by {start - end:.4f}"
    return (
        f"{text}, so this short run is worse by {end - start:.4f} (best.pt keeps the shipped "
        "weights)"
    )


def _how_trained(meta: dict) -> str:
    """One line from the shipped model's index entry: preset, steps, budget, start."""
    tc = meta.get("train_config", {})
    text = f"{meta.get('preset')} preset, {meta.get('step', 0):,} steps of {tc.get('batch_size')}"
    if tc.get("time_budget"):
        text += f" pairs in at most {tc['time_budget']:g} min"
    else:
        text += f" pairs ({tc.get('epochs')} epochs)"
    if tc.get("init_from"):
        text += f", fine-tuned from {tc['init_from']}"
    return text


def _grids(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "samples").glob("*.png"))


def demo_figure(panels: list[tuple[str, str, Path]], path: Path) -> Path:
    """One PNG: each panel's sample grid with its title above and its caption below."""
    import io
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from pairflow.utils import atomic_write_bytes

    cols = 2
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(7.5 * cols, 3.4 * rows), dpi=100, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, caption, grid) in zip(axes.flat, panels, strict=False):
        with Image.open(grid) as img:
            ax.imshow(img.convert("L"), cmap="gray", vmin=0, vmax=255)
        ax.set_title(title, fontsize=11, fontweight="bold")
        ax.text(
            0.5,
            -0.03,
            "\n".join(textwrap.wrap(caption, 95)),
            transform=ax.transAxes,
            ha="center",
            va="top",
            fontsize=8,
        )
    fig.suptitle("MNIST digit pairs, each model at its default temperature T", fontsize=12)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())
