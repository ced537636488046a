"""Recipes end to end on tiny data: every shipped model's recipe runs, a stopped run continues
where it stopped and ends with the same weights, and a bad recipe is refused before training.

The shipped recipes run as they are, made tiny from the command line (``--recipe-set`` for
the training settings of every stage, ``--set`` for the model's size), not as separate tiny
copies: a copy could drift from the recipe it stands for, while the overrides leave every
stage, its init_from chain, precision, schedule and model settings exactly as shipped.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from clitools import pairflow
from pairflow.pretrained import WEIGHTS_DIR, list_pretrained
from pairflow.training import TrainConfig, load_checkpoint
from pairflow.training.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
TINY_RUN = [
    "--recipe-set", "max_steps=2", "--recipe-set", "batch_size=8", "--recipe-set", "num_pairs=16",
    "--recipe-set", "test_pairs=16", "--recipe-set", "sample_n=4", "--threads", "1",
    "--no-progress",
]  # fmt: skip
TINY_MODEL = {
    "seed": ["--set", "hidden_features=16"],
    "multiscale": ["--set", "hidden_channels=8", "--set", "num_blocks=1"],
    "tarflow": ["--set", "tar_width=16", "--set", "tar_heads=2", "--set", "tar_layers=1",
                "--set", "tar_blocks=2"],
}  # fmt: skip


def recipe_args(name: str, out: Path, root: Path, *extra: str) -> list[str]:
    """``pairflow train --recipe recipes/NAME.toml`` in tiny sizes, into ``out``: a tiny model
    too, unless the recipe starts from a shipped model (then that model's own size)."""
    first = load_recipe(RECIPES / f"{name}.toml").stages[0]
    tiny_model = [] if first.init_from else TINY_MODEL[first.settings["preset"]]
    return ["train", "--recipe", str(RECIPES / f"{name}.toml"), "--out", str(out),
            "--data-dir", str(root), *TINY_RUN, *tiny_model, *extra]  # fmt: skip


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """``pairflow ARGS`` in this process (what a refusal needs: parsing, checks, exit code)."""
    from pairflow.cli import main

    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


@pytest.fixture(scope="module")
def recipe_runs(tmp_path_factory, tiny_mnist_root, tiny_fashion_root):
    """NAME -> (the folder of its uninterrupted tiny recipe run, its stdout), run once each."""
    done: dict[str, tuple[Path, str]] = {}

    def run(name: str) -> tuple[Path, str]:
        if name not in done:
            dataset = load_recipe(RECIPES / f"{name}.toml").stages[0].settings["dataset"]
            root = tiny_fashion_root if dataset == "fashion-mnist" else tiny_mnist_root
            out = tmp_path_factory.mktemp("recipe") / name
            done[name] = (out, pairflow(*recipe_args(name, out, root)).stdout)
        return done[name]

    return run


def test_every_shipped_model_has_a_recipe():
    assert sorted(p.stem for p in RECIPES.glob("*.toml")) == sorted(list_pretrained())


@pytest.mark.parametrize("name", sorted(list_pretrained()))
def test_the_index_names_the_recipe_and_its_last_stage_holds_the_index_settings(name):
    meta = list_pretrained()[name]
    recipe = load_recipe(REPO / meta["recipe"]["path"])
    last = recipe.stages[-1]
    assert meta["recipe"]["stage"] == last.name
    settings = TrainConfig.from_dict(last.settings).to_dict()
    recorded = {k: v for k, v in meta["train_config"].items() if k != "init_from"}
    for key, value in recorded.items():
        if key == "model_overrides":
            assert value.items() <= settings[key].items(), (key, value, settings[key])
        else:
            assert settings[key] == value, (key, settings[key], value)
    if meta.get("conditioning"):
        assert settings["model_overrides"].get("conditioning") == meta["conditioning"]
    # A recipe starts from scratch or from another shipped model, which has its own recipe
    # (so one command after another rebuilds it); each later stage from the one before it.
    first = recipe.stages[0].init_from
    assert first is None or (first in list_pretrained() and first != name), first
    assert [s.init_from for s in recipe.stages[1:]] == ["previous"] * (len(recipe.stages) - 1)


@pytest.mark.parametrize("name", sorted(list_pretrained()))
def test_a_shipped_recipe_runs_every_stage_end_to_end(recipe_runs, name):
    out, stdout = recipe_runs(name)
    recipe = load_recipe(RECIPES / f"{name}.toml")
    folders = [out / f"stage-{s.index}-{s.name}" for s in recipe.stages]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["recipe.json", "final.pt", *(f.name for f in folders)]
    )
    state = json.loads((out / "recipe.json").read_text())
    assert state["finished"] == [s.name for s in recipe.stages] and state["final"] == "final.pt"
    for stage, folder in zip(recipe.stages, folders, strict=True):
        saved = load_checkpoint(folder / "last.pt")
        assert saved["step"] == 2, stage.name
        config = saved["train_config"]
        # The stage trained with the recipe's settings, where the tiny run did not override them.
        for key, value in stage.settings.items():
            if key in ("batch_size", "num_pairs", "test_pairs", "sample_n", "threads"):
                continue
            if key == "model_overrides":
                assert value.items() <= config[key].items(), stage.name
            else:
                assert config[key] == value, (stage.name, key)
        if stage.index > 1:
            assert config["init_from"] == str(folders[stage.index - 2]), stage.name
        elif stage.init_from is None:
            assert config["init_from"] is None
        else:  # a shipped model, by its file
            assert Path(config["init_from"]) == WEIGHTS_DIR / f"{stage.init_from}.pt"
        assert f"stage {stage.index}/{len(recipe.stages)} ({stage.name}): training" in stdout
    assert (out / "final.pt").read_bytes() == (folders[-1] / "best.pt").read_bytes()
    import pairflow

    model = pairflow.load(out / "final.pt")
    overrides = recipe.stages[-1].settings.get("model_overrides", {})
    for key, value in overrides.items():
        assert getattr(model.config, key) == value, key


def test_stopped_after_a_stage_the_same_command_continues_to_the_same_weights(
    recipe_runs, tiny_mnist_root, tmp_path
):
    straight, _ = recipe_runs("multiscale")
    out = tmp_path / "run"
    args = recipe_args("multiscale", out, tiny_mnist_root)
    proc = pairflow(*args, "--until", "pretrain")
    assert "stopped after stage 1 (pretrain)" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["recipe.json", "stage-1-pretrain"]
    assert json.loads((out / "recipe.json").read_text())["finished"] == ["pretrain"]
    first = out / "stage-1-pretrain" / "last.pt"
    before = (first.read_bytes(), first.stat().st_mtime_ns)

    proc = pairflow(*args)  # the same command again
    assert "stage 1/3 (pretrain): finished, kept" in proc.stdout
    assert "stage 2/3 (variational-dequantization): training" in proc.stdout
    assert (first.read_bytes(), first.stat().st_mtime_ns) == before  # not trained again
    assert_same_weights(out / "final.pt", straight / "final.pt")

    proc = pairflow(*args)  # and once more: nothing left, nothing changes
    assert proc.stdout.count("finished, kept") == 3
    assert_same_weights(out / "final.pt", straight / "final.pt")


KILLABLE = """
[defaults]
preset = "seed"
model_overrides = { hidden_features = 16 }
batch_size = 16
num_pairs = 64
test_pairs = 16
sample_n = 4
precision = "fp32"
warmup_steps = 5
threads = 1
log_every = 1
epochs = 1

[[stage]]
name = "first"

[[stage]]
name = "second"
init_from = "previous"
lr = 5e-4
num_pairs = 4096
"""


def test_killed_in_a_stage_the_same_command_resumes_it_bit_exactly(tiny_mnist_root, tmp_path):
    recipe = tmp_path / "two.toml"
    recipe.write_text(KILLABLE)

    def args(out: Path) -> list[str]:
        return ["train", "--recipe", str(recipe), "--out", str(out),
                "--data-dir", str(tiny_mnist_root), "--no-progress"]  # fmt: skip

    straight = tmp_path / "straight"
    pairflow(*args(straight))
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "pairflow", *args(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    metrics = out / "stage-2-second" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and metrics.read_text().count('"type": "train"') >= 3:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout + stderr
    stopped = load_checkpoint(out / "stage-2-second" / "last.pt")["step"]
    assert 3 <= stopped < 4096 // 16
    assert json.loads((out / "recipe.json").read_text())["finished"] == ["first"]
    assert not (out / "final.pt").exists()

    proc = pairflow(*args(out))
    assert "stage 1/2 (first): finished, kept" in proc.stdout
    assert f"stage 2/2 (second): resuming in {out / 'stage-2-second'} at step {stopped}" in (
        proc.stdout
    )
    assert load_checkpoint(out / "final.pt")["step"] == 4096 // 16
    assert_same_weights(out / "final.pt", straight / "final.pt")
    assert_same_weights(out / "stage-2-second" / "last.pt", straight / "stage-2-second" / "last.pt")


GOOD_STAGE = '[[stage]]\nname = "a"\npreset = "seed"\n'
BAD_RECIPES = [
    ("unknown-key", GOOD_STAGE + "lr_rate = 1e-3\n", "unknown key 'lr_rate'"),
    ("no-stages", 'description = "nothing"\n', "has no stages"),
    ("later-stage", GOOD_STAGE + 'init_from = "b"\n[[stage]]\nname = "b"\n', "names a later stage"),
    ("previous-first", GOOD_STAGE + 'init_from = "previous"\n', "'previous' in the first stage"),
    ("itself", GOOD_STAGE + 'init_from = "a"\n', "names the stage itself"),
    ("duplicate", GOOD_STAGE + GOOD_STAGE, "used by more than one stage"),
    ("no-name", '[[stage]]\npreset = "seed"\n', "needs a name"),
    ("out", GOOD_STAGE + 'out = "runs/x"\n', "'out' cannot be set in a recipe"),
    ("bad-value", GOOD_STAGE + "lr = -1.0\n", "lr must be > 0"),
    ("bad-type", GOOD_STAGE + 'epochs = "ten"\n', "epochs"),
    ("bad-preset", '[[stage]]\nname = "a"\npreset = "huge"\n', "unknown preset 'huge'"),
    ("top-level", "[train]\nlr = 1e-3\n" + GOOD_STAGE, "unknown top-level key(s) train"),
    ("model-key", GOOD_STAGE + "model_overrides = { hidden_featurez = 8 }\n", "hidden_featurez"),
    ("not-toml", GOOD_STAGE + "[[stage\n", "could not be read"),
]


@pytest.mark.parametrize(
    "text, message", [b[1:] for b in BAD_RECIPES], ids=[b[0] for b in BAD_RECIPES]
)
def test_a_bad_recipe_exits_2_before_anything_is_written(
    text, message, tiny_mnist_root, tmp_path, capsys
):
    recipe = tmp_path / "bad.toml"
    recipe.write_text(text)
    out = tmp_path / "out"
    code, _, err = cli(capsys, "train", "--recipe", str(recipe), "--out", str(out),
                       "--data-dir", str(tiny_mnist_root))  # fmt: skip
    assert code == 2 and message in err and str(recipe) in err, err
    assert not out.exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--lr", "1e-3"], "--lr cannot go with it"),
        (["--max-steps", "2"], "--max-steps cannot go with it"),
        (["--conditional"], "--conditional cannot go with it"),
        (["--no-compile"], "--no-compile cannot go with it"),
        (["--overwrite"], "--overwrite cannot go with it"),
        (["--recipe-set", "lr_rate=1"], "unknown key 'lr_rate'"),
        (["--recipe-set", "init_from=seed"], "--recipe-set init_from"),
        (["--recipe-set", "lr=-1"], "lr must be > 0"),
        (["--until", "later"], "has no stage 'later'; its stages: train"),
    ],
)
def test_flags_that_contradict_a_recipe_exit_2(extra, message, tiny_mnist_root, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = cli(capsys, "train", "--recipe", str(RECIPES / "seed.toml"), "--out",
                       str(out), "--data-dir", str(tiny_mnist_root), *extra)  # fmt: skip
    assert code == 2 and message in err, err
    assert not out.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--recipe-set", "lr=1e-3"], "--recipe-set changes a recipe's settings; it needs"),
        (["--until", "a"], "--until names a recipe stage; it needs --recipe"),
        (["--recipe", "recipes/seed.toml"], "--recipe needs --out DIR"),
        (["--recipe", "recipes/none.toml", "--out", "x"], "recipes/none.toml does not exist"),
    ],
)
def test_recipe_flags_used_wrongly_exit_2(args, message, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    code, _, err = cli(capsys, "train", *args)
    assert code == 2 and message in err, err


def test_a_run_continues_only_with_its_own_recipe_and_overrides(tiny_mnist_root, tmp_path, capsys):
    recipe = tmp_path / "r.toml"
    recipe.write_text(GOOD_STAGE + "model_overrides = { hidden_features = 16 }\n")
    out = tmp_path / "out"
    base = ["train", "--recipe", str(recipe), "--out", str(out), "--data-dir",
            str(tiny_mnist_root), *TINY_RUN]  # fmt: skip
    pairflow(*base)
    state = (out / "recipe.json").read_text()
    code, _, err = cli(capsys, *base, "--recipe-set", "lr=5e-4")
    assert code == 2 and "was started with --recipe-set max_steps=2" in err, err
    recipe.write_text(GOOD_STAGE + "lr = 5e-4\n")
    code, _, err = cli(capsys, *base)
    assert code == 2 and "differs from it" in err, err
    assert (out / "recipe.json").read_text() == state


def test_a_recipe_refuses_an_out_that_holds_something_else(tiny_mnist_root, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, _, err = cli(capsys, "train", "--recipe", str(RECIPES / "seed.toml"), "--out",
                       str(out), "--data-dir", str(tiny_mnist_root), *TINY_RUN)  # fmt: skip
    assert code == 2 and "holds no recipe run" in err, err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
