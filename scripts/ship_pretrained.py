"""Export trained runs into the package's shipped weights and record their measured numbers.

Usage:
    python scripts/ship_pretrained.py --data-dir ../shared/data \
        multiscale=runs/ms:fp16 multiscale-cond=runs/ms-cond:fp16 seed=runs/seed:int8

For each NAME=RUN:DTYPE it writes src/pairflow/weights/NAME.pt (weights-only, DTYPE storage),
evaluates the exported file's test bits/dim on the 10,000 fixed test pairs (in fp32 unless
--precision says otherwise, so the figure is the one every CPU reproduces), and records it in
src/pairflow/weights/index.json together with the run's training configuration, and its
SHA-256 in src/pairflow/weights/sha256.json (pairflow refuses a shipped file that does not
match it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pairflow.data import PairedDataset, resolve_root
from pairflow.evaluation import evaluate_bpd
from pairflow.loading import load_trained
from pairflow.options import PRECISIONS
from pairflow.pretrained import CHECKSUMS, WEIGHTS_DIR, file_sha256, recorded_sha256
from pairflow.training.checkpoint import load_checkpoint
from pairflow.training.export import export_checkpoint
from pairflow.utils import atomic_write_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("specs", nargs="+", metavar="NAME=RUN:DTYPE")
    parser.add_argument("--data-dir")
    parser.add_argument(
        "--precision", default="fp32", choices=[*PRECISIONS, "saved"],
        help="the networks' arithmetic for the recorded bits/dim (default fp32)",
    )  # fmt: skip
    args = parser.parse_args()
    root = resolve_root(args.data_dir)
    index_path = WEIGHTS_DIR / "index.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    checksums = recorded_sha256()
    for spec in args.specs:
        name, _, rest = spec.partition("=")
        run, _, dtype = rest.rpartition(":")
        out = WEIGHTS_DIR / f"{name}.pt"
        source = load_checkpoint(run)
        source_train = source.get("train_config") or {}
        dataset = source_train.get("dataset", "mnist")
        counts = None
        if "label_probs" in source:  # predates p(label): the training pairs' label counts
            counts = PairedDataset(
                dataset, root, train=True, seed=source_train.get("seed", 0),
                balanced=bool(source_train.get("balanced")),
            ).pair_label_counts()  # fmt: skip
        export_checkpoint(run, out, dtype=dtype, label_counts=counts, name=name)
        loaded = load_trained(out, precision=args.precision, shipped=False)
        model, state = loaded.model, loaded.state
        checksums[out.name] = file_sha256(out)
        conditional = bool(state["model_config"].get("conditional", False))
        test = PairedDataset(dataset, root, train=False)
        result = evaluate_bpd(model, test, conditional=conditional)
        # A flow trained on noisy data scores noisy data; its clean-data figure goes beside it.
        noise = _noise_of(state["model_config"])
        clean = None
        if noise:
            uniform = model.with_uniform_dequantization()  # the same weights, uniform noise
            clean = evaluate_bpd(uniform, test, conditional=conditional)
        train_config = dict(state.get("train_config") or {})
        if train_config.get("init_from"):  # a local path: keep only the run's folder name
            origin = Path(train_config["init_from"])
            if origin.parent == WEIGHTS_DIR:  # a shipped model: its name
                train_config["init_from"] = f"{origin.stem} (the one shipped before this run)"
            else:
                train_config["init_from"] = (
                    origin.parent if origin.suffix == ".pt" else origin
                ).name
        index[name] = {
            "file": out.name,
            "preset": state["model_config"].get("preset"),
            "conditional": conditional,
            "dataset": dataset,
            "test_bpd": round(result["bpd"], 4),
            "test_bpd_stderr": round(result["bpd_stderr"], 4),
            "test_pairs": result["num_pairs"],
            "test_bpd_precision": model.precision,
            # Variational dequantization: the number is Flow++'s bound, shown as such everywhere.
            "test_bpd_is_bound": bool(model.bits_per_dim_is_bound),
            "weights": dtype,
            "megabytes": round(out.stat().st_size / 1e6, 2),
            "step": state.get("step"),
            "train_config": {
                k: train_config.get(k)
                for k in ("preset", "conditional", "batch_size", "lr", "warmup_steps",
                          "schedule", "precision", "time_budget", "epochs", "seed",
                          "init_from", "dataset", "ema_decay", "model_overrides")
            },
            "conditioning": state["model_config"].get("conditioning") if conditional else None,
        }  # fmt: skip
        if model.bits_per_dim_is_bound:  # what it is a bound over, in words (card, app)
            index[name]["test_bpd_bound_over"] = list(model.bound_over)
        if noise:
            index[name].update({
                "test_bpd_noise": noise,
                "test_bpd_clean": round(clean["bpd"], 4),
                "test_bpd_clean_stderr": round(clean["bpd_stderr"], 4),
            })  # fmt: skip
        print(name, json.dumps(index[name]))
    atomic_write_text(index_path, json.dumps(index, indent=2, sort_keys=True) + "\n")
    checksums_text = json.dumps(checksums, indent=2, sort_keys=True) + "\n"
    atomic_write_text(WEIGHTS_DIR / CHECKSUMS, checksums_text)


def _noise_of(config: dict) -> str | None:
    """The noise a flow was trained on, in words, or None (trained on dequantized data only).

    Example:
        >>> _noise_of({"dequantization": "gaussian", "noise_sigma": 0.1})
        "Gaussian noise, sigma 0.1, in the data's space"
        >>> _noise_of({"dequantization": "uniform", "noise_sigma": 0.2})
        'Gaussian noise, sigma 0.2, in logit space'
        >>> _noise_of({"dequantization": "variational"}) is None
        True
    """
    sigma = float(config.get("noise_sigma") or 0.0)
    if config.get("dequantization") == "gaussian":
        return f"Gaussian noise, sigma {sigma:g}, in the data's space"
    if sigma > 0:
        return f"Gaussian noise, sigma {sigma:g}, in logit space"
    return None


if __name__ == "__main__":
    main()
