"""``pairflow evaluate``: test bits/dim of a flow and, with ``--samples N``, its sample metrics.

Without ``--samples`` it prints (and, for a run folder, writes ``RUN/eval_SPLIT.json``) the
bits/dim mean, standard error, pair count and time. A VAE's number is its negative ELBO, an
upper bound, written as ``bits_per_dim_bound``; a GAN has no likelihood and only
``--samples``. With ``--samples N`` it also draws N samples, judges them against N real
test pairs with the pair classifier of its dataset (:func:`pairflow.metrics.evaluate_samples`),
computes the same metrics for N real *training* pairs against the same test pairs (the
real-vs-real floor, cached in ``floor_nN_seedS.json`` beside the outputs) and writes a
Markdown report with the metric table, a sample grid and the training curves.

The data are the model's own dataset (``train_config.dataset``: MNIST pairs when the
checkpoint does not say); ``--dataset D`` scores D's pairs under the model instead, for the
out-of-distribution check (MNIST test pairs under a Fashion-MNIST flow). Sample metrics use
the classifier of the model's dataset (the shipped one, or ``--classifier FILE``) and the
report says which.

A class-mixture flow (``conditioning="mixture"``) needs no label: its ``bits_per_dim`` is the
exact unconditional one (log p(x), summed over the 100 labels), ``bits_per_dim_given_label``
the conditional one, ``classification`` the flow's own pair accuracy by Bayes (argmax
p(y | x)) beside the classifier's on the same pairs, and its samples are drawn without
labels (y ~ p(y)), so the sample metrics are unconditional ones. A flow with variational
dequantization reports ``bits_per_dim_bound`` and says which bound in ``bound``;
``--dequantization uniform`` scores the same flow's continuous density with uniform noise
instead, its exact bits/dim (RealNVP and Glow's convention), written to
``eval_SPLIT_uniform.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

from pairflow.cli import UsageError, seed_arg
from pairflow.commands._common import (
    GUIDANCE_HELP,
    add_model_arguments,
    add_threads_argument,
    apply_threads,
    check_guidance_arg,
    check_output_path,
    check_temperature,
    check_threads,
    data_usage_error,
    load_model_from_args,
)
from pairflow.options import DEFAULT_TEMPERATURE, LABEL_FREE_TEMPERATURE, DatasetName, choices

PRETRAINED_OUT = "runs/pretrained-{name}"  # --pretrained's default report folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--split", default="test", help="bits/dim on test (default) or train")
    parser.add_argument("--data-dir", help="data root (default $PAIRFLOW_DATA or ./data)")
    parser.add_argument(
        "--dataset",
        choices=choices(DatasetName),
        help="whose pairs to score (default: the dataset the model was trained on); another "
        "dataset of the same image shape gives the out-of-distribution bits/dim",
    )
    parser.add_argument(
        "--classifier",
        metavar="FILE",
        help="classifier checkpoint judging --samples (default: the shipped one of the "
        "model's dataset; `pairflow classifier train --dataset D` makes one)",
    )
    parser.add_argument("--num-pairs", type=int, help="bits/dim on only the first N pairs")
    parser.add_argument(
        "--draws",
        type=int,
        default=1,
        help="dequantisation (flow) or latent (VAE) draws averaged per pair (default 1)",
    )
    parser.add_argument(
        "--importance-samples",
        type=int,
        default=0,
        metavar="K",
        help="flows and VAEs: also the importance-weighted bound on the discrete bits/dim "
        "from K weights per pair (Burda et al. 2016; K passes per pair, so pair it with "
        "--num-pairs): tighter than the usual figure, exact as K grows; written to "
        "eval_SPLIT_iwK.json (default 0: off)",
    )
    parser.add_argument(
        "--dequantization",
        choices=("model", "uniform"),
        default="model",
        help="flows: the dequantization noise of the bits/dim: model (default: the flow's own; "
        "Flow++'s variational bound for a flow trained with variational dequantization) or "
        "uniform (u ~ U[0, 1): the exact likelihood of the flow's continuous density, "
        "RealNVP and Glow's convention, for any flow)",
    )
    parser.add_argument(
        "--marginal-pairs",
        type=int,
        default=0,
        metavar="N",
        help="conditional flows whose couplings read the label (or flows that read their own "
        "clusters): also the exact unconditional "
        "bits/dim, log p(x) summed over the labels (100 passes per pair; 10 per single "
        "image), and the flow's own accuracy by Bayes, on the first N pairs (default 0: off; "
        "a class mixture always reports them, from one pass)",
    )
    parser.add_argument(
        "--labels",
        choices=("even", "prior"),
        default="even",
        help="conditional models, --samples: the labels asked for: even (default: 00..99 in "
        "turn, for the per-pair accuracy) or prior (drawn from the model's p(label), the "
        "training pairs' frequencies: the label-free sampler, judged like an unconditional one)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=500,
        help="pairs per pass through the model and the classifier (default 500; lower it "
        "when memory is short, raise it on a GPU)",
    )
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
        default=None,
        help="sampling temperature for --samples (default: as pairflow sample, the model's "
        f"own where a sweep chose one, else {DEFAULT_TEMPERATURE}, and {LABEL_FREE_TEMPERATURE} "
        "for a conditional flow's label-free samples, --labels prior or a class mixture's; "
        "1.0 is the model's own distribution)",
    )
    parser.add_argument(
        "--guidance", type=float, metavar="W", help=f"--samples drawn with {GUIDANCE_HELP}"
    )
    parser.add_argument(
        "--seed", type=seed_arg, default=0, help="seed of the samples and of the floor (default 0)"
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars (they show only on a terminal anyway)",
    )
    add_threads_argument(parser)
    parser.add_argument(
        "--out",
        help="FILE.json, or a folder (gets eval_SPLIT.json, report.md, PNGs); default: the "
        f"run folder, {PRETRAINED_OUT.format(name='NAME')} for --pretrained NAME, "
        "eval_STEM/ beside a checkpoint file STEM.pt",
    )


def _outputs(args: argparse.Namespace) -> dict[str, Path] | None:
    """Where the JSON, report, sample grid, curves and floor cache go (None: print only),
    checked to be writable before anything is evaluated."""
    from pairflow.evaluation import EvaluationError, evaluation_outputs

    out = args.out
    if out is None:
        if args.run is not None and Path(args.run).is_dir():
            out = args.run
        elif args.pretrained is not None:
            out = PRETRAINED_OUT.format(name=args.pretrained)
        elif args.run is not None and Path(args.run).is_file():
            out = str(Path(args.run).with_name(f"eval_{Path(args.run).stem}"))
        else:
            return None  # load_model_from_args names what is wrong
        print(f"no --out given: writing the evaluation to {out}/", file=sys.stderr)
    try:
        outputs = evaluation_outputs(out, args.split, args.dequantization, args.importance_samples)
    except EvaluationError as err:
        raise UsageError(str(err)) from err
    # Every file goes into one folder: the JSON's (report, grid, curves, floor cache).
    check_output_path(outputs["json"], flag="--out" if args.out is not None else "output")
    return outputs


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    outputs = _outputs(args)  # checked before anything is loaded or evaluated
    apply_threads(args.threads)
    from pairflow.data import resolve_root
    from pairflow.evaluation import EvaluationError, EvaluationOptions, evaluate_model
    from pairflow.progress import bars

    model, state, source = load_model_from_args(args)
    if args.labels == "prior" and not getattr(getattr(model, "config", None), "conditional", False):
        raise UsageError(
            f"--labels prior draws the labels a conditional model is given; {source} is "
            "unconditional (its samples never read a label): leave --labels out"
        )
    root = resolve_root(args.data_dir)
    options = EvaluationOptions(
        **{f.name: getattr(args, f.name) for f in fields(EvaluationOptions)}
    )
    # Bars for bits/dim, sampling, features and the floor: on a terminal, unless --no-progress.
    progress = bars(enabled=False if args.no_progress else None)
    try:
        report = evaluate_model(model, state, source, root, options, outputs, progress)
    except EvaluationError as err:
        # A missing data file: the library's advice, in this command's flags.
        raise data_usage_error(err.__cause__ or err, root) from err
    _print_and_write(report, args, outputs)
    return 0


def _check_args(args: argparse.Namespace) -> None:
    if args.split not in ("test", "train"):
        raise UsageError(f"unknown --split {args.split!r}; valid: test, train")
    if args.draws < 1 or args.batch_size < 1:
        raise UsageError("--draws and --batch-size must be >= 1")
    if args.importance_samples < 0:
        raise UsageError(
            f"--importance-samples must be a number of weights per pair >= 1 (or 0: off), "
            f"got {args.importance_samples}"
        )
    if args.marginal_pairs < 0:
        raise UsageError(f"--marginal-pairs must be >= 0, got {args.marginal_pairs}")
    if args.num_pairs is not None and args.num_pairs < 1:
        raise UsageError(f"--num-pairs must be >= 1, got {args.num_pairs}")
    if args.samples < 0:
        raise UsageError(
            f"--samples must be a number of samples >= 1 (or 0 for bits/dim only), "
            f"got {args.samples}"
        )
    if args.labels == "prior" and not args.samples:
        raise UsageError(
            "--labels prior chooses the labels of the samples: add --samples N (bits/dim is "
            "given each test pair's own label)"
        )
    check_temperature(args.temperature)
    check_guidance_arg(args.guidance)
    if args.guidance is not None and not args.samples:
        raise UsageError(
            f"--guidance {args.guidance:g} is of the samples: add --samples N (bits/dim is the "
            "conditional model's, whatever the guidance)"
        )
    check_threads(args.threads)


def _print_and_write(report: dict, args: argparse.Namespace, outputs: dict | None) -> None:
    from pairflow.evaluation import summary_line, write_evaluation

    shown = report
    if "samples" in report:  # stdout skips the 100 per-pair accuracies (the file has them)
        samples = {k: v for k, v in report["samples"].items() if not k.endswith("_per_pair")}
        shown = {**report, "samples": samples}
    print(summary_line(report), file=sys.stderr, flush=True)  # for people; stdout stays JSON
    print(json.dumps(shown, indent=2))
    if outputs is None:
        return
    run_dir = None  # whose training curves the report shows
    if args.run is not None:
        run_dir = Path(args.run) if Path(args.run).is_dir() else Path(args.run).parent
    try:
        written = write_evaluation(report, outputs, run_dir)
    except OSError as err:
        raise UsageError(f"--out {outputs['json']}: could not write ({err})") from err
    for path in written:
        print(f"wrote {path}")
