"""``pairflow train``: train a flow (or a VAE or GAN baseline) on image pairs (MNIST by default)."""

from __future__ import annotations

import argparse
import json
import math
import sys

from pairflow.cli import UsageError, seed_arg
from pairflow.options import DEFAULT_DATASET, DEFAULT_LAYOUT, DatasetName, Layout, choices

# Flags map one-to-one onto TrainConfig fields; default None means "not given" so that a
# config file's value (or the checkpoint's, on --resume) is kept unless the flag is set.
_FLAGS = {
    "model": dict(help="flow (default), vae (ELBO bound) or gan (samples only): the baselines"),
    "preset": dict(
        choices=None,
        help="model preset: flow seed (MLP RealNVP) or multiscale (conv, default); vae conv; "
        "gan dcgan",
    ),
    "epochs": dict(type=int, help="epochs of 60,000 pairs (default 10)"),
    "batch_size": dict(type=int, help="pairs per optimiser step (default 64)"),
    "lr": dict(
        type=float, help="Adam learning rate (default 1e-3; 2e-4 for a fine-tune, --init-from)"
    ),
    "warmup_steps": dict(
        type=int, help="linear learning-rate warmup steps (default 200; 100 for a fine-tune)"
    ),
    "schedule": dict(help="learning rate after warmup: constant (default) or cosine"),
    "grad_clip": dict(type=float, help="gradient-norm clip (default 100)"),
    "max_steps": dict(type=int, help="stop after this many steps (tiny runs)"),
    "time_budget": dict(type=float, help="stop after this many minutes of training"),
    "num_pairs": dict(type=int, help="training pairs per epoch (default 60,000)"),
    "test_pairs": dict(type=int, help="fixed test pairs evaluated each epoch (default 10,000)"),
    "data_dir": dict(help="data root holding MNIST/raw (default $PAIRFLOW_DATA or ./data)"),
    "dataset": dict(
        choices=choices(DatasetName),
        help=f"{', '.join(choices(DatasetName))}: the images the model learns "
        f"(default {DEFAULT_DATASET})",
    ),
    "layout": dict(
        choices=choices(Layout),
        help=f"pair: two images side by side, label 10a+b; single: one image (default "
        f"{DEFAULT_LAYOUT})",
    ),
    "out": dict(help="run folder (default runs/default)"),
    "device": dict(help="auto (default), cpu, cuda or cuda:N"),
    "precision": dict(
        help="conditioner arithmetic: fp32, bf16 or auto (default: bf16 where it is faster here: "
        "AMX CPUs, CUDA GPUs with bf16; measured once on AVX512-BF16 CPUs without AMX)"
    ),
    "seed": dict(type=seed_arg, help="seed of initialisation, pairing and noise (default 0)"),
    "threads": dict(
        type=int,
        help="torch CPU threads (default: torch's, one per core); on a shared machine also set "
        "OMP_WAIT_POLICY=PASSIVE",
    ),
    "sample_n": dict(type=int, help="samples in each epoch's grid (default 64)"),
    "sample_temperature": dict(type=float, help="temperature of those samples (default 0.7)"),
    "log_every": dict(type=int, help="steps between logged train metrics (default 20)"),
    "test_every": dict(
        type=int,
        metavar="STEPS",
        help="also test (and checkpoint) every STEPS steps within an epoch, for bits/dim "
        "curves finer than one point per epoch (default: at each epoch's end only)",
    ),
    "ema_decay": dict(
        type=float,
        help="keep an exponential moving average of the weights with this decay (e.g. 0.999) "
        "and evaluate, sample and export with it (default 0: off; 0.999 for a fine-tune, "
        "whose average starts as the weights it starts from)",
    ),
    "init_from": dict(
        metavar="RUN",
        help="start from the weights of this run folder, checkpoint or shipped model (e.g. "
        "multiscale; fine-tuning with a fresh optimiser and schedule), with its preset unless "
        "--preset says otherwise. Parameters the new "
        "model adds, e.g. a label prior via --set conditioning=both, keep their initialisation. "
        "The starting weights are tested first (step 0: best.pt starts as them), and the "
        "run ends comparing the two numbers",
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for name, kwargs in _FLAGS.items():
        kwargs = {k: v for k, v in kwargs.items() if k != "choices" or v is not None}
        parser.add_argument("--" + name.replace("_", "-"), dest=name, default=None, **kwargs)
    parser.add_argument(
        "--conditional",
        action="store_true",
        default=None,
        help="train a class-conditional model (condition on the pair label)",
    )
    parser.add_argument(
        "--balanced",
        action="store_true",
        default=None,
        help="draw all 100 pair classes equally often (else natural pairing)",
    )
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the loss (slow first step; falls back to eager if compiling "
        "fails); default: auto, i.e. for multiscale runs long enough to pay it back",
    )
    parser.add_argument(
        "--tensorboard",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also write the logged metrics and each epoch's sample grid as TensorBoard events "
        "in RUN/tensorboard/ (needs: pip install tensorboard; view with tensorboard --logdir "
        "RUN)",
    )
    parser.add_argument("--config", help="TOML/YAML/JSON file of settings; flags override it")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last.pt"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in an --out that holds a run: delete its checkpoints, metrics and "
        "samples first",
    )
    parser.add_argument(
        "--download", action="store_true", help="fetch the MNIST files into the root if missing"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a model config field, e.g. --set hidden_channels=64",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--recipe",
        metavar="FILE",
        help="train every stage of a recipe (recipes/NAME.toml) into --out: stage i in "
        "OUT/stage-i-NAME, the last one's model in OUT/final.pt. Run again after a stop, the "
        "same command keeps the finished stages and resumes the running one (--resume is "
        "implied). Only --out, --data-dir, --device, --threads, --download, --no-progress, "
        "--set, --recipe-set and --until go with it",
    )
    parser.add_argument(
        "--recipe-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --recipe: set a training setting in every stage (a --config key, e.g. "
        "max_steps=2 for a smoke run); recorded, so the run continues only with the same ones",
    )
    parser.add_argument(
        "--until",
        metavar="STAGE",
        help="with --recipe: stop after this stage (e.g. reproduce only the first); the same "
        "command without --until continues from there",
    )


# What --resume applies from this invocation: stopping rules, the schedule's shape (the
# learning-rate factor is recomputed each step; the base rate lives in the optimiser state),
# clipping, where the data is, and how the run is executed and logged. Everything else is fixed
# by last.pt (model, data pairing, batch size, optimiser) and refused when asked to change.
RESUMABLE = (
    "epochs", "max_steps", "time_budget", "warmup_steps", "schedule", "grad_clip", "data_dir",
    "out", "device", "threads", "compile", "sample_n", "sample_temperature", "log_every",
    "test_every", "max_nonfinite", "tensorboard",
)  # fmt: skip


def _parse_overrides(items: list[str], flag: str = "--set") -> dict:
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} expects KEY=VALUE, got {item!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            # "inf"/"nan" are numbers to a user (and then refused as not finite), not strings.
            is_float = value.strip().lower().lstrip("+-") in ("inf", "infinity", "nan")
            overrides[key] = float(value) if is_float else value
    return overrides


def _shipped_init(name: str) -> str:
    """``--init-from NAME`` of a shipped model (``pairflow sample --list-pretrained``): its file."""
    from pairflow.pretrained import list_pretrained, pretrained_path

    if name not in list_pretrained():
        valid = ", ".join(sorted(list_pretrained())) or "none ship with this build"
        raise UsageError(
            f"--init-from {name}: no such run folder or checkpoint, and no shipped model of "
            f"that name (shipped: {valid})"
        )
    return str(pretrained_path(name))


def _source_preset(config) -> str | None:
    """A fine-tune given no --preset builds its source's: set ``config.preset`` to the
    ``--init-from`` checkpoint's where it differs from the default, and return it (None where
    it does not differ, or the source is unreadable or of another kind: training names that)."""
    from pairflow.training.setup import source_config

    source = source_config(config.init_from)  # read once, with the setup's reading of it
    preset = source.get("train_config", {}).get("preset")
    if source.get("kind") != config.model or not preset or preset == config.preset:
        return None
    config.preset = preset
    return preset


def _resume_base(out: str, asked: dict) -> tuple[dict, tuple[int, int]]:
    """The saved train config of ``out``'s checkpoint and its ``(step, epoch)``; UsageError if
    ``asked`` (flags and file values given) changes what a resumed run cannot change."""
    from pathlib import Path

    from pairflow.training import load_checkpoint

    folder = Path(out)
    last = folder / "last.pt"
    if not last.is_file():
        if (folder / "best.pt").is_file():
            last = folder / "best.pt"  # a kill during the first last.pt write: see runfolder
        else:
            raise UsageError(f"--resume: no checkpoint {last}; train without --resume first")
    state = load_checkpoint(last)
    # Runs from before datasets were MNIST pairs.
    saved = {"dataset": DEFAULT_DATASET, "layout": DEFAULT_LAYOUT, **state["train_config"]}
    for key in ("model", "preset", "conditional", "dataset", "layout"):
        if asked.get(key) is not None and asked[key] != saved.get(key):
            raise UsageError(
                f"--resume: {last} was trained with {key}={saved.get(key)!r}, "
                f"not {asked[key]!r}; use a new --out to train another model"
            )
    fixed = [
        (key, saved.get(key), value)
        for key, value in asked.items()
        if key not in RESUMABLE and value is not None and value != saved.get(key)
    ]
    if fixed:
        detail = "; ".join(f"{_flag(k)}: the run has {s!r}, asked {v!r}" for k, s, v in fixed)
        changeable = [_flag(k) for k in RESUMABLE if k in _FLAGS and k != "out"]
        changeable += ["--compile", "--tensorboard"]
        raise UsageError(
            f"--resume cannot change {', '.join(_flag(k) for k, _, _ in fixed)} ({detail}): the "
            f"model, data and optimiser come from {last}. Resume without them, or start a new "
            "run with another --out (--init-from RUN to start from its weights). --resume can "
            f"change {', '.join(changeable)}"
        )
    return saved, (state["step"], state["epoch"])


def _flag(key: str) -> str:
    """The command-line spelling of TrainConfig field ``key``."""
    return "--set" if key == "model_overrides" else "--" + key.replace("_", "-")


def _check_model_config(config, resume: bool) -> None:
    """Build the model config the run will use, so that a bad --set fails before anything,
    and refuse a new model too large for the device's memory before allocating it."""
    from pairflow.models import kind_spec
    from pairflow.training.checkpoint import model_config_class
    from pairflow.training.memory import check_model_fits
    from pairflow.training.setup import inherited_from_source, model_config
    from pairflow.utils import resolve_device

    # A fine-tune's fields kept from its source (its own clusters...) count, as in training.
    overrides = {**inherited_from_source(config), **config.model_overrides}
    if kind_spec(config.model).conditions:  # settings that need labels are judged with them
        overrides.setdefault("conditional", config.conditional)
    model_config_class(config.model).from_preset(config.preset, **overrides)
    if not resume:  # a resumed model's size is its checkpoint's
        values = model_config(config, "fp32")  # the precision does not change its size
        device = resolve_device(config.device)
        check_model_fits(config.model, values, device, ema=config.ema_decay > 0)


def _tuned_line(tuned: dict) -> str:
    """What the fine-tune defaults set, in words, with the flags that change them."""
    values = ", ".join(f"{_flag(k)} {v:g}" for k, v in tuned.items())
    return f"fine-tune defaults (--init-from, not set here): {values}"


def fine_tune_verdict(summary: dict, config) -> str | None:
    """A fine-tune's closing line: the test bits/dim it started at and ended at, and, when it
    ended worse, that it did, the likely reasons, and which checkpoint holds the better model.
    None for a run that did not start from weights (no step-0 test in ``summary``).

    Example:
        >>> from pairflow.training import TrainConfig
        >>> config = TrainConfig(init_from="multiscale", lr=1e-3, ema_decay=0.0)
        >>> print(fine_tune_verdict({"start_test_bpd": 1.08, "test_bpd": 1.07, "step": 50,
        ...                          "best_test_bpd": 1.07, "best_step": 50}, config))
        fine-tune: started at test bits/dim 1.0800, ended at 1.0700 (better by 0.0100)
    """
    key = next((k[len("start_") :] for k in summary if k.startswith("start_test_")), None)
    if key is None:
        return None
    start, end = summary[f"start_{key}"], summary.get(key, math.nan)
    what = "test bits/dim <=" if key.endswith("bound") else "test bits/dim"
    line = f"fine-tune: started at {what} {start:.4f}, ended at {end:.4f}"
    if f"{abs(end - start):.4f}" == "0.0000":  # the same in the digits shown
        return f"{line} (unchanged to within 0.0001)"
    if end < start:
        return f"{line} (better by {start - end:.4f})"
    reasons = []
    steps = summary.get("step", 0)
    if steps < 1000:
        reasons.append(
            f"{steps} step{'s are' if steps != 1 else ' is'} too few for Adam's fresh "
            f"moments to settle at --lr {config.lr:g}"
        )
    from pairflow.training.config import FINE_TUNE_DEFAULTS

    if config.lr > FINE_TUNE_DEFAULTS["lr"]:
        reasons.append(
            f"--lr {config.lr:g} is above the fine-tune default {FINE_TUNE_DEFAULTS['lr']:g}"
        )
    if not config.ema_decay:
        reasons.append("no weight average (--ema-decay 0): the last step's weights are noisy")
    why = "; ".join(reasons) or "the starting weights were already at their optimum here"
    best = summary.get("best_step")
    held = (
        "best.pt holds the starting weights"
        if best == 0
        else f"best.pt holds step {best} ({summary.get('best_' + key, math.nan):.4f})"
    )
    return (
        f"{line}: the fine-tuned model is WORSE by {end - start:.4f}. Likely why: {why}. "
        f"{held}; last.pt holds the fine-tuned weights. A longer run (--time-budget), a lower "
        "--lr or --ema-decay 0.999 fine-tunes more gently"
    )


def _check_data(config, download: bool) -> None:
    """The dataset's files exist (fetched first with --download), before the run folder."""
    from pairflow.data import get_dataset, resolve_root

    root = resolve_root(config.data_dir)
    spec = get_dataset(config.dataset)
    if download:
        spec.download(root, verbose=True)
    spec.require_files(root)


def run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from pairflow.data import MNISTDownloadError, MNISTNotFoundError
    from pairflow.training import CheckpointError, load_config_file, merge_config
    from pairflow.training.config import fine_tune_defaults
    from pairflow.training.loop import nothing_left

    if args.recipe is not None:
        return _run_recipe(args)
    if args.recipe_set:
        raise UsageError("--recipe-set changes a recipe's settings; it needs --recipe FILE")
    if args.until is not None:
        raise UsageError("--until names a recipe stage; it needs --recipe FILE")
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite exclude each other: continue or start over")
    flags = {name: getattr(args, name) for name in _FLAGS}
    flags["conditional"] = args.conditional
    flags["balanced"] = args.balanced
    flags["compile"] = args.compile
    flags["tensorboard"] = args.tensorboard
    if args.set:
        flags["model_overrides"] = _parse_overrides(args.set)
    # Under torchrun, rank 0 owns the folder and speaks; the other ranks write nothing there.
    main_rank = os.environ.get("RANK", "0") == "0"
    progress = None  # --resume: the checkpoint's (step, epoch)
    try:
        base = load_config_file(args.config) if args.config else {}
        if args.resume:
            out = flags["out"] or base.get("out") or "runs/default"
            asked = {**base, **{k: v for k, v in flags.items() if v is not None}}
            saved, progress = _resume_base(out, asked)
            base = {**saved, **base}
        given = {**base, **{k: v for k, v in flags.items() if v is not None}}
        tuned = {} if args.resume else fine_tune_defaults(given)
        config = merge_config(base, flags)
        done = progress and nothing_left(config, *progress)
        if done:  # say so before anything is read or written
            if main_rank:
                print(f"pairflow train: the run in {config.out} already finished: {done}")
            return 0
        if config.tensorboard:  # an optional package: missing, say so before any work
            from pairflow.training.tensorboard import require_tensorboard

            require_tensorboard()
        if config.init_from and not Path(config.init_from).exists():
            config.init_from = _shipped_init(config.init_from)  # a shipped model's name
        fine_tune = config.init_from and not args.resume and not given.get("preset")
        inherited = _source_preset(config) if fine_tune else None
        if inherited and main_rank:
            print(f"preset: {inherited}, the --init-from source's (--preset chooses another)")
        _check_model_config(config, args.resume)
        _check_data(config, args.download)
        if tuned and main_rank:
            print(_tuned_line(tuned), flush=True)
    except MNISTNotFoundError as err:  # say it in flags
        from pairflow.commands._common import data_usage_error

        root = err.missing.parents[2] if err.missing is not None else "?"  # root/MNIST/raw/file
        raise data_usage_error(err, root, download_flag="add --download") from err
    except (ValueError, CheckpointError, FileNotFoundError, MNISTDownloadError) as err:
        raise UsageError(str(err)) from err
    code, _ = _train(config, args.resume, args.overwrite, not args.no_progress, main_rank)
    return code


def _train(config, resume: bool, overwrite: bool, progress: bool, main_rank: bool = True):
    """Train ``config`` in its run folder and print the outcome: (exit code, summary)."""
    from contextlib import nullcontext
    from pathlib import Path

    from pairflow.data import MNISTFormatError
    from pairflow.training import CheckpointError, TrainingDiverged, train
    from pairflow.training.loop import nothing_left
    from pairflow.training.runfolder import RunFolderError, open_run_folder

    folder = (
        open_run_folder(config.out, resume=resume, overwrite=overwrite)
        if main_rank
        else nullcontext()
    )
    try:
        with folder:
            summary = train(config, resume=resume, progress=progress)
    except TrainingDiverged as err:
        print(f"pairflow train: {err}")
        return 1, None
    except (RunFolderError, FileNotFoundError, CheckpointError, MNISTFormatError) as err:
        raise UsageError(str(err)) from err
    except ValueError as err:
        raise UsageError(str(err)) from err
    except OSError as err:  # disk full, permissions: the checkpoints already written stay intact
        print(
            f"pairflow train: error: {err}. Checkpoints written before are intact"
            f" (see {config.out}); free space or fix the folder, then continue with --resume",
            file=sys.stderr,
        )
        return 1, None
    final = [v for k, v in summary.items() if k in ("test_bpd", "test_bpd_bound")]
    diverged = bool(final) and not math.isfinite(final[0])
    if not main_rank:  # rank 0 reports the run
        return (1 if diverged and summary["stopped"] != "finished" else 0), summary
    if summary["stopped"] == "finished":  # a checkpoint of an earlier version: found in setup
        done = nothing_left(config, summary["step"], summary["epoch"])
        print(f"pairflow train: the run in {config.out} already finished: {done}")
        return 0, summary
    print(json.dumps(summary, indent=2))
    if diverged:  # a diverged model must not look like a result
        print(
            f"pairflow train: the run ended with a diverged model (test bits/dim {final[0]}); "
            "it was not checkpointed, see above for the last good checkpoint"
        )
        return 1, summary
    verdict = fine_tune_verdict(summary, config)
    if verdict:
        print(verdict)
    kept = "best.pt, last.pt" if (Path(summary["out"]) / "best.pt").is_file() else "last.pt"
    events = "tensorboard/, " if config.tensorboard else ""
    print(f"run folder: {summary['out']} (curves.png, samples/, metrics.jsonl, {events}{kept})")
    return 0, summary


# What a recipe run takes from the command line: where it runs, not what it trains.
_RECIPE_RUN_FLAGS = ("out", "data_dir", "device", "threads")


def _run_recipe(args: argparse.Namespace) -> int:
    """``pairflow train --recipe FILE --out DIR``: every stage of the recipe in turn, each in
    DIR/stage-i-NAME; finished stages (recorded in DIR/recipe.json) are kept, a stage with a
    checkpoint resumes, and the last stage's model is copied to DIR/final.pt."""
    import os
    import shutil
    from pathlib import Path

    from pairflow.data import MNISTDownloadError, MNISTNotFoundError
    from pairflow.training import CheckpointError, find_checkpoint, load_checkpoint
    from pairflow.training.loop import nothing_left
    from pairflow.training.recipe import (
        FINAL,
        STATE,
        load_recipe,
        plan_stages,
        read_state,
        write_state,
    )
    from pairflow.training.runfolder import holds_run
    from pairflow.utils import atomic_write

    asked = [k for k in _FLAGS if k not in _RECIPE_RUN_FLAGS and getattr(args, k) is not None]
    given = [_flag(k) for k in asked]
    given += [f"--{k}" for k in ("conditional", "balanced") if getattr(args, k) is not None]
    if args.compile is not None:
        given.append("--compile" if args.compile else "--no-compile")
    given += [f"--{k}" for k in ("config", "overwrite") if getattr(args, k)]
    if given:
        raise UsageError(
            f"--recipe {args.recipe} holds every training setting, so {', '.join(given)} "
            "cannot go with it: change the recipe, or set a key in every stage with "
            "--recipe-set KEY=VALUE (to start over, use a new --out)"
        )
    if args.out is None:
        raise UsageError("--recipe needs --out DIR: the folder its stages train in")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError("--recipe runs on one process; run its stages under torchrun one by one")
    out = Path(args.out)
    try:
        recipe = load_recipe(args.recipe)
        recorded = _parse_overrides(args.recipe_set, "--recipe-set")
        model_overrides = _parse_overrides(args.set)
        execution = {k: getattr(args, k) for k in _RECIPE_RUN_FLAGS if k != "out"}
        execution = {k: v for k, v in execution.items() if v is not None}
        planned = plan_stages(recipe, out, {**recorded, **execution}, model_overrides)
        until = recipe.stage(args.until).index if args.until is not None else len(planned)
        record = {
            "recipe": str(recipe.path),
            "recipe_sha256": recipe.sha256,
            "recipe_set": recorded,
            "set": model_overrides,
        }
        state = read_state(out)
        if state is None:
            if out.exists() and (not out.is_dir() or holds_run(out) or any(out.iterdir())):
                raise UsageError(
                    f"--out {out} is not empty and holds no recipe run ({STATE}); use a new "
                    "or empty folder for a recipe"
                )
            finished: list[str] = []
        else:
            _check_same_recipe(out, state, record)
            finished = list(state["finished"])
        stage_folders = {str(c.out) for _, c in planned}
        for stage, config in planned:
            shipped = config.init_from and config.init_from not in stage_folders
            if shipped and not Path(config.init_from).exists():
                config.init_from = _shipped_init(config.init_from)
            # Every stage's model settings, before the first trains (memory: at its start).
            try:
                _check_model_config(config, resume=True)
            except ValueError as err:
                where = f"recipe {recipe.path}, stage {stage.index} ({stage.name})"
                raise UsageError(f"{where}: {err}") from err
        for config in {(c.dataset, c.data_dir): c for _, c in planned}.values():
            _check_data(config, args.download)
    except MNISTNotFoundError as err:
        from pairflow.commands._common import data_usage_error

        root = err.missing.parents[2] if err.missing is not None else "?"
        raise data_usage_error(err, root, download_flag="add --download") from err
    except (ValueError, CheckpointError, FileNotFoundError, MNISTDownloadError) as err:
        raise UsageError(str(err)) from err

    names = [stage.name for stage, _ in planned]
    write_state(out, {**record, "stages": names, "finished": finished, "final": None})
    for stage, config in planned[:until]:
        folder = Path(config.out)
        label = f"recipe {recipe.path.stem}, stage {stage.index}/{len(planned)} ({stage.name})"
        if stage.name in finished:
            print(f"{label}: finished, kept in {folder}", flush=True)
            continue
        resume = (folder / "last.pt").is_file() or (folder / "best.pt").is_file()
        if resume:
            saved = load_checkpoint(find_checkpoint(folder, prefer="last"))
            done = nothing_left(config, saved["step"], saved["epoch"])
            if done:
                print(f"{label}: finished ({done}), kept in {folder}", flush=True)
            else:
                print(f"{label}: resuming in {folder} at step {saved['step']}", flush=True)
        else:
            done = None
            source = names[stage.index - 2] if stage.init_from == "previous" else stage.init_from
            start = f", from {source}" if source else ""
            print(f"{label}: training in {folder}{start}", flush=True)
        if not done:
            try:
                _check_model_config(config, resume)
            except ValueError as err:
                raise UsageError(str(err)) from err
            overwrite = not resume and folder.exists()  # a start that saved no checkpoint
            code, _ = _train(config, resume, overwrite, not args.no_progress)
            if code != 0:
                return code
        finished.append(stage.name)
        write_state(out, {**record, "stages": names, "finished": finished, "final": None})
    if until < len(planned):
        print(
            f"recipe {recipe.path.stem}: stopped after stage {until} ({names[until - 1]}) as "
            f"asked; the same command without --until continues with stage {until + 1}"
        )
        return 0
    last = find_checkpoint(planned[-1][1].out)
    with open(last, "rb") as source:
        atomic_write(out / FINAL, lambda f: shutil.copyfileobj(source, f))
    write_state(out, {**record, "stages": names, "finished": finished, "final": FINAL})
    print(f"recipe {recipe.path.stem}: all {len(planned)} stages trained; final model: "
          f"{out / FINAL} (from {last})")  # fmt: skip
    return 0


def _check_same_recipe(out, state: dict, record: dict) -> None:
    """UsageError unless the recipe run in ``out`` was started with ``record``'s recipe and
    overrides: a run continues only as the run it is."""
    if state.get("recipe_sha256") != record["recipe_sha256"]:
        raise UsageError(
            f"--out {out} holds a run of the recipe {state.get('recipe')} as it was then; "
            f"{record['recipe']} differs from it (SHA-256 {record['recipe_sha256'][:12]}..., "
            f"the run's {str(state.get('recipe_sha256'))[:12]}...). Continue with that recipe, "
            "or train the changed one into a new --out"
        )
    for key, flag in (("recipe_set", "--recipe-set"), ("set", "--set")):
        if state.get(key, {}) != record[key]:
            was = " ".join(f"{flag} {k}={json.dumps(v)}" for k, v in state.get(key, {}).items())
            raise UsageError(
                f"--out {out} was started with {was or f'no {flag}'}, not "
                f"{record[key] or 'none'}; run the same command to continue it, or use a new --out"
            )
