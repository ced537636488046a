"""``pairflow sample``: draw image pairs (or single images) from a trained or shipped model.

``--out FILE.npz`` holds ``images``: uint8 (N, H, W) for one-channel models (MNIST,
Fashion-MNIST) and (N, C, H, W) for colour ones (CIFAR-10: channels R, G, B), and
``labels`` (N,) int64 for conditional models.

Labels: a model of pairs (``--layout pair``, the default) takes ``--pair 37`` (two digits,
left then right); a model of single images (``--layout single``) takes ``--label 7`` (one
class 0..9). ``--grid`` is the 10x10 table of pairs, or for single images one row per class.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
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
    dataset_of,
    layout_of,
    load_model_from_args,
)
from pairflow.models import has_label_prior
from pairflow.options import (
    DEFAULT_TEMPERATURE,
    LABEL_FREE_TEMPERATURE,
    MAX_INTERPOLATION_STEPS,
    default_guidance,
    default_temperature,
)

DEFAULT_OUT = "samples.png"
DEFAULT_N = 64
DEFAULT_ROWS = 8  # --interpolate's rows without --n
MAX_ROWS = 100  # --interpolate: 100 rows of at most 100 steps fill one PNG grid (MAX_GRID)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument(
        "--n",
        type=int,
        default=None,
        help=f"number of samples (default {DEFAULT_N}); with --interpolate, the number of rows "
        f"(default {DEFAULT_ROWS}, at most {MAX_ROWS})",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="scale of the latent's standard deviation (default: a shipped model's own, "
        f"chosen by its sweep, see pairflow info NAME; else {DEFAULT_TEMPERATURE}, and "
        f"{LABEL_FREE_TEMPERATURE} where a conditional flow draws the labels from its p(y), "
        "the label-free sampler, whose FD is best there)",
    )
    parser.add_argument("--guidance", type=float, metavar="W", help=GUIDANCE_HELP)
    parser.add_argument("--seed", type=seed_arg, default=0, help="seed of the latents (default 0)")
    parser.add_argument(
        "--out",
        help=f"FILE.png (grid), FILE.npz (arrays) or a folder (one PNG each); default "
        f"{DEFAULT_OUT} in the current folder",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=1000,
        help="samples per inverse pass (default 1000; memory grows with it)",
    )
    parser.add_argument(
        "--pair",
        help="conditional models of pairs: pair labels to draw, two digits each (left, right), "
        "e.g. 37 or 37,05,99; --n samples of each (without --pair a conditional flow draws "
        "each sample's label from its p(y), the training pairs' label frequencies; models of "
        "single images take --label)",
    )
    parser.add_argument(
        "--label",
        help="conditional models of single images (--layout single): class labels to draw, "
        "one digit 0..9 each, e.g. 7 or 1,4,7; --n samples of each (pair models take --pair)",
    )
    parser.add_argument(
        "--grid",
        action="store_true",
        help="conditional models: the 10x10 table of all pairs (row = left digit), or for "
        "single images one row per class 0..9; not with --pair or --label",
    )
    parser.add_argument(
        "--interpolate",
        action="store_true",
        help="latent interpolation between real test pairs instead of sampling, one row per "
        "pair of pairs (--n rows, --steps images each; conditional models: each row under the "
        "start pair's label); takes no --pair, --label, --grid or --temperature",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=10,
        help=f"--interpolate: images per row, 2..{MAX_INTERPOLATION_STEPS} (default 10)",
    )
    parser.add_argument(
        "--data-dir",
        help="data root for --interpolate's test pairs, the model's own dataset (default "
        "$PAIRFLOW_DATA or ./data)",
    )
    add_threads_argument(parser)
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (it shows only on a terminal anyway)",
    )
    parser.add_argument(
        "--no-denoise",
        action="store_true",
        help="a flow trained with noise: skip the score-based denoising step its samples end "
        "with by default (the raw samples are of noisy data)",
    )
    parser.add_argument(
        "--list-pretrained",
        action="store_true",
        help="list the shipped models with their test bits/dim, then exit",
    )


def parse_pairs(text: str) -> list[int]:
    """``"37,05,99"`` -> ``[37, 5, 99]``; each label is two digits, left then right
    (:func:`pairflow.validation.parse_label`, the app's rule too: ``3`` is refused, it could
    mean 03 or 30)."""
    return _parse_labels(text, "pair", "--pair")


def _is_digits(text: str, count: int) -> bool:
    return text.isascii() and text.isdigit() and len(text) == count


def parse_classes(text: str) -> list[int]:
    """``"1,4,7"`` -> ``[1, 4, 7]``; each label is one class 0..9 (models of single images)."""
    return _parse_labels(text, "single", "--label")


def _parse_labels(text: str, layout: str, flag: str) -> list[int]:
    """Comma-separated labels, each by :func:`pairflow.validation.parse_label`."""
    from pairflow.validation import parse_label

    labels = []
    for item in text.split(","):
        try:
            labels.append(parse_label(item, layout))
        except ValueError as err:
            pair = layout == "single" and _is_digits(item.strip(), 2)
            hint = f": a pair model takes --pair {item.strip()}" if pair else ""
            raise UsageError(f"{flag}: {err}{hint} (several: comma-separated)") from None
    return labels


def _requested_labels(args: argparse.Namespace, layout: str, source) -> list[int] | None:
    """The labels of ``--pair`` (pair models) or ``--label`` (single images), checked
    against the model's layout; None when neither was given."""
    if layout == "single" and args.pair is not None:
        one = args.pair.strip()
        form = "--label D, one digit D per label (e.g. --label 3 or --label 1,4,7)"
        raise UsageError(
            f"{source} draws single images, whose labels are one class 0..9, not pairs: give "
            f"{f'--label {one}' if _is_digits(one, 1) else form}; --pair takes two-digit pair "
            "labels, for pair models"
        )
    if layout == "pair" and args.label is not None:
        raise UsageError(
            f"--label is for models of single images; {source} draws pairs: give --pair "
            "LABELS, two digits each (left, right), e.g. --pair 37"
        )
    if args.pair is not None:
        return parse_pairs(args.pair)
    if args.label is not None:
        return parse_classes(args.label)
    return None


def run(args: argparse.Namespace) -> int:
    if args.list_pretrained:
        return _list_pretrained()
    if args.interpolate:
        _check_interpolate_args(args)  # and --n becomes the number of rows
    elif args.n is None:
        args.n = DEFAULT_N
    _check_args(args)
    if args.out is None:
        args.out = DEFAULT_OUT
        print(f"no --out given: writing {DEFAULT_OUT} in the current folder")
    out = Path(args.out)
    if args.interpolate:
        if out.suffix.lower() != ".png":
            raise UsageError(f"--interpolate writes a PNG; got --out {out}")
        kind = "png"
    else:
        kind = _out_kind(out)
    check_output_path(out, folder=kind == "folder")
    apply_threads(args.threads)
    model, state, source = load_model_from_args(args)
    conditional = bool(state["model_config"].get("conditional", False))
    if (args.pair is not None or args.label is not None or args.grid) and not conditional:
        flag = "--pair" if args.pair is not None else "--grid" if args.grid else "--label"
        raise UsageError(
            f"{flag} needs a conditional model, but {source} is unconditional; "
            "train one with --conditional or use a *-cond pretrained model"
        )
    layout = layout_of(state)
    pairs = _requested_labels(args, layout, source)
    if args.guidance is not None:
        from pairflow.evaluation import check_guidance_for

        try:
            check_guidance_for(model, state["model_config"], source, args.guidance)
        except ValueError as err:
            raise UsageError(f"--guidance {args.guidance:g}: {err}") from None
    if args.interpolate:
        from pairflow.models import kind_spec

        if not kind_spec(state["kind"]).encodes:
            raise UsageError(
                f"--interpolate needs a model with an encoder (flow or vae); {source} is a "
                f"{state.get('kind')} model"
            )
        return _interpolate(model, args, conditional, dataset_of(state))
    return _sample(model, state, args, pairs, conditional, out, kind, layout)


def _list_pretrained() -> int:
    from pairflow.pretrained import card_line, list_pretrained

    models = list_pretrained()
    if not models:
        print("no pretrained models ship with this build")
        return 0
    for name in sorted(models):
        print(card_line(name))
    print("(pairflow info NAME prints a model's card: recipe, training, data, figures)")
    return 0


def _check_args(args: argparse.Namespace) -> None:
    if args.n < 1:
        raise UsageError(f"--n must be a positive number of samples, got {args.n}")
    check_temperature(args.temperature)
    check_guidance_arg(args.guidance)
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    check_threads(args.threads)
    if args.pair is not None and args.grid:
        raise UsageError(
            "--pair and --grid exclude each other: --grid draws all 100 pairs; give --pair "
            "LABELS for some of them"
        )
    if args.label is not None and (args.grid or args.pair is not None):
        other = "--grid" if args.grid else "--pair"
        raise UsageError(
            f"--label and {other} exclude each other: --label LABELS draws some classes of a "
            "single-image model, --grid all of them, --pair labels of a pair model"
        )


def _sample(
    model, state, args, pairs, conditional: bool, out: Path, kind: str, layout: str = "pair"
) -> int:
    """Draw ``--n`` samples (of each ``--pair``/``--label``, or the ``--grid``) into ``out``."""
    import torch

    device = model.device
    labels = None
    n = args.n
    label_free = False  # a conditional flow drawing its labels from p(y)
    num_classes = model.config.num_classes  # 100 pair labels, or 10 classes of single images
    if args.grid:  # each label n // K times (at least once): a row per left digit, or class
        labels = torch.arange(num_classes).repeat_interleave(max(1, n // num_classes))
    elif pairs is not None:
        labels = torch.tensor(pairs).repeat_interleave(n)  # n samples of each pair
    elif conditional and has_label_prior(model):  # a flow: y ~ p(y), the training frequencies
        labels = model.sample_labels(n, torch.Generator(device=device).manual_seed(args.seed))
        labels, label_free = labels.cpu(), True
    elif conditional:  # a conditional baseline: uniform labels
        gen = torch.Generator().manual_seed(args.seed)
        labels = torch.randint(0, num_classes, (n,), generator=gen)
    total = n if labels is None else len(labels)
    if kind == "png" and total > MAX_GRID:
        raise UsageError(
            f"--out {out}: a PNG grid holds at most {MAX_GRID:,} samples, asked {total:,}; "
            f"write them to a .npz file (about {_size(total, state)} uncompressed) or a folder "
            "of PNGs, which are written a batch at a time"
        )
    from pairflow.evaluation import iter_samples
    from pairflow.progress import bars

    # A bar of the samples drawn: on a terminal, unless --no-progress.
    progress = bars(enabled=False if args.no_progress else None, unit="sample")
    gen = torch.Generator(device=device).manual_seed(args.seed)
    temperature = args.temperature
    if temperature is None:
        temperature = default_temperature(label_free, state.get("sampling_temperatures"))
    guidance = args.guidance
    own_clusters = labels is None and bool(getattr(model.config, "clusters", 0))
    if guidance is None and (labels is not None or own_clusters):  # a guided flow's own weight
        guidance = default_guidance(label_free or own_clusters, state.get("sampling_guidance"))

    denoises = bool(getattr(model, "denoises", False))  # flows trained with noise
    if args.no_denoise and not denoises:
        raise UsageError("--no-denoise: this model was trained without noise; it has no step")
    if denoises:
        step = "off (--no-denoise)" if args.no_denoise else "on (--no-denoise for raw samples)"
        print(f"denoising: {step}: the model was trained with noise")

    def chunks():
        """(offset, images (b, 1, H, W) uint8) a batch at a time: memory bounded by a batch."""
        lo = 0
        options = dict(temperature=temperature, generator=gen, labels=labels, progress=progress,
                       guidance=guidance)  # fmt: skip
        if denoises:
            options["denoise"] = not args.no_denoise
        for images in iter_samples(model, total, args.batch_size, **options):
            yield lo, images
            lo += len(images)

    rows = None  # near-square
    if args.grid:
        rows = 10
    elif pairs is not None and len(pairs) > 1 and n <= 16:
        rows = len(pairs)  # one row per requested pair
    try:
        with _sigterm_interrupts():
            _write(chunks(), total, labels, out, kind, grid_rows=rows, pairs=layout == "pair")
    except OSError as err:
        raise UsageError(f"--out {out}: could not write ({err})") from err
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM: the atomic writer removed its file
        name = getattr(err, "signal_name", "SIGINT")
        if kind == "folder":
            kept = f"the PNGs written before it stay in {out}"
        else:
            kept = f"{out} was not written, and no partial file of it is left"
        print(f"pairflow sample: stopped by {name}: {kept}", file=sys.stderr, flush=True)
        raise
    if args.temperature is None:
        why = ", the label-free default" if label_free else ", the default"
        chosen = state.get("sampling_temperatures") or {}
        if chosen.get("label_free" if label_free else "default") is not None:
            why += " of this model"
    else:
        why = ""
    settings = f"temperature {temperature:g}{why}"
    if guidance is not None and args.guidance is None:  # the model's own weight
        kind = "label-free " if label_free or own_clusters else ""
        if why.endswith("of this model"):  # both of the model's own: say it once
            settings = f"temperature {temperature:g} and guidance {guidance:g}, the {kind}"
            settings += "defaults of this model; --guidance 0 for none"
        else:
            settings += f", guidance {guidance:g}, the {kind}default of this model; "
            settings += "--guidance 0 for none"
    elif guidance is not None:
        settings += f", guidance {guidance:g}"
    print(f"wrote {total} samples to {out} ({settings})")
    return 0


@contextlib.contextmanager
def _sigterm_interrupts():
    """Within: SIGTERM (``kill``, a scheduler's time limit) stops as Ctrl-C does, raising
    :class:`~pairflow.training.interrupt.Stopped` so that the writers' cleanup runs, instead
    of ending the process on the spot with a partial temporary file left behind. A second
    SIGTERM during that cleanup is ignored; outside the main thread nothing changes."""
    import signal
    import threading

    from pairflow.training.interrupt import Stopped

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the cleanup finish
        raise Stopped("SIGTERM")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


MAX_GRID = 10_000  # samples in one PNG grid (about 70 MB of picture at scale 2)


def _size(total: int, state: dict) -> str:
    config = state["model_config"]
    size = total * config.get("channels", 1) * config.get("height", 28) * config.get("width", 56)
    return f"{size / 1e9:.1f} GB" if size >= 1e8 else f"{size / 1e6:.1f} MB"


def _out_kind(out: Path) -> str:
    """``png`` (one grid), ``npz`` (arrays) or ``folder`` (one PNG per sample)."""
    if out.is_dir():
        return "folder"
    suffix = out.suffix.lower()
    if suffix in (".png", ".npz"):
        return suffix[1:]
    if suffix == "":
        return "folder"
    raise UsageError(f"--out {out}: use a .png file, a .npz file or a folder")


def _write(
    chunks,
    total: int,
    labels,
    out: Path,
    kind: str,
    grid_rows: int | None = None,
    pairs: bool = True,
) -> None:
    """Write the samples that ``chunks`` yields as ``kind`` (see :func:`_out_kind`); labels
    are written as pairs (``07``) or, with ``pairs=False``, as single classes (``7``)."""
    import numpy as np
    import torch

    from pairflow.images import save_grid, save_png

    text = None if labels is None else [f"{int(v):02d}" if pairs else str(int(v)) for v in labels]
    if kind == "png":  # at most MAX_GRID samples: one picture in memory
        images = torch.cat([images for _, images in chunks])
        # A table's rows (the 100 pairs, or one row per --pair label), else near-square.
        nrow = len(images) // grid_rows if grid_rows is not None else None
        save_grid(images, out, nrow=nrow, labels=text)
    elif kind == "npz":
        _write_npz(out, chunks, total, None if labels is None else labels.numpy().astype(np.int64))
    else:
        out.mkdir(parents=True, exist_ok=True)
        for lo, images in chunks:
            for i, img in enumerate(images, start=lo):
                name = f"sample_{i:05d}" + (f"_{text[i]}" if text else "") + ".png"
                save_png(img[0] if img.shape[0] == 1 else img.permute(1, 2, 0), out / name)


def _write_npz(out: Path, chunks, total: int, labels) -> None:
    """``images`` (N, H, W) uint8 for one channel, (N, C, H, W) for colour (and ``labels``
    (N,) int64) as a compressed .npz, streamed.

    The .npz is a zip of .npy members: the images member is written a batch at a time after
    its header (shape known up front), so memory stays at one batch however large N is.
    """
    import zipfile

    import numpy as np

    from pairflow.utils import atomic_write

    def write(f) -> None:
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
            with zf.open("images.npy", "w", force_zip64=True) as member:
                header = None
                for _, images in chunks:
                    # One channel: (b, H, W), as MNIST arrays usually are; colour: (b, C, H, W).
                    array = (images[:, 0] if images.shape[1] == 1 else images).numpy()
                    if header is None:
                        header = {
                            "descr": np.lib.format.dtype_to_descr(array.dtype),
                            "fortran_order": False,
                            "shape": (total, *array.shape[1:]),
                        }
                        np.lib.format.write_array_header_2_0(member, header)
                    member.write(np.ascontiguousarray(array).tobytes())
            if labels is not None:
                with zf.open("labels.npy", "w") as member:
                    np.lib.format.write_array(member, labels)

    atomic_write(out, write)


def _check_interpolate_args(args: argparse.Namespace) -> None:
    """Refuse what ``--interpolate`` cannot honour, before any model or data loads; set
    ``args.n`` to the number of rows."""
    for flag, given in (
        ("--pair", args.pair is not None),
        ("--label", args.label is not None),
        ("--grid", args.grid),
    ):
        if given:
            raise UsageError(
                f"{flag} does not apply to --interpolate: it walks between real test pairs, "
                f"each row under its start pair's own label; drop {flag} (the app's Explore "
                "tab walks between samples of two labels)"
            )
    if args.guidance is not None:
        raise UsageError(
            "--guidance does not apply to --interpolate: its rows walk between the latents of "
            "real test pairs, encoded under their labels, not sampled; leave out --guidance"
        )
    if args.temperature is not None:
        raise UsageError(
            "--temperature does not apply to --interpolate: its rows walk between the latents "
            "of real test pairs, which are encoded, not sampled; leave out --temperature"
        )
    top = MAX_INTERPOLATION_STEPS
    if not 2 <= args.steps <= top:
        raise UsageError(
            f"--steps must be 2..{top} images per row, got {args.steps}: at {top} neighbouring "
            "images already differ by under one grey level on average, so more add nothing to "
            "see, while memory and the PNG's width grow with each"
        )
    if args.n is None:
        args.n = DEFAULT_ROWS
    elif not 1 <= args.n <= MAX_ROWS:
        raise UsageError(
            f"--n is the number of rows with --interpolate, 1..{MAX_ROWS}, got {args.n} (each "
            f"row holds --steps images, and one PNG at most {MAX_GRID:,})"
        )


def _interpolate(
    model, args: argparse.Namespace, conditional: bool, dataset: tuple[str, str]
) -> int:
    """``--n`` rows of ``--steps`` images, each walking the latent path between two real test
    pairs (:func:`pairflow.evaluation.interpolation.interpolate`, the app's Explore path:
    a conditional model decodes each row under its start pair's label)."""
    import torch

    from pairflow.commands._common import data_usage_error
    from pairflow.data import MNISTFormatError, PairedDataset, resolve_root
    from pairflow.evaluation.interpolation import interpolate
    from pairflow.images import save_grid

    rows = args.n
    root = resolve_root(args.data_dir)
    try:
        name, layout = dataset
        test = PairedDataset(name, root, train=False, layout=layout)
    except (FileNotFoundError, MNISTFormatError, ValueError) as err:
        raise data_usage_error(err, root) from err
    if 2 * rows > len(test):
        raise UsageError(
            f"--n {rows}: {rows} rows need {2 * rows} test pairs, but the test set at {root} "
            f"holds {len(test)}; give --n {len(test) // 2} or fewer"
        )
    gen = torch.Generator().manual_seed(args.seed)
    idx = torch.randperm(len(test), generator=gen)[: 2 * rows]
    x, y = test.get_batch(idx)
    start = y[:rows] if conditional else None
    images = interpolate(model, x[:rows], x[rows:], args.steps, start, args.batch_size)
    out = Path(args.out)
    try:
        save_grid(images.flatten(0, 1), out, nrow=args.steps)
    except OSError as err:
        raise UsageError(f"--out {out}: could not write ({err})") from err
    print(f"wrote {rows} interpolations of {args.steps} steps to {out}")
    if conditional:
        ends = zip(y[:rows].tolist(), y[rows:].tolist(), strict=True)
        width = 2 if dataset[1] == "pair" else 1
        pairs = ", ".join(f"{a:0{width}d} -> {b:0{width}d}" for a, b in ends)
        print(
            f"conditional model: each row is decoded under its start pair's label ({pairs}), "
            "which makes it a morph; the flow is invertible under any label, so each row still "
            "starts and ends on the real pairs."
        )
    return 0
