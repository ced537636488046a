"""``pairflow classifier train|eval``: the digit-pair classifier that judges samples.

``train`` fits :class:`pairflow.classifier.PairClassifier` on real training pairs of one
dataset (``--dataset``, MNIST by default) and writes a checkpoint (the shipped
``pairflow/weights/classifier*.pt`` are made this way); ``eval`` prints its digit and pair
accuracy on real test pairs of the dataset it was trained on.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import time

from pairflow.cli import UsageError, seed_arg
from pairflow.commands._common import add_dataset_arguments, data_usage_error


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    train = actions.add_parser(
        "train",
        help="train a classifier on real training pairs (--dataset, default MNIST)",
        description="Train the pair classifier on real training pairs of --dataset, then print "
        "its accuracy on the test pairs and write the checkpoint.",
    )
    train.add_argument("--data-dir", help="data root (default $PAIRFLOW_DATA or ./data)")
    add_dataset_arguments(train, layout=False)
    train.add_argument("--out", required=True, help="checkpoint file to write (.pt)")
    train.add_argument("--epochs", type=int, default=1, help="passes over the pairs (default 1)")
    train.add_argument("--seed", type=seed_arg, default=0, help="seed of weights, pairs, order (0)")
    train.add_argument(
        "--num-pairs",
        type=int,
        help="training pairs per epoch (default: as many as training digits, 60,000)",
    )
    train.add_argument("--batch-size", type=int, default=128, help="pairs per step (128)")
    train.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (3e-3)")
    train.add_argument(
        "--max-shift", type=int, default=2, help="random shift in pixels per half (2; 0 = off)"
    )
    train.add_argument("--eval-pairs", type=int, help="test pairs to score (default all)")
    train.add_argument("--device", default="cpu", help="cpu (default), auto, cuda or cuda:N")
    train.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: torch's, one per core); on a shared machine also set "
        "OMP_WAIT_POLICY=PASSIVE",
    )

    evaluate = actions.add_parser(
        "eval",
        help="print a classifier's accuracy on real test pairs",
        description="Print a classifier's digit and pair accuracy on real test pairs of the "
        "dataset it was trained on.",
    )
    evaluate.add_argument(
        "--weights", help="checkpoint (default: the shipped pairflow/weights/classifier.pt)"
    )
    evaluate.add_argument("--data-dir", help="data root (default $PAIRFLOW_DATA or ./data)")
    evaluate.add_argument(
        "--dataset",
        help="whose shipped classifier to score when --weights is not given (default mnist); "
        "a checkpoint is scored on the dataset it was trained on",
    )
    evaluate.add_argument("--num-pairs", type=int, help="test pairs to score (default all)")
    evaluate.add_argument("--seed", type=seed_arg, default=0, help="pairing seed of the test pairs")
    evaluate.add_argument("--json", action="store_true", help="print the result as JSON")
    evaluate.add_argument("--device", default="cpu", help="cpu (default), auto, cuda or cuda:N")


def _positive(name: str, value: int | float | None) -> None:
    if value is not None and value <= 0:
        raise UsageError(f"{name} must be positive, got {value}")


def _device(name: str):
    from pairflow.utils import resolve_device

    try:
        return resolve_device(name)
    except ValueError as err:
        raise UsageError(str(err)) from err


def run(args: argparse.Namespace) -> int:
    if args.action is None:
        raise UsageError("choose an action: `pairflow classifier train` or `... eval`")
    return _train(args) if args.action == "train" else _eval(args)


def _train(args: argparse.Namespace) -> int:
    import torch

    from pairflow.classifier import evaluate_classifier, save_classifier, train_classifier
    from pairflow.data import resolve_root

    for name in ("epochs", "num_pairs", "batch_size", "lr", "eval_pairs"):
        _positive(f"--{name.replace('_', '-')}", getattr(args, name))
    if args.max_shift < 0 or args.max_shift > 8:
        raise UsageError(f"--max-shift must be in 0..8 pixels, got {args.max_shift}")
    _positive("--threads", args.threads)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = _device(args.device)
    root = resolve_root(args.data_dir)
    start = time.perf_counter()
    try:
        model = train_classifier(
            root,
            epochs=args.epochs,
            seed=args.seed,
            num_pairs=args.num_pairs,
            batch_size=args.batch_size,
            lr=args.lr,
            max_shift=args.max_shift,
            device=device,
            dataset=args.dataset,
        )
        seconds = time.perf_counter() - start
        acc = evaluate_classifier(model, root, num_pairs=args.eval_pairs)
    except (FileNotFoundError, ValueError) as err:
        raise data_usage_error(err, root) from err
    meta = {
        **acc,
        "train_seconds": round(seconds, 1),
        "command": _effective_command(args, root),
        "dataset": args.dataset,
        "epochs": args.epochs,
        "seed": args.seed,
        "torch": str(torch.__version__),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
    }
    path = save_classifier(model, args.out, **meta)
    print(
        f"digit accuracy {100 * acc['digit_accuracy']:.2f}% "
        f"(pairs {100 * acc['pair_accuracy']:.2f}%) on {acc['num_pairs']} test pairs; "
        f"trained in {seconds:.0f}s; wrote {path}"
    )
    return 0


def _effective_command(args: argparse.Namespace, root) -> str:
    """The train command with every setting spelled out, to reproduce the checkpoint."""
    argv = ["pairflow", "classifier", "train", "--dataset", args.dataset]
    argv += ["--data-dir", str(root), "--out", str(args.out)]
    for name in ("epochs", "seed", "num_pairs", "batch_size", "lr", "max_shift", "eval_pairs"):
        value = getattr(args, name)
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    return shlex.join(argv)


def _eval(args: argparse.Namespace) -> int:
    from pairflow.classifier import evaluate_classifier, load_classifier
    from pairflow.data import resolve_root
    from pairflow.data.datasets import get_dataset

    _positive("--num-pairs", args.num_pairs)
    try:
        dataset = get_dataset(args.dataset or "mnist").name
        model = load_classifier(args.weights, device=_device(args.device), dataset=dataset)
        if args.dataset and model.config.dataset != dataset:
            raise ValueError(
                f"{args.weights} was trained on {model.config.dataset}, not {dataset}: it is "
                f"scored on the dataset it was trained on (drop --dataset)"
            )
        acc = evaluate_classifier(
            model, resolve_root(args.data_dir), num_pairs=args.num_pairs, seed=args.seed
        )
    except (FileNotFoundError, ValueError) as err:
        raise data_usage_error(err, resolve_root(args.data_dir)) from err
    if args.json:
        print(
            json.dumps(
                {"weights": args.weights or "shipped", "dataset": model.config.dataset, **acc}
            )
        )
    else:
        print(
            f"digit accuracy {100 * acc['digit_accuracy']:.2f}% "
            f"(pairs {100 * acc['pair_accuracy']:.2f}%) on {acc['num_pairs']} test pairs"
        )
    return 0
