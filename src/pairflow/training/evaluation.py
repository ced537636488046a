"""Moved to :mod:`pairflow.evaluation.likelihood`; kept so that old imports keep working."""

from pairflow.evaluation.likelihood import evaluate_bpd

__all__ = ["evaluate_bpd"]
