"""``pairflow data`` end to end: counts, histograms, preview PNG, errors users can act on."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

import pairflow.data.download as download_module
from pairflow.cli import main
from pairflow.data import raw_dir, read_mnist
from pairflow.data.preview import preview_size

REAL_TRAIN = "5923  6742  5958  6131  5842  5421  5918  6265  5851  5949"
REAL_TEST = "980  1135  1032  1010   982   892   958  1028   974  1009"


def run_data(capsys, *args):
    code = main(["data", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def digit_line(labels):
    return " ".join(f"{c:>5}" for c in torch.bincount(labels, minlength=10).tolist())


def test_tiny_root_counts_histograms_and_preview(capsys, tiny_mnist_root, tmp_path):
    png = tmp_path / "sub" / "pairs.png"
    code, out, _ = run_data(capsys, "--root", tiny_mnist_root, "--preview", png)
    assert code == 0
    _, train_labels = read_mnist(tiny_mnist_root, train=True)
    _, test_labels = read_mnist(tiny_mnist_root, train=False)
    assert "train      256" in out and "test       128" in out
    assert digit_line(train_labels) in out and digit_line(test_labels) in out
    assert "left\\right" in out and "over 256 pairs" in out and "over 128 pairs" in out
    with Image.open(png) as image:
        assert image.size == preview_size(32, 8, 3) and image.mode == "L"
    assert [p.name for p in png.parent.iterdir()] == ["pairs.png"]  # no temporary left


def test_json_and_data_dir_alias(capsys, tiny_mnist_root):
    code, out, _ = run_data(capsys, "--data-dir", tiny_mnist_root, "--json", "--num-pairs", "500")
    assert code == 0
    info = json.loads(out)
    train = info["splits"]["train"]
    assert train["images"] == 256 and train["pairs"]["num_pairs"] == 500
    assert sum(map(sum, train["pairs"]["counts"])) == 500
    assert info["splits"]["test"]["images"] == 128


def test_root_from_environment(capsys, tiny_mnist_root, monkeypatch):
    monkeypatch.setenv("PAIRFLOW_DATA", str(tiny_mnist_root))
    code, out, _ = run_data(capsys)
    assert code == 0 and str(tiny_mnist_root) in out


def test_missing_root_is_a_clear_error(capsys, tmp_path):
    code, _, err = run_data(capsys, "--root", tmp_path / "nowhere")
    assert code == 2
    assert "train-images-idx3-ubyte" in err and "--download" in err and "Traceback" not in err


def test_corrupt_file_is_named(capsys, tiny_mnist_root, tmp_path):
    import shutil

    root = tmp_path / "root"
    shutil.copytree(tiny_mnist_root, root)
    labels = raw_dir(root) / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:20])
    code, _, err = run_data(capsys, "--root", root)
    assert code == 2 and str(labels) in err and "truncated" in err


def test_bad_num_pairs(capsys, tiny_mnist_root):
    code, _, err = run_data(capsys, "--root", tiny_mnist_root, "--num-pairs", "0")
    assert code == 2 and "--num-pairs" in err


def test_download_offline_and_present(capsys, tiny_mnist_root, tmp_path, monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{s.getsockname()[1]}/"
    monkeypatch.setattr(download_module, "MNIST_MIRRORS", (refused,))
    code, _, err = run_data(capsys, "--root", tmp_path / "empty", "--download")
    assert code == 2 and "offline" in err and "PAIRFLOW_DATA" in err
    # Files present and readable: --download fetches nothing and succeeds offline.
    code, out, err = run_data(capsys, "--root", tiny_mnist_root, "--download")
    assert code == 0 and "present" in err and "train      256" in out


def test_entry_point_runs(tiny_mnist_root, tmp_path):
    png = tmp_path / "p.png"
    proc = subprocess.run(
        [sys.executable, "-m", "pairflow", "data", "--root", str(tiny_mnist_root),
         "--preview", str(png), "--preview-split", "test"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "first 32 test pairs" in proc.stdout and png.is_file()


@pytest.mark.mnist
def test_real_mnist_counts_and_preview(capsys, mnist_root, tmp_path):
    png = tmp_path / "pairs.png"
    code, out, _ = run_data(capsys, "--root", mnist_root, "--preview", png)
    assert code == 0
    assert "train   60,000" in out and "test    10,000" in out
    assert REAL_TRAIN in out and REAL_TEST in out
    assert "0.1307 0.3081" in out  # the well-known train pixel mean and std
    with Image.open(png) as image:
        assert image.size == preview_size(32, 8, 3)
        image.load()


def test_preview_draws_a_label_above_every_pair(tiny_mnist_root, tmp_path):
    import numpy as np

    from pairflow.data import PairedMNIST, write_preview
    from pairflow.data.preview import LABEL_HEIGHT, PAD

    ds = PairedMNIST(tiny_mnist_root, train=False, num_pairs=10)
    path = write_preview(ds, tmp_path / "p.png", n=10, cols=4, scale=2)
    with Image.open(path) as image:
        assert image.size == preview_size(10, 4, 2)
        pixels = np.array(image)
    for i in range(10):
        row, col = divmod(i, 4)
        x = PAD + col * (56 * 2 + PAD)
        y = PAD + row * (28 * 2 + LABEL_HEIGHT + PAD)
        strip = pixels[y : y + LABEL_HEIGHT, x : x + 56 * 2]
        assert (strip > 200).sum() > 20  # white label text is there
        pair = pixels[y + LABEL_HEIGHT : y + LABEL_HEIGHT + 56, x : x + 112]
        expected = ds.get_batch(torch.tensor([i]))[0][0, 0].numpy()
        assert np.array_equal(pair[::2, ::2], expected)  # the pair itself, upscaled 2x


def test_preview_of_a_plain_dataset(tmp_path):
    from pairflow.data import write_preview

    items = [(torch.full((1, 28, 56), 9 * k, dtype=torch.uint8), k) for k in range(3)]
    path = write_preview(items, tmp_path / "plain.png", n=8)
    with Image.open(path) as image:
        assert image.size == preview_size(3, 8, 3)
