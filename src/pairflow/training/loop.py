"""The training loop: one plain function you can hold in your head.

``train(config)`` trains a model of the registry (:mod:`pairflow.models`) on MNIST pairs,
writing into ``config.out``:

- ``config.json``: the resolved configuration;
- ``metrics.jsonl``: one JSON record per logged train step, per test evaluation and per
  skipped non-finite step;
- ``curves.png``: train and test bits/dim against steps;
- ``samples/epoch_NNN.png``: a grid of samples at each epoch end (same latents every epoch);
- ``tensorboard/``: with ``config.tensorboard``, the records and grids as TensorBoard events;
- ``last.pt`` and ``best.pt``: checkpoints (see :mod:`pairflow.training.checkpoint`).

A flow's loss is its bits/dim (the negative log-likelihood up to a constant), a VAE's the
bound on it (logged as ``bpd_bound``). A kind that declares its own update (the GAN) is
stepped by its ``train_step`` with its own optimisers, and reports its own test numbers; it
gets no ``best.pt`` (there is nothing to select by; ``last.pt`` serves).

The pieces: :func:`~pairflow.training.setup.setup` builds the run (data, model, optimisers,
resume, DDP), :func:`train_step` is one update, :func:`end_of_epoch` evaluates, samples and
checkpoints (after a full epoch and where a run stops early alike).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from pairflow.evaluation import evaluate_bpd, evaluate_mixture
from pairflow.models import has_label_mixture
from pairflow.options import num_classes_of
from pairflow.training.checkpoint import save_checkpoint
from pairflow.training.config import TrainConfig
from pairflow.training.distributed import close_processes
from pairflow.training.interrupt import GracefulInterrupt
from pairflow.training.setup import (
    _NLL,  # noqa: F401  (benchmarks time the loop's loss module)
    Run,
    init_weights,
    optimizer_state,
    setup,
)
from pairflow.training.speed import clip_grad_norm

__all__ = ["train", "train_step", "end_of_epoch", "TrainingDiverged", "init_weights"]
__all__ += ["nothing_left", "test_start", "start_test_bpd"]


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite losses or gradients; the last good checkpoint is kept."""


def train(config: TrainConfig, resume: bool = False, progress: bool = True) -> dict:
    """Train a model (``config.model``: a flow or a baseline) on MNIST pairs; return a summary.

    Arguments:
        config: the run's configuration (validated here).
        resume: continue from ``config.out/last.pt`` (same preset and model required).
        progress: show a tqdm progress bar.

    Returns:
        ``{"out", "step", "epoch", "test_bpd", "best_test_bpd", "nonfinite_skipped",
        "stopped"}`` where ``stopped`` is ``"epochs"``, ``"max_steps"`` or ``"time_budget"``,
        or ``"finished"`` for a resumed run that had nothing left to train (see
        :func:`nothing_left`; the test numbers are then its last test record's). ``epoch`` is
        the epoch of the last step, counted from 1 as the progress bar and ``metrics.jsonl``
        count (a run stopped early in its first epoch says 1). A VAE has ``test_bpd_bound``
        and ``best_test_bpd_bound`` in place of the bits/dim keys, a GAN its last test
        record's fields (``test_d_loss`` ...).

    Raises:
        TrainingDiverged: after ``config.max_nonfinite`` consecutive non-finite steps.
        KeyboardInterrupt: after saving ``last.pt`` at the interrupted step (a
            :class:`~pairflow.training.interrupt.Stopped` for Ctrl-C or SIGTERM).
    """
    run = setup(config, resume)
    if progress and run.procs.is_main:  # the test passes' bar: on a terminal only
        from pairflow.progress import bars

        run.extra["test_progress"] = bars()
    start, stopped, fields = time.perf_counter(), "epochs", {}
    if resume and nothing_left(config, run.step, run.epoch) is not None:
        summary = _summary(run, _last_test_fields(run), "finished")
        close_processes(run.procs)
        return summary
    if config.tensorboard and run.procs.is_main:  # resumed: hide what comes after last.pt
        from pairflow.training.tensorboard import TensorBoardLog

        run.logger.tensorboard = TensorBoardLog(run.out, run.step + 1 if resume else None)
    if not resume and config.init_from and run.bpd_key is not None:
        test_start(run)  # a fine-tune: best.pt starts as the weights it starts from
        start = time.perf_counter()  # the time budget is of training, as the last test is
    with GracefulInterrupt(enabled=run.procs.world_size == 1) as interrupt:
        try:
            tested = False  # an epoch ended (and was tested) in this run
            while run.epoch < config.epochs and stopped == "epochs":
                # The clock ran out during the last epoch's test: stop there, rather than
                # train one step of a new epoch and test the model a second time.
                if (
                    tested
                    and config.time_budget
                    and run.procs.out_of_time(start, config.time_budget)
                ):
                    stopped = "time_budget"
                    break
                run.train_set.set_epoch(run.epoch)
                run.loader.set_epoch(run.epoch)
                run.model.train()
                bar = _progress_bar(run, start) if progress and run.procs.is_main else None
                for i, (x, y) in enumerate(run.loader):
                    if i < run.batch_in_epoch:  # resuming mid-epoch: already seen
                        continue
                    x = x.to(run.device, non_blocking=True)  # (B, 1, 28, 56) uint8 pixels
                    cond = y.to(run.device) if config.conditional else None  # (B,) labels
                    train_step(run, x, cond, bar)
                    run.batch_in_epoch = i + 1
                    if interrupt.requested:
                        raise interrupt.stop()  # the step is complete: save it below
                    if config.max_steps is not None and run.step >= config.max_steps:
                        stopped = "max_steps"
                    elif config.time_budget and run.procs.out_of_time(start, config.time_budget):
                        stopped = "time_budget"
                    if stopped != "epochs":
                        break
                    if (
                        config.test_every
                        and run.step % config.test_every == 0
                        and run.batch_in_epoch < len(run.loader)  # else the epoch's end tests
                    ):
                        end_of_epoch(run, complete=False)  # a test within the epoch
                        run.model.train()
                if bar is not None:
                    bar.close()
                # A stop at the epoch's last batch completes it: a resume starts the next
                # epoch, rather than finishing this one again with a second test record.
                fields = end_of_epoch(run, complete=run.batch_in_epoch == len(run.loader))
                tested = True
                if interrupt.requested:
                    raise interrupt.stop()  # the epoch is complete and saved
        except KeyboardInterrupt:
            _save_interrupted(run)
            raise
        finally:
            run.logger.close()
    summary = _summary(run, fields, stopped)
    close_processes(run.procs)
    return summary


def nothing_left(config: TrainConfig, step: int, epoch: int) -> str | None:
    """Why a run that has taken ``step`` steps and completed ``epoch`` epochs has nothing left
    to train under ``config`` (its ``--epochs`` or ``--max-steps`` reached), in words; None
    where it has.

    Example:
        >>> nothing_left(TrainConfig(epochs=2), step=8, epoch=2)
        'all 2 epochs trained (step 8); raise --epochs to train on'
        >>> nothing_left(TrainConfig(epochs=2, max_steps=6), step=6, epoch=1)
        '--max-steps 6 is reached (step 6); raise it to train on'
        >>> nothing_left(TrainConfig(epochs=2), step=4, epoch=1) is None
        True
    """
    if epoch >= config.epochs:
        if epoch > config.epochs:
            what = (
                f"it has trained {epoch} epochs (step {step}), more than --epochs {config.epochs}"
            )
        else:
            what = f"{'all' if epoch > 1 else 'its'} {_epochs(epoch)} trained (step {step})"
        return f"{what}; raise --epochs to train on"
    if config.max_steps is not None and step >= config.max_steps:
        return f"--max-steps {config.max_steps} is reached (step {step}); raise it to train on"
    return None


def _epochs(n: int) -> str:
    return f"{n} epoch{'s' if n != 1 else ''}"


def train_step(run: Run, x: torch.Tensor, cond: torch.Tensor | None, bar=None) -> bool:
    """One update on a batch (x (B, C, H, W) uint8, cond (B,) or None); False if skipped.

    A non-finite loss or gradient skips the update (a single bad batch must not poison
    Adam's moments); ``config.max_nonfinite`` of them in a row stop the run.
    """
    config, model = run.config, run.model
    extra: dict = {}
    if run.spec.own_update:  # the model steps its own optimisers, skipping bad updates
        extra = model.train_step(x, cond, run.optimizers, run.noise, grad_clip=config.grad_clip)
        loss, grad_norm = extra.pop("loss"), extra.pop("grad_norm")
    else:
        loss = run.loss_fn(x, cond, run.noise).mean()  # bits/dim of the batch
        run.optimizers["model"].zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = clip_grad_norm(model.parameters(), config.grad_clip)
    if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
        _skip(run, loss, grad_norm)
        return False
    run.extra["consecutive_bad"] = 0
    if not run.spec.own_update:
        run.optimizers["model"].step()
    if run.ema is not None:
        run.ema.update(model)
    for scheduler in run.schedulers.values():
        scheduler.step()
    run.step += 1
    _log_train(run, loss, grad_norm, extra, x.shape[0], bar)
    return True


def end_of_epoch(run: Run, complete: bool = True) -> dict:
    """Evaluate on the test pairs, write samples and curves, checkpoint; the test fields.

    ``complete``: a full epoch (the checkpoint resumes at the next one, samples are named by
    epoch), else a run stopped early (resumes mid-epoch, samples named by step).
    ``best.pt`` is written when the test bits/dim improved; ``last.pt`` only when the model's
    test number is finite, so a diverged model never replaces the last good one.
    """
    name = f"epoch_{run.epoch + 1:03d}.png" if complete else f"step_{run.step:06d}.png"
    if run.procs.is_main:  # after the bar reaches its end: say what the pause is
        print(f"testing: {_testing(run)}", flush=True)
    with run.averaged():  # --ema-decay: the averaged weights are what is tested and sampled
        fields, test_bpd = _evaluate_test(run)
        _write_samples(run, run.out / "samples" / name)
    run.logger.log({"type": "test", "step": run.step, "epoch": run.epoch + 1, **fields,
                    "time": time.time()})  # fmt: skip
    run.logger.plot(run.out / "curves.png")
    noise_states = run.procs.gather(run.noise.get_state())
    if run.procs.world_size > 1:
        in_sync = run.procs.check_in_sync(run.model)
        run.logger.log({"type": "sync", "step": run.step, "ranks": run.procs.world_size,
                        "in_sync": in_sync})  # fmt: skip
    if complete:
        run.epoch, run.batch_in_epoch = run.epoch + 1, 0
    if math.isfinite(test_bpd) and test_bpd < run.best:
        run.best, run.best_step = test_bpd, run.step
        _checkpoint(run, run.out / "best.pt", noise_states)
    if run.spec.likelihood is None or math.isfinite(test_bpd):
        _checkpoint(run, run.out / "last.pt", noise_states)
    elif run.procs.is_main:
        print(f"test {run.spec.bpd_key} is {test_bpd} at step {run.step}: the model diverged and "
              f"was not saved. {_last_good(run)}.", flush=True)  # fmt: skip
    if run.procs.is_main and complete:
        bound = "negative ELBO" if run.spec.likelihood == "bound" else _flow_bound(run)
        print(f"epoch {run.epoch}: {_describe(fields, bound)} (step {run.step})", flush=True)
    return fields


def _flow_bound(run: Run) -> str:
    """Which bound a flow's bits/dim is: variational dequantization's, or (also) the one at
    the image's own clusters of a flow that reads them."""
    if getattr(run.model, "clusters", None) is None:
        return "variational bound"
    variational = run.model.dequantizer.is_bound
    return "bound at its own clusters" + (", variational" if variational else "")


def test_start(run: Run) -> float:
    """Evaluate a fine-tune's starting weights on the test pairs before its first step.

    Logs a test record at step 0 (marked ``"start": true``) and, where the number is finite,
    writes ``best.pt`` with those weights, so that a fine-tune that gets worse keeps the model
    it started from. Returns the test bits/dim (or bound) of the starting weights.
    """
    items = "images" if run.config.layout == "single" else "pairs"
    if run.procs.is_main:
        print(f"testing the starting weights: {len(run.test_set):,} test {items}", flush=True)
    with run.averaged():  # the average starts as the loaded weights
        fields, test_bpd = _evaluate_test(run)
    run.logger.log({"type": "test", "step": 0, "epoch": 0, "start": True, **fields,
                    "time": time.time()})  # fmt: skip
    if math.isfinite(test_bpd):
        run.best, run.best_step = test_bpd, 0
        _checkpoint(run, run.out / "best.pt", run.procs.gather(run.noise.get_state()))
    if run.procs.is_main:
        bound = _flow_bound(run) if run.bpd_key == "bpd_bound" else ""
        print(f"start: {_describe(fields, bound)} (step 0)", flush=True)
    return test_bpd


def start_test_bpd(records: list[dict], key: str = "test_bpd") -> float | None:
    """The test number of a fine-tune's starting weights from its ``metrics.jsonl``
    records (the step-0 test record), or None for a run that has none.

    Example:
        >>> start_test_bpd([{"type": "test", "step": 0, "start": True, "test_bpd": 1.08}])
        1.08
        >>> start_test_bpd([{"type": "test", "step": 9, "test_bpd": 1.1}]) is None
        True
    """
    for record in records:
        if record.get("type") == "test" and record.get("start") and key in record:
            return record[key]
    return None


# ---------------------------------------------------------------------- the pieces
def _skip(run: Run, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
    for opt in run.optimizers.values():
        opt.zero_grad(set_to_none=True)
    bad = run.extra.get("consecutive_bad", 0) + 1
    run.extra["consecutive_bad"] = bad
    run.nonfinite_skipped += 1
    run.logger.log({"type": "nonfinite", "step": run.step, "epoch": run.epoch + 1,
                    "loss": float(loss.detach()), "grad_norm": float(grad_norm),
                    "consecutive": bad})  # fmt: skip
    if bad >= run.config.max_nonfinite:
        raise TrainingDiverged(
            f"{bad} consecutive steps had a non-finite loss or gradient (last loss "
            f"{float(loss.detach())}, grad norm {float(grad_norm)}); stopped. "
            f"{_last_good(run)}; lower --lr or raise --warmup-steps."
        )


def _last_good(run: Run) -> str:
    """Where the last good model is, in words."""
    if run.best_step is not None and math.isfinite(run.best):
        key = run.bpd_key or "test metric"
        return (f"The last good checkpoint is {run.out / 'best.pt'} (step {run.best_step}, "
                f"test {key} {run.best:.4f})")  # fmt: skip
    if (run.out / "last.pt").is_file():
        return f"The last saved checkpoint is {run.out / 'last.pt'}"
    return "No checkpoint was saved before it diverged"


def _log_train(run: Run, loss, grad_norm, extra: dict, batch: int, bar) -> None:
    """A train record every ``log_every`` steps, and the progress bar."""
    tick = run.extra.setdefault("tick", [time.perf_counter(), 0])
    tick[1] += batch * run.procs.world_size
    if bar is not None:
        bar.update(1)
    if run.step % run.config.log_every:
        run.extra["unlogged"] = (loss.detach(), grad_norm, extra)  # logged if Ctrl-C comes
        return
    run.extra.pop("unlogged", None)
    loss = run.procs.mean(loss)  # the global batch's loss, not rank 0's share
    now = time.perf_counter()
    rate = tick[1] / max(now - tick[0], 1e-9)
    tick[:] = [now, 0]
    key = run.bpd_key
    scheduler = next(iter(run.schedulers.values()))
    run.logger.log({
        "type": "train", "step": run.step, "epoch": run.epoch + 1, "loss": loss.item(),
        **({key: loss.item()} if key else {}), **{k: float(v) for k, v in extra.items()},
        "lr": scheduler.get_last_lr()[0], "grad_norm": float(grad_norm),
        "pairs_per_s": rate, "time": time.time(),
    })  # fmt: skip
    if bar is not None:
        shown = {"bpd": loss.item()} if key else extra
        bar.set_postfix(**{k: f"{float(v):.3f}" for k, v in list(shown.items())[:2]},
                        pairs_s=f"{rate:.0f}")  # fmt: skip


def _testing(run: Run) -> str:
    """What the end of an epoch does, in words: ``bits/dim of 10,000 test pairs at step 938,
    then 64 samples and the checkpoints``."""
    items = "images" if run.config.layout == "single" else "pairs"
    what = run.bpd_key and ("bits/dim bound" if run.bpd_key == "bpd_bound" else "bits/dim")
    return (
        f"{what or 'test metrics'} of {len(run.test_set):,} test {items} at step {run.step}, "
        f"then {run.config.sample_n} samples and the checkpoints"
    )


def _evaluate_test(run: Run) -> tuple[dict, float]:
    """The test record's fields and the number ``best.pt`` is chosen by (NaN: none).

    A bar counts the test pairs where the run shows progress and stderr is a terminal.
    """
    key, conditional = run.bpd_key, run.config.conditional
    progress = run.extra.get("test_progress")
    if key is None:
        fields = run.model.test_metrics(run.test_set, device=run.device, conditional=conditional)
        return fields, math.nan
    if has_label_mixture(run.model):
        # One pass: unconditional bits/dim (selects best.pt), given the label, and p(y | x).
        r = evaluate_mixture(
            run.model, run.test_set, device=run.device, batch_size=500, progress=progress
        )
        fields = {
            f"test_{key}": r["bpd"],
            f"test_{key}_stderr": r["bpd_stderr"],
            f"test_{key}_given_label": r["bpd_given_label"],
            "test_accuracy": r["accuracy"],
        }
        return fields, r["bpd"]
    result = evaluate_bpd(
        run.model, run.test_set, device=run.device, conditional=conditional, batch_size=500,
        progress=progress,
    )  # fmt: skip
    fields = {f"test_{key}": result["bpd"], f"test_{key}_stderr": result["bpd_stderr"]}
    return fields, result["bpd"]


def _checkpoint(run: Run, path: Path, noise_states: list) -> None:
    if not run.procs.is_main:
        return
    save_checkpoint(
        {
            "kind": run.config.model,
            "model_config": run.model_config,
            "train_config": run.config.to_dict(),
            "model": run.model.state_dict(),
            **optimizer_state(run),
            "step": run.step,
            "epoch": run.epoch,
            "batch_in_epoch": run.batch_in_epoch,
            "rng": {"noise": noise_states},
            "data": run.train_set.state_dict(),
            "best_test_bpd": run.best,
            "best_step": run.best_step,
            "nonfinite_skipped": run.nonfinite_skipped,
            **({"ema": run.ema.state_dict()} if run.ema is not None else {}),
        },
        path,
    )


def _save_interrupted(run: Run) -> None:
    if run.procs.world_size == 1:
        unlogged = run.extra.pop("unlogged", None)
        if unlogged is not None:  # the train record of the steps since the last one logged
            loss, grad_norm, extra = unlogged
            key = run.spec.bpd_key
            scheduler = next(iter(run.schedulers.values()))
            epoch = run.epoch + (1 if run.batch_in_epoch else 0)  # 0: that epoch is complete
            run.logger.log({
                "type": "train", "step": run.step, "epoch": epoch, "loss": loss.item(),
                **({key: loss.item()} if key else {}), **{k: float(v) for k, v in extra.items()},
                "lr": scheduler.get_last_lr()[0], "grad_norm": float(grad_norm),
                "interrupted": True, "time": time.time(),
            })  # fmt: skip
        _checkpoint(run, run.out / "last.pt", [run.noise.get_state()])
        print(f"\ninterrupted: checkpoint saved to {run.out / 'last.pt'} (step {run.step}); "
              "continue with --resume", flush=True)  # fmt: skip


def _progress_bar(run: Run, start: float):
    """Of the time budget when one is set (the clock ends such runs), else of the batches."""
    from pairflow.training.progress import training_bar

    return training_bar(epoch=run.epoch, epochs=run.config.epochs, steps_per_epoch=len(run.loader),
                        batch_in_epoch=run.batch_in_epoch, step=run.step,
                        time_budget=run.config.time_budget, start_time=start)  # fmt: skip


def _summary(run: Run, fields: dict, stopped: str) -> dict:
    key = run.bpd_key
    if key is not None:
        last = fields.get(f"test_{key}", math.nan)
        tests = {f"test_{key}": last, f"best_test_{key}": run.best}
        start = start_test_bpd(run.logger.records, f"test_{key}")
        if start is not None:  # a fine-tune: what its starting weights scored
            tests[f"start_test_{key}"] = start
            tests["best_step"] = run.best_step
    else:
        tests = dict(fields)
    epoch = run.epoch + (1 if run.batch_in_epoch else 0)  # of the last step, from 1: the bar's
    return {"out": str(run.out), "step": run.step, "epoch": epoch, **tests,
            "nonfinite_skipped": run.nonfinite_skipped, "stopped": stopped}  # fmt: skip


def _last_test_fields(run: Run) -> dict:
    """The test numbers of the run's last test record (rank 0 reads them; {} elsewhere)."""
    tests = [r for r in run.logger.records if r.get("type") == "test"]
    if not tests:
        return {}
    return {k: v for k, v in tests[-1].items() if k not in ("type", "step", "epoch", "time")}


def _describe(fields: dict, bound: str = "negative ELBO") -> str:
    """The epoch line's test numbers, e.g. ``test bits/dim 1.2345``; ``bound`` names what a
    bound on bits/dim is (a VAE's negative ELBO, a flow's variational bound)."""
    if "test_bpd" in fields:
        return f"test bits/dim {fields['test_bpd']:.4f}"
    if "test_bpd_bound" in fields:
        return f"test bits/dim <= {fields['test_bpd_bound']:.4f} ({bound})"
    return ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in fields.items())


@torch.no_grad()
def _write_samples(run: Run, path: Path) -> None:
    """A grid of ``config.sample_n`` samples at ``config.sample_temperature`` (rank 0)."""
    if not run.procs.is_main:
        return
    from pairflow.images import save_grid

    config, model = run.config, run.model
    gen = torch.Generator(device=run.device).manual_seed(config.seed + 7)
    cond = labels = None
    if config.conditional:
        pairs = config.layout == "pair"  # labels 00..99 in turn, or single images' 0..9
        cond = torch.arange(config.sample_n, device=run.device) % num_classes_of(config.layout)
        labels = [f"{int(c):02d}" if pairs else str(int(c)) for c in cond]
    was_training = model.training
    model.eval()
    images = model.sample((config.sample_n,), cond=cond, temperature=config.sample_temperature,
                          generator=gen)  # fmt: skip
    model.train(was_training)
    save_grid(images.cpu(), path, nrow=8, labels=labels)
    run.logger.image("samples", path, run.step)
