"""Evaluation as a library: one model end to end (:func:`evaluate_model`, what ``pairflow
evaluate`` runs), test bits/dim, samples in chunks, sample metrics beside the real-vs-real
floor (cached), and the reports. ``pairflow evaluate``, ``compare``, the demo and the app
call these; the commands only parse arguments and print.

Example (needs the MNIST files)::

    flow = pairflow.load("multiscale-cond")
    test = PairedMNIST("../shared/data", train=False)
    evaluate_bpd(flow, test, conditional=True)["bpd"]   # 1.112
    images = draw_samples(flow, 1000, labels=torch.arange(1000) % 100, temperature=0.7)
"""

from pairflow.evaluation.floor import REFERENCE_SEED, cached_floor
from pairflow.evaluation.likelihood import evaluate_bpd, evaluate_importance_weighted
from pairflow.evaluation.mixture import classifier_accuracy, evaluate_mixture
from pairflow.evaluation.model import (
    EvaluationError,
    EvaluationOptions,
    evaluate_model,
    evaluation_outputs,
    write_evaluation,
)
from pairflow.evaluation.report import (
    bpd_markdown,
    format_number,
    relative,
    report_markdown,
    summary_line,
)
from pairflow.evaluation.samples import sample_metrics
from pairflow.evaluation.sampling import check_guidance_for, draw_samples, iter_samples

__all__ = [
    "EvaluationError",
    "EvaluationOptions",
    "REFERENCE_SEED",
    "bpd_markdown",
    "cached_floor",
    "classifier_accuracy",
    "draw_samples",
    "evaluate_bpd",
    "evaluate_importance_weighted",
    "check_guidance_for",
    "evaluate_model",
    "evaluation_outputs",
    "evaluate_mixture",
    "format_number",
    "iter_samples",
    "relative",
    "report_markdown",
    "sample_metrics",
    "summary_line",
    "write_evaluation",
]
