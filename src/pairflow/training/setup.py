"""Everything a training run holds, built before its first step: :func:`setup` -> :class:`Run`.

Data (the pair sets and the loader), the model (from its preset, a checkpoint to resume, or
``--init-from`` weights), its optimisers and schedules, the dequantisation noise generator,
the logger and, under ``torchrun``, the distributed wrapping.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pairflow.models import KindSpec, Preparation, kind_of, kind_spec
from pairflow.precision import choose_precision
from pairflow.training.checkpoint import CheckpointError, build_model, load_checkpoint
from pairflow.training.config import TrainConfig
from pairflow.training.distributed import Processes, init_processes
from pairflow.training.ema import EMA
from pairflow.training.logger import MetricsLogger
from pairflow.training.memory import check_model_fits
from pairflow.training.speed import (
    CompileOrEager,
    StepProbe,
    decide_compile,
    make_adam,
    set_threads,
)
from pairflow.utils import atomic_write_text, resolve_device

__all__ = ["Run", "setup", "init_weights"]

AUTO_COMPILE_MIN_MINUTES = 30
"""``--compile auto`` leaves runs with a shorter ``--time-budget`` eager."""


@dataclass
class Run:
    """The state of one training run; :mod:`pairflow.training.loop` steps it."""

    config: TrainConfig
    out: Path
    procs: Processes
    spec: KindSpec
    model: nn.Module
    model_config: dict[str, Any]
    loss_fn: Any  # (x, cond, generator) -> bits/dim (B,), for kinds without their own update
    optimizers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, Any]
    train_set: Any
    test_set: Any
    loader: Any
    noise: torch.Generator
    logger: MetricsLogger
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best: float = math.inf
    nonfinite_skipped: int = 0
    best_step: int | None = None
    extra: dict = field(default_factory=dict)
    ema: EMA | None = None  # --ema-decay: the averaged weights that are evaluated and sampled

    @property
    def device(self) -> torch.device:
        return self.procs.device

    @property
    def bpd_key(self) -> str | None:
        """``bpd``, ``bpd_bound`` or None: the kind's, or ``bpd_bound`` for a model whose
        bits/dim is a bound (a flow with variational dequantization)."""
        if self.spec.likelihood is None:
            return None
        return "bpd_bound" if self.model.bits_per_dim_is_bound else "bpd"  # LikelihoodModel

    def averaged(self):
        """Context in which the model holds the weights to evaluate and sample with."""
        from contextlib import nullcontext

        return self.ema.averaged(self.model) if self.ema is not None else nullcontext()


class _NLL(nn.Module):
    """Wraps a flow so that ``forward`` is the loss: DistributedDataParallel syncs gradients
    only through ``forward``."""

    def __init__(self, flow: nn.Module):
        super().__init__()
        self.flow = flow

    def forward(self, x, cond, generator):
        return self.flow.bits_per_dim(x, cond=cond, generator=generator)  # (B,)


def lr_lambda(config: TrainConfig, steps_per_epoch: int):
    """The learning-rate factor of each step: linear warm-up, then constant or cosine."""
    warmup = config.warmup_steps
    total = config.epochs * steps_per_epoch

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if config.schedule == "cosine":
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    return factor


def build_data(config: TrainConfig, procs: Processes):
    """The training pairs (redrawn each epoch), the fixed test pairs and this rank's loader."""
    from pairflow.data import PairedDataset, PairLoader, resolve_root

    root = resolve_root(config.data_dir)
    train_set = PairedDataset(
        config.dataset,
        root,
        train=True,
        seed=config.seed,
        num_pairs=config.num_pairs,
        balanced=config.balanced,
        layout=config.layout,
    )
    # The test pairing never depends on the run's seed: test numbers compare across runs.
    test_set = PairedDataset(
        config.dataset, root, train=False, num_pairs=config.test_pairs, layout=config.layout
    )
    loader = PairLoader(
        train_set,
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=True,
        seed=config.seed,
        rank=procs.rank,
        world_size=procs.world_size,
    )
    if len(loader) == 0:
        raise ValueError(
            f"batch size {config.batch_size} exceeds the {len(train_set)} training pairs "
            f"per rank; lower --batch-size or raise --num-pairs"
        )
    return train_set, test_set, loader


def inherited_from_source(config: TrainConfig) -> dict[str, Any]:
    """The model fields a model fine-tuned ``--init-from`` another keeps from it.

    What they are is the kind's to say (:meth:`~pairflow.models.KindSpec.inherited`: a flow
    keeps its source's variational dequantizer and label-free mixture prior unless ``--set``
    says otherwise); {} for a run that is no fine-tune, or whose source cannot be read
    (:func:`init_weights` names what is wrong with it).
    """
    source = source_config(config.init_from).get("model_config") if config.init_from else {}
    if not source:
        return {}
    return kind_spec(config.model).inherited(source, config.model_overrides, config.conditional)


def source_config(path: str | os.PathLike) -> dict[str, Any]:
    """Checkpoint ``path``'s ``kind``, ``model_config`` and ``train_config``, read once while
    the file is unchanged (a run's setup asks for them several times); {} when it cannot be
    read."""
    try:
        stamp = os.stat(path).st_mtime_ns  # a rewritten checkpoint is read anew
    except OSError:
        return {}
    kind, model, train = _source_configs(str(path), stamp) or (None, (), ())
    return {"kind": kind, "model_config": dict(model), "train_config": dict(train)} if kind else {}


@functools.lru_cache(maxsize=8)
def _source_configs(path: str, stamp: int) -> tuple | None:
    try:
        state = load_checkpoint(path, map_location="cpu")
    except (CheckpointError, OSError, ValueError):
        return None
    model, train = state.get("model_config", {}), state.get("train_config", {})
    return state.get("kind"), tuple(model.items()), tuple(train.items())


def model_config(config: TrainConfig, precision: str) -> dict[str, Any]:
    """The model's config (as a dict) from the run's preset, overrides and precision."""
    from pairflow.dataset_presets import model_overrides_for

    spec = kind_spec(config.model)
    # The dataset's shape and sizes, under what --set gave explicitly.
    overrides = {
        **model_overrides_for(config.model, config.preset, config.dataset, config.layout),
        **inherited_from_source(config),
        **config.model_overrides,
    }
    if spec.conditions:
        overrides.setdefault("conditional", config.conditional)
    elif config.conditional:
        raise ValueError(f"--model {config.model} has no conditional version")
    if spec.precisions:
        overrides.setdefault("precision", precision)
    if spec.layouts:  # what its labels are (pairs 0..99, single images 0..9)
        if overrides.setdefault("layout", config.layout) != config.layout:
            raise ValueError(
                f"--set layout={overrides['layout']} contradicts the data's layout "
                f"{config.layout!r}; give --layout {overrides['layout']} instead"
            )
    return asdict(spec.config_class.from_preset(config.preset, **overrides))


def _precision_probe(config: TrainConfig, device: torch.device, world_size: int):
    """A :class:`~pairflow.training.speed.StepProbe` of the model to train, where one may decide.

    None where it cannot or need not: the precision is given, the model has no precision
    setting, or several ranks train (each would measure, and might choose, on its own).
    """
    if config.precision != "auto" or world_size > 1 or not kind_spec(config.model).precisions:
        return None
    fingerprint = model_config(config, "fp32")
    return StepProbe(
        lambda p: build_model(config.model, model_config(config, p)),
        {"model": config.model, **fingerprint},
        config.batch_size,
        device,
        train_config=config,
    )


def init_weights(
    model: nn.Module, path: str | os.PathLike, kind: str | None = None
) -> tuple[list[str], list[str], list[str]]:
    """Load the weights of checkpoint (or run folder) ``path`` into ``model`` to fine-tune it.

    The weights are the moving average's where the run kept one (what it was evaluated with).
    Every tensor of the checkpoint must exist in ``model`` with the same shape, except those
    the kind leaves out (:meth:`~pairflow.models.KindSpec.weights_left_out`: for a flow, a
    variational dequantizer q(u | x) that ``model`` has no place for, since it is no part of
    the flow's density p(x), and a label-free mixture's clusters under another prior).
    Parameters and buffers only ``model`` has (e.g. the label prior of
    ``conditioning="both"`` added to an ``"embedding"`` model) keep their initialisation, and
    tensors the kind widens (:meth:`~pairflow.models.KindSpec.widen_weights`: for a flow, the
    conditioners' first layers when its couplings read a label its source's did not) get
    their new entries at zero.

    Arguments:
        model: the model to fine-tune.
        path: the checkpoint or run folder.
        kind: the model's kind (default: the registry's kind of ``model``).

    Returns:
        (the names ``model`` initialised itself, the names of the checkpoint left out, the
        names widened).

    Raises:
        CheckpointError: the checkpoint is of another model kind, or its weights do not fit.
    """
    from pairflow.training.checkpoint import evaluation_state_dict
    from pairflow.training.packing import unpack_state_dict

    spec = kind_spec(kind) if kind is not None else kind_of(model)
    state = load_checkpoint(path, map_location="cpu")
    if state["kind"] != spec.name:
        raise CheckpointError(
            f"--init-from {path}: checkpoint holds a {state['kind']}, not a {spec.name}"
        )
    weights = unpack_state_dict(evaluation_state_dict(state))  # the EMA's where kept
    own = model.state_dict()
    dropped = spec.weights_left_out(weights, model, state.get("model_config", {}))
    for k in dropped:
        del weights[k]
    widened = spec.widen_weights(weights, model, state.get("model_config", {}))
    extra = sorted(set(weights) - set(own))
    misfit = [k for k in weights if k in own and weights[k].shape != own[k].shape]
    if extra or misfit:
        detail = "; ".join(
            part
            for part in (
                f"not in this model: {', '.join(extra[:5])}" if extra else "",
                f"other shape: {', '.join(misfit[:5])}" if misfit else "",
            )
            if part
        )
        raise CheckpointError(
            f"--init-from {path}: its weights do not fit this model ({detail}); "
            "build the same architecture (preset and --set overrides)"
        )
    missing = sorted(set(own) - set(weights))
    model.load_state_dict(weights, strict=False)
    return missing, dropped, widened


def _resume_state(config: TrainConfig, out: Path) -> dict:
    last = out / "last.pt"
    if not last.is_file():
        raise CheckpointError(f"--resume: no checkpoint {last} to resume from")
    state = load_checkpoint(last, map_location="cpu")
    # Runs from before datasets and layouts were MNIST pairs.
    saved = {"dataset": "mnist", "layout": "pair", **state["train_config"]}
    for key in ("preset", "model", "conditional", "dataset", "layout"):
        if saved.get(key) != getattr(config, key):
            raise CheckpointError(
                f"--resume: checkpoint {last} was trained with {key}={saved.get(key)!r}, "
                f"but {key}={getattr(config, key)!r} was asked for; use a new --out"
            )
    return state


def _optimizers(config: TrainConfig, spec: KindSpec, model: nn.Module, steps_per_epoch: int):
    if spec.own_update:
        optimizers = model.make_optimizers(config)
    else:
        adam = make_adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        optimizers = {"model": adam}
    schedulers = {
        name: torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(config, steps_per_epoch))
        for name, opt in optimizers.items()
    }
    return optimizers, schedulers


def optimizer_state(run: Run) -> dict:
    """Checkpoint entries: ``optimizer``/``scheduler`` for the one-optimiser models (the
    format flows always had), ``optimizers``/``schedulers`` dicts by name otherwise."""
    if list(run.optimizers) == ["model"]:
        return {
            "optimizer": run.optimizers["model"].state_dict(),
            "scheduler": run.schedulers["model"].state_dict(),
        }
    return {
        "optimizers": {k: o.state_dict() for k, o in run.optimizers.items()},
        "schedulers": {k: s.state_dict() for k, s in run.schedulers.items()},
    }


def _restore(run: Run, state: dict) -> None:
    """Continue exactly where checkpoint ``state`` stopped."""
    run.model.load_state_dict(state["model"])
    if list(run.optimizers) == ["model"]:
        run.optimizers["model"].load_state_dict(state["optimizer"])
        run.schedulers["model"].load_state_dict(state["scheduler"])
    else:
        for name in run.optimizers:
            run.optimizers[name].load_state_dict(state["optimizers"][name])
            run.schedulers[name].load_state_dict(state["schedulers"][name])
    run.step, run.epoch = state["step"], state["epoch"]
    run.batch_in_epoch = state["batch_in_epoch"]
    if run.batch_in_epoch >= len(run.loader):
        # Stopped (by --max-steps) at an epoch's last batch, saved as mid-epoch by earlier
        # versions: that epoch is complete, and its test record is in the log already.
        run.epoch, run.batch_in_epoch = run.epoch + 1, 0
    run.best = state.get("best_test_bpd", math.inf)
    run.best_step = state.get("best_step")
    run.nonfinite_skipped = state.get("nonfinite_skipped", 0)
    noise_states = state["rng"]["noise"]
    rank = run.procs.rank
    run.noise.set_state(noise_states[rank].cpu() if rank < len(noise_states) else noise_states[0])
    run.train_set.load_state_dict(state["data"])
    run.logger.truncate_after(run.step)


def _wrap(run: Run) -> None:
    """The loss module: DDP-wrapped under torchrun, compiled with ``--compile``."""
    config, spec = run.config, run.spec
    if spec.own_update:
        if config.compile is True:
            import warnings

            warnings.warn(
                f"--compile does not apply to --model {config.model}; running eagerly",
                stacklevel=3,
            )
        return
    loss_module: nn.Module = _NLL(run.model)
    if run.procs.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        # A data-dependent start (ActNorm) was made by the kind's preparation, before this:
        # DDP broadcasts rank 0's parameters and buffers, so every rank starts the same.
        device_ids = [run.device.index] if run.device.type == "cuda" else None
        loss_module = DistributedDataParallel(loss_module, device_ids=device_ids)
    planned = config.epochs * len(run.loader) - run.step
    if config.max_steps is not None:
        planned = min(planned, config.max_steps - run.step)
    use_compile, why = decide_compile(config.compile, run.model_config.get("arch"), planned)
    if use_compile and config.compile == "auto" and config.time_budget is not None:
        if config.time_budget < AUTO_COMPILE_MIN_MINUTES:
            # The compile itself takes a minute or more (many on a busy machine): a short
            # budget (the demo's 4 minutes) would spend much of itself compiling.
            use_compile = False
            why = (f"auto: a {config.time_budget:g}-minute budget is too short to pay back "
                   f"the compile time (from {AUTO_COMPILE_MIN_MINUTES} minutes)")  # fmt: skip
    if run.procs.is_main:
        print(f"compile: {'yes' if use_compile else 'no'} ({why})", flush=True)
    run.loss_fn = CompileOrEager(loss_module) if use_compile else loss_module


def setup(config: TrainConfig, resume: bool = False) -> Run:
    """Build a :class:`Run` from ``config``; ``resume`` continues from ``out/last.pt``."""
    config.validate()
    set_threads(config.threads)
    procs = init_processes(resolve_device(config.device))
    spec = kind_spec(config.model)
    if spec.own_update and procs.world_size > 1:
        raise ValueError(f"--model {config.model} trains in one process only; run without torchrun")
    out = Path(config.out)
    state = _resume_state(config, out) if resume else None
    if procs.is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.json", json.dumps(config.to_dict(), indent=2) + "\n")
    train_set, test_set, loader = build_data(config, procs)
    if state is not None:
        values = state["model_config"]
        if procs.is_main and "precision" in values:
            print(f"precision: {values['precision']} (the checkpoint's)", flush=True)
    else:
        fp32 = model_config(config, "fp32")  # refused before a byte of it is allocated:
        check_model_fits(config.model, fp32, procs.device, ema=config.ema_decay > 0)
        probe = _precision_probe(config, procs.device, procs.world_size)
        choice = choose_precision(config.precision, procs.device, probe)
        values = model_config(config, choice.precision)
        if procs.is_main and spec.precisions:
            stream = sys.stderr if choice.is_warning else sys.stdout  # as warnings go
            print(f"precision: {choice.precision} ({choice.reason})", file=stream, flush=True)
    torch.manual_seed(config.seed)
    model = build_model(config.model, values).to(procs.device)  # a flow or a baseline
    optimizers, schedulers = _optimizers(config, spec, model, len(loader))
    # Dequantisation noise has its own generator so that its state can be checkpointed.
    noise = torch.Generator(device=procs.device).manual_seed(config.seed * 1000 + procs.rank)
    run = Run(
        config, out, procs, spec, model, values, None, optimizers, schedulers,
        train_set, test_set, loader, noise, MetricsLogger(out, enabled=procs.is_main),
    )  # fmt: skip
    if state is not None:
        _restore(run, state)
    else:
        fresh: list[str] = []  # --init-from: what the checkpoint did not hold
        dropped: list[str] = []
        if config.init_from:
            fresh, dropped, widened = init_weights(model, config.init_from, config.model)
            if procs.is_main:
                new = f"; new, freshly initialised: {', '.join(fresh)}" if fresh else ""
                print(f"initialised from {config.init_from}{new}")
                if widened:
                    print(
                        f"the label enters {len(widened)} conditioners through new inputs at "
                        "zero weight: the flow starts as its source for every label"
                    )
        # The kind's own preparation: for a flow p(y) from the training labels, a prior
        # fitted to the data, ActNorm's start before distributed wrapping.
        preparation = Preparation(
            train_set, loader, procs.device, procs.world_size,
            init_from=str(config.init_from) if config.init_from else None,
            new_weights=tuple(fresh), left_out=tuple(dropped),
            inherited=inherited_from_source(config),
        )  # fmt: skip
        for line in spec.prepare(model, preparation):
            if procs.is_main:
                print(line, flush=True)
    if config.ema_decay > 0:
        # The average starts from the weights loaded above; a resumed run continues its own.
        # A fine-tune's average starts as the weights it starts from and moves at the full
        # decay from the first step: the warm-up would let a few noisy steps replace them.
        run.ema = EMA(model, config.ema_decay, warmup=not config.init_from)
        if state is not None and "ema" in state:
            run.ema.load_state_dict(state["ema"])
    _wrap(run)
    return run
