"""``pairflow info``: a shipped model's card (recipe, training, data licence, measured figures)."""

from __future__ import annotations

import argparse

from pairflow.cli import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "name",
        nargs="?",
        help="a shipped model (pairflow sample --list-pretrained); without it, one line each",
    )
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="every shipped model's card as one Markdown page (what docs/models.md holds)",
    )


def run(args: argparse.Namespace) -> int:
    from pairflow.pretrained import card_line, card_markdown, list_pretrained, models_markdown

    if args.markdown and args.name is not None:
        raise UsageError(f"--markdown prints every model's card; drop {args.name!r} or --markdown")
    try:
        if args.markdown:
            print(models_markdown(), end="")
        elif args.name is None:
            for name in sorted(list_pretrained()):
                print(card_line(name))
            print("(pairflow info NAME prints a model's card)")
        else:
            print(card_markdown(args.name), end="")
    except ValueError as err:
        raise UsageError(str(err)) from err
    return 0
