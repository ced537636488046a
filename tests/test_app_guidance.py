"""The app's guidance slider: shown only for a model trained with label dropout, and what it
draws is what ``pairflow sample --guidance`` draws; the page driven in headless Chromium as in
tests/test_app.py."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from clitools import pairflow
from pairflow.app import core
from test_app import (
    _SERVER,
    CHROMIUM,
    _fill,
    _free_port,
    _image_src_bytes,
    _wait_text,
    _wait_until_serving,
    tiles,
)
from test_guidance_cli import _train  # the same tiny conditional run


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_mnist_root) -> dict:
    folder = tmp_path_factory.mktemp("app-guidance")
    _train(tiny_mnist_root, folder / "guided", "--set", "label_dropout=0.3")
    _train(tiny_mnist_root, folder / "plain")
    return {"guided": folder / "guided", "plain": folder / "plain", "root": tiny_mnist_root}


def test_generate_with_guidance_is_what_sample_draws(runs, tmp_path):
    loaded = core.load_model(str(runs["guided"]))
    assert loaded.guidable and "label dropout" in loaded.describe()
    plain, _ = core.generate(loaded, "37", count=4, seed=2)
    zero, _ = core.generate(loaded, "37", count=4, seed=2, guidance=0.0)
    assert torch.equal(zero, plain)  # w = 0 is the conditional model
    guided, labels = core.generate(loaded, "37", count=4, seed=2, guidance=1.5)
    assert not torch.equal(guided, plain)
    out = tmp_path / "s.npz"
    pairflow("sample", str(runs["guided"]), "--pair", "37", "--n", "4", "--seed", "2",
             "--temperature", "0.7", "--guidance", "1.5", "--out", str(out))  # fmt: skip
    assert np.array_equal(np.load(out)["images"], guided[:, 0].numpy())


@pytest.mark.parametrize("bad", [6.0, -1.5, float("nan"), "x"])
def test_generate_refuses_guidance_out_of_range(runs, bad):
    loaded = core.load_model(str(runs["guided"]))
    with pytest.raises(core.AppInputError, match="guidance .*: give a number from -1 to 5"):
        core.generate(loaded, "37", count=2, guidance=bad)


def test_a_model_without_label_dropout_has_no_guidance(runs):
    loaded = core.load_model(str(runs["plain"]))
    assert not loaded.guidable and "label dropout" not in loaded.describe()
    with pytest.raises(core.AppInputError, match="trained without label dropout"):
        core.generate(loaded, "37", count=2, guidance=1.0)


def test_the_slider_follows_a_models_own_guidance_and_keeps_the_users_setting(runs, tmp_path):
    from dataclasses import replace

    from pairflow.app.ui import _Handlers

    loaded = core.load_model(str(runs["guided"]))
    assert core.default_guidance_for(loaded, "37") == 0.0  # a run: the conditional model
    own = replace(loaded, guidance={"default": 0.1, "label_free": 0.15})
    assert core.default_guidance_for(own, "37") == 0.1
    assert core.default_guidance_for(own, " any ") == 0.15  # y ~ p(y): the label-free weight
    plain = core.load_model(str(runs["plain"]))
    assert core.default_guidance_for(plain, "any") == 0.0  # no label dropout: no guidance
    h = _Handlers(None, tmp_path, None)
    h._model = lambda choice, run: {"own": own, "plain": plain}[choice]
    update, shown = h.show_guidance("own", "", "37", 0.0)
    assert update["visible"] and update["value"] == 0.1 and shown == 0.1
    update, shown = h.show_guidance("own", "", "any", shown)  # the default changed: it moves
    assert update["value"] == 0.15 and shown == 0.15
    update, shown = h.show_guidance("own", "", "any", shown)  # unchanged: the user's stays
    assert "value" not in update and shown == 0.15
    update, shown = h.show_guidance("plain", "", "37", shown)
    assert update["visible"] is False and update["value"] == 0.0


@pytest.fixture(scope="module")
def page(runs, tmp_path_factory):
    pytest.importorskip("gradio", reason='the app needs gradio: pip install "pairflow[app]"')
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install -y chromium chromium-driver")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    folder = tmp_path_factory.mktemp("app-guidance-server")
    port, log = _free_port(), folder / "net.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_TEMP_DIR": str(folder / "gradio"),
           "TMPDIR": str(folder)}  # fmt: skip
    cmd = [sys.executable, "-c", _SERVER, str(log), "app", "--port", str(port), "--threads", "1"]
    cmd += ["--model", str(runs["guided"]), "--data-dir", str(runs["root"])]
    output = open(folder / "server.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=output, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_serving(proc, url)
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(url)
            page.wait_for_selector("#gen-button")
            yield page
            browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        output.close()


def _wait_visible(page, selector: str, visible: bool, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if page.locator(selector).first.is_visible() == visible:
            return
        time.sleep(0.2)
    raise AssertionError(f"{selector} never became {'visible' if visible else 'hidden'}")


@pytest.mark.slow
def test_guidance_slider_in_chromium(page, runs):
    from PIL import Image

    # A model trained with label dropout: the slider shows, and what it draws is the library's.
    _wait_visible(page, "#gen-guidance", True)
    _fill(page, "gen-pair", "37")
    page.locator("#gen-guidance input[type=number]").first.fill("1.5")
    page.locator("#gen-guidance input[type=number]").first.press("Enter")
    page.click("#gen-button")
    _wait_text(page, "#gen-message", r"pair 37, temperature 0\.7, guidance 1\.5, seed 0")
    data, _ = _image_src_bytes(page, "#gen-grid")
    grid = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
    expected, _ = core.generate(core.load_model(str(runs["guided"])), "37", 16, 0.7, 0, 1.5)
    assert torch.equal(tiles(grid, 16, 4), expected)

    # A model without it: the slider hides, and comes back with the guided model.
    _fill(page, "run", str(runs["plain"]))
    _wait_visible(page, "#gen-guidance", False)
    page.click("#gen-button")
    _wait_text(page, "#gen-message", r"pair 37, temperature 0\.7, seed 0")
    _fill(page, "run", "")
    _wait_visible(page, "#gen-guidance", True)


def test_the_page_says_a_model_trained_with_noise_denoises_its_samples(tiny_mnist_root, tmp_path):
    noisy, plain = tmp_path / "noisy", tmp_path / "plain"
    _train(tiny_mnist_root, noisy, "--set", "dequantization=gaussian", "--set", "noise_sigma=0.1")
    loaded = core.load_model(str(noisy))
    assert "denoising step (on)" in loaded.describe()
    _train(tiny_mnist_root, plain)
    assert "denoising" not in core.load_model(str(plain)).describe()
