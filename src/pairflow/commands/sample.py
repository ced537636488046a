"""``pairflow sample``: draw digit pairs from a trained or shipped flow, VAE or GAN."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from pairflow.cli import UsageError
from pairflow.commands._common import add_model_arguments, load_model_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.7,
        help="scale of the latent's standard deviation (default 0.7)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the latents (default 0)")
    parser.add_argument(
        "--out",
        default="samples.png",
        help="FILE.png (grid), FILE.npz (arrays) or a folder (one PNG each)",
    )
    parser.add_argument("--batch-size", type=int, default=1000, help="samples per inverse pass")
    parser.add_argument(
        "--pair", help="conditional models: pair labels to draw, e.g. 37 or 37,05,99"
    )
    parser.add_argument(
        "--grid",
        action="store_true",
        help="conditional models: the 10x10 table of all pairs (row = left digit)",
    )
    parser.add_argument(
        "--interpolate",
        action="store_true",
        help="latent interpolation between real test pairs instead of sampling",
    )
    parser.add_argument("--steps", type=int, default=10, help="interpolation steps (default 10)")
    parser.add_argument("--data-dir", help="MNIST root for --interpolate")
    parser.add_argument(
        "--list-pretrained",
        action="store_true",
        help="list the shipped models with their test bits/dim, then exit",
    )


def parse_pairs(text: str) -> list[int]:
    """``"37,05,99"`` -> ``[37, 5, 99]``; each label is one or two digits 00..99."""
    labels = []
    for item in text.split(","):
        item = item.strip()
        if not (item.isdigit() and 1 <= len(item) <= 2):
            raise UsageError(
                f"--pair: {item!r} is not a digit pair; give two digits 00..99 (e.g. 37 or 05), "
                "comma-separated for several"
            )
        labels.append(int(item))
    return labels


def run(args: argparse.Namespace) -> int:
    if args.list_pretrained:
        from pairflow.pretrained import list_pretrained

        models = list_pretrained()
        if not models:
            print("no pretrained models ship with this build")
        for name, meta in sorted(models.items()):
            kind = "conditional" if meta.get("conditional") else "unconditional"
            print(
                f"{name:20s} {meta.get('preset', '?'):11s} {kind:13s} "
                f"test bits/dim {meta.get('test_bpd', float('nan')):.4f}"
            )
        return 0
    if args.n < 1:
        raise UsageError(f"--n must be a positive number of samples, got {args.n}")
    if not args.temperature > 0:
        raise UsageError(f"--temperature must be > 0, got {args.temperature}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    model, state, source = load_model_from_args(args)
    conditional = bool(state["model_config"].get("conditional", False))
    if (args.pair is not None or args.grid) and not conditional:
        raise UsageError(
            f"--pair/--grid need a conditional model, but {source} is unconditional; "
            "train one with --conditional or use a *-cond pretrained model"
        )
    if args.interpolate:
        from pairflow.models import kind_spec

        if not kind_spec(state["kind"]).encodes:
            raise UsageError(
                f"--interpolate needs a model with an encoder (flow or vae); {source} is a "
                f"{state.get('kind')} model"
            )
        return _interpolate(model, args, conditional)

    import torch

    device = model.device
    labels = None
    n = args.n
    if args.grid:
        labels = torch.arange(100).repeat_interleave(max(1, n // 100) if n >= 100 else 1)
    elif args.pair is not None:
        pairs = parse_pairs(args.pair)
        labels = torch.tensor(pairs).repeat_interleave(n)  # n samples of each pair
    elif conditional:
        labels = torch.randint(0, 100, (n,), generator=torch.Generator().manual_seed(args.seed))
    total = n if labels is None else len(labels)
    from pairflow.evaluation import draw_samples

    gen = torch.Generator(device=device).manual_seed(args.seed)
    images = draw_samples(  # (N, 1, 28, 56) uint8
        model, total, args.batch_size, temperature=args.temperature, generator=gen, labels=labels
    )
    _write(images, labels, Path(args.out), grid_rows=10 if args.grid else None)
    return 0


def _write(images, labels, out: Path, grid_rows: int | None = None) -> None:
    import io

    import numpy as np

    from pairflow.images import save_grid, save_png
    from pairflow.utils import atomic_write_bytes

    text = None if labels is None else [f"{int(v):02d}" for v in labels]
    if out.suffix.lower() == ".png":
        nrow = None
        if grid_rows is not None:
            nrow = len(images) // grid_rows
        elif labels is not None:
            nrow = min(len(images), 8)
        save_grid(images, out, nrow=nrow or max(1, round(math.sqrt(len(images) / 2))), labels=text)
    elif out.suffix.lower() == ".npz":
        arrays = {"images": images[:, 0].numpy()}
        if labels is not None:
            arrays["labels"] = labels.numpy().astype(np.int64)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        atomic_write_bytes(out, buffer.getvalue())
    elif out.suffix == "" or out.is_dir():
        out.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(images):
            name = f"sample_{i:05d}" + (f"_{text[i]}" if text else "") + ".png"
            save_png(img[0], out / name)
    else:
        raise UsageError(f"--out {out}: use a .png file, a .npz file or a folder")
    print(f"wrote {len(images)} samples to {out}")


def _interpolate(model, args: argparse.Namespace, conditional: bool) -> int:
    """Rows of ``--steps`` images walking the latent path between two real test pairs.

    The path is z(t) = cos(t pi/2) z0 + sin(t pi/2) z1, which keeps the latent's Gaussian
    norm (a straight line would pass through low-norm, blurry latents).
    """
    import torch

    from pairflow.data import PairedMNIST, resolve_root

    if args.steps < 2:
        raise UsageError(f"--steps must be >= 2, got {args.steps}")
    rows = max(1, min(args.n, 8))
    test = PairedMNIST(resolve_root(args.data_dir), train=False)
    gen = torch.Generator().manual_seed(args.seed)
    idx = torch.randperm(len(test), generator=gen)[: 2 * rows]
    x, y = test.get_batch(idx)
    device = model.device
    x = x.to(device)
    cond = y.to(device) if conditional else None
    with torch.no_grad():
        z = model.encode(x, cond=cond)
        z0, z1 = z[:rows], z[rows:]
        t = torch.linspace(0, 1, args.steps, device=device)
        shape = (1, args.steps) + (1,) * (z.dim() - 1)
        angle = (t * math.pi / 2).view(shape)
        path = torch.cos(angle) * z0.unsqueeze(1) + torch.sin(angle) * z1.unsqueeze(1)
        path = path.reshape(rows * args.steps, *z.shape[1:])
        c = None
        if conditional:  # the label goes from the start pair's to the end pair's halfway
            c = torch.where(t.view(1, -1) < 0.5, cond[:rows, None], cond[rows:, None]).reshape(-1)
        images = model.decode(path, cond=c).cpu()
    from pairflow.images import save_grid

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise UsageError(f"--interpolate writes a PNG; got --out {out}")
    save_grid(images, out, nrow=args.steps)
    print(f"wrote {rows} interpolations of {args.steps} steps to {out}")
    return 0
