"""Latent interpolation (`pairflow.evaluation.interpolation`), the one path that
`pairflow sample --interpolate` and the app's Explore tab draw: the maths of the path, exact
ends, and the conditional policy (every image of a row under the start image's label).

The command's end-to-end tests (`--interpolate` rows, steps and the flags it refuses) run
on a tiny conditional flow trained on tiny data.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from flowtools import one_thread, randomize
from pairflow.cli import main
from pairflow.evaluation.interpolation import MAX_STEPS, interpolate, latent_path


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def tiny_flow(conditional: bool = True, conditioning: str = "both"):
    """A small multiscale flow with random weights (no layer is the identity), fp32."""
    from pairflow.flows import build_flow

    options = dict(conditional=True, conditioning=conditioning) if conditional else {}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        flow = build_flow("multiscale", hidden_channels=4, num_blocks=1, **options)
    return randomize(flow, seed=1).eval()


def pixels(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 28, 56), generator=g, dtype=torch.uint8)


# ------------------------------------------------------------------ the path
def test_latent_path_ends_on_z0_and_z1_bit_for_bit_and_keeps_the_gaussian_scale():
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(3, 1, 4, 8, generator=g), torch.randn(3, 1, 4, 8, generator=g)
    path = latent_path(z0, z1, 7)
    assert path.shape == (3, 7, 1, 4, 8)
    assert torch.equal(path[:, 0], z0) and torch.equal(path[:, -1], z1)  # not just close
    # z(t) = cos(t pi/2) z0 + sin(t pi/2) z1 at t = k / 6
    for k in range(7):
        a = k / 6 * math.pi / 2
        torch.testing.assert_close(path[:, k], math.cos(a) * z0 + math.sin(a) * z1)
    # cos^2 + sin^2 = 1: for independent N(0, 1) latents every point is N(0, 1) again, where
    # the straight line's midpoint has variance 1/2 (faint, blurry images)
    big = torch.Generator().manual_seed(1)
    w0, w1 = torch.randn(2, 200_000, generator=big)
    mid = latent_path(w0[None], w1[None], 3)[0, 1]
    assert abs(float(mid.var()) - 1) < 0.02 and abs(float(((w0 + w1) / 2).var()) - 0.5) < 0.02


def test_latent_path_refuses_bad_steps_and_shapes():
    z = torch.zeros(2, 3)
    for steps in (1, 0, 2.5, True):
        with pytest.raises(ValueError, match="steps must be an int >= 2"):
            latent_path(z, z, steps)
    with pytest.raises(ValueError, match="one shape"):
        latent_path(z, torch.zeros(2, 4), 3)


# ------------------------------------------------------------------ images
class Recorder:
    """A model that records the labels of every encode and decode call (the policy)."""

    def __init__(self, model):
        self.model, self.calls = model, []

    def encode(self, x, cond=None):
        self.calls.append(("encode", None if cond is None else cond.tolist()))
        return self.model.encode(x, cond=cond)

    def decode(self, z, cond=None):
        self.calls.append(("decode", None if cond is None else cond.tolist()))
        return self.model.decode(z, cond=cond)


def test_a_conditional_row_stays_under_the_start_label_and_ends_exactly_on_both_images():
    flow = tiny_flow()
    x0, x1 = pixels(2, 0), pixels(2, 1)
    start = torch.tensor([37, 80])  # x1's own labels would be others: the policy ignores them
    spy = Recorder(flow)
    rows = interpolate(spy, x0, x1, steps=5, cond=start, batch_size=4)
    assert rows.shape == (2, 5, 1, 28, 56) and rows.dtype == torch.uint8
    # The ends are the images themselves, bit for bit (fp32), though x1 was encoded under
    # x0's label: the flow is invertible under any label.
    assert torch.equal(rows[:, 0], x0) and torch.equal(rows[:, -1], x1)
    # Every image of row b was encoded and decoded under start[b], none under another label
    # (the label does not switch halfway), in decoding passes of at most batch_size.
    assert spy.calls[0] == ("encode", [37, 80, 37, 80])
    decoded = [label for kind, labels in spy.calls[1:] for label in labels]
    assert [kind for kind, _ in spy.calls[1:]] == ["decode"] * 3  # 10 images, 4 a pass
    assert decoded == [37] * 5 + [80] * 5
    # The label is read: the same latents under another start label make other images inside.
    other = interpolate(flow, x0, x1, steps=5, cond=torch.tensor([12, 80]))
    assert not torch.equal(other[0, 1:-1], rows[0, 1:-1])
    assert torch.equal(other[0, -1], x1[0]) and torch.equal(other[1], rows[1])


def test_the_row_is_the_decoded_latent_path_and_chunking_changes_only_rounding():
    flow = tiny_flow(conditional=False)
    x0, x1 = pixels(3, 2), pixels(3, 3)
    rows = interpolate(flow, x0, x1, steps=4)
    z = flow.encode(torch.cat([x0, x1]))
    path = latent_path(z[:3], z[3:], 4)
    assert torch.equal(rows.flatten(0, 1), flow.decode(path.flatten(0, 1)))
    # One image a pass: the same images, up to float rounding at a level's edge (a
    # convolution's sums are ordered by the batch size)
    diff = (interpolate(flow, x0, x1, steps=4, batch_size=1).int() - rows.int()).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3
    assert torch.equal(rows[:, 0], x0) and torch.equal(rows[:, -1], x1)
    assert not torch.equal(rows[:, 1], x0)  # it moves


def test_a_vae_row_ends_on_its_reconstructions():
    from pairflow.baselines import build_vae

    vae = randomize(
        build_vae("conv", latent_dim=2, hidden_channels=4, hidden_features=8, conditional=True)
    ).eval()
    x0, x1 = pixels(1, 4), pixels(1, 5)
    c = torch.tensor([5])
    rows = interpolate(vae, x0, x1, steps=3, cond=c)
    assert torch.equal(rows[0, 0], vae.decode(vae.encode(x0, c), c)[0])
    assert torch.equal(rows[0, -1], vae.decode(vae.encode(x1, c), c)[0])


def test_interpolate_refuses_bad_settings():
    flow = tiny_flow(conditional=False)
    x = pixels(1, 6)
    for steps in (1, MAX_STEPS + 1, 10.0):
        with pytest.raises(ValueError, match=f"steps must be an int in 2..{MAX_STEPS}"):
            interpolate(flow, x, x, steps=steps)
    with pytest.raises(ValueError, match="one shape"):
        interpolate(flow, x, pixels(2, 7))
    with pytest.raises(ValueError, match="batch_size"):
        interpolate(flow, x, x, batch_size=0)


# ------------------------------------------------------------------ the command
@pytest.fixture(scope="module")
def cond_run(tmp_path_factory, tiny_mnist_root):
    """A tiny conditional flow trained one epoch on tiny MNIST (a run folder)."""
    out = tmp_path_factory.mktemp("interp") / "run"
    args = [
        "train", "--preset", "multiscale", "--conditional", "--epochs", "1",
        "--batch-size", "8", "--num-pairs", "16", "--test-pairs", "8",
        "--data-dir", str(tiny_mnist_root), "--out", str(out), "--device", "cpu",
        "--precision", "fp32", "--sample-n", "4", "--threads", "1", "--no-progress",
        "--set", "hidden_channels=4", "--set", "num_blocks=1",
    ]  # fmt: skip
    assert main(args) == 0
    return out


def run_cli(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_sample_interpolate_draws_n_rows_under_their_start_labels(
    cond_run, tiny_mnist_root, tmp_path, capsys
):
    from pairflow.data import PairedMNIST

    out = tmp_path / "walk.png"
    code, stdout, err = run_cli(
        capsys, "sample", cond_run, "--interpolate", "--n", "3", "--steps", "4", "--seed", "2",
        "--data-dir", tiny_mnist_root, "--precision", "fp32", "--out", out,
    )  # fmt: skip
    assert code == 0, err
    assert "wrote 3 interpolations of 4 steps" in stdout
    # The rows are the library's, from the test pairs the seed picks (--n honoured: 3 rows).
    test = PairedMNIST(tiny_mnist_root, train=False)
    idx = torch.randperm(len(test), generator=torch.Generator().manual_seed(2))[:6]
    x, y = test.get_batch(idx)
    assert (
        f"({y[0]:02d} -> {y[3]:02d}, " in stdout
        and "decoded under its start pair's label" in stdout
    )
    import pairflow

    flow = pairflow.load(str(cond_run), precision="fp32")
    expected = interpolate(flow, x[:3], x[3:], 4, cond=y[:3])
    with Image.open(out) as img:
        grid = torch.from_numpy(np.array(img))[::2, ::2]  # undo the 2x scale
    assert grid.shape == (2 + 3 * 30, 2 + 4 * 58)
    for r in range(3):
        for k in range(4):
            tile = grid[2 + r * 30 : 2 + r * 30 + 28, 2 + k * 58 : 2 + k * 58 + 56]
            assert torch.equal(tile, expected[r, k, 0])
    assert torch.equal(expected[:, 0], x[:3]) and torch.equal(expected[:, -1], x[3:])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--steps", "100000"], "--steps must be 2..100 images per row, got 100000"),
        (["--steps", "1"], "--steps must be 2..100"),
        (["--n", "20000"], "--n is the number of rows with --interpolate, 1..100, got 20000"),
        (["--n", "0"], "1..100, got 0"),
        (["--pair", "37"], "--pair does not apply to --interpolate"),
        (["--label", "3"], "--label does not apply to --interpolate"),
        (["--grid"], "--grid does not apply to --interpolate"),
        (["--temperature", "0.5"], "--temperature does not apply to --interpolate"),
    ],
)
def test_sample_interpolate_refuses_what_it_cannot_honour_before_loading(
    extra, message, tmp_path, capsys
):
    # A run folder that does not exist: the refusal comes before any model (or data) loads.
    out = tmp_path / "walk.png"
    code, _, err = run_cli(
        capsys, "sample", tmp_path / "no-run", "--interpolate", "--out", out, *extra
    )
    assert code == 2 and message in err, err
    assert "Traceback" not in err and not out.exists()


def test_sample_interpolate_says_when_the_test_set_has_too_few_pairs(
    cond_run, tiny_mnist_root, tmp_path, capsys
):
    out = tmp_path / "walk.png"
    code, _, err = run_cli(
        capsys, "sample", cond_run, "--interpolate", "--n", "100", "--data-dir",
        tiny_mnist_root, "--out", out,
    )  # fmt: skip
    assert code == 2 and "100 rows need 200 test pairs" in err and "--n 64 or fewer" in err, err
    assert not out.exists()
