"""Likelihood out of distribution: test bits/dim of each dataset's pairs under each flow.

Nalisnick et al. (2019, "Do deep generative models know what they don't know?") report that
flows trained on Fashion-MNIST give MNIST test images a *higher* likelihood (fewer bits/dim)
than Fashion-MNIST's own test images. This scores the test pairs of both datasets under both
models and prints JSON (mean, standard error, per-model and per-dataset), and writes a
histogram of the per-pair bits/dim.

    PYTHONPATH=src python benchmarks/ood_bpd.py --data-dir ../shared/data \
        --model mnist=pretrained:multiscale --model fashion-mnist=runs/fashion \
        --num-pairs 2000 --threads 1 --figure ood_bpd.png

Each ``--model DATASET=SOURCE`` names the dataset the model was trained on and where it is
(a run folder, a checkpoint, or ``pretrained:NAME``).
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import time

import torch


def _load(source: str):
    from pairflow.loading import load_trained

    shipped = source.startswith("pretrained:")
    name = source.split(":", 1)[1] if shipped else source
    return load_trained(name, precision="saved", shipped=shipped).model  # as it was trained


@torch.no_grad()
def per_pair_bpd(model, images: torch.Tensor, batch_size: int, seed: int = 1234) -> torch.Tensor:
    """Bits/dim of each pair (one dequantisation draw each, a fixed noise seed)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.cat(
        [model.bits_per_dim(b, generator=generator).double() for b in images.split(batch_size)]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--model", action="append", required=True, metavar="DATASET=SOURCE")
    parser.add_argument("--num-pairs", type=int, default=2000, help="test pairs per dataset")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--figure", help="PNG of the per-pair bits/dim histograms")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from pairflow.data import PairedDataset

    models = dict(item.split("=", 1) for item in args.model)
    data = {
        name: PairedDataset(name, args.data_dir, train=False, num_pairs=args.num_pairs)
        for name in models
    }
    images = {name: ds.get_batch(torch.arange(len(ds)))[0] for name, ds in data.items()}
    results: dict = {"num_pairs": args.num_pairs, "models": {}}
    scores: dict[tuple[str, str], torch.Tensor] = {}
    for trained_on, source in models.items():
        model = _load(source)
        row = {"source": source}
        for name, x in images.items():
            start = time.perf_counter()
            bpd = per_pair_bpd(model, x, args.batch_size)
            scores[trained_on, name] = bpd
            row[name] = {
                "bpd": float(bpd.mean()),
                "bpd_stderr": float(bpd.std() / len(bpd) ** 0.5),
                "fraction_below_own_median": None,
                "seconds": round(time.perf_counter() - start, 1),
            }
        own = scores[trained_on, trained_on].median()
        for name in images:
            row[name]["fraction_below_own_median"] = float(
                (scores[trained_on, name] < own).double().mean()
            )
        results["models"][trained_on] = row
    results["threads"] = args.threads
    results["torch"] = torch.__version__
    results["cpu"] = torch.backends.cpu.get_cpu_capability() + f", {platform.machine()}"
    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from pairflow.utils import atomic_write_bytes

        fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.6), dpi=100)
        axes = [axes] if len(models) == 1 else list(axes)
        for ax, trained_on in zip(axes, models, strict=True):
            for name in images:
                values = scores[trained_on, name].numpy()
                label = f"{name} test pairs (mean {values.mean():.3f})"
                ax.hist(values, bins=60, alpha=0.55, label=label, density=True)
            ax.set_title(f"flow trained on {trained_on}")
            ax.set_xlabel("bits / dim (per pair)")
            ax.legend(fontsize=8)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        plt.close(fig)
        atomic_write_bytes(args.figure, buffer.getvalue())
        results["figure"] = args.figure
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
