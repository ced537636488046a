"""Training, checkpoints and evaluation of pairflow models."""

from pairflow.evaluation.likelihood import evaluate_bpd  # re-exported: its old home
from pairflow.training.checkpoint import (
    CheckpointError,
    find_checkpoint,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from pairflow.training.config import TrainConfig, load_config_file, merge_config
from pairflow.training.loop import TrainingDiverged, train

__all__ = [
    "CheckpointError",
    "TrainConfig",
    "TrainingDiverged",
    "evaluate_bpd",
    "find_checkpoint",
    "load_checkpoint",
    "load_config_file",
    "load_model",
    "merge_config",
    "save_checkpoint",
    "train",
]
