"""One model evaluated end to end: :func:`evaluate_model` -> the report ``pairflow evaluate``
prints and writes.

The report holds the model's bits/dim on a split of its dataset (exact, or a bound: a VAE's
negative ELBO, a flow's with variational dequantization, as the kind's registry row says),
and where asked the importance-weighted bound, a conditional flow's label-free numbers, and
sample metrics beside the real-vs-real floor. :func:`write_evaluation` writes it as JSON and,
with sample metrics, a Markdown report with the sample grid and the training curves.

Example (needs the MNIST files)::

    model, checkpoint = pairflow.models.load_with_checkpoint("multiscale-cond")
    report = evaluate_model(model, checkpoint, "multiscale-cond", "../shared/data",
                            EvaluationOptions(num_pairs=1000))
    report["bits_per_dim"]   # 1.11...
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pairflow.evaluation.sampling import check_guidance_for
from pairflow.flows.guidance import check_guidance
from pairflow.models import has_label_mixture, kind_spec
from pairflow.options import default_guidance, default_temperature

__all__ = [
    "EvaluationError",
    "EvaluationOptions",
    "evaluate_model",
    "evaluation_outputs",
    "write_evaluation",
    "training_curves",
]

SPLITS = ("test", "train")
LABELS_FROM = ("even", "prior")
DEQUANTIZATIONS = ("model", "uniform")


class EvaluationError(ValueError):
    """What was asked cannot be evaluated (a model without the likelihood asked for, data of
    another shape, a missing data file or classifier): nothing was computed or written.
    ``__cause__`` is the data or classifier error where one caused it."""


@dataclass(frozen=True)
class EvaluationOptions:
    """What :func:`evaluate_model` measures and how (``pairflow evaluate``'s options).

    Arguments:
        split: ``"test"`` or ``"train"``: whose pairs the bits/dim is of.
        dataset: whose pairs to score (None: the dataset the model was trained on); another
            dataset of the same image shape gives the out-of-distribution bits/dim.
        num_pairs: bits/dim on only the first N pairs (None: all).
        draws: dequantisation (flow) or latent (VAE) draws averaged per pair.
        importance_samples: K > 0 adds the importance-weighted bound from K weights per pair.
        dequantization: ``"model"`` (the model's own noise) or ``"uniform"`` (a flow's exact
            continuous likelihood, whatever it was trained with).
        marginal_pairs: conditional flows whose couplings read the label: also the exact
            unconditional bits/dim and the flow's own accuracy on the first N pairs.
        labels: conditional models' sample labels: ``"even"`` (00..99 in turn) or ``"prior"``
            (drawn from the model's p(label)).
        batch_size: pairs per pass.
        samples: N > 0 adds N samples' metrics beside the real-vs-real floor.
        temperature: of the samples (None: ``pairflow sample``'s default, or the label-free
            one where the labels come from the flow's p(y)).
        seed: of the samples and the floor.
        guidance: classifier-free guidance weight w of the samples (a conditional flow
            trained with label dropout; :mod:`pairflow.flows.guidance`); None: off.
        classifier: a classifier checkpoint judging the samples (None: the shipped one of the
            model's dataset).
    """

    split: str = "test"
    dataset: str | None = None
    num_pairs: int | None = None
    draws: int = 1
    importance_samples: int = 0
    dequantization: str = "model"
    marginal_pairs: int = 0
    labels: str = "even"
    batch_size: int = 500
    samples: int = 0
    temperature: float | None = None
    seed: int = 0
    classifier: str | None = None
    guidance: float | None = None

    def check(self) -> EvaluationOptions:
        """Raise :class:`EvaluationError` naming a value out of range; returns itself."""
        for name, valid in (
            ("split", SPLITS),
            ("labels", LABELS_FROM),
            ("dequantization", DEQUANTIZATIONS),
        ):
            if getattr(self, name) not in valid:
                raise EvaluationError(
                    f"unknown {name} {getattr(self, name)!r}; valid: {', '.join(valid)}"
                )
        for name in ("draws", "batch_size"):
            if getattr(self, name) < 1:
                raise EvaluationError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("importance_samples", "marginal_pairs", "samples", "seed"):
            if getattr(self, name) < 0:
                raise EvaluationError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.num_pairs is not None and self.num_pairs < 1:
            raise EvaluationError(f"num_pairs must be >= 1, got {self.num_pairs}")
        t = self.temperature
        if t is not None and not (math.isfinite(t) and t > 0):
            raise EvaluationError(f"temperature must be > 0 and finite, got {t}")
        if self.guidance is not None:
            try:
                check_guidance(self.guidance)
            except ValueError as err:
                raise EvaluationError(str(err)) from None
            if not self.samples:
                raise EvaluationError(
                    f"guidance {self.guidance:g} is of the samples: it needs --samples N "
                    "(bits/dim is the conditional model's, whatever the guidance)"
                )
        return self


def evaluation_outputs(
    out: str | Path, split: str = "test", dequantization: str = "model", importance: int = 0
) -> dict[str, Path]:
    """Where an evaluation's files go: ``json``, ``dir`` (the floor cache), ``report``,
    ``grid`` (the sample grid) and ``curves``.

    Arguments:
        out: ``FILE.json`` (the others beside it, named after it) or a folder (gets
            ``eval_SPLIT.json``, ``report.md`` and PNGs; ``_uniform`` and ``_iwK`` mark a
            uniform rescoring and the importance-weighted bound beside the usual one).
        split, dequantization, importance: as in :class:`EvaluationOptions`.

    Raises:
        EvaluationError: ``out`` is an existing file that is not ``.json``.

    Example:
        >>> evaluation_outputs("runs/a", importance=64)["json"].as_posix()
        'runs/a/eval_test_iw64.json'
        >>> evaluation_outputs("cmp/flow.json")["grid"].as_posix()
        'cmp/flow_samples.png'
    """
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
        raise EvaluationError(f"--out {out} is a file; give FILE.json or a folder")
    uniform = "_uniform" if dequantization == "uniform" else ""  # beside the bound's
    iw = f"_iw{importance}" if importance else ""
    return {
        "json": out / f"eval_{split}{uniform}{iw}.json",
        "dir": out,
        "report": out / "report.md",
        "grid": out / "report_samples.png",
        "curves": out / "report_curves.png",
    }


def evaluate_model(
    model,
    checkpoint: dict,
    source: str | Path,
    root: str | Path,
    options: EvaluationOptions | None = None,
    outputs: dict[str, Path] | None = None,
    progress=None,
) -> dict[str, Any]:
    """Evaluate ``model``: its bits/dim and, as ``options`` ask, more; the report.

    Every check of what was asked against the model and the data runs before the long work.

    Arguments:
        model: a loaded model (:func:`pairflow.models.load_with_checkpoint`), on its device.
        checkpoint: its checkpoint dict (``kind``, ``model_config``, ``train_config``, ``step``).
        source: where the model came from, for the report.
        root: the data root.
        options: what to measure (default: test bits/dim on every test pair).
        outputs: :func:`evaluation_outputs` (needed with ``options.samples``: the sample grid
            and the floor cache go there); nothing is written here otherwise.
        progress: a bar factory (:func:`pairflow.progress.bars`) for every pass; None: silent.

    Returns:
        The report: ``source``, ``kind``, ``preset``, ``conditional``, ``params``,
        ``precision``, ``trained_on``, ``dataset``, ``layout``, ``split``, what the kind says
        its bits/dim is (e.g. ``dequantization``, ``bound``), ``bits_per_dim`` (or
        ``bits_per_dim_bound``) with ``_stderr``, ``num_pairs`` and the draws, ``seconds``,
        ``step``, and as asked ``importance_weighted``, ``unconditional``,
        ``classification``, ``samples`` and ``metrics``.

    Raises:
        EvaluationError: the model cannot be evaluated as asked, or the data or classifier
            is missing or of another shape or dataset.
    """
    from pairflow.data import get_dataset

    options = (options or EvaluationOptions()).check()
    root = Path(root)
    kind = checkpoint["kind"]
    spec = kind_spec(kind)
    if spec.likelihood is None and not options.samples:
        raise EvaluationError(
            f"{source} is a {kind} model: it has no likelihood, so no bits/dim to evaluate; "
            "use --samples N for its sample metrics"
        )
    if options.importance_samples and spec.likelihood is None:
        raise EvaluationError(
            f"--importance-samples bounds a likelihood; {source} is a {kind} model, which has none"
        )
    if options.samples and outputs is None:
        raise EvaluationError("sample metrics need outputs: a folder for the grid and the floor")
    config = checkpoint["model_config"]
    if options.dequantization == "uniform":
        if not spec.dequantized:
            raise EvaluationError(
                f"--dequantization uniform scores a flow's exact likelihood; {source} is a "
                f"{kind} model"
            )
        model = model.with_uniform_dequantization()  # shares the trained weights
    train_config = checkpoint.get("train_config") or {}
    trained_on = train_config.get("dataset") or "mnist"
    layout = train_config.get("layout") or "pair"
    data = options.dataset or trained_on
    model_shape = (config.get("channels", 1), config.get("height", 28), config.get("width", 56))
    try:
        data_shape = get_dataset(data).image_shape(layout)
    except ValueError as err:
        raise EvaluationError(str(err)) from err
    if model_shape != data_shape:
        raise EvaluationError(
            f"{source} models {'x'.join(map(str, model_shape))} images ({trained_on}, {layout}); "
            f"{data} {layout}s are {'x'.join(map(str, data_shape))}: only a dataset of the same "
            "shape can be scored under it"
        )
    if options.samples and data != trained_on:
        raise EvaluationError(
            f"--samples judges the model against its own dataset ({trained_on}); drop "
            f"--dataset {data}, which is for the bits/dim of other data"
        )
    if options.samples and layout != "pair":
        raise EvaluationError(
            "--samples judges pairs with the pair classifier; this model draws single images "
            "(layout single): use its bits/dim, or train a pair model"
        )
    conditional = bool(config.get("conditional", False))
    if options.guidance is not None:
        try:
            check_guidance_for(model, config, source, options.guidance)
        except ValueError as err:
            raise EvaluationError(str(err)) from None
    mixture = has_label_mixture(model)
    # Opened now, so that a missing data file stops the evaluation before any of it runs.
    dataset = None
    if spec.likelihood is not None:
        dataset = _dataset(data, root, options.split, layout, options.num_pairs)
    report: dict[str, Any] = {
        "source": str(source),
        "kind": kind,
        "preset": config.get("preset"),
        "conditional": conditional,
        **({"class_mixture": True} if mixture else {}),
        # A label-free mixture prior (prior="mixture"): samples draw a component first.
        **({"mixture_prior": True} if config.get("prior") == "mixture" else {}),
        "params": sum(p.numel() for p in model.parameters()),
        "precision": model.precision,  # of the networks in this evaluation (--precision)
        "trained_on": trained_on,
        "dataset": data,
        "layout": layout,
        "split": options.split,
    }
    if spec.likelihood is not None:
        report.update(spec.facts(model))  # what its bits/dim is: exact, or which bound
        if options.dequantization == "uniform" and config.get("dequantization") == "variational":
            report["dequantization"] += (
                " (asked for: a flow trained with variational dequantization, scored by the "
                "exact likelihood of its continuous density)"
            )
    start = time.perf_counter()
    # A bound: a VAE's negative ELBO, or a flow's with variational dequantization.
    bound = spec.likelihood is not None and model.bits_per_dim_is_bound  # LikelihoodModel
    name = "bits_per_dim_bound" if bound else "bits_per_dim"
    if spec.likelihood is not None and mixture:
        report.update(_mixture_bits_per_dim(model, name, dataset, data, layout, options, progress))
    elif spec.likelihood is not None:
        report.update(
            _bits_per_dim(model, name, dataset, conditional, spec.draws, options, progress)
        )
        if conditional and spec.classifies:
            report.update(
                _label_free(model, name, dataset, data, layout, report, checkpoint, root,
                            options, progress)
            )  # fmt: skip
        elif getattr(model, "clusters", None) is not None and options.marginal_pairs:
            report["exact"] = _own_clusters_exact(model, data, root, layout, options, progress)
    if options.importance_samples:
        given_label = conditional and not mixture  # a class mixture's figure is label-free
        report["importance_weighted"] = _importance_weighted(
            model, dataset, given_label, options, progress
        )
    report["seconds"] = time.perf_counter() - start
    report["step"] = checkpoint.get("step")
    if options.samples:
        # A class mixture samples without labels: its sample metrics are unconditional.
        sampled_conditional = conditional and not mixture
        # Labels drawn from the flow's own p(y): label-free.
        label_free = conditional and spec.classifies and (mixture or options.labels == "prior")
        temperature = options.temperature
        if temperature is None:
            temperature = default_temperature(label_free, checkpoint.get("sampling_temperatures"))
        guidance = options.guidance
        own_clusters = bool(config.get("clusters"))  # drawn from p(c): label-free as well
        if guidance is None and (sampled_conditional or own_clusters):  # its own weight, if any
            guidance = default_guidance(
                label_free or own_clusters, checkpoint.get("sampling_guidance")
            )
        report.update(
            _samples(model, sampled_conditional, root, outputs, trained_on,
                     replace(options, temperature=temperature, guidance=guidance), progress)
        )  # fmt: skip
    return report


def _dataset(data: str, root: Path, split: str, layout: str, num_pairs: int | None):
    """The first ``num_pairs`` pairs (None: all) of ``data``'s ``split``."""
    from pairflow.data import PairedDataset

    try:
        return PairedDataset(data, root, train=split == "train", num_pairs=num_pairs, layout=layout)
    except (FileNotFoundError, ValueError) as err:
        raise EvaluationError(str(err)) from err


_ACCURACY = {
    "pair": "fraction of pairs with both digits read right; flow: argmax p(y | x)",
    "single": "fraction of images whose class the flow reads right: argmax p(y | x)",
}


def _marginal(model, name: str, dataset, data: str, layout: str, options, progress=None):
    """evaluate_mixture on ``dataset``: (its bits/dim fields, the classification block)."""
    from pairflow.evaluation.mixture import classifier_accuracy, evaluate_mixture

    result = evaluate_mixture(
        model, dataset, batch_size=options.batch_size, device=model.device,
        draws=options.draws, progress=progress,
    )  # fmt: skip
    accuracy = None
    if layout == "pair":
        try:
            accuracy = classifier_accuracy(
                dataset, model.device, options.batch_size, path=options.classifier, name=data
            )
        except (FileNotFoundError, ValueError) as err:
            raise EvaluationError(str(err)) from err
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


def _mixture_bits_per_dim(model, name, dataset, data, layout, options, progress):
    """A class-mixture flow's fields, from one pass per draw: unconditional bits/dim, bits/dim
    given the label, and its pair classification beside the classifier's."""
    fields, classification, result = _marginal(
        model, name, dataset, data, layout, options, progress
    )
    return {**fields, "dequantization_draws": result["draws"], "classification": classification}


def _label_free(
    model, name, dataset, data, layout, report, checkpoint, root, options, progress
) -> dict[str, Any]:
    """A conditional flow (couplings reading the label) as a model of p(x) alone.

    Always: the upper bound -log p(x) <= -log p(y) - log p(x | y) for the true label y, on
    every pair (free: the given-label bits/dim plus the labels' mean -log2 p(y) over D).
    With ``marginal_pairs`` N: the exact log p(x) = logsumexp_y [log p(y) + log p(x | y)]
    on the first N pairs (100 passes each) and the flow's pair accuracy by Bayes.
    """
    import torch

    _, labels = dataset.get_batch(torch.arange(len(dataset)))
    log_p = model.log_label_probs().double().cpu()[labels]  # (N,) nats
    d = model.config.num_dims
    label_bits = (-log_p / math.log(2) / d).mean().item()
    fields: dict[str, Any] = {
        "unconditional": {
            f"{name}_upper_bound": report[name] + label_bits,
            "what": "-log p(x) <= -log p(y) - log p(x | y) for the true label y, on the same "
            "pairs: the given-label bits/dim plus E[-log2 p(y)] / D",
            "label_prior": checkpoint.get("label_probs", "the training pairs' label frequencies"),
        }
    }
    if options.marginal_pairs:
        n = min(options.marginal_pairs, options.num_pairs or options.marginal_pairs)
        subset = _dataset(data, root, options.split, layout, n)
        marginal, classification, result = _marginal(
            model, name, subset, data, layout, options, progress
        )
        fields["unconditional"].update(
            {**marginal, "label_passes": result["label_passes"], "seconds": result["seconds"]}
        )
        fields["classification"] = classification
    return fields


def _own_clusters_exact(model, data, root, layout, options, progress) -> dict[str, Any]:
    """A flow that reads its own clusters on the first ``marginal_pairs`` pairs: its exact
    log p(x) = logsumexp_c [log p(c) + log p(x | c)] (one pass per cluster label) beside the
    bound it reports, log p(c(x)) + log p(x | c(x)) at the images' own clusters."""
    import torch

    from pairflow.evaluation.mixture import evaluate_mixture

    n = min(options.marginal_pairs, options.num_pairs or options.marginal_pairs)
    subset = _dataset(data, root, options.split, layout, n)
    result = evaluate_mixture(
        model, subset, batch_size=options.batch_size, device=model.device,
        draws=options.draws, progress=progress, labels_of=model.own_labels,
    )  # fmt: skip
    images = subset.get_batch(torch.arange(len(subset)))[0]
    own = model.own_labels(images.to(model.device))
    d = model.config.num_dims
    label_bits = (-model.log_label_probs().double()[own] / math.log(2) / d).mean().item()
    # Exact, or with variational dequantization still Flow++'s bound on the noise.
    exact = "bits_per_dim_bound" if model.dequantizer.is_bound else "bits_per_dim"
    return {
        exact: result["bpd"],
        f"{exact}_stderr": result["bpd_stderr"],
        "bits_per_dim_at_own_clusters": result["bpd_given_label"] + label_bits,
        "num_pairs": result["num_pairs"],
        "label_passes": result["label_passes"],
        "seconds": result["seconds"],
        "what": "-log p(x) with p(x) = sum_c p(c) p(x | c) over every cluster label c, "
        "beside the bound at the images' own clusters on the same pairs",
    }


def _bits_per_dim(model, name, dataset, conditional, draws_of, options, progress):
    """The report's bits/dim fields: exact (flows) or a bound (the negative ELBO of a VAE,
    or of a flow with variational dequantization)."""
    from pairflow.evaluation.likelihood import evaluate_bpd

    result = evaluate_bpd(
        model, dataset, batch_size=options.batch_size, device=model.device,
        draws=options.draws, conditional=conditional, progress=progress,
    )  # fmt: skip
    return {
        name: result["bpd"],
        f"{name}_stderr": result["bpd_stderr"],
        "num_pairs": result["num_pairs"],
        f"{draws_of}_draws": result["draws"],  # latent draws of a VAE, or noise draws
    }


def _importance_weighted(model, dataset, given_label: bool, options, progress) -> dict[str, Any]:
    """The K-sample importance-weighted bound on the discrete bits/dim, beside the usual
    bound averaged over the same K draws (:func:`evaluate_importance_weighted`)."""
    from pairflow.evaluation.likelihood import evaluate_importance_weighted

    result = evaluate_importance_weighted(
        model, dataset, options.importance_samples, batch_size=options.batch_size,
        device=model.device, conditional=given_label, progress=progress,
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


def _samples(model, conditional, root, outputs, dataset, options, progress) -> dict[str, Any]:
    from pairflow.evaluation.samples import sample_metrics

    try:
        return sample_metrics(
            model, conditional, options.samples, root, outputs["grid"], outputs["dir"],
            temperature=options.temperature, seed=options.seed,
            batch_size=options.batch_size, json_dir=outputs["json"].parent, dataset=dataset,
            classifier_path=options.classifier, progress=progress, labels_from=options.labels,
            guidance=options.guidance,
        )  # fmt: skip
    except (FileNotFoundError, ValueError) as err:
        raise EvaluationError(str(err)) from err


def write_evaluation(
    report: dict[str, Any], outputs: dict[str, Path], run_dir: str | Path | None = None
) -> list[Path]:
    """Write ``report`` as JSON and, with sample metrics, the Markdown report beside it.

    Arguments:
        report: what :func:`evaluate_model` returned.
        outputs: :func:`evaluation_outputs`.
        run_dir: the run folder the model came from, whose training curves the Markdown
            report shows (None: it has none).

    Returns:
        The files written (the JSON, then the report).

    Raises:
        OSError: a file could not be written (none is left half-written).
    """
    from pairflow.evaluation.report import report_markdown
    from pairflow.utils import atomic_write_text

    atomic_write_text(outputs["json"], json.dumps(report, indent=2) + "\n")
    written = [outputs["json"]]
    if "samples" in report:
        curves = training_curves(run_dir, outputs) if run_dir is not None else None
        atomic_write_text(outputs["report"], report_markdown(report, outputs, curves))
        written.append(outputs["report"])
    return written


def training_curves(run_dir: str | Path, outputs: dict[str, Path]) -> Path | None:
    """The training curves PNG for the report: the run's own ``curves.png`` when the report
    is written into the run, else plotted from its ``metrics.jsonl`` (or copied) next to the
    report; None when the run has neither."""
    run_dir = Path(run_dir)
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
