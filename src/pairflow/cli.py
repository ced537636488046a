"""The ``pairflow`` command line: one parser, one module per subcommand.

Each subcommand lives in ``pairflow.commands.<name>`` and provides

- ``add_arguments(parser)``: declare its flags on an ``argparse.ArgumentParser``;
- ``run(args) -> int``: do the work and return the exit code.

Subcommand modules are imported only when their command runs (``--help`` lists them all
from the ``COMMANDS`` table without importing torch).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> (module, one-line help). Keep in the order a user meets them.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("pairflow.commands.demo", "the main job: data check, preview, a short training run"),
    "data": ("pairflow.commands.data", "check a data root, print counts, write a preview"),
    "train": ("pairflow.commands.train", "train a flow (or a VAE or GAN baseline) on a dataset"),
    "sample": ("pairflow.commands.sample", "draw pairs or images from a trained or shipped model"),
    "evaluate": ("pairflow.commands.evaluate", "test bits/dim (and sample metrics) of a model"),
    "compare": ("pairflow.commands.compare", "several evaluated runs in one table and figure"),
    "info": ("pairflow.commands.info", "a shipped model's card: recipe, training, data, figures"),
    "export": ("pairflow.commands.export", "compact weights-only checkpoint (fp16 or int8)"),
    "classifier": ("pairflow.commands.classifier", "train or check the digit-pair classifier"),
    "app": ("pairflow.commands.app", "a local web page: generate, explore and score pairs"),
}


DESCRIPTION = """\
Normalizing flows (RealNVP: fully connected or multi-scale convolutional; Glow) and two
baselines (a VAE and a GAN) for image pairs, two images side by side labelled 10a + b, or
for single images labelled by class: MNIST (pairs 28x56), Fashion-MNIST, and CIFAR-10
where its files are in the data root (--dataset, --layout pair|single). Bits/dim (exact
for a flow), samples by label, shipped pretrained models (pairflow sample --list-pretrained)."""


class UsageError(Exception):
    """A user error on the command line: printed without a traceback, exit code 2."""


def seed_arg(text: str) -> int:
    """``--seed``'s argparse type: a whole number in 0..2**32 - 1 (argparse exits 2 otherwise)."""
    from pairflow.options import MAX_SEED

    try:
        seed = int(text)
    except ValueError:
        seed = None
    if seed is None or not 0 <= seed <= MAX_SEED:
        raise argparse.ArgumentTypeError(
            f"must be a whole number in 0..{MAX_SEED} (2**32 - 1), got {text}"
        )
    return seed


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    from pairflow import __version__

    parser = argparse.ArgumentParser(
        prog="pairflow",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pairflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or name == only:
            importlib.import_module(module_name).add_arguments(sp)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Import only the chosen subcommand's module: `pairflow data` must not pay for training.
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=chosen if chosen in COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except UsageError as err:
        print(f"pairflow {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the machine, not the input: a full disk, a read-only folder
        print(f"pairflow {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        name = getattr(err, "signal_name", "SIGINT")
        print(f"pairflow {args.command}: interrupted ({name})", file=sys.stderr)
        return getattr(err, "exit_code", 130)
