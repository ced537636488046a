"""``pairflow train``: train a flow (or a VAE or GAN baseline) on MNIST digit pairs."""

from __future__ import annotations

import argparse
import json

from pairflow.cli import UsageError

# Flags map one-to-one onto TrainConfig fields; default None means "not given" so that a
# config file's value (or the checkpoint's, on --resume) is kept unless the flag is set.
_FLAGS = {
    "model": dict(help="flow (default), vae (ELBO bound) or gan (samples only): the baselines"),
    "preset": dict(
        choices=None,
        help="model preset: flow seed (MLP RealNVP) or multiscale (conv, default); vae conv; "
        "gan dcgan",
    ),
    "epochs": dict(type=int, help="epochs of 60,000 pairs (default 10)"),
    "batch_size": dict(type=int, help="pairs per optimiser step (default 64)"),
    "lr": dict(type=float, help="Adam learning rate (default 1e-3)"),
    "warmup_steps": dict(type=int, help="linear learning-rate warmup steps (default 200)"),
    "schedule": dict(help="learning rate after warmup: constant (default) or cosine"),
    "grad_clip": dict(type=float, help="gradient-norm clip (default 100)"),
    "max_steps": dict(type=int, help="stop after this many steps (tiny runs)"),
    "time_budget": dict(type=float, help="stop after this many minutes of training"),
    "num_pairs": dict(type=int, help="training pairs per epoch (default 60,000)"),
    "test_pairs": dict(type=int, help="fixed test pairs evaluated each epoch (default 10,000)"),
    "data_dir": dict(help="MNIST root holding MNIST/raw (default $PAIRFLOW_DATA or ./data)"),
    "out": dict(help="run folder (default runs/default)"),
    "device": dict(help="auto (default), cpu, cuda or cuda:N"),
    "precision": dict(
        help="conditioner arithmetic: fp32, bf16 or auto (default: bf16 where it is faster here: "
        "AMX CPUs, CUDA GPUs with bf16; measured once on AVX512-BF16 CPUs without AMX)"
    ),
    "seed": dict(type=int, help="seed of initialisation, pairing and noise (default 0)"),
    "threads": dict(
        type=int,
        help="torch CPU threads (default: torch's, one per core); on a shared machine also set "
        "OMP_WAIT_POLICY=PASSIVE",
    ),
    "sample_n": dict(type=int, help="samples in each epoch's grid (default 64)"),
    "sample_temperature": dict(type=float, help="temperature of those samples (default 0.7)"),
    "log_every": dict(type=int, help="steps between logged train metrics (default 20)"),
    "init_from": dict(
        metavar="RUN",
        help="start from the weights of this run folder or checkpoint (fine-tuning; a fresh "
        "optimiser and schedule). Parameters the new model adds, e.g. a label prior via --set "
        "conditioning=both, keep their initialisation",
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for name, kwargs in _FLAGS.items():
        kwargs = {k: v for k, v in kwargs.items() if k != "choices"}
        parser.add_argument("--" + name.replace("_", "-"), dest=name, default=None, **kwargs)
    parser.add_argument(
        "--conditional",
        action="store_true",
        default=None,
        help="train a class-conditional model (condition on the pair label)",
    )
    parser.add_argument(
        "--balanced",
        action="store_true",
        default=None,
        help="draw all 100 pair classes equally often (else natural pairing)",
    )
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the loss (slow first step; falls back to eager if compiling "
        "fails); default: auto, i.e. for multiscale runs long enough to pay it back",
    )
    parser.add_argument("--config", help="TOML/YAML/JSON file of settings; flags override it")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last.pt"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a model config field, e.g. --set hidden_channels=64",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _parse_overrides(items: list[str]) -> dict:
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pairflow.training import (
        CheckpointError,
        TrainingDiverged,
        load_checkpoint,
        load_config_file,
        merge_config,
        train,
    )

    flags = {name: getattr(args, name) for name in _FLAGS}
    flags["conditional"] = args.conditional
    flags["balanced"] = args.balanced
    flags["compile"] = args.compile
    if args.set:
        flags["model_overrides"] = _parse_overrides(args.set)
    try:
        base = load_config_file(args.config) if args.config else {}
        if args.resume:
            out = flags["out"] or base.get("out") or "runs/default"
            last = Path(out) / "last.pt"
            saved = load_checkpoint(last)["train_config"] if last.is_file() else None
            if saved is None:
                raise UsageError(f"--resume: no checkpoint {last}; train without --resume first")
            for key in ("model", "preset", "conditional"):
                asked = flags.get(key) if flags.get(key) is not None else base.get(key)
                if asked is not None and asked != saved.get(key):
                    raise UsageError(
                        f"--resume: {last} was trained with {key}={saved.get(key)!r}, "
                        f"not {asked!r}; use a new --out to train another model"
                    )
            base = {**saved, **base}
        config = merge_config(base, flags)
    except (ValueError, CheckpointError) as err:
        raise UsageError(str(err)) from err
    try:
        summary = train(config, resume=args.resume, progress=not args.no_progress)
    except TrainingDiverged as err:
        print(f"pairflow train: {err}")
        return 1
    except (FileNotFoundError, CheckpointError) as err:
        raise UsageError(str(err)) from err
    except ValueError as err:
        raise UsageError(str(err)) from err
    print(json.dumps(summary, indent=2))
    kept = "best.pt, last.pt" if (Path(summary["out"]) / "best.pt").is_file() else "last.pt"
    print(f"run folder: {summary['out']} (curves.png, samples/, metrics.jsonl, {kept})")
    return 0
