"""`pairflow app`: the model functions behind the page, the command, and the page itself
driven in headless Chromium (Debian's /usr/bin/chromium through playwright).

The browser test starts `pairflow app` as a user would, on a free loopback port, with an
audit hook in the server process that records every DNS look-up and socket connection that
is not to loopback: the page must work offline.

Set PAIRFLOW_APP_SCREENSHOT=FILE.png to save the browser's screenshot of the page (the
README's docs/images/app.png is made that way).
"""

from __future__ import annotations

import io
import math
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from flowtools import one_thread, randomize
from pairflow.app import core
from pairflow.models import kind_spec

CHROMIUM = Path("/usr/bin/chromium")
# Levels a shipped flow's encode -> decode may move a pixel where the app runs it in bf16 (the
# fast precision on AMX and AVX512-BF16 CPUs): up to 3 measured on 100 test pairs for the
# variationally dequantized flows, encoded at q's point (9 at bin centres). In fp32 it is
# exact (the README's Python API block asserts it).
BF16_ROUND_TRIP = 4


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def cond_model() -> core.LoadedModel:
    return core.load_model("multiscale-cond")


@pytest.fixture(scope="module")
def classifier():
    return core.shipped_classifier()


@pytest.fixture(scope="module")
def test_pairs(mnist_root):
    from pairflow.data import PairedMNIST

    return PairedMNIST(mnist_root, train=False)


def tiles(grid: np.ndarray, n: int, nrow: int) -> torch.Tensor:
    """Cut a grid (upscaled by 2, 2-pixel padding before it) back into (n, 1, 28, 56) pairs."""
    small = grid[::2, ::2]
    out = []
    for i in range(n):
        r, c = divmod(i, nrow)
        top, left = 2 + r * 30, 2 + c * 58
        out.append(small[top : top + 28, left : left + 56])
    return torch.from_numpy(np.stack(out)).unsqueeze(1)


# ------------------------------------------------------------------ the plain functions
def test_generate_pair_37_reads_as_37_and_is_reproducible(cond_model, classifier):
    images, labels = core.generate(cond_model, pair="37", count=8, temperature=0.7, seed=3)
    assert images.shape == (8, 1, 28, 56) and images.dtype == torch.uint8
    assert labels.tolist() == [37] * 8
    reads = classifier.predict_pairs(images)
    assert (reads == 37).sum() >= 6, reads.tolist()
    again, _ = core.generate(cond_model, pair="37", count=8, temperature=0.7, seed=3)
    assert torch.equal(images, again)
    other, _ = core.generate(cond_model, pair="37", count=8, temperature=0.7, seed=4)
    assert not torch.equal(images, other)
    # The same draws as the library call `pairflow sample --pair 37 --seed 3` makes.
    direct = cond_model.model.sample(
        8, temperature=0.7, generator=torch.Generator().manual_seed(3), cond=labels
    )
    assert torch.equal(images, direct)


def test_generate_any_draws_labels_from_the_models_p_y(cond_model):
    _, labels = core.generate(cond_model, pair="any", count=4, seed=0)
    expected = cond_model.model.sample_labels(4, torch.Generator().manual_seed(0))
    assert torch.equal(labels, expected)


@pytest.mark.parametrize(
    "pair, count, temperature, match",
    [
        ("123", 4, 0.7, "00..99"),
        ("3x", 4, 0.7, "00..99"),
        ("37", 0, 0.7, "count"),
        ("37", 65, 0.7, "count"),
        ("37", 4, 0.0, "temperature"),
        ("37", 4, float("nan"), "temperature"),
        ("37", 4, 5.0, r"temperature 5\.0: give a number from 0\.1 to 1\.5"),  # not clamped
        ("3", 4, 0.7, r"'3' is one digit.*give 03 .* or 30"),  # as `sample --pair 3` says
    ],
)
def test_generate_rejects_bad_settings(cond_model, pair, count, temperature, match):
    with pytest.raises(core.AppInputError, match=match):
        core.generate(cond_model, pair=pair, count=count, temperature=temperature)


def test_unconditional_model_samples_only_without_a_label():
    loaded = core.load_model("multiscale")
    assert not loaded.conditional
    with pytest.raises(core.AppInputError, match="unconditional"):
        core.generate(loaded, pair="37", count=2)
    images, labels = core.generate(loaded, pair="any", count=2)
    assert labels is None and images.shape == (2, 1, 28, 56)


def test_default_temperature_follows_the_cli_and_the_slider_moves_only_on_a_change(
    cond_model, tmp_path
):
    from pairflow.app.ui import _Handlers

    unconditional = core.load_model("multiscale")
    # a given label: the shipped multiscale-cond's own, chosen by its sweep (the global: 0.7)
    assert core.default_temperature_for(cond_model, "37") == 0.6
    # y ~ p(y): its own label-free default, chosen with its guidance (0.95, guided by 0.2)
    assert core.default_temperature_for(cond_model, " Any ") == 0.95
    assert core.default_temperature_for(cond_model, "") == 0.95
    assert core.default_guidance_for(cond_model, "any") == 0.2
    assert core.default_guidance_for(cond_model, "37") == 0.1
    # no labels at all: the shipped multiscale's own default, chosen by its temperature sweep
    assert core.default_temperature_for(unconditional, "any") == 0.8
    assert unconditional.temperatures == {"default": 0.8}
    assert core.default_guidance_for(unconditional, "any") == 0.0  # no guidance to take
    h = _Handlers(None, tmp_path, None)
    update, shown = h.follow_temperature("multiscale-cond", "", "any", 0.7)
    assert update["value"] == 0.95 and shown == 0.95
    update, shown = h.follow_temperature("multiscale-cond", "", "any", 0.95)  # typed on: stays
    assert "value" not in update and shown == 0.95
    update, shown = h.follow_temperature("multiscale", "", "any", 0.95)  # its own 0.8: moves
    assert update["value"] == 0.8 and shown == 0.8
    update, shown = h.follow_temperature("multiscale", "", "any", 0.8)  # its own 0.8: stays
    assert "value" not in update and shown == 0.8
    update, shown = h.follow_temperature("seed", "", "any", 0.8)  # seed's own default, 1.0
    assert update["value"] == 1.0 and shown == 1.0
    update, shown = h.follow_temperature("multiscale-cond", "", "12", 1.0)  # a label: 0.6
    assert update["value"] == 0.6 and shown == 0.6
    update, shown = h.follow_temperature("multiscale-cond", "", "12", 0.6)
    assert "value" not in update and shown == 0.6
    update, shown = h.follow_temperature("x", str(tmp_path / "nothing"), "any", 0.7)
    assert "value" not in update and shown == 0.7  # no such model: leave the slider


def test_load_model_errors_name_the_problem(tmp_path):
    with pytest.raises(
        core.AppInputError, match="neither a file, a run folder nor a shipped model"
    ):
        core.load_model(str(tmp_path / "missing-run"))
    with pytest.raises(core.AppInputError, match="holds no checkpoint"):
        core.load_model(str(tmp_path))
    (tmp_path / "best.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(core.AppInputError, match="could not be read"):
        core.load_model(str(tmp_path))
    with pytest.raises(core.AppInputError, match="no model chosen"):
        core.load_model("  ")


def test_grid_geometry_and_downloads_round_trip(cond_model):
    from PIL import Image

    images, labels = core.generate(cond_model, pair="05", count=6, seed=1)
    nrow = core.grid_nrow(6)
    grid = core.grid_image(images)
    rows = math.ceil(6 / nrow)
    assert grid.shape == (2 * (rows * 30 + 2), 2 * (nrow * 58 + 2))
    assert torch.equal(tiles(grid, 6, nrow), images)
    decoded = np.asarray(Image.open(io.BytesIO(core.png_bytes(grid))))
    assert np.array_equal(decoded, grid)
    arrays = np.load(io.BytesIO(core.npz_bytes(images, labels)))
    assert np.array_equal(arrays["images"], images[:, 0].numpy())
    assert arrays["labels"].tolist() == [5] * 6


def test_interpolate_latents_runs_from_z0_to_z1_on_the_circle():
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(3, 1, 2, 4, generator=g), torch.randn(3, 1, 2, 4, generator=g)
    path = core.interpolate_latents(z0, z1, 5).view(3, 5, 1, 2, 4)
    torch.testing.assert_close(path[:, 0], z0)
    torch.testing.assert_close(path[:, -1], z1)
    # the midpoint is (z0 + z1) / sqrt 2: for independent Gaussians, the same norm on average
    torch.testing.assert_close(path[:, 2], (z0 + z1) / math.sqrt(2))


def test_the_app_reads_pair_labels_by_the_command_lines_rule():
    """One rule for `sample --pair` and the app's label fields: each text is taken as the same
    label by both, or refused by both."""
    from pairflow.cli import UsageError
    from pairflow.commands.sample import parse_classes, parse_pairs

    texts = [
        "37",
        "05",
        " 99 ",
        "00",
        "3",
        "7",
        "123",
        "3x",
        "x",
        "-1",
        "+5",
        "3.0",
        "\u0663\u0667",
    ]
    for layout, cli in (("pair", parse_pairs), ("single", parse_classes)):
        for text in texts:
            try:
                expected = cli(text)[0]
            except UsageError:
                expected = None
            try:
                got = core.parse_pair(text, conditional=True, layout=layout)
            except core.AppInputError:
                got = None
            assert got == expected, (layout, text, got, expected)
    assert core.parse_pair("37", True) == 37 and core.parse_pair("7", True, "single") == 7
    with pytest.raises(core.AppInputError, match=r"label A: '3' is one digit.*or 'any'"):
        core.parse_pair("3", True, field="label A")
    assert core.parse_pair(" Any ", True) is None and core.parse_pair("", True) is None


@pytest.mark.mnist
def test_interpolation_between_test_pairs_starts_and_ends_at_them(
    cond_model, test_pairs, mnist_root
):
    from pairflow.evaluation.interpolation import interpolate

    x, y = test_pairs.get_batch(torch.tensor([4, 9]))
    strip, ends, labels = core.interpolate_test_pairs(cond_model, 4, 9, 5, mnist_root)
    assert strip.shape == (5, 1, 28, 56) and torch.equal(ends, y) and y[0] != y[1]
    assert labels == [int(y[0])] * 5  # every step under the start pair's label: a morph
    # The library's row, the one `pairflow sample --interpolate` draws.
    assert torch.equal(strip, interpolate(cond_model.model, x[:1], x[1:], 5, cond=y[:1])[0])
    # The flow is invertible under any label: the ends are the real pairs again (exactly in
    # fp32; a level or so where the app runs in bf16).
    for end, real in [(strip[0], x[0]), (strip[-1], x[1])]:
        diff = (end.int() - real.int()).abs()
        assert diff.max() <= 2 and (diff > 0).float().mean() < 0.01
    with pytest.raises(core.AppInputError, match="not in 0..9999"):
        core.interpolate_test_pairs(cond_model, 4, 10_000, 5, mnist_root)
    with pytest.raises(core.AppInputError, match="steps"):
        core.interpolate_test_pairs(cond_model, 4, 9, 1, mnist_root)
    with pytest.raises(core.AppInputError, match="--data-dir"):
        core.interpolate_test_pairs(cond_model, 4, 9, 5, mnist_root / "missing")


def test_interpolation_between_labels(cond_model, classifier):
    strip, ends, labels = core.interpolate_labels(cond_model, "37", "80", steps=4, seed=0)
    assert ends.tolist() == [37, 80] and labels == [37] * 4  # under label A all the way
    reads = classifier.predict_pairs(strip[[0, -1]]).tolist()
    assert reads == [37, 80]  # and still ends on the sample of 80
    with pytest.raises(core.AppInputError, match="unconditional"):
        core.interpolate_labels(core.load_model("multiscale"), "37", "80")
    with pytest.raises(core.AppInputError, match=r"label B: '8' is one digit"):
        core.interpolate_labels(cond_model, "37", "8")
    with pytest.raises(core.AppInputError, match=r"label A: give a label"):
        core.interpolate_labels(cond_model, "any", "80")
    with pytest.raises(core.AppInputError, match=r"temperature 2\.0: give a number from 0\.1"):
        core.interpolate_labels(cond_model, "37", "80", temperature=2.0)


def test_image_from_array_accepts_28x56_and_exact_multiples_only():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (28, 56), generator=g, dtype=torch.uint8).numpy()
    assert np.array_equal(core.image_from_array(x)[0, 0].numpy(), x)
    rgb = np.stack([x, x, x], axis=-1)
    assert np.array_equal(core.image_from_array(rgb)[0, 0].numpy(), x)
    rgba = np.concatenate([rgb, np.zeros_like(x)[..., None]], axis=-1)  # fully transparent
    assert core.image_from_array(rgba).max() == 0
    big = x.repeat(2, axis=0).repeat(2, axis=1)  # 56x112, as this app's grids are upscaled
    assert np.array_equal(core.image_from_array(big)[0, 0].numpy(), x)
    for shape in [(28, 28), (56, 56), (30, 60), (28, 57)]:
        with pytest.raises(core.AppInputError, match=f"{shape[0]}x{shape[1]} pixels"):
            core.image_from_array(np.zeros(shape, dtype=np.uint8))
    with pytest.raises(core.AppInputError, match="no image"):
        core.image_from_array(None)


def test_image_from_drawing_averages_the_canvas_down_and_rejects_an_empty_one():
    canvas = np.zeros((280, 560, 3), dtype=np.uint8)
    canvas[50:230, 130:150] = 255  # a vertical stroke, 20 canvas pixels = 2 pair pixels wide
    x = core.image_from_drawing({"composite": canvas, "layers": [], "background": None})
    assert x.shape == (1, 1, 28, 56)
    expected = np.zeros((28, 56), dtype=np.uint8)
    expected[5:23, 13:15] = 255
    assert np.array_equal(x[0, 0].numpy(), expected)
    for empty in [None, {"composite": None}, np.zeros((280, 560, 4), dtype=np.uint8)]:
        with pytest.raises(core.AppInputError, match="drawing is empty"):
            core.image_from_drawing(empty)
    with pytest.raises(core.AppInputError, match="1:2"):
        core.image_from_drawing(np.full((280, 280), 255, dtype=np.uint8))


@pytest.mark.mnist
def test_score_of_a_real_test_pair(cond_model, test_pairs):
    x, y = test_pairs.get_batch(torch.tensor([0]))
    result = core.score(cond_model, x, label=f"{int(y[0]):02d}")
    assert result.label == int(y[0]) and result.label_source == "given"
    with torch.no_grad():
        expected = cond_model.model.bits_per_dim(
            x.expand(8, -1, -1, -1), torch.full((8,), int(y[0])), torch.Generator().manual_seed(0)
        )
    assert result.bits_per_dim == pytest.approx(float(expected.mean()), abs=1e-6)
    assert 0.7 < result.bits_per_dim < 1.5  # the 1st..99th percentile of test pairs
    assert result.reading == int(y[0])
    torch.testing.assert_close(result.digit_probs.sum(-1), torch.ones(2))
    # The conditional flow's own p(y | x): Bayes over the 100 labels, the true one on top.
    assert result.posterior_top[0] == int(y[0]) and result.posterior_top[1] > 0.5
    assert result.max_reconstruction_error <= BF16_ROUND_TRIP
    # A blank label conditions on the classifier's reading; another label costs more bits.
    blank = core.score(cond_model, x, label="")
    assert blank.label == int(y[0]) and blank.label_source == "classifier"
    wrong = core.score(cond_model, x, label=f"{(int(y[0]) + 11) % 100:02d}")
    assert wrong.bits_per_dim > result.bits_per_dim + 0.01


def test_score_shows_a_conditional_flows_own_posterior():
    from pairflow.flows import build_flow

    with torch.random.fork_rng():  # the initial weights too: the same flow every run
        torch.manual_seed(0)
        flow = randomize(
            build_flow("seed", conditional=True, num_couplings=2, hidden_features=8), seed=0
        ).eval()
    counts = torch.arange(1, 101, dtype=torch.float32)  # a p(y) that is not uniform
    flow.set_label_counts(counts)
    loaded = core.LoadedModel("bayes", flow, kind_spec("flow"))
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (1, 1, 28, 56), generator=g, dtype=torch.uint8)
    result = core.score(loaded, x, label="", draws=1)
    posterior = result.class_posterior
    assert posterior.shape == (100,) and bool((posterior >= 0).all())
    torch.testing.assert_close(posterior.sum(), torch.tensor(1.0))
    top, prob = result.posterior_top
    assert top == int(posterior.argmax()) and prob == pytest.approx(float(posterior.max()))
    # It is p(y | x) proportional to p(y) p(x | y), at the bin centres.
    log_prior = flow.log_label_probs()
    torch.testing.assert_close(log_prior, (counts / counts.sum()).log())
    with torch.no_grad():
        log_joint = log_prior + flow.class_log_likelihoods(x, noise="center")[0]
    torch.testing.assert_close(posterior, log_joint.softmax(0), rtol=1e-4, atol=1e-6)
    # An unconditional model has none.
    plain = randomize(build_flow("seed", num_couplings=2, hidden_features=8)).eval()
    result = core.score(core.LoadedModel("plain", plain, kind_spec("flow")), x, draws=1)
    assert result.class_posterior is None and result.posterior_top is None


def test_a_bound_on_bits_per_dim_is_shown_as_a_bound_and_names_which():
    """Exact for a flow, Flow++'s bound with variational dequantization, the negative ELBO
    for a VAE: the model line and Score's line say which (a bound shown bare reads as exact)."""
    ui = pytest.importorskip("pairflow.app.ui")
    from pairflow.baselines import build_vae
    from pairflow.flows import build_flow
    from pairflow.flows.prepare import fit_own_clusters

    small = dict(num_couplings=2, hidden_features=8)
    exact = build_flow("seed", **small).eval()
    variational = randomize(build_flow("seed", dequantization="variational", **small)).eval()
    vae = build_vae("conv", latent_dim=2, hidden_channels=4, hidden_features=8).eval()
    x = torch.randint(0, 256, (1, 1, 28, 56), generator=torch.Generator().manual_seed(2),
                      dtype=torch.uint8)  # fmt: skip
    # A flow reading its own clusters (here with noise in the data's space, no learned q):
    # its bound is over the cluster pair alone.
    clustered = randomize(build_flow("multiscale", clusters=3, conditioning="both",
                                     hidden_channels=4, num_blocks=1, dequantization="gaussian",
                                     noise_sigma=0.1)).eval()  # fmt: skip
    digits = torch.randint(0, 256, (30, 28, 28), generator=torch.Generator().manual_seed(3),
                           dtype=torch.uint8)  # fmt: skip
    fit_own_clusters(clustered, SimpleNamespace(digits=digits))
    h = ui._Handlers(None, Path("."), None)
    cases = [
        (exact, "flow", None),
        (variational, "flow", "variational bound: variational dequantization"),
        (vae, "vae", "upper bound: negative ELBO"),
        (clustered, "flow", "variational bound: the images' own cluster pair"),
    ]
    for model, kind, bound in cases:
        loaded = core.LoadedModel(kind, model, kind_spec(kind), test_bpd=1.0812)
        assert loaded.likelihood_bound == bound
        _, text = h._score(loaded, x, "")
        shown = f"bits/dim ({bound})" if bound else "bits/dim"
        assert f"- {shown}: **" in text, text
        value = f"<= 1.0812 ({bound})" if bound else "1.0812"
        assert f"shipped weights, test bits/dim {value}" in loaded.describe()


# ------------------------------------------------------------------ the command
def _run(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_app_without_gradio_says_what_to_install():
    proc = _run(
        "import sys; sys.modules['gradio'] = None\n"
        "from pairflow.cli import main; sys.exit(main(['app']))"
    )
    assert proc.returncode == 2, proc.stderr
    assert 'pip install "pairflow[app]"' in proc.stderr
    assert "Traceback" not in proc.stderr


def test_app_with_a_missing_run_folder_exits_2(tmp_path):
    pytest.importorskip("gradio")
    proc = _run(
        "import sys; from pairflow.cli import main; sys.exit(main(sys.argv[1:]))",
        "app",
        "--model",
        str(tmp_path / "nope"),
    )
    assert (
        proc.returncode == 2 and "neither a file, a run folder nor a shipped model" in proc.stderr
    ), proc.stderr
    assert "Traceback" not in proc.stderr


def test_app_on_a_taken_port_exits_2():
    pytest.importorskip("gradio")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        proc = _run(
            "import sys; from pairflow.cli import main; sys.exit(main(sys.argv[1:]))",
            *("app", "--model", "multiscale-cond", "--port", port),
        )
    assert proc.returncode == 2, proc.stderr
    assert f"cannot serve on 127.0.0.1:{port}" in proc.stderr and "--port" in proc.stderr
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------ the page, in Chromium
# Runs in the server process before pairflow: records non-loopback look-ups and connections.
_SERVER = textwrap.dedent(
    """
    import sys
    LOG = sys.argv.pop(1)
    LOCAL = ("127.0.0.1", "::1", "localhost", "0.0.0.0")

    def _hook(event, args):
        if event in ("socket.connect", "socket.getaddrinfo"):
            target = args[1] if event == "socket.connect" else args
            host = target[0] if isinstance(target, tuple) and target else target
            if isinstance(host, (str, bytes)) and not (
                (host.decode() if isinstance(host, bytes) else host) in LOCAL
                or str(host).startswith("/")
            ):
                with open(LOG, "a") as f:
                    f.write(f"{event} {target!r}\\n")

    sys.addaudithook(_hook)
    from pairflow.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_serving(proc: subprocess.Popen, url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"pairflow app exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"pairflow app did not serve {url} within {timeout} s")


@pytest.fixture(scope="module")
def server(tmp_path_factory, mnist_root):
    pytest.importorskip("gradio", reason='the app needs gradio: pip install "pairflow[app]"')
    folder = tmp_path_factory.mktemp("app")
    port, log = _free_port(), folder / "net.log"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "GRADIO_TEMP_DIR": str(folder / "gradio"),
        "TMPDIR": str(folder),
    }
    cmd = [sys.executable, "-c", _SERVER, str(log), "app", "--port", str(port)]
    cmd += ["--data-dir", str(mnist_root), "--threads", "1"]
    stderr = open(folder / "server.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=stderr, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_serving(proc, url)
        yield {"url": url, "proc": proc, "net_log": log, "folder": folder}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        stderr.close()


@pytest.fixture(scope="module")
def page(server):
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install -y chromium chromium-driver")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        context = browser.new_context(
            viewport={"width": 1280, "height": 1000}, accept_downloads=True
        )
        page = context.new_page()
        page.set_default_timeout(60_000)
        external: list[str] = []
        page.on(
            "request",
            lambda r: (
                external.append(r.url)
                if not r.url.startswith((server["url"], "data:", "blob:"))
                else None
            ),
        )
        page.external_requests = external
        page.goto(server["url"])
        page.wait_for_selector("#gen-button")
        yield page
        browser.close()


def _image_src_bytes(page, selector: str, previous: str | None = None) -> tuple[bytes, str]:
    """Wait for a new <img> in ``selector`` and fetch what its src holds."""
    locator = page.locator(f"{selector} img").first
    deadline = time.monotonic() + 60
    while True:
        src = locator.get_attribute("src") if locator.count() else None
        if src and src != previous:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"no new image in {selector}")
        time.sleep(0.2)
    return page.request.get(src).body(), src


def _wait_text(page, selector: str, pattern: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = page.locator(selector).inner_text()
        if re.search(pattern, text):
            return text
        time.sleep(0.2)
    raise AssertionError(f"{selector} never showed {pattern!r}; it shows {text!r}")


def _wait_value(page, elem_id: str, value: str, timeout: float = 30) -> None:
    """Wait until the number box of slider ``elem_id`` shows ``value``."""
    box = page.locator(f"#{elem_id} input[type=number]").first
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if box.input_value() == value:
            return
        time.sleep(0.2)
    raise AssertionError(f"#{elem_id} never showed {value}; it shows {box.input_value()!r}")


def _fill(page, elem_id: str, text: str) -> None:
    page.locator(f"#{elem_id} textarea, #{elem_id} input").first.fill(text)


@pytest.mark.slow
@pytest.mark.mnist
def test_page_in_chromium(page, server, classifier, test_pairs, cond_model, tmp_path):
    from PIL import Image

    # --- Generate: pair 37 from multiscale-cond (the default model), 16 samples, at its own
    # given-label temperature (0.6, chosen by its sweep)
    _wait_value(page, "gen-temperature", "0.6")
    _wait_value(page, "gen-guidance", "0.1")  # and its own guidance weight, 0.1
    _fill(page, "gen-pair", "37")
    page.click("#gen-button")
    data, src = _image_src_bytes(page, "#gen-grid")
    grid = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
    nrow = 4
    assert grid.shape == (2 * (4 * 30 + 2), 2 * (nrow * 58 + 2))
    shown = tiles(grid, 16, nrow)
    reads = classifier.predict_pairs(shown)
    assert (reads == 37).sum() >= 12, reads.tolist()
    assert "16 samples from multiscale-cond, pair 37" in page.locator("#gen-message").inner_text()
    shot = os.environ.get("PAIRFLOW_APP_SCREENSHOT")
    if shot:
        page.screenshot(path=shot, full_page=True)
    with page.expect_download() as download:
        page.click("#gen-png")
    png = np.asarray(Image.open(download.value.path()))
    assert np.array_equal(png, grid)
    with page.expect_download() as download:
        page.click("#gen-npz")
    arrays = np.load(download.value.path())
    assert np.array_equal(arrays["images"], shown[:, 0].numpy())
    assert arrays["labels"].tolist() == [37] * 16

    # --- "any": temperature and guidance move to the label-free defaults chosen by the
    # model's sweeps (0.95, guided by 0.2), and back for a label (0.6, guided by 0.1)
    _fill(page, "gen-pair", "any")
    _wait_value(page, "gen-temperature", "0.95")
    _wait_value(page, "gen-guidance", "0.2")
    page.click("#gen-button")
    _wait_text(page, "#gen-message", r"random pairs: .*temperature 0\.95, guidance 0\.2,")
    _fill(page, "gen-pair", "58")
    _wait_value(page, "gen-temperature", "0.6")
    _wait_value(page, "gen-guidance", "0.1")
    page.click("#gen-button")
    _wait_text(page, "#gen-message", r"pair 58, temperature 0\.6, guidance 0\.1,")

    # --- bad input: a pair that is not 00..99, a run folder that does not exist
    _fill(page, "gen-pair", "123")
    page.click("#gen-button")
    _wait_text(page, "#gen-message", r"Error.*pair: '123' is not a digit pair.*00\.\.99")
    _fill(page, "gen-pair", "37")
    _fill(page, "run", str(tmp_path / "no-such-run"))
    page.click("#gen-button")
    _wait_text(page, "#gen-message", r"Error.*neither a file, a run folder nor a shipped model")
    _wait_text(page, "#model-info", r"neither a file, a run folder")
    _fill(page, "run", "")
    _wait_text(page, "#model-info", r"multiscale-cond")

    # --- Explore: test pairs 0 -> 1, 10 steps
    page.get_by_role("tab", name="Explore").click()
    # between two labels, drawn at the model's own given-label temperature as Generate's
    page.get_by_label("two labels").check()
    _wait_value(page, "exp-temperature", "0.6")
    page.get_by_label("two test pairs").check()
    page.click("#exp-button")
    data, _ = _image_src_bytes(page, "#exp-strip")
    strip = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
    assert strip.shape == (2 * (30 + 2), 2 * (10 * 58 + 2))
    ends = tiles(strip, 10, 10)[[0, -1]]
    x, _ = test_pairs.get_batch(torch.tensor([0, 1]))
    assert (ends.int() - x.int()).abs().max() <= BF16_ROUND_TRIP
    _wait_text(page, "#exp-message", r"10 steps")

    # --- Score: upload real test pair 0 as a PNG, conditioned on its label
    page.get_by_role("tab", name="Score").click()
    x, y = test_pairs.get_batch(torch.tensor([0]))
    label = f"{int(y[0]):02d}"
    upload = tmp_path / "pair.png"
    Image.fromarray(x[0, 0].numpy()).save(upload)
    _fill(page, "score-label", label)
    page.locator("#score-upload input[type=file]").set_input_files(str(upload))
    page.wait_for_selector("#score-upload img")
    page.click("#score-upload-button")
    # "bits/dim", or "bits/dim (variational bound: ...)" for a flow with variational
    # dequantization: the line names a bound where the model's number is one.
    bound = cond_model.likelihood_bound
    what = re.escape(f"bits/dim ({bound})" if bound else "bits/dim")
    text = _wait_text(page, "#score-result", rf"{what} given pair")
    bpd = float(re.search(rf"{what} given pair {label} \(given\): \**([0-9.]+)", text).group(1))
    expected = core.score(cond_model, x, label=label).bits_per_dim
    assert bpd == pytest.approx(expected, abs=1e-4)
    assert 0.7 < bpd < 1.5  # the 1st..99th percentile of test pairs under multiscale-cond
    assert f"MNIST classifier reads: {label}" in text
    assert f"the model's own p(y | x): {label} p=" in text
    shown = re.search(r"largest pixel difference (\d+)\b", text)
    assert shown and int(shown.group(1)) <= BF16_ROUND_TRIP

    # --- bad input: a wrong-sized upload, an empty drawing
    wrong = tmp_path / "wrong.png"
    Image.fromarray(np.zeros((30, 30), dtype=np.uint8)).save(wrong)
    page.locator("#score-upload input[type=file]").set_input_files(str(wrong))
    time.sleep(1.0)
    page.click("#score-upload-button")
    _wait_text(page, "#score-result", r"Error.*30x30 pixels")
    page.click("#score-draw-button")
    _wait_text(page, "#score-result", r"Error.*drawing is empty")

    # --- Score a drawing: two vertical strokes, a 1 in each half, read as 11
    _fill(page, "score-label", "")
    box = page.locator("#score-canvas canvas").first.bounding_box()
    for x0 in (0.3, 0.7):
        page.mouse.move(box["x"] + x0 * box["width"], box["y"] + 0.3 * box["height"])
        page.mouse.down()
        for k in range(1, 11):
            y = 0.3 + 0.4 * k / 10
            page.mouse.move(box["x"] + x0 * box["width"], box["y"] + y * box["height"])
        page.mouse.up()
    page.click("#score-draw-button")
    text = _wait_text(page, "#score-result", rf"{what} given pair")
    assert "MNIST classifier reads: 11" in text and "the classifier's reading" in text, text
    float(re.search(rf"{what} given pair 11 \(the classifier's reading\): ([0-9.]+)", text)[1])

    # --- nothing left the machine, and the server is still serving
    assert page.external_requests == []
    net = server["net_log"].read_text() if server["net_log"].exists() else ""
    assert net == "", f"the server looked up or connected to non-loopback hosts:\n{net}"
    assert server["proc"].poll() is None


@pytest.mark.slow
@pytest.mark.mnist
def test_page_rough_edges_in_chromium(page, server, test_pairs, cond_model, mnist_root, tmp_path):
    """Explore shows a morph and only its mode's fields; the upload keeps its size; a typed
    temperature out of range and an ambiguous pair are refused with a message; the console
    has no gradio hints."""
    from PIL import Image

    # --- Explore: only the chosen mode's fields show
    page.get_by_role("tab", name="Explore").click()
    visible = lambda *ids: [page.locator(f"#{i}").is_visible() for i in ids]  # noqa: E731
    fields = ("exp-a", "exp-b", "exp-label-a", "exp-label-b", "exp-temperature", "exp-seed")
    assert visible(*fields) == [True, True, False, False, False, False]
    page.locator("#exp-mode").get_by_text("two labels").click()
    page.wait_for_selector("#exp-label-a", state="visible")
    assert visible(*fields) == [False, False, True, True, True, True]
    page.locator("#exp-mode").get_by_text("two test pairs").click()
    page.wait_for_selector("#exp-a", state="visible")
    assert visible(*fields) == [True, True, False, False, False, False]

    # --- Explore on the default (conditional) model: test pairs 4 (80) -> 9 (59) morph
    shown_before = page.locator("#exp-strip img")  # from an earlier test, or none
    previous = shown_before.first.get_attribute("src") if shown_before.count() else None
    _fill(page, "exp-a", "4")
    _fill(page, "exp-b", "9")
    page.click("#exp-button")
    data, _ = _image_src_bytes(page, "#exp-strip", previous)
    strip = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
    shown = tiles(strip, 10, 10)
    expected, ends, _ = core.interpolate_test_pairs(cond_model, 4, 9, 10, mnist_root)
    assert torch.equal(shown, expected)  # the library's strip, the one the CLI draws
    x, _ = test_pairs.get_batch(torch.tensor([4, 9]))
    assert (shown[[0, -1]].int() - x.int()).abs().max() <= BF16_ROUND_TRIP
    # A morph: no step between neighbours stands out (switching the label halfway made one
    # step about five times the others: two images, not a walk between them).
    frames = shown.float().flatten(1)
    step = (frames[1:] - frames[:-1]).abs().mean(1)
    assert step.max() < 2 * step.median(), step.tolist()
    text = _wait_text(page, "#exp-message", r"decoded under the start pair's label")
    assert f"label {int(ends[0]):02d}" in text and int(ends[0]) != int(ends[1])

    # --- Generate: a typed temperature of 5 is refused, not clamped; "3" is refused as the
    # command line refuses --pair 3
    page.get_by_role("tab", name="Generate").click()
    _fill(page, "gen-pair", "37")
    _fill(page, "gen-temperature", "5")
    page.click("#gen-button")
    _wait_text(page, "#gen-message", r"Error.*temperature 5(\.0)?: give a number from 0\.1 to 1\.5")
    assert page.locator("#gen-temperature input").first.input_value() == "5"
    _fill(page, "gen-temperature", "0.7")
    _fill(page, "gen-pair", "3")
    page.click("#gen-button")
    _wait_text(page, "#gen-message", r"Error.*pair: '3' is one digit.*give 03 .* or 30")
    _fill(page, "gen-pair", "37")

    # --- Score: an uploaded 28x56 pair is shown scaled up in its box, not as a thin strip
    page.get_by_role("tab", name="Score").click()
    upload = tmp_path / "pair.png"
    Image.fromarray(x[0, 0].numpy()).save(upload)
    page.locator("#score-upload input[type=file]").set_input_files(str(upload))
    page.wait_for_selector("#score-upload img")
    box = page.locator("#score-upload img").first.bounding_box()
    assert box["height"] >= 200 and box["width"] >= 400, box  # 28x56 scaled up, not 28 tall
    rendered = page.locator("#score-upload img").first.evaluate(
        "img => [img.naturalWidth, img.naturalHeight, getComputedStyle(img).objectFit]"
    )
    assert rendered == [56, 28, "contain"]  # the whole pair, its aspect kept

    # --- the console speaks of pairflow's address, not of gradio's share link
    log = (server["folder"] / "server.log").read_text()
    assert "share=True" not in log and "To create a public link" not in log, log
    assert re.search(r"pairflow app: serving on http://127\.0\.0\.1:\d+/", log), log
    assert server["proc"].poll() is None


def test_the_page_opens_on_an_mnist_conditional_model():
    from pairflow.commands.app import default_models
    from pairflow.pretrained import list_pretrained

    names, shipped = default_models(), list_pretrained()
    assert names[0] == "multiscale-cond" and sorted(names) == sorted(shipped)
    datasets = [shipped[n].get("dataset", "mnist") for n in names]
    assert datasets == sorted(datasets, key=lambda d: d != "mnist")  # MNIST's first


def test_the_app_treats_a_flow_reading_its_own_clusters_as_unconditional():
    """multiscale-clusters: the app draws without a pair, shows no p(y | x) of its clusters
    as pair labels, scores the image at its own clusters and rebuilds it from its latent."""
    loaded = core.load_model("multiscale-clusters")
    assert not loaded.conditional
    images, labels = core.generate(loaded, "any", count=2, seed=0)
    assert images.shape == (2, 1, 28, 56) and labels is None
    x = images[:1]
    result = core.score(loaded, x)
    assert result.label is None and result.posterior_top is None
    with torch.no_grad():
        expected = loaded.model.bits_per_dim(x.expand(8, -1, -1, -1), None,
                                             torch.Generator().manual_seed(0))  # fmt: skip
    assert result.bits_per_dim == pytest.approx(float(expected.mean()), abs=1e-6)
    assert result.max_reconstruction_error <= BF16_ROUND_TRIP


def test_every_shipped_models_own_defaults_lie_on_the_apps_sliders():
    """The app opens each model at its own swept temperature and guidance; a default off a
    slider's range would be refused by the app's own check of that slider."""
    from pairflow.pretrained import list_pretrained

    (t_lo, t_hi), (w_lo, w_hi) = core.TEMPERATURE_RANGE, core.GUIDANCE_RANGE
    for name, entry in list_pretrained().items():
        for t in (entry.get("temperature") or {}).values():
            assert t_lo <= t <= t_hi, (name, t)
        for w in (entry.get("guidance") or {}).values():
            assert w_lo <= w <= w_hi, (name, w)
    # seed-clusters has the highest default temperature (1.5): the app draws at its defaults.
    loaded = core.load_model("seed-clusters")
    t, w = core.default_temperature_for(loaded, "any"), core.default_guidance_for(loaded, "any")
    assert (t, w) == (1.5, 1.25)
    images, labels = core.generate(loaded, "any", count=2, seed=0, temperature=t, guidance=w)
    assert images.shape == (2, 1, 28, 56) and labels is None and torch.isfinite(images).all()
