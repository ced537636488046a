"""The web app's functions (`pairflow.app.core`) on Fashion-MNIST and CIFAR-10 models.

Two tiny conditional flows, trained by `pairflow train --dataset D` on tiny data (synthetic
files in Fashion-MNIST's layout; a CIFAR-10 archive in the real format): Generate gives
their shapes and colours, Score reads with their dataset's classifier (none ships for
CIFAR-10) and checks uploads against their shape, Explore walks between their own dataset's
test pairs, and both live in one app session beside a shipped MNIST model. The reading of
real Fashion-MNIST pairs runs where the real files are (../shared/data).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from flowtools import one_thread
from pairflow.app import core
from pairflow.cli import main
from pairflow.data import PairedDataset
from pairflow.data.datasets import FASHION_MNIST_CLASSES

SHAPES = {"fashion-mnist": (1, 28, 56), "cifar10": (3, 32, 64)}


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def roots(tiny_fashion_root, tiny_cifar_root):
    return {"fashion-mnist": tiny_fashion_root, "cifar10": tiny_cifar_root}


@pytest.fixture(scope="module")
def runs(roots, tmp_path_factory):
    """One tiny conditional flow per dataset (run folders)."""
    out = {}
    for dataset, root in roots.items():
        out[dataset] = tmp_path_factory.mktemp("app-runs") / dataset
        args = [
            "train", "--dataset", dataset, "--preset", "multiscale", "--conditional",
            "--epochs", "1", "--batch-size", "8", "--num-pairs", "16", "--test-pairs", "8",
            "--data-dir", str(root), "--out", str(out[dataset]), "--device", "cpu",
            "--precision", "fp32", "--sample-n", "4", "--threads", "1", "--no-progress",
            "--set", "hidden_channels=4", "--set", "num_blocks=1",
        ]  # fmt: skip
        assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def models(runs):
    cache = core.ModelCache()
    return {dataset: cache.get(str(run)) for dataset, run in runs.items()}


def tiles(grid: np.ndarray, n: int, nrow: int, shape) -> torch.Tensor:
    """Cut a grid (upscaled by 2, 2-pixel padding) back into (n, C, H, W) images."""
    c, h, w = shape
    small = grid[::2, ::2]
    out = []
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = 2 + r * (h + 2), 2 + col * (w + 2)
        out.append(small[top : top + h, left : left + w])
    images = torch.from_numpy(np.stack(out))
    return images.unsqueeze(1) if c == 1 else images.permute(0, 3, 1, 2)


def test_each_model_carries_its_dataset_layout_and_shape(models):
    for dataset, loaded in models.items():
        assert (loaded.dataset, loaded.layout) == (dataset, "pair")
        assert loaded.image_shape == SHAPES[dataset] == loaded.model.config.shape
        assert loaded.conditional
    assert "Fashion-MNIST pairs (1x28x56, grayscale)" in models["fashion-mnist"].describe()
    cifar = models["cifar10"].describe()
    assert "CIFAR-10 pairs (3x32x64, colour)" in cifar and "upload a 32x64 colour image" in cifar


@pytest.mark.parametrize("dataset", list(SHAPES))
def test_generate_grid_and_npz_as_pairflow_sample_writes_them(dataset, models, runs, tmp_path):
    loaded, shape = models[dataset], SHAPES[dataset]
    images, labels = core.generate(loaded, pair="37", count=6, temperature=0.7, seed=3)
    assert images.shape == (6, *shape) and images.dtype == torch.uint8
    grid = core.grid_image(images)
    nrow = core.grid_nrow(6)
    if shape[0] == 3:  # colour: an RGB grid whose channels differ
        assert grid.ndim == 3 and grid.shape[2] == 3
        assert (grid[..., 0] != grid[..., 1]).any() and (grid[..., 1] != grid[..., 2]).any()
    else:
        assert grid.ndim == 2
    assert torch.equal(tiles(grid, 6, nrow, shape), images)
    decoded = np.asarray(Image.open(io.BytesIO(core.png_bytes(grid))))
    assert np.array_equal(decoded, grid)
    # The .npz holds what `pairflow sample --pair 37 --seed 3 --n 6 --out F.npz` writes.
    out = tmp_path / "sample.npz"
    args = [str(runs[dataset]), "--n", "6", "--pair", "37", "--seed", "3", "--out", str(out)]
    assert main(["sample", *args, "--device", "cpu"]) == 0
    ours = np.load(io.BytesIO(core.npz_bytes(images, labels)))
    theirs = np.load(out)
    expected = (6, *shape) if shape[0] == 3 else (6, *shape[1:])
    assert ours["images"].shape == theirs["images"].shape == expected
    assert np.array_equal(ours["images"], theirs["images"])
    assert ours["labels"].tolist() == theirs["labels"].tolist() == [37] * 6


def test_uploads_are_checked_against_the_models_shape(models):
    fashion, cifar = models["fashion-mnist"], models["cifar10"]
    g = np.random.default_rng(0)
    rgb = g.integers(0, 256, (32, 64, 3), dtype=np.uint8)
    x = core.image_from_array(rgb, cifar.image_shape, cifar.an_item)
    assert x.shape == (1, 3, 32, 64) and np.array_equal(x[0].permute(1, 2, 0).numpy(), rgb)
    big = rgb.repeat(2, axis=0).repeat(2, axis=1)  # 64x128, as the app's grids are upscaled
    assert torch.equal(core.image_from_array(big, cifar.image_shape, cifar.an_item), x)
    gray = rgb[..., 0]  # a grayscale picture for a colour model: gray in all three channels
    x = core.image_from_array(gray, cifar.image_shape, cifar.an_item)
    assert all(torch.equal(x[0, k], torch.from_numpy(gray)) for k in range(3))
    with pytest.raises(core.AppInputError, match=r"28x56 pixels.*a CIFAR-10 pair.*32x64"):
        core.image_from_array(np.zeros((28, 56), np.uint8), cifar.image_shape, cifar.an_item)
    with pytest.raises(core.AppInputError, match=r"32x64 pixels.*Fashion-MNIST pair.*28x56"):
        core.image_from_array(rgb, fashion.image_shape, fashion.an_item)
    # A Fashion-MNIST pair upload in colour becomes gray, as for MNIST.
    x = core.image_from_array(np.stack([gray[:28, :56]] * 3, -1), fashion.image_shape)
    assert x.shape == (1, 1, 28, 56) and np.array_equal(x[0, 0].numpy(), gray[:28, :56])
    # The canvas draws 1-channel 28x56 pairs only.
    core.check_drawable(fashion)
    with pytest.raises(core.AppInputError, match="upload a 32x64 colour image"):
        core.check_drawable(cifar)
    with pytest.raises(core.AppInputError, match="3x32x64"):
        core.score(cifar, torch.zeros(1, 1, 28, 56, dtype=torch.uint8))


def test_score_of_a_cifar_pair_has_no_classifier_reading_but_its_own_p_y_given_x(models, roots):
    loaded = models["cifar10"]
    assert core.shipped_classifier("cifar10") is None
    x, y = PairedDataset("cifar10", roots["cifar10"], train=False).get_batch(torch.tensor([0]))
    result = core.score(loaded, x, label="", draws=2)
    assert result.digit_probs is None and result.reading is None
    assert result.classifier_note == "no classifier ships for CIFAR-10"
    posterior = result.class_posterior
    torch.testing.assert_close(posterior.sum(), torch.tensor(1.0))
    expected = loaded.model.class_posterior(x)[0]
    torch.testing.assert_close(posterior, expected)
    top, prob = result.posterior_top
    assert top == int(expected.argmax()) and prob == pytest.approx(float(expected.max()))
    # A blank label conditions on the model's own most probable label.
    assert (result.label, result.label_source) == (top, "posterior")
    with torch.no_grad():
        bpd = loaded.model.bits_per_dim(
            x.expand(2, -1, -1, -1), torch.full((2,), top), torch.Generator().manual_seed(0)
        )
    assert result.bits_per_dim == pytest.approx(float(bpd.mean()), abs=1e-6)
    assert result.max_reconstruction_error <= 2 and result.reconstruction.shape == x.shape
    given = core.score(loaded, x, label=f"{int(y[0]):02d}", draws=2)
    assert (given.label, given.label_source) == (int(y[0]), "given")


def test_score_of_a_fashion_pair_reads_with_the_fashion_classifier(models, roots):
    from pairflow.classifier import load_classifier

    loaded = models["fashion-mnist"]
    x, _ = PairedDataset("fashion-mnist", roots["fashion-mnist"], train=False).get_batch(
        torch.tensor([3])
    )
    result = core.score(loaded, x, label="", draws=1)
    with torch.no_grad():
        fashion = load_classifier(dataset="fashion-mnist")(x).softmax(-1)[0]
        digits = load_classifier()(x).softmax(-1)[0]
    torch.testing.assert_close(result.digit_probs, fashion)
    assert not torch.allclose(result.digit_probs, digits, atol=1e-3)
    left, right = fashion.argmax(-1).tolist()
    assert result.reading == 10 * left + right
    assert (result.label, result.label_source) == (result.reading, "classifier")
    names = f"({FASHION_MNIST_CLASSES[left]} | {FASHION_MNIST_CLASSES[right]})"
    assert core.label_text(loaded, result.reading) == f"{result.reading:02d} {names}"
    assert core.label_text(loaded, 18) == "18 (Trouser | Bag)"
    torch.testing.assert_close(result.class_posterior.sum(), torch.tensor(1.0))


@pytest.mark.fashion_mnist
def test_the_fashion_classifier_reads_real_fashion_pairs(models, fashion_mnist_root):
    loaded = models["fashion-mnist"]
    test = PairedDataset("fashion-mnist", fashion_mnist_root, train=False)
    x, y = test.get_batch(torch.arange(8))
    reads = core.shipped_classifier(loaded.dataset).predict_pairs(x)  # what Score reads with
    assert (reads == y).sum() >= 6, (reads.tolist(), y.tolist())
    assert core.score(loaded, x[:1], draws=1).reading == int(reads[0])


def test_explore_walks_between_the_models_own_datasets_test_pairs(models, roots, tmp_path):
    from pairflow.data import make_synthetic_fashion_mnist, make_synthetic_mnist

    # A root with both MNIST and Fashion-MNIST: the Fashion model takes Fashion test pairs.
    both = make_synthetic_fashion_mnist(make_synthetic_mnist(tmp_path, 20, 30, seed=5), 20, 30, 6)
    for dataset, root in (("fashion-mnist", both), ("cifar10", roots["cifar10"])):
        loaded = models[dataset]
        strip, ends, labels = core.interpolate_test_pairs(loaded, 2, 5, 4, root)
        assert strip.shape == (4, *SHAPES[dataset])
        x, y = PairedDataset(dataset, root, train=False).get_batch(torch.tensor([2, 5]))
        assert torch.equal(ends, y) and labels == [int(y[0])] * 4  # under the start label
        for end, real in [(strip[0], x[0]), (strip[-1], x[1])]:
            assert (end.int() - real.int()).abs().max() <= 2
        if dataset == "fashion-mnist":
            digits, _ = PairedDataset("mnist", root, train=False).get_batch(torch.tensor([2, 5]))
            assert (strip[0].int() - digits[0].int()).abs().max() > 50
    with pytest.raises(core.AppInputError, match=r"CIFAR-10 pair test set.*cifar-10-batches-py"):
        core.interpolate_test_pairs(models["cifar10"], 0, 1, 4, both)


def test_models_of_different_datasets_in_one_session(runs):
    cache = core.ModelCache()
    names = [str(runs["cifar10"]), "multiscale", str(runs["fashion-mnist"])]
    loaded = [cache.get(name) for name in names]
    assert [m.dataset for m in loaded] == ["cifar10", "mnist", "fashion-mnist"]
    assert [m.choice_label() for m in loaded] == [
        f"{names[0]} (CIFAR-10 pairs)",
        "multiscale (MNIST pairs)",
        f"{names[2]} (Fashion-MNIST pairs)",
    ]
    for m, shape in zip(loaded * 2, [(3, 32, 64), (1, 28, 56), (1, 28, 56)] * 2, strict=True):
        images, _ = core.generate(m, count=2, seed=1)
        assert images.shape == (2, *shape)


def test_the_page_names_each_models_dataset_and_follows_the_choice(runs):
    ui = pytest.importorskip("pairflow.app.ui")
    cache = core.ModelCache()
    names = [str(runs["cifar10"]), "multiscale", str(runs["fashion-mnist"])]
    loaded = [cache.get(name) for name in names]
    app = ui.build_app(names, cache=cache)
    dropdowns = [b for b in app.blocks.values() if b.__class__.__name__ == "Dropdown"]
    assert [tuple(c) for c in dropdowns[0].choices] == [
        (m.choice_label(), n) for m, n in zip(loaded, names, strict=True)
    ]
    h = ui._Handlers(None, runs["cifar10"].parent, cache)
    grid, _, _, text = h.generate(names[0], "", "37", 0.7, 0, 4)
    assert grid.shape[2] == 3 and "4 samples from" in text and "CIFAR-10 pairs, 3x32x64" in text
    *_, text = h.generate(names[2], "", "18", 0.7, 0, 2)
    assert "pair 18 (Trouser | Bag)" in text
    with pytest.raises(core.AppInputError, match="upload a 32x64 colour image"):
        h.score_drawing(names[0], "", np.zeros((280, 560, 3), np.uint8), "")
    rgb = np.random.default_rng(1).integers(0, 256, (32, 64, 3), dtype=np.uint8)
    picture, text = h.score_upload(names[0], "", rgb, "")
    assert picture.shape[2] == 3
    assert "classifier reading: not available (no classifier ships for CIFAR-10)" in text
    assert "the model's own most probable label" in text and "p(y | x): **" in text
    x = np.zeros((28, 56), np.uint8)
    x[4:24, 10:18] = 255
    _, text = h.score_upload(names[2], "", x, "")
    assert "Fashion-MNIST classifier reads: **" in text and " | " in text
