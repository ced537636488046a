"""``pairflow demo``: the main job on its embedded defaults.

1. checks the MNIST root (downloading it when missing and allowed) and writes a preview of
   labelled pairs;
2. trains a small multi-scale flow for a few minutes on the CPU, writing its curves and
   samples;
3. draws samples from each shipped pretrained model;
and says where it put everything.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pairflow.cli import UsageError


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
        "--preset", default="multiscale", help="preset to train (default multiscale)"
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from pairflow.data import PairedMNIST, resolve_root, write_preview
    from pairflow.pretrained import list_pretrained, pretrained_path
    from pairflow.training import TrainConfig, load_model, train

    if not args.minutes > 0:
        raise UsageError(f"--minutes must be > 0, got {args.minutes}")
    out = Path(args.out)
    root = resolve_root(args.data_dir)
    try:
        train_set = PairedMNIST(root, train=True, download=not args.no_download)
        test_set = PairedMNIST(root, train=False, download=False)
    except (FileNotFoundError, ValueError, OSError) as err:
        raise UsageError(str(err)) from err
    print(
        f"[1/3] MNIST at {root}: {len(train_set.digits)} train and {len(test_set.digits)} "
        "test digits"
    )
    preview = write_preview(test_set, out / "pairs.png")
    print(f"      preview of labelled test pairs: {preview}")

    print(f"[2/3] training a {args.preset} flow for {args.minutes:g} minutes")
    config = TrainConfig(
        preset=args.preset,
        epochs=100,
        time_budget=args.minutes,
        batch_size=64,
        lr=1e-3,
        warmup_steps=100,
        data_dir=str(root),
        out=str(out / "train"),
        test_pairs=2000,
        sample_n=64,
        log_every=10,
    )
    from pairflow.training.runfolder import RunFolderError, open_run_folder

    try:
        # A demo run starts over each time (its old files go first) and owns its folder.
        with open_run_folder(config.out, overwrite=True):
            summary = train(config, progress=True)
    except RunFolderError as err:
        raise UsageError(str(err)) from err
    print(
        f"      {summary['step']} steps, test bits/dim {summary['test_bpd']:.3f} "
        f"(on 2,000 fixed test pairs)"
    )

    print("[3/3] samples from the shipped pretrained models")
    written = []
    for name, meta in sorted(list_pretrained().items()):
        model, state = load_model(pretrained_path(name))
        gen = torch.Generator().manual_seed(0)
        cond = torch.arange(64) % 100 if meta.get("conditional") else None
        with torch.no_grad():
            images = model.sample(64, temperature=0.7, generator=gen, cond=cond)
        from pairflow.images import save_grid

        labels = None if cond is None else [f"{int(c):02d}" for c in cond]
        written.append(save_grid(images, out / f"pretrained_{name}.png", nrow=8, labels=labels))
    if not written:
        print("      (no pretrained weights ship with this build)")
    print("\nwhere things are:")
    print(f"  {out / 'pairs.png'}            labelled real pairs")
    print(f"  {out / 'train' / 'curves.png'}     train/test bits/dim against steps")
    print(f"  {out / 'train' / 'samples'}/       sample grids of the demo run")
    print(f"  {out / 'train' / 'best.pt'}        its checkpoint (pairflow sample / evaluate)")
    for path in written:
        print(f"  {path}")
    return 0
