"""Model cards of the shipped flows: complete, traced to their measurements, shown by
``pairflow info`` and ``sample --list-pretrained``, and ``docs/models.md`` generated from them."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pairflow.loading import load_trained
from pairflow.options import default_temperature
from pairflow.pretrained import (
    CARDS_DIR,
    NOT_MEASURED,
    card_line,
    card_markdown,
    list_pretrained,
    model_card,
    models_markdown,
)
from pairflow.training.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]
NAMES = sorted(list_pretrained())
# Where a card's figures may come from: the measurements written up in the repository.
SOURCES = ("BENCHMARKS.md", "README.md", "CHANGELOG.md")


def cli(capsys, *args: str) -> tuple[int, str, str]:
    from pairflow.cli import main

    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_every_shipped_model_has_a_card_and_every_card_a_model():
    assert sorted(p.stem for p in CARDS_DIR.glob("*.json")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_a_card_holds_what_a_card_must(name):
    card = model_card(name)
    assert card["what"] and card["dataset"]["license"] and card["dataset"]["license_source"]
    names = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}
    dataset = names[card["index"].get("dataset", "mnist")]
    assert card["dataset"]["name"] == dataset
    # CPU-hours: a number with its source, or said to be unmeasured.
    if card["cpu_hours"] is None:
        assert card["cpu_hours_source"].startswith(NOT_MEASURED)
    else:
        assert card["cpu_hours_source"].startswith("BENCHMARKS.md")
    # One row per recipe stage, in the recipe's order, each with its machine and commit.
    recipe = load_recipe(REPO / card["index"]["recipe"]["path"])
    assert [s["stage"] for s in card["stages"]] == [s.name for s in recipe.stages]
    for stage in card["stages"]:
        assert stage["machine"] and re.fullmatch(r"[0-9a-f]{40}", stage["commit"])
    for figure in card["likelihood"]:
        assert "exact" in figure["kind"] or "bound" in figure["kind"], figure
        assert figure["source"].startswith("BENCHMARKS.md")
    if card["samples"]:  # the first row, shown by --list-pretrained: its default temperature
        chosen = card["index"].get("temperature")
        assert card["samples"][0]["temperature"] == default_temperature(False, chosen), name
    for row in card["samples"]:
        assert row["source"].startswith("BENCHMARKS.md")
        if not card["index"]["conditional"]:
            assert row["accuracy"] is None  # no label to check a sample against


def _spellings(value: float | int) -> set[str]:
    """How a number may be written in the documents: 0.36 as 0.36, 0.360; 10000 as 10,000."""
    if isinstance(value, int):
        return {str(value), f"{value:,}"}
    fixed = {f"{value:.{d}f}" for d in range(1, 5) if float(f"{value:.{d}f}") == value}
    return {f"{value:g}"} | fixed


def _numbers(card: dict) -> list[float | int]:
    numbers = [card["cpu_hours"]] + [s["minutes"] for s in card["stages"]]
    for figure in card["likelihood"]:
        numbers += [figure["value"], figure["stderr"], figure["pairs"]]
    for row in card["samples"]:
        numbers += [row[k] for k in ("temperature", "samples", "fd", "fd_floor", "precision",
                                     "recall", "inception_score", "accuracy")]  # fmt: skip
    return [n for n in numbers if n is not None]


@pytest.mark.parametrize("name", NAMES)
def test_every_number_on_a_card_is_written_in_the_measurements(name):
    text = "\n".join((REPO / s).read_text() for s in SOURCES if (REPO / s).is_file())
    for number in _numbers(model_card(name)):
        assert any(s in text for s in _spellings(number)), (name, number)


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="no git")
@pytest.mark.parametrize("name", NAMES)
def test_each_stage_commit_is_one_that_changed_the_weight_file(name):
    card = model_card(name)
    path = f"src/pairflow/weights/{card['index']['file']}"
    log = subprocess.run(["git", "log", "--format=%H", "--", path], cwd=REPO,
                         capture_output=True, text=True)  # fmt: skip
    if log.returncode != 0 or not log.stdout.strip():
        pytest.skip("no history of the weight file here (a shallow or exported copy)")
    history = log.stdout.split()
    for stage in card["stages"]:
        assert stage["commit"] in history, (name, stage["stage"])
    # The last stage made the file that ships: the newest commit that changed it.
    assert card["stages"][-1]["commit"] == history[0]


@pytest.mark.parametrize("name", NAMES)
def test_pairflow_info_prints_the_card(name, capsys):
    card = model_card(name)
    meta = card["index"]
    code, out, _ = cli(capsys, "info", name)
    assert code == 0 and out == card_markdown(name)
    assert out.startswith(f"## {name}\n")
    assert f"`{meta['recipe']['path']}`, stage `{meta['recipe']['stage']}`" in out
    assert f"pairflow train --recipe {meta['recipe']['path']} --out runs/{name}" in out
    bound = meta.get("test_bpd_is_bound")
    bpd = f"{'<= ' if bound else ''}{meta['test_bpd']:.4f} ± {meta['test_bpd_stderr']:.4f}"
    kind = "variational bound" if bound else "exact"
    assert re.search(rf"\| test bits/dim \| {re.escape(bpd)} on 10,000 test pairs \({kind}", out)
    assert ("given the pair label" in out) == bool(meta["conditional"])
    row = next(line for line in out.splitlines() if line.startswith("| sampling temperature |"))
    chosen = meta.get("temperature") or {}
    default = chosen.get("default", 0.7)  # else the global defaults, 0.7 and 0.8 label-free
    assert row.startswith(f"| sampling temperature | {default:g}")
    assert ("temperature sweep" in row) == bool(chosen) and ("label-free" in row) == bool(
        meta["conditional"]
    )
    assert card["dataset"]["license"] in out
    for stage in card["stages"]:
        assert f"`{stage['stage']}` | " in out and stage["commit"][:12] in out
    hours = card["cpu_hours"]
    assert f"| CPU-hours | {hours:g} (BENCHMARKS.md" in out if hours else NOT_MEASURED in out
    for row in card["samples"]:
        if row["fd"] is not None:
            assert f"{row['fd']:g} ({row['fd_floor']:g})" in out


def test_pairflow_info_lists_the_models_and_refuses_an_unknown_name(capsys):
    code, out, _ = cli(capsys, "info")
    assert code == 0
    assert out.splitlines()[: len(NAMES)] == [card_line(n) for n in NAMES]
    code, _, err = cli(capsys, "info", "multiscal")
    assert code == 2 and "unknown pretrained model 'multiscal'" in err and "multiscale-cond" in err
    code, _, err = cli(capsys, "info", "seed", "--markdown")
    assert code == 2 and "--markdown" in err


def test_list_pretrained_shows_a_line_from_each_card(capsys):
    code, out, _ = cli(capsys, "sample", "--list-pretrained")
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines()}
    for name in NAMES:
        card = model_card(name)
        assert lines[name] == card_line(name)
        hours = card["cpu_hours"]
        assert (f"{hours:g} CPU-hours" if hours else f"CPU-hours {NOT_MEASURED}") in lines[name]
        first = card["samples"][0]
        assert f"FD {first['fd']:g} (T {first['temperature']:g})" in lines[name]


def test_docs_models_md_is_generated_from_the_cards(capsys):
    page = (REPO / "docs" / "models.md").read_text(encoding="utf-8")
    code, out, _ = cli(capsys, "info", "--markdown")
    assert code == 0 and out == models_markdown()
    assert page == out, (
        "docs/models.md is out of date with the model cards: regenerate it with "
        "`pairflow info --markdown > docs/models.md`"
    )
    for name in NAMES:
        assert card_markdown(name) in page


@pytest.mark.parametrize("name", NAMES)
def test_a_bound_says_what_it_is_a_bound_over_as_the_model_does(name, capsys):
    # Flow++'s bound over a learned dequantization, a cluster flow's over its own cluster pair
    # (or both): the index records the loaded model's own words, and the card prints them.
    meta = list_pretrained()[name]
    model = load_trained(name).model
    assert bool(meta.get("test_bpd_is_bound")) == model.bits_per_dim_is_bound
    if not model.bits_per_dim_is_bound:
        assert "test_bpd_bound_over" not in meta
        return
    assert tuple(meta["test_bpd_bound_over"]) == model.bound_over
    _, out, _ = cli(capsys, "info", name)
    row = next(line for line in out.splitlines() if line.startswith("| test bits/dim |"))
    assert ("own cluster pair" in row) == (getattr(model, "clusters", None) is not None)
    assert ("as Flow++ reports it" in row) == (model.bound_over == ("variational dequantization",))


def test_a_model_trained_on_noisy_data_shows_its_noisy_and_clean_figures_as_such(capsys):
    # Its bits/dim is of noisy data: never shown as if it were of the 8-bit test pairs, and
    # the clean-data figure (uniform dequantization in place of the noise) stands beside it.
    noisy = [n for n in NAMES if list_pretrained()[n].get("test_bpd_noise")]
    assert noisy, "no shipped model trained on noisy data"
    for name in noisy:
        meta = list_pretrained()[name]
        assert meta["test_bpd_clean"] < meta["test_bpd"]  # noise costs bits: clean is lower
        _, out, _ = cli(capsys, "info", name)
        row = next(line for line in out.splitlines() if line.startswith("| test bits/dim |"))
        assert f") of noisy data ({meta['test_bpd_noise']}, as it was trained)" in row
        le = "<= " if meta.get("test_bpd_is_bound") else ""
        assert f"on clean 8-bit data {le}{meta['test_bpd_clean']:.4f} ±" in row
        assert f"of noisy data; clean {le}{meta['test_bpd_clean']:.4f}" in card_line(name)
    for name in (n for n in NAMES if n not in noisy):
        assert "noisy" not in card_line(name)
