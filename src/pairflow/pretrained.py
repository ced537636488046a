"""Weights that ship with pairflow, trained with ``pairflow train`` (see BENCHMARKS.md).

``weights/index.json`` lists each model: its file, preset, whether it is conditional, its
measured test bits/dim, its last stage's training settings and the recipe (file and stage)
that made it. ``weights/cards/NAME.json`` holds the rest of its model card (what it is, the
data and its licence, each training stage's machine, time and commit, CPU-hours, further
likelihood figures and sample metrics, each with the BENCHMARKS.md section it comes from);
:func:`card_markdown` renders the two together (``pairflow info NAME``, ``docs/models.md``).
``weights/sha256.json`` holds the SHA-256 of every shipped weight file (the flows' and the
classifiers'): a shipped file is read only if its bytes match (:func:`verify_shipped_file`),
so a damaged or altered file is refused by name instead of giving other numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

__all__ = [
    "WEIGHTS_DIR",
    "CARDS_DIR",
    "CHECKSUMS",
    "ChecksumError",
    "bpd_text",
    "card_line",
    "card_markdown",
    "model_card",
    "models_markdown",
    "file_sha256",
    "list_pretrained",
    "pretrained_path",
    "recorded_sha256",
    "shipped_bpd_text",
    "verify_shipped_file",
]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
CARDS_DIR = WEIGHTS_DIR / "cards"
CHECKSUMS = "sha256.json"
"""The file beside the weights that maps each weight file's name to its SHA-256 (hex)."""


class ChecksumError(ValueError):
    """A shipped weight file whose bytes are not the ones pairflow shipped."""


def list_pretrained() -> dict[str, dict]:
    """Name -> metadata (``file``, ``preset``, ``conditional``, ``test_bpd``, ``recipe``...)."""
    index = WEIGHTS_DIR / "index.json"
    if not index.is_file():
        return {}
    return json.loads(index.read_text(encoding="utf-8"))


def shipped_bpd_text(meta: dict) -> str:
    """A shipped model's measured test bits/dim in words, from its index entry.

    ``"1.1018"`` for an exact likelihood, ``"<= 1.0790 (variational bound)"`` for a flow with
    variational dequantization (index key ``test_bpd_is_bound``), whose number is Flow++'s
    bound and must never be shown as if it were exact.

    Example:
        >>> shipped_bpd_text({"test_bpd": 1.1018})
        '1.1018'
        >>> shipped_bpd_text({"test_bpd": 1.079, "test_bpd_is_bound": True})
        '<= 1.0790 (variational bound)'
        >>> shipped_bpd_text({"test_bpd": 6.0016, "test_bpd_noise": "Gaussian noise, sigma 0.1",
        ...                   "test_bpd_clean": 5.3521})  # trained on noisy data
        '6.0016 of noisy data; clean 5.3521'
    """
    text = bpd_text(float(meta.get("test_bpd", float("nan"))), bool(meta.get("test_bpd_is_bound")))
    if meta.get("test_bpd_noise"):  # trained on noisy data: its figure is of noisy data
        text += f" of noisy data; clean {_clean_bpd(meta)}"
    return text


def _clean_bpd(meta: dict) -> str:
    """A noise-trained model's bits/dim of clean 8-bit data (uniform dequantization in place
    of its noise), from its index entry (``test_bpd_clean``)."""
    value = meta.get("test_bpd_clean")
    if value is None:
        return NOT_MEASURED
    return f"{'<= ' if meta.get('test_bpd_is_bound') else ''}{float(value):.4f}"


def bpd_text(value: float, bound: bool, digits: int = 4) -> str:
    """A bits/dim in words: ``"1.1018"``, or ``"<= 1.0790 (variational bound)"`` for a bound.

    Example:
        >>> bpd_text(1.0972, bound=True, digits=3)
        '<= 1.097 (variational bound)'
    """
    return f"<= {value:.{digits}f} (variational bound)" if bound else f"{value:.{digits}f}"


def pretrained_path(name: str) -> Path:
    """The checkpoint file of the shipped model ``name``, its bytes checked against
    ``weights/sha256.json``.

    Raises:
        ValueError: unknown name (the message lists the valid ones), or a missing file.
        ChecksumError: the file's bytes do not match its recorded SHA-256.
    """
    models = list_pretrained()
    if name not in models:
        valid = ", ".join(sorted(models)) or "(none ship with this build)"
        raise ValueError(f"unknown pretrained model {name!r}; valid names: {valid}")
    path = WEIGHTS_DIR / models[name]["file"]
    if not path.is_file():
        raise ValueError(f"pretrained model {name!r}: its file {path} is missing from the install")
    return verify_shipped_file(path)


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, as 64 hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def recorded_sha256() -> dict[str, str]:
    """File name -> SHA-256 of each shipped weight file, from ``weights/sha256.json``."""
    path = WEIGHTS_DIR / CHECKSUMS
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def verify_shipped_file(path: str | os.PathLike) -> Path:
    """``path``, a file in the weights folder, once its bytes match their recorded SHA-256.

    Raises:
        ChecksumError: no SHA-256 is recorded for the file, or its bytes differ (a damaged
            download or install, or a file changed after shipping); the message names the
            file and says to reinstall.

    Example:
        >>> verify_shipped_file(WEIGHTS_DIR / "seed.pt").name
        'seed.pt'
    """
    path = Path(path)
    expected = recorded_sha256().get(path.name)
    if expected is None:
        raise ChecksumError(
            f"shipped weight file {path} has no SHA-256 in {WEIGHTS_DIR / CHECKSUMS}, so it "
            "cannot be checked; reinstall pairflow"
        )
    actual = file_sha256(path)
    if actual != expected:
        raise ChecksumError(
            f"shipped weight file {path} is damaged or was changed: its SHA-256 is "
            f"{actual[:16]}..., the one shipped is {expected[:16]}... "
            f"({WEIGHTS_DIR / CHECKSUMS}); reinstall pairflow"
        )
    return path


NOT_MEASURED = "not measured"


def model_card(name: str) -> dict:
    """The model card of shipped model ``name``: its index entry (``index``) and its card file.

    Raises:
        ValueError: unknown name (the message lists the valid ones), or no card for it.

    Example:
        >>> model_card("multiscale")["index"]["recipe"]["path"]
        'recipes/multiscale.toml'
    """
    models = list_pretrained()
    if name not in models:
        valid = ", ".join(sorted(models)) or "(none ship with this build)"
        raise ValueError(f"unknown pretrained model {name!r}; valid names: {valid}")
    path = CARDS_DIR / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"pretrained model {name!r} has no model card ({path} is missing)")
    return {**json.loads(path.read_text(encoding="utf-8")), "name": name, "index": models[name]}


def _number(value: float | int | None, digits: int | None = None) -> str:
    """A card's number as written, or "not measured" for None."""
    if value is None:
        return NOT_MEASURED
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}" if digits is not None else f"{value:g}"


def _test_bpd(meta: dict) -> str:
    """The index's test bits/dim with its error, pairs and kind of figure, in words."""
    bound = bool(meta.get("test_bpd_is_bound"))
    value = f"{'<= ' if bound else ''}{meta['test_bpd']:.4f}"
    if meta.get("test_bpd_stderr") is not None:
        value += f" ± {meta['test_bpd_stderr']:.4f}"
    kind = "exact"
    if bound:  # over what: Flow++'s learned dequantization, a cluster flow's own cluster pair
        over = meta.get("test_bpd_bound_over") or ["variational dequantization"]
        kind = "variational bound, as Flow++ reports it"
        if over != ["variational dequantization"]:
            kind = f"variational bound over {' and '.join(over)}"
    given = ", given the pair label" if meta.get("conditional") else ""
    pairs = meta.get("test_pairs")
    on = f" on {pairs:,} test pairs" if pairs else ""
    if not meta.get("test_bpd_noise"):
        return f"{value}{on} ({kind}{given})"
    # Trained on noisy data: the figure is of noisy data, the clean one beside it.
    clean = _clean_bpd(meta)
    if meta.get("test_bpd_clean_stderr") is not None:
        clean += f" ± {meta['test_bpd_clean_stderr']:.4f}"
    return (
        f"{value}{on} ({kind}{given}) of noisy data ({meta['test_bpd_noise']}, as it was "
        f"trained); on clean 8-bit data {clean} (uniform dequantization in place of the noise)"
    )


def _temperatures(meta: dict) -> str:
    """The temperatures ``sample`` and ``evaluate`` take for the model when none is given."""
    from pairflow.options import default_temperature

    chosen = meta.get("temperature") or {}
    text = f"{default_temperature(False, chosen):g}"
    if meta.get("conditional"):
        text = f"{text} given a label, {default_temperature(True, chosen):g} label-free"
    if not chosen:
        return f"{text} (the global defaults)"
    sweep = 'BENCHMARKS.md, "Sampling temperature of each shipped model"'
    return f"{text} (chosen by its temperature sweep: {sweep})"


def _guidance(meta: dict) -> str | None:
    """The guidance weights ``sample`` and ``evaluate`` take for a guided model when
    ``--guidance`` is not given, or None for a model without them."""
    from pairflow.options import default_guidance

    chosen = meta.get("guidance")
    if not chosen:
        return None
    given, free = default_guidance(False, chosen), default_guidance(True, chosen)
    parts = [f"{w:g} {where}" for w, where in ((given, "given a label"), (free, "label-free"))
             if w is not None]  # fmt: skip
    sweep = 'BENCHMARKS.md, "Label dropout and classifier-free guidance"'
    return f"{', '.join(parts)} (chosen by its guidance sweep: {sweep}; --guidance 0 for none)"


def card_line(name: str) -> str:
    """One line on shipped model ``name`` for ``pairflow sample --list-pretrained``: dataset,
    preset, conditioning, CPU-hours, the FD at its default temperature (its card's first
    sample row) and its test bits/dim (last).

    Example:
        >>> card_line("multiscale").split()[:4]
        ['multiscale', 'mnist', 'multiscale', 'unconditional']
    """
    card = model_card(name)
    meta = card["index"]
    kind = "conditional" if meta.get("conditional") else "unconditional"
    hours = card.get("cpu_hours")
    hours = f"{hours:g} CPU-hours" if hours is not None else f"CPU-hours {NOT_MEASURED}"
    fds = [s for s in card.get("samples", []) if s.get("fd") is not None]
    fd = f"FD {fds[0]['fd']:g} (T {fds[0]['temperature']:g})" if fds else f"FD {NOT_MEASURED}"
    return (
        f"{name:26s} {meta.get('dataset', 'mnist'):13s} {meta.get('preset', '?'):11s} "
        f"{kind:13s} {hours:22s} {fd:16s} test bits/dim {shipped_bpd_text(meta)}"
    )


def card_markdown(name: str) -> str:
    """The model card of shipped model ``name`` as Markdown (``pairflow info NAME``).

    Every number comes from the index or the card file, whose figures each name their
    source in BENCHMARKS.md; a figure nobody measured reads "not measured".
    """
    card = model_card(name)
    meta = card["index"]
    recipe = meta.get("recipe", {})
    data = card["dataset"]
    stages = card.get("stages", [])
    sha = recorded_sha256().get(meta["file"], "")
    hours = card.get("cpu_hours")
    lines = [
        f"## {name}",
        "",
        card["what"],
        "",
        "| | |",
        "|---|---|",
        f"| weights | `{meta['file']}`: {meta.get('weights', 'fp32')}, {meta['megabytes']} MB, "
        f"SHA-256 `{sha[:16]}...` |",
        f"| model | preset `{meta.get('preset')}`, "
        f"{'conditional' if meta.get('conditional') else 'unconditional'}"
        + (f" (conditioning `{meta['conditioning']}`)" if meta.get("conditioning") else "")
        + f", {meta.get('step', 0):,} steps in its last stage |",
        f"| recipe | `{recipe.get('path', NOT_MEASURED)}`, stage `{recipe.get('stage', '?')}` "
        f"({len(stages)} stage{'s' if len(stages) != 1 else ''}) |",
        f"| reproduce | `pairflow train --recipe {recipe.get('path')} --out runs/{name}` |",
        f"| dataset | {data['name']} pairs (the dataset's train split; test figures on its "
        "test split) |",
        f"| data licence | {data['license']}. {data['license_source'][0].upper()}"
        f"{data['license_source'][1:]} |",
        f"| test bits/dim | {_test_bpd(meta)} |",
        f"| sampling temperature | {_temperatures(meta)} |",
        *([f"| classifier-free guidance | {_guidance(meta)} |"] if _guidance(meta) else []),
        f"| CPU-hours | {_number(hours) if hours is not None else card['cpu_hours_source']}"
        + (f" ({card['cpu_hours_source']})" if hours is not None else "")
        + " |",
        "",
        "Training, stage by stage (the commit that added the weights of each stage):",
        "",
        "| stage | minutes | machine | commit |",
        "|---|---:|---|---|",
    ]
    for number, stage in enumerate(stages, start=1):
        lines.append(
            f"| {number} `{stage['stage']}` | {_number(stage.get('minutes'))} | "
            f"{stage['machine']} | `{stage['commit'][:12]}` |"
        )
    if card.get("likelihood"):
        lines += [
            "",
            "More likelihood figures:",
            "",
            "| bits/dim | pairs | kind | label | source |",
            "|---:|---:|---|---|---|",
        ]
        for fig in card["likelihood"]:
            bound = "<= " if "bound" in fig["kind"] else ""
            err = f" ± {fig['stderr']:g}" if fig.get("stderr") is not None else ""
            lines.append(
                f"| {bound}{fig['value']:.4f}{err} | {fig['pairs']:,} | {fig['kind']} | "
                f"{fig['label']} | {fig['source']} |"
            )
    lines += [
        "",
        "Sample metrics (the dataset's shipped pair classifier; FD's real-vs-real floor in "
        "brackets):",
        "",
        "| T | samples | labels | FD | precision | recall | IS | pair accuracy | source |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in card.get("samples", []):
        fd = _number(row.get("fd"))
        if row.get("fd") is not None and row.get("fd_floor") is not None:
            fd += f" ({row['fd_floor']:g})"
        accuracy = _number(row.get("accuracy")) if meta.get("conditional") else "no label to check"
        lines.append(
            f"| {row['temperature']:g} | {row['samples']:,} | {row['labels']} | {fd} | "
            f"{_number(row.get('precision'))} | {_number(row.get('recall'))} | "
            f"{_number(row.get('inception_score'))} | {accuracy} | {row['source']} |"
        )
    return "\n".join(lines) + "\n"


def models_markdown() -> str:
    """``docs/models.md``: every shipped model's card, generated (``pairflow info --markdown``)."""
    names = sorted(list_pretrained())
    head = [
        "# Shipped models",
        "",
        "Generated from `src/pairflow/weights/index.json` and `src/pairflow/weights/cards/` by",
        "`pairflow info --markdown > docs/models.md`; a test fails when this page and the cards",
        "differ. `pairflow info NAME` prints one card. Each figure names the section of",
        'BENCHMARKS.md that measured it; a figure nobody measured reads "not measured".',
        "",
        "| model | dataset | CPU-hours | test bits/dim |",
        "|---|---|---:|---|",
    ]
    for name in names:
        card = model_card(name)
        hours = card.get("cpu_hours")
        head.append(
            f"| [`{name}`](#{name}) | {card['dataset']['name']} | "
            f"{_number(hours)} | {_test_bpd(card['index'])} |"
        )
    return "\n".join(head) + "\n\n" + "\n".join(card_markdown(n) for n in names)
