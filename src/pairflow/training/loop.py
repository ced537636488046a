"""The training loop: one plain function you can hold in your head.

``train(config)`` trains a flow on MNIST pairs by maximum likelihood (loss = bits/dim, which
is the negative log-likelihood up to a constant), writing into ``config.out``:

- ``config.json``: the resolved configuration;
- ``metrics.jsonl``: one JSON record per logged train step, per epoch's test evaluation and
  per skipped non-finite step;
- ``curves.png``: train and test bits/dim against steps;
- ``samples/epoch_NNN.png``: a grid of samples at each epoch end (same latents every epoch);
- ``last.pt`` and ``best.pt``: checkpoints (see ``pairflow.training.checkpoint``).

The baselines (``config.model``, see :mod:`pairflow.baselines`) train through the same loop.
A VAE's loss is its ``bits_per_dim``, the negative ELBO, logged as ``bpd_bound`` /
``test_bpd_bound``. A model with its own update (the GAN: two optimisers, alternating steps)
defines ``make_optimizers(config) -> {name: optimizer}`` and ``train_step(x, cond,
optimizers, generator, grad_clip) -> {"loss", "grad_norm", ...}``, which the loop calls in
place of its own step, checkpointing every optimiser; without a likelihood it defines
``test_metrics(dataset, device, conditional, batch_size) -> {name: value}`` for the test
records, and gets no ``best.pt`` (there is nothing to select by; ``last.pt`` serves).

Distributed: under ``torchrun`` (``WORLD_SIZE`` > 1) each rank trains on its own share of each
epoch's pairs with DistributedDataParallel; rank 0 alone logs, samples and writes files.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pairflow.training.checkpoint import (
    CheckpointError,
    build_model,
    load_checkpoint,
    save_checkpoint,
)
from pairflow.training.config import TrainConfig
from pairflow.training.evaluation import evaluate_bpd
from pairflow.training.speed import CompileOrEager, clip_grad_norm, make_adam, set_threads
from pairflow.utils import atomic_write_text, resolve_device

__all__ = ["train", "TrainingDiverged", "resolve_precision", "init_weights"]


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite losses or gradients; the last good checkpoint is kept."""


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` where the hardware multiplies bf16 natively, else ``fp32``."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            return "fp32"
        return "bf16" if ("amx_bf16" in flags or "avx512_bf16" in flags) else "fp32"
    return "fp32"


class _NLL(nn.Module):
    """Wraps a flow so that ``forward`` is the loss: DistributedDataParallel syncs gradients
    only through ``forward``."""

    def __init__(self, flow: nn.Module):
        super().__init__()
        self.flow = flow

    def forward(self, x, cond, generator):
        return self.flow.bits_per_dim(x, cond=cond, generator=generator)  # (B,)


def _lr_lambda(config: TrainConfig, steps_per_epoch: int):
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


def _build_data(config: TrainConfig, rank: int, world_size: int):
    from pairflow.data import PairedMNIST, PairLoader, resolve_root

    root = resolve_root(config.data_dir)
    train_set = PairedMNIST(
        root, train=True, seed=config.seed, num_pairs=config.num_pairs, balanced=config.balanced
    )
    # The test pairing never depends on the run's seed: test numbers compare across runs.
    test_set = PairedMNIST(root, train=False, num_pairs=config.test_pairs)
    loader = PairLoader(
        train_set,
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=True,
        seed=config.seed,
        rank=rank,
        world_size=world_size,
    )
    if len(loader) == 0:
        raise ValueError(
            f"batch size {config.batch_size} exceeds the {len(train_set)} training pairs "
            f"per rank; lower --batch-size or raise --num-pairs"
        )
    return train_set, test_set, loader


def _model_config(config: TrainConfig, precision: str) -> dict[str, Any]:
    from dataclasses import asdict, fields

    from pairflow.training.checkpoint import model_config_class

    config_class = model_config_class(config.model)  # FlowConfig, VAEConfig or GANConfig
    overrides = dict(config.model_overrides)
    names = {f.name for f in fields(config_class)}
    if "conditional" in names:
        overrides.setdefault("conditional", config.conditional)
    elif config.conditional:
        raise ValueError("this pairflow build has no conditional flows")
    if "precision" in names:
        overrides.setdefault("precision", precision)
    return asdict(config_class.from_preset(config.preset, **overrides))


def _bpd_key(model: nn.Module) -> str | None:
    """The name its loss goes by in the logs: ``bpd`` (exact likelihood), ``bpd_bound`` (VAE)
    or None (no likelihood: GAN)."""
    if not hasattr(model, "bits_per_dim"):
        return None
    return "bpd_bound" if getattr(model, "bits_per_dim_is_bound", False) else "bpd"


def init_weights(model: nn.Module, path: str | os.PathLike, kind: str = "flow") -> list[str]:
    """Load the weights of checkpoint (or run folder) ``path`` into ``model`` to fine-tune it.

    Every tensor of the checkpoint must exist in ``model`` with the same shape; parameters and
    buffers only ``model`` has (e.g. the label prior of ``conditioning="both"`` added to an
    ``"embedding"`` model) keep their initialisation, and their names are returned.

    Raises:
        CheckpointError: the checkpoint is of another model kind, or its weights do not fit.
    """
    from pairflow.training.export import unpack_state_dict

    state = load_checkpoint(path, map_location="cpu")
    if state["kind"] != kind:
        raise CheckpointError(
            f"--init-from {path}: checkpoint holds a {state['kind']}, not a {kind}"
        )
    weights = unpack_state_dict(state["model"])
    own = model.state_dict()
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
    return missing


def _evaluate_test(model: nn.Module, test_set, device, conditional: bool) -> tuple[dict, float]:
    """The test record's fields and the number ``best.pt`` is chosen by (NaN: none)."""
    key = _bpd_key(model)
    if key is None:
        fields = model.test_metrics(test_set, device=device, conditional=conditional)
        return fields, math.nan
    result = evaluate_bpd(model, test_set, device=device, conditional=conditional, batch_size=500)
    fields = {f"test_{key}": result["bpd"], f"test_{key}_stderr": result["bpd_stderr"]}
    return fields, result["bpd"]


def _optimizer_state(optimizers: dict, schedulers: dict) -> dict:
    """Checkpoint entries: ``optimizer``/``scheduler`` for the one-optimiser models (the
    format flows always had), ``optimizers``/``schedulers`` dicts by name otherwise."""
    if list(optimizers) == ["model"]:
        return {
            "optimizer": optimizers["model"].state_dict(),
            "scheduler": schedulers["model"].state_dict(),
        }
    return {
        "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
        "schedulers": {k: s.state_dict() for k, s in schedulers.items()},
    }


def _load_optimizer_state(state: dict, optimizers: dict, schedulers: dict) -> None:
    if list(optimizers) == ["model"]:
        optimizers["model"].load_state_dict(state["optimizer"])
        schedulers["model"].load_state_dict(state["scheduler"])
        return
    for name in optimizers:
        optimizers[name].load_state_dict(state["optimizers"][name])
        schedulers[name].load_state_dict(state["schedulers"][name])


class _Logger:
    """Rank-0 writer of metrics.jsonl and curves.png (no-op on other ranks)."""

    def __init__(self, out: Path, enabled: bool):
        self.path = out / "metrics.jsonl"
        self.enabled = enabled
        self.records: list[dict] = []
        if enabled and self.path.exists():
            for line in self.path.read_text().splitlines():
                if line.strip():
                    self.records.append(json.loads(line))

    def truncate_after(self, step: int) -> None:
        """On resume, forget records logged after the checkpoint's step."""
        self.records = [r for r in self.records if r.get("step", 0) <= step]
        self._rewrite()

    def _rewrite(self) -> None:
        if self.enabled:
            text = "".join(json.dumps(r) + "\n" for r in self.records)
            atomic_write_text(self.path, text)

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        self.records.append(record)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def plot(self, path: Path) -> None:
        if not self.enabled:
            return
        from pairflow.training.plots import plot_curves

        plot_curves(self.records, path)


def train(config: TrainConfig, resume: bool = False, progress: bool = True) -> dict:
    """Train a flow (or a baseline, ``config.model``) on MNIST pairs; return a summary dict.

    Arguments:
        config: the run's configuration (validated here).
        resume: continue from ``config.out/last.pt`` (same preset and model required).
        progress: show a tqdm progress bar.

    Returns:
        ``{"out", "step", "epoch", "test_bpd", "best_test_bpd", "nonfinite_skipped",
        "stopped"}`` where ``stopped`` is ``"epochs"``, ``"max_steps"`` or ``"time_budget"``.
        A VAE has ``test_bpd_bound`` and ``best_test_bpd_bound`` in place of the bits/dim
        keys, a GAN its last test record's fields (``test_d_loss`` ...).

    Raises:
        TrainingDiverged: after ``config.max_nonfinite`` consecutive non-finite steps.
        KeyboardInterrupt: after saving ``last.pt`` at the interrupted step.
    """
    config.validate()
    set_threads(config.threads)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = resolve_device(config.device)
    if world_size > 1:
        import torch.distributed as dist

        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    is_main = rank == 0
    out = Path(config.out)
    ckpt_state = None
    if resume:
        last = out / "last.pt"
        if not last.is_file():
            raise CheckpointError(f"--resume: no checkpoint {last} to resume from")
        ckpt_state = load_checkpoint(last, map_location="cpu")
        saved = ckpt_state["train_config"]
        for key in ("preset", "model", "conditional"):
            if saved.get(key) != getattr(config, key):
                raise CheckpointError(
                    f"--resume: checkpoint {last} was trained with {key}={saved.get(key)!r}, "
                    f"but {key}={getattr(config, key)!r} was asked for; use a new --out"
                )
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.json", json.dumps(config.to_dict(), indent=2) + "\n")

    # ---- data and model -------------------------------------------------------------------
    train_set, test_set, loader = _build_data(config, rank, world_size)
    steps_per_epoch = len(loader)
    precision = resolve_precision(config.precision, device)
    if ckpt_state is not None:
        model_config = ckpt_state["model_config"]
    else:
        model_config = _model_config(config, precision)
    torch.manual_seed(config.seed)
    flow = build_model(config.model, model_config).to(device)  # the model: a flow or a baseline
    custom_step = hasattr(flow, "train_step")  # its own update (GAN: two optimisers)
    if custom_step and world_size > 1:
        raise ValueError(f"--model {config.model} trains in one process only; run without torchrun")
    if custom_step:
        optimizers = flow.make_optimizers(config)
    else:
        optimizers = {
            "model": make_adam(flow.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        }
    schedulers = {
        name: torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(config, steps_per_epoch))
        for name, opt in optimizers.items()
    }
    optimizer, scheduler = optimizers.get("model"), next(iter(schedulers.values()))
    bpd_key = _bpd_key(flow)  # "bpd", "bpd_bound" or None
    # Dequantisation noise has its own generator so that its state can be checkpointed.
    noise = torch.Generator(device=device).manual_seed(config.seed * 1000 + rank)
    step, start_epoch, skip_batches, best, skipped_total = 0, 0, 0, math.inf, 0
    if ckpt_state is not None:
        flow.load_state_dict(ckpt_state["model"])
        _load_optimizer_state(ckpt_state, optimizers, schedulers)
        step = ckpt_state["step"]
        start_epoch = ckpt_state["epoch"]
        skip_batches = ckpt_state["batch_in_epoch"]
        best = ckpt_state.get("best_test_bpd", math.inf)
        skipped_total = ckpt_state.get("nonfinite_skipped", 0)
        noise_states = ckpt_state["rng"]["noise"]
        noise.set_state(noise_states[rank].cpu() if rank < len(noise_states) else noise_states[0])
        train_set.load_state_dict(ckpt_state["data"])
    elif config.init_from:
        fresh = init_weights(flow, config.init_from, config.model)
        if is_main:
            print(
                f"initialised from {config.init_from}"
                + (f"; new, freshly initialised: {', '.join(fresh)}" if fresh else "")
            )
    loss_module: nn.Module = _NLL(flow)
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        if ckpt_state is None and not config.init_from and hasattr(flow, "data_init"):
            # Data-dependent init (ActNorm) before wrapping: DDP then broadcasts rank 0's
            # parameters and buffers, so every rank starts from the same model.
            loader.set_epoch(0)
            x0, y0 = next(iter(loader))
            flow.data_init(x0.to(device), y0.to(device) if config.conditional else None)

        loss_module = DistributedDataParallel(
            loss_module, device_ids=[device.index] if device.type == "cuda" else None
        )
    loss_fn = CompileOrEager(loss_module) if config.compile and not custom_step else loss_module
    if config.compile and custom_step:
        warnings.warn(
            f"--compile does not apply to --model {config.model}; running eagerly", stacklevel=2
        )
    logger = _Logger(out, enabled=is_main)
    if ckpt_state is not None:
        logger.truncate_after(step)
    sample_gen_seed = config.seed + 7

    def gather_noise_states() -> list[torch.Tensor]:
        state = noise.get_state()
        if world_size == 1:
            return [state]
        import torch.distributed as dist

        states = [torch.empty_like(state) for _ in range(world_size)]
        dist.all_gather_object(states, state)
        return states

    def checkpoint(path: Path, epoch: int, batch_in_epoch: int, noise_states) -> None:
        if not is_main:
            return
        save_checkpoint(
            {
                "kind": config.model,
                "model_config": model_config,
                "train_config": config.to_dict(),
                "model": flow.state_dict(),
                **_optimizer_state(optimizers, schedulers),
                "step": step,
                "epoch": epoch,
                "batch_in_epoch": batch_in_epoch,
                "rng": {"noise": noise_states},
                "data": train_set.state_dict(),
                "best_test_bpd": best,
                "nonfinite_skipped": skipped_total,
            },
            path,
        )

    def end_of_epoch(epoch: int) -> tuple[dict, float]:
        nonlocal best
        fields, test_bpd = _evaluate_test(flow, test_set, device, config.conditional)
        logger.log(
            {"type": "test", "step": step, "epoch": epoch + 1, **fields, "time": time.time()}
        )
        _write_samples(
            flow, config, out / "samples" / f"epoch_{epoch + 1:03d}.png", sample_gen_seed
        )
        logger.plot(out / "curves.png")
        noise_states = gather_noise_states()
        if world_size > 1:
            logger.log(
                {
                    "type": "sync",
                    "step": step,
                    "ranks": world_size,
                    "in_sync": _check_in_sync(flow, device),
                }
            )
        if math.isfinite(test_bpd) and test_bpd < best:
            best = test_bpd
            checkpoint(out / "best.pt", epoch + 1, 0, noise_states)
        checkpoint(out / "last.pt", epoch + 1, 0, noise_states)
        return fields, test_bpd

    # ---- the loop ---------------------------------------------------------------------------
    start_time = time.perf_counter()
    stopped, test_bpd, consecutive_bad = "epochs", float("nan"), 0
    test_fields: dict = {}
    epoch, batch_in_epoch = start_epoch, skip_batches
    bar = None
    interrupt = _GracefulInterrupt() if world_size == 1 else None
    try:
        for epoch in range(start_epoch, config.epochs):
            train_set.set_epoch(epoch)
            loader.set_epoch(epoch)
            flow.train()
            if progress and is_main:
                from tqdm.auto import tqdm

                bar = tqdm(
                    total=steps_per_epoch,
                    desc=f"epoch {epoch + 1}/{config.epochs}",
                    initial=batch_in_epoch,
                    unit="batch",
                    mininterval=1.0,
                    leave=True,
                )
            tick, pairs_since = time.perf_counter(), 0
            for i, (x, y) in enumerate(loader):
                if i < batch_in_epoch:  # resuming mid-epoch: these batches were already seen
                    continue
                x = x.to(device, non_blocking=True)  # (B, 1, 28, 56) uint8 pixel values
                cond = y.to(device) if config.conditional else None  # (B,) pair labels
                extra: dict = {}
                if custom_step:
                    # The model steps its own optimisers, skipping non-finite updates.
                    extra = flow.train_step(x, cond, optimizers, noise, grad_clip=config.grad_clip)
                    loss, grad_norm = extra.pop("loss"), extra.pop("grad_norm")
                else:
                    bpd = loss_fn(x, cond, noise)  # (B,)
                    loss = bpd.mean()
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    grad_norm = clip_grad_norm(flow.parameters(), config.grad_clip)
                if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
                    # Skip: a single bad batch must not poison Adam's moments.
                    for opt in optimizers.values():
                        opt.zero_grad(set_to_none=True)
                    consecutive_bad += 1
                    skipped_total += 1
                    logger.log(
                        {
                            "type": "nonfinite",
                            "step": step,
                            "epoch": epoch + 1,
                            "loss": float(loss.detach()),
                            "grad_norm": float(grad_norm),
                            "consecutive": consecutive_bad,
                        }
                    )
                    if consecutive_bad >= config.max_nonfinite:
                        raise TrainingDiverged(
                            f"{consecutive_bad} consecutive steps had a non-finite loss or "
                            f"gradient (last loss {float(loss.detach())}, "
                            f"grad norm {float(grad_norm)}); "
                            f"stopped. The last good checkpoint is {out / 'last.pt'}; lower "
                            "--lr or raise --warmup-steps."
                        )
                else:
                    consecutive_bad = 0
                    if not custom_step:
                        optimizer.step()
                    for sched in schedulers.values():
                        sched.step()
                    step += 1
                batch_in_epoch = i + 1
                if interrupt is not None and interrupt.requested:
                    raise KeyboardInterrupt  # Ctrl-C: the step is complete, save it below
                pairs_since += x.shape[0] * world_size
                if bar is not None:
                    bar.update(1)
                if step % config.log_every == 0 and consecutive_bad == 0:
                    if world_size > 1:  # log the global batch's loss, not rank 0's share
                        import torch.distributed as dist

                        loss = loss.detach().clone()
                        dist.all_reduce(loss)
                        loss /= world_size
                    now = time.perf_counter()
                    rate = pairs_since / max(now - tick, 1e-9)
                    tick, pairs_since = now, 0
                    record = {
                        "type": "train",
                        "step": step,
                        "epoch": epoch + 1,
                        "loss": loss.item(),
                        **({bpd_key: loss.item()} if bpd_key else {}),
                        **{k: float(v) for k, v in extra.items()},
                        "lr": scheduler.get_last_lr()[0],
                        "grad_norm": float(grad_norm),
                        "pairs_per_s": rate,
                        "time": time.time(),
                    }
                    logger.log(record)
                    if bar is not None:
                        shown = {"bpd": loss.item()} if bpd_key else extra
                        bar.set_postfix(
                            **{k: f"{float(v):.3f}" for k, v in list(shown.items())[:2]},
                            pairs_s=f"{rate:.0f}",
                        )
                if config.max_steps is not None and step >= config.max_steps:
                    stopped = "max_steps"
                    break
                if config.time_budget is not None and _out_of_time(
                    start_time, config.time_budget, world_size, device
                ):
                    stopped = "time_budget"
                    break
            if bar is not None:
                bar.close()
                bar = None
            if stopped != "epochs":
                break
            test_fields, test_bpd = end_of_epoch(epoch)
            batch_in_epoch = 0
            if interrupt is not None and interrupt.requested:
                epoch += 1  # the epoch is complete and saved; resume starts the next one
                raise KeyboardInterrupt
            if is_main:
                print(f"epoch {epoch + 1}: {_describe(test_fields)} (step {step})", flush=True)
        if stopped != "epochs":
            # A partial epoch: evaluate and checkpoint where we stopped, mid-epoch position kept.
            noise_states = gather_noise_states()
            test_fields, test_bpd = _evaluate_test(flow, test_set, device, config.conditional)
            logger.log(
                {
                    "type": "test",
                    "step": step,
                    "epoch": epoch + 1,
                    **test_fields,
                    "time": time.time(),
                }
            )
            _write_samples(flow, config, out / "samples" / f"step_{step:06d}.png", sample_gen_seed)
            logger.plot(out / "curves.png")
            if world_size > 1:
                logger.log(
                    {
                        "type": "sync",
                        "step": step,
                        "ranks": world_size,
                        "in_sync": _check_in_sync(flow, device),
                    }
                )
            if math.isfinite(test_bpd) and test_bpd < best:
                best = test_bpd
                checkpoint(out / "best.pt", epoch, batch_in_epoch, noise_states)
            checkpoint(out / "last.pt", epoch, batch_in_epoch, noise_states)
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        if world_size == 1:
            checkpoint(out / "last.pt", epoch, batch_in_epoch, [noise.get_state()])
            print(
                f"\ninterrupted: checkpoint saved to {out / 'last.pt'} (step {step}); "
                "continue with --resume",
                flush=True,
            )
        raise
    finally:
        if interrupt is not None:
            interrupt.restore()
    if bpd_key is not None:
        test_summary = {f"test_{bpd_key}": test_bpd, f"best_test_{bpd_key}": best}
    else:
        test_summary = dict(test_fields)
    return {
        "out": str(out),
        "step": step,
        "epoch": epoch + 1 if stopped == "epochs" else epoch,
        **test_summary,
        "nonfinite_skipped": skipped_total,
        "stopped": stopped,
    }


def _describe(fields: dict) -> str:
    """The epoch line's test numbers, e.g. ``test bits/dim 1.2345``."""
    if "test_bpd" in fields:
        return f"test bits/dim {fields['test_bpd']:.4f}"
    if "test_bpd_bound" in fields:
        return f"test bits/dim <= {fields['test_bpd_bound']:.4f} (negative ELBO)"
    return ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in fields.items())


class _GracefulInterrupt:
    """Turn the first Ctrl-C (SIGINT) into a flag the loop checks between steps.

    A KeyboardInterrupt raised wherever the signal lands can be swallowed (Python ignores
    exceptions raised inside garbage-collection callbacks) or cut an optimiser step in two; a
    flag lets the current step finish, then the loop saves and stops. A second Ctrl-C
    interrupts at once. Only the main thread can install signal handlers; elsewhere this is
    inert and Ctrl-C behaves as usual.
    """

    def __init__(self) -> None:
        import signal
        import threading

        self.requested = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def restore(self) -> None:
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def _check_in_sync(flow: nn.Module, device: torch.device) -> bool:
    """Under DDP every rank must hold the same weights; raise if they drifted apart."""
    import torch.distributed as dist

    with torch.no_grad():
        local = torch.stack([p.double().sum() for p in flow.parameters()]).to(device)
        low, high = local.clone(), local.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if not torch.equal(low, high):
        raise RuntimeError("distributed ranks hold different weights: gradient sync failed")
    return True


def _out_of_time(start: float, minutes: float, world_size: int, device: torch.device) -> bool:
    """Whether the time budget is spent; under DDP rank 0's clock decides for every rank."""
    over = time.perf_counter() - start > 60 * minutes
    if world_size == 1:
        return over
    import torch.distributed as dist

    flag = torch.tensor([float(over)], device=device)
    dist.broadcast(flag, src=0)
    return bool(flag.item())


@torch.no_grad()
def _write_samples(flow, config: TrainConfig, path: Path, seed: int) -> None:
    """A grid of ``config.sample_n`` samples at ``config.sample_temperature`` (rank 0 only)."""
    if int(os.environ.get("RANK", "0")) != 0:
        return
    from pairflow.images import save_grid

    device = next(flow.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    cond = None
    labels = None
    if config.conditional:
        cond = torch.arange(config.sample_n, device=device) % 100
        labels = [f"{int(c):02d}" for c in cond]
    was_training = flow.training
    flow.eval()
    ctx = nullcontext()
    with ctx:
        images = flow.sample(
            config.sample_n, temperature=config.sample_temperature, generator=gen, cond=cond
        )
    flow.train(was_training)
    save_grid(images.cpu(), path, nrow=8, labels=labels)
