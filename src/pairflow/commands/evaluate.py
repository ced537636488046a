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
import math
import sys
import time
from pathlib import Path
from typing import Any

from pairflow.cli import UsageError, seed_arg
from pairflow.commands._common import (
    add_model_arguments,
    check_temperature,
    data_usage_error,
    dataset_of,
    load_model_from_args,
)
from pairflow.models import has_label_mixture
from pairflow.options import (
    DEFAULT_TEMPERATURE,
    LABEL_FREE_TEMPERATURE,
    default_temperature,
)

PRETRAINED_OUT = "runs/pretrained-{name}"  # --pretrained's default report folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--split", default="test", help="bits/dim on test (default) or train")
    parser.add_argument("--data-dir", help="data root (default $PAIRFLOW_DATA or ./data)")
    parser.add_argument(
        "--dataset",
        choices=("mnist", "fashion-mnist", "cifar10"),
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
        help="conditional flows whose couplings read the label: also the exact unconditional "
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
    parser.add_argument("--batch-size", type=int, default=500)
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
        help=f"sampling temperature for --samples (default {DEFAULT_TEMPERATURE}, as pairflow "
        f"sample; {LABEL_FREE_TEMPERATURE} for a conditional flow's label-free samples, "
        "--labels prior or a class mixture's; 1.0 is the model's own distribution)",
    )
    parser.add_argument(
        "--seed", type=seed_arg, default=0, help="seed of the samples and of the floor (default 0)"
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars (they show only on a terminal anyway)",
    )
    parser.add_argument(
        "--out",
        help="FILE.json, or a folder (gets eval_SPLIT.json, report.md, PNGs); default: the "
        f"run folder, {PRETRAINED_OUT.format(name='NAME')} for --pretrained NAME, "
        "eval_STEM/ beside a checkpoint file STEM.pt",
    )


def _outputs(args: argparse.Namespace) -> dict[str, Path] | None:
    """Where the JSON, report, sample grid, curves and floor cache go (None: print only)."""
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
    out = Path(out)
    if out.suffix.lower() == ".json":
        stem = out.stem
        return {
            "json": out,
            "dir": out.parent,
            "report": out.with_suffix(".md"),
            "grid": out.with_name(f"{stem}_samples.png"),
            "curves": out.with_name(f"{stem}_curves.png"),
        }
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give FILE.json or a folder")
    uniform = "_uniform" if args.dequantization == "uniform" else ""  # beside the bound's
    iw = f"_iw{args.importance_samples}" if args.importance_samples else ""
    return {
        "json": out / f"eval_{args.split}{uniform}{iw}.json",
        "dir": out,
        "report": out / "report.md",
        "grid": out / "report_samples.png",
        "curves": out / "report_curves.png",
    }


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    outputs = _outputs(args)
    from pairflow.data import resolve_root
    from pairflow.models import kind_spec
    from pairflow.progress import bars

    # Bars for bits/dim, sampling, features and the floor: on a terminal, unless --no-progress.
    args.progress = bars(enabled=False if args.no_progress else None)

    model, state, source = load_model_from_args(args)
    kind = state.get("kind", "flow")
    spec = kind_spec(kind)
    if spec.likelihood is None and not args.samples:
        raise UsageError(
            f"{source} is a {kind} model: it has no likelihood, so no bits/dim to evaluate; "
            "use --samples N for its sample metrics"
        )
    if args.importance_samples and spec.likelihood is None:
        raise UsageError(
            f"--importance-samples bounds a likelihood; {source} is a {kind} model, which has none"
        )
    if args.dequantization == "uniform":
        if kind != "flow":
            raise UsageError(
                f"--dequantization uniform scores a flow's exact likelihood; {source} is a "
                f"{kind} model"
            )
        model = model.with_uniform_dequantization()  # shares the trained weights
    root = resolve_root(args.data_dir)
    conditional = bool(state["model_config"].get("conditional", False))
    trained_on, layout = dataset_of(state)
    data = _check_dataset(args, state, source, trained_on, layout)
    mixture = has_label_mixture(model)
    report: dict[str, Any] = {
        "source": str(source),
        "kind": kind,
        "preset": state["model_config"].get("preset"),
        "conditional": conditional,
        **({"class_mixture": True} if mixture else {}),
        # A label-free mixture prior (prior="mixture"): samples draw a component first.
        **({"mixture_prior": True} if state["model_config"].get("prior") == "mixture" else {}),
        "params": sum(p.numel() for p in model.parameters()),
        "precision": model.precision,  # of the networks in this evaluation (--precision)
        "trained_on": trained_on,
        "dataset": data,
        "layout": layout,
        "split": args.split,
    }
    if kind == "flow":
        report["dequantization"] = model.config.dequantization
        if args.dequantization == "uniform" and state["model_config"].get("dequantization") == (
            "variational"
        ):
            report["dequantization"] += (
                " (asked for: a flow trained with variational dequantization, scored by the "
                "exact likelihood of its continuous density)"
            )
    start = time.perf_counter()
    # A bound: a VAE's negative ELBO, or a flow's with variational dequantization.
    bound = spec.likelihood is not None and model.bits_per_dim_is_bound  # LikelihoodModel
    if spec.likelihood is not None and mixture:
        report.update(_mixture_bits_per_dim(model, bound, args, root, data, layout))
    elif spec.likelihood is not None:
        report.update(
            _bits_per_dim(model, bound, args, root, conditional, data, layout, kind == "flow")
        )
        if conditional and kind == "flow":
            report.update(_label_free(model, bound, args, root, data, layout, report, state))
    if args.importance_samples:
        given_label = conditional and not mixture  # a class mixture's figure is label-free
        report["importance_weighted"] = _importance_weighted(
            model, args, root, data, layout, given_label
        )
    sigma = getattr(model.config, "noise_sigma", 0.0) if kind == "flow" else 0.0
    if sigma:  # TarFlow's noise augmentation: the density is of noisy data
        report["noise_sigma"] = sigma
        report["likelihood_of"] = (
            f"noise-augmented data (logit-space image + N(0, {sigma:g}^2)): not comparable "
            "with the bits/dim of models trained without noise"
        )
    if spec.likelihood is not None and bound and kind == "flow":
        report["bound"] = "variational dequantization (Flow++): -E_q[log p(x+u) - log q(u|x)]"
    report["seconds"] = time.perf_counter() - start
    report["step"] = state.get("step")
    if args.samples:
        # A class mixture samples without labels: its sample metrics are unconditional.
        sampled_conditional = conditional and not mixture
        if args.temperature is None:  # labels drawn from the flow's own p(y): label-free
            label_free = conditional and kind == "flow" and (mixture or args.labels == "prior")
            args.temperature = default_temperature(label_free)
        report.update(_samples(model, sampled_conditional, args, root, outputs, trained_on))
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
    check_temperature(args.temperature)


def _check_dataset(args, state: dict, source, trained_on: str, layout: str) -> str:
    """The dataset to score (``--dataset``, else the model's): of the model's image shape."""
    from pairflow.data import get_dataset

    name = args.dataset or trained_on
    config = state["model_config"]
    model_shape = (config.get("channels", 1), config.get("height", 28), config.get("width", 56))
    data_shape = get_dataset(name).image_shape(layout)
    if model_shape != data_shape:
        raise UsageError(
            f"{source} models {'x'.join(map(str, model_shape))} images ({trained_on}, {layout}); "
            f"{name} {layout}s are {'x'.join(map(str, data_shape))}: only a dataset of the same "
            "shape can be scored under it"
        )
    if args.samples and name != trained_on:
        raise UsageError(
            f"--samples judges the model against its own dataset ({trained_on}); drop "
            f"--dataset {name}, which is for the bits/dim of other data"
        )
    if args.samples and layout != "pair":
        raise UsageError(
            "--samples judges pairs with the pair classifier; this model draws single images "
            "(layout single): use its bits/dim, or train a pair model"
        )
    return name


def _dataset(args, root: Path, data: str, layout: str):
    from pairflow.data import PairedDataset

    try:
        return PairedDataset(
            data, root, train=args.split == "train", num_pairs=args.num_pairs, layout=layout
        )
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(str(err)) from err


_ACCURACY = {
    "pair": "fraction of pairs with both digits read right; flow: argmax p(y | x)",
    "single": "fraction of images whose class the flow reads right: argmax p(y | x)",
}


def _marginal(model, name: str, args, dataset, data: str, layout: str, progress=None):
    """evaluate_mixture on ``dataset``: (its bits/dim fields, the classification block)."""
    from pairflow.evaluation import classifier_accuracy, evaluate_mixture

    result = evaluate_mixture(
        model, dataset, batch_size=args.batch_size, device=model.device,
        draws=args.draws, progress=progress,
    )  # fmt: skip
    accuracy = None
    if layout == "pair":
        accuracy = classifier_accuracy(
            dataset, model.device, args.batch_size, path=args.classifier, name=data
        )
    fields = {
        name: result["bpd"],
        f"{name}_stderr": result["bpd_stderr"],
        f"{name}_given_label": result["bpd_given_label"],
        f"{name}_given_label_stderr": result["bpd_given_label_stderr"],
        "num_pairs": result["num_pairs"],
    }
    classification = {
        "flow_accuracy": result["accuracy"],
        "classifier_accuracy": accuracy,
        "num_pairs": result["num_pairs"],
        "what": _ACCURACY[layout],
    }
    return fields, classification, result


def _mixture_bits_per_dim(
    model, bound: bool, args, root: Path, data: str, layout: str
) -> dict[str, Any]:
    """A class-mixture flow's fields, from one pass per draw: unconditional bits/dim, bits/dim
    given the label, and its pair classification beside the classifier's."""
    name = "bits_per_dim_bound" if bound else "bits_per_dim"  # variational dequantization
    dataset = _dataset(args, root, data, layout)
    fields, classification, result = _marginal(model, name, args, dataset, data, layout)
    return {**fields, "dequantization_draws": result["draws"], "classification": classification}


def _label_free(
    model, bound: bool, args, root: Path, data: str, layout: str, report: dict, state: dict
) -> dict[str, Any]:
    """A conditional flow (couplings reading the label) as a model of p(x) alone.

    Always: the upper bound -log p(x) <= -log p(y) - log p(x | y) for the true label y, on
    every pair (free: the given-label bits/dim plus the labels' mean -log2 p(y) over D).
    With ``--marginal-pairs N``: the exact log p(x) = logsumexp_y [log p(y) + log p(x | y)]
    on the first N pairs (100 passes each) and the flow's pair accuracy by Bayes.
    """
    import torch

    name = "bits_per_dim_bound" if bound else "bits_per_dim"
    dataset = _dataset(args, root, data, layout)
    _, labels = dataset.get_batch(torch.arange(len(dataset)))
    log_p = model.log_label_probs().double().cpu()[labels]  # (N,) nats
    d = model.config.num_dims
    label_bits = (-log_p / math.log(2) / d).mean().item()
    fields: dict[str, Any] = {
        "unconditional": {
            f"{name}_upper_bound": report[name] + label_bits,
            "what": "-log p(x) <= -log p(y) - log p(x | y) for the true label y, on the same "
            "pairs: the given-label bits/dim plus E[-log2 p(y)] / D",
            "label_prior": state.get("label_probs", "the training pairs' label frequencies"),
        }
    }
    if args.marginal_pairs:
        n = min(args.marginal_pairs, args.num_pairs or args.marginal_pairs)
        args_n = argparse.Namespace(**{**vars(args), "num_pairs": n})
        subset = _dataset(args_n, root, data, layout)
        marginal, classification, result = _marginal(
            model, name, args, subset, data, layout, progress=args.progress
        )
        fields["unconditional"].update(
            {**marginal, "label_passes": result["label_passes"], "seconds": result["seconds"]}
        )
        fields["classification"] = classification
    return fields


def _bits_per_dim(
    model,
    bound: bool,
    args,
    root: Path,
    conditional: bool,
    data: str,
    layout: str,
    flow: bool = True,
) -> dict[str, Any]:
    """The report's bits/dim fields: exact (flows) or a bound (``bound``: the negative ELBO
    of a VAE, or of a flow with variational dequantization)."""
    from pairflow.data import PairedDataset
    from pairflow.evaluation import evaluate_bpd

    try:
        dataset = PairedDataset(
            data, root, train=args.split == "train", num_pairs=args.num_pairs, layout=layout
        )
    except (FileNotFoundError, ValueError) as err:
        raise data_usage_error(err, root) from err
    result = evaluate_bpd(
        model,
        dataset,
        batch_size=args.batch_size,
        device=model.device,
        draws=args.draws,
        conditional=conditional,
        progress=args.progress,
    )
    name = "bits_per_dim_bound" if bound else "bits_per_dim"
    # A VAE's bound averages latent draws; a flow's (variational dequantization) noise draws.
    draws = "latent_draws" if bound and not flow else "dequantization_draws"
    return {
        name: result["bpd"],
        f"{name}_stderr": result["bpd_stderr"],
        "num_pairs": result["num_pairs"],
        draws: result["draws"],
    }


def _importance_weighted(
    model, args, root: Path, data: str, layout: str, given_label: bool
) -> dict[str, Any]:
    """The K-sample importance-weighted bound on the discrete bits/dim, beside the usual
    bound averaged over the same K draws (:func:`evaluate_importance_weighted`)."""
    from pairflow.evaluation import evaluate_importance_weighted

    result = evaluate_importance_weighted(
        model, _dataset(args, root, data, layout), args.importance_samples,
        batch_size=args.batch_size, device=model.device, conditional=given_label,
        progress=args.progress,
    )  # fmt: skip
    return {
        "bits_per_dim_bound": result["bpd"],
        "bits_per_dim_bound_stderr": result["bpd_stderr"],
        "mean_of_draws": result["bpd_mean_draws"],
        "mean_of_draws_stderr": result["bpd_mean_draws_stderr"],
        "samples": result["samples"],
        "num_pairs": result["num_pairs"],
        "given_label": given_label,
        "seconds": result["seconds"],
        "what": "-log2((1/K) sum_k w_k) / D, with K importance weights w_k of unbiased "
        "estimate E[w] = P(x), the probability of the 256-level pixels (dequantization noise "
        "for a flow, latents for a VAE; Burda et al. 2016): an upper bound on the discrete "
        "model's bits/dim, tighter than mean_of_draws (the usual figure on the same draws) "
        "and exact as K grows",
    }


def _samples(
    model, conditional: bool, args, root: Path, outputs: dict, dataset: str
) -> dict[str, Any]:
    from pairflow.evaluation import sample_metrics

    try:
        return sample_metrics(
            model,
            conditional,
            args.samples,
            root,
            outputs["grid"],
            outputs["dir"],
            temperature=args.temperature,
            seed=args.seed,
            batch_size=args.batch_size,
            json_dir=outputs["json"].parent,
            dataset=dataset,
            classifier_path=args.classifier,
            progress=args.progress,
            labels_from=args.labels,
        )
    except (FileNotFoundError, ValueError) as err:
        raise data_usage_error(err, root) from err


def _print_and_write(report: dict, args: argparse.Namespace, outputs: dict | None) -> None:
    shown = report
    if "samples" in report:  # stdout skips the 100 per-pair accuracies (the file has them)
        samples = {k: v for k, v in report["samples"].items() if not k.endswith("_per_pair")}
        shown = {**report, "samples": samples}
    print(summary_line(report), file=sys.stderr, flush=True)  # for people; stdout stays JSON
    print(json.dumps(shown, indent=2))
    if outputs is None:
        return
    from pairflow.evaluation import report_markdown
    from pairflow.utils import atomic_write_text

    atomic_write_text(outputs["json"], json.dumps(report, indent=2) + "\n")
    print(f"wrote {outputs['json']}")
    if args.samples:
        text = report_markdown(report, outputs, _curves(args, outputs))
        atomic_write_text(outputs["report"], text)
        print(f"wrote {outputs['report']}")


def summary_line(report: dict) -> str:
    """One line for people, before the JSON: what was measured, the headline numbers beside
    their floors, and the time."""
    from pairflow.evaluation import format_number

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
            f"{s['num_samples']:,} samples at T={s['temperature']:g}: FD "
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


def _curves(args: argparse.Namespace, outputs: dict[str, Path]) -> Path | None:
    """The training curves PNG for the report: the run's own, or plotted from metrics.jsonl."""
    if args.run is None:
        return None
    run_dir = Path(args.run) if Path(args.run).is_dir() else Path(args.run).parent
    own = run_dir / "curves.png"
    if own.is_file() and outputs["dir"].resolve() == run_dir.resolve():
        return own
    log = run_dir / "metrics.jsonl"
    if log.is_file():
        from pairflow.training.logger import read_metrics
        from pairflow.training.plots import plot_curves

        try:
            records = read_metrics(log)
        except ValueError as err:  # the evaluation is done: report it, without these curves
            print(f"pairflow evaluate: warning: no curves from it: {err}", file=sys.stderr)
            records = []
        drawn = plot_curves(records, outputs["curves"], title=run_dir.name)
        if drawn is not None:
            return Path(drawn)
    if own.is_file():
        from pairflow.utils import atomic_write_bytes

        return atomic_write_bytes(outputs["curves"], own.read_bytes())
    return None
