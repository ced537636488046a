"""``pairflow app``: serve a local web page to generate, explore and score image pairs
(MNIST, Fashion-MNIST, CIFAR-10: each model's own dataset, read from its checkpoint).

It listens on loopback by default and needs no internet: gradio's frontend ships inside the
package, analytics and hub look-ups are switched off, and the theme uses no web fonts.
"""

from __future__ import annotations

import argparse
import importlib.util

from pairflow.cli import UsageError

INSTALL_HINT = 'pip install "pairflow[app]"'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        action="append",
        metavar="NAME_OR_RUN",
        help="a shipped model name or a run folder / checkpoint for the model list; repeat "
        "for several (default: the shipped flows, multiscale-cond first)",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default loopback)"
    )
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument(
        "--data-dir",
        help="data root for Explore's test pairs, each model's own dataset's test split (e.g. "
        "ROOT/FashionMNIST/raw/; default $PAIRFLOW_DATA or ./data)",
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own)")


def default_models() -> list[str]:
    """The shipped models: MNIST's before other datasets', the conditional ones first (they
    can be asked for a pair), so the page opens on ``multiscale-cond``."""
    from pairflow.pretrained import list_pretrained

    models = list_pretrained()

    def order(name: str) -> tuple:
        meta = models[name]
        return (meta.get("dataset", "mnist") != "mnist", not meta.get("conditional"), name)

    return sorted(models, key=order)


def run(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("gradio") is None:
        raise UsageError(f"the web app needs gradio, which is not installed: {INSTALL_HINT}")
    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be 1..65535, got {args.port}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    from pairflow.app import core

    models = args.model or default_models()
    if not models:
        raise UsageError("no shipped models in this build: give --model RUN_FOLDER")
    cache = core.ModelCache()
    for name in models:  # a bad --model fails here, with a message, not in the page
        try:
            cache.get(name)
        except core.AppInputError as err:
            raise UsageError(f"--model: {err}") from err
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    from pairflow.app import ui

    print(f"pairflow app: starting on http://{args.host}:{args.port} (Ctrl+C stops it)", flush=True)
    try:
        ui.launch(models, host=args.host, port=args.port, data_dir=args.data_dir, cache=cache)
    except OSError as err:  # the port is taken, or the host is not an address of this machine
        raise UsageError(
            f"cannot serve on {args.host}:{args.port} ({err}); choose another with --port"
        ) from err
    return 0
