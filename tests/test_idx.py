"""The IDX reader/writer and read_mnist: good files round-trip, every broken file is named."""

from __future__ import annotations

import gzip
import shutil
import struct

import numpy as np
import pytest
import torch

from pairflow.data import (
    MNISTFormatError,
    MNISTNotFoundError,
    raw_dir,
    read_idx,
    read_mnist,
    resolve_root,
    write_idx,
)
from pairflow.data.mnist import MNIST_FILES

TRAIN_IMAGES = MNIST_FILES[("train", "images")]
TRAIN_LABELS = MNIST_FILES[("train", "labels")]


def make_root(tmp_path, n=12, images=None, labels=None, gz=True):
    """A root whose train split holds ``n`` random images (or the given arrays)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) if images is None else images
    labels = (np.arange(n) % 10).astype(np.uint8) if labels is None else labels
    suffix = ".gz" if gz else ""
    write_idx(raw_dir(tmp_path) / f"{TRAIN_IMAGES}{suffix}", images)
    write_idx(raw_dir(tmp_path) / f"{TRAIN_LABELS}{suffix}", labels)
    return tmp_path, images, labels


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("name", ["a-idx", "a-idx.gz"])
def test_write_read_roundtrip(tmp_path, dtype, name):
    array = (np.arange(2 * 3 * 5) - 7).astype(dtype).reshape(2, 3, 5)
    write_idx(tmp_path / name, array)
    back = read_idx(tmp_path / name)
    assert back.shape == array.shape and np.array_equal(back, array)
    assert back.dtype.newbyteorder("=") == np.dtype(dtype)


def test_write_idx_header_is_the_mnist_one(tmp_path):
    write_idx(tmp_path / "x", np.zeros((3, 28, 28), np.uint8))
    write_idx(tmp_path / "y", np.zeros(3, np.uint8))
    assert (tmp_path / "x").read_bytes()[:16] == struct.pack(">IIII", 0x803, 3, 28, 28)
    assert (tmp_path / "y").read_bytes()[:8] == struct.pack(">II", 0x801, 3)
    assert len((tmp_path / "x").read_bytes()) == 16 + 3 * 784


def test_write_idx_rejects_unknown_dtype(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_idx(tmp_path / "x", np.zeros(3, np.int64))


@pytest.mark.parametrize("gz", [True, False])
def test_read_mnist_good(tmp_path, gz):
    root, images, labels = make_root(tmp_path, gz=gz)
    x, y = read_mnist(root, train=True)
    assert x.dtype == torch.uint8 and x.shape == (12, 28, 28)
    assert y.dtype == torch.int64 and y.tolist() == labels.tolist()
    assert np.array_equal(x.numpy(), images)
    x[0, 0, 0] = 7  # the tensors own their memory (not read-only views of the file)


def test_read_mnist_prefers_raw_over_gz(tmp_path):
    root, _, _ = make_root(tmp_path, gz=True)
    write_idx(raw_dir(root) / TRAIN_IMAGES, np.full((12, 28, 28), 3, np.uint8))
    x, _ = read_mnist(root)
    assert int(x.max()) == 3


def test_missing_file_names_it_and_says_what_to_do(tmp_path):
    make_root(tmp_path)
    with pytest.raises(MNISTNotFoundError) as err:
        read_mnist(tmp_path, train=False)
    message = str(err.value)
    assert "t10k-images-idx3-ubyte" in message and str(raw_dir(tmp_path)) in message
    assert "download=True" in message and "PAIRFLOW_DATA" in message and "--root" in message


def test_missing_file_spots_a_misplaced_root(tmp_path):
    make_root(tmp_path)
    with pytest.raises(MNISTNotFoundError, match="Found it in"):
        read_mnist(raw_dir(tmp_path))  # the raw directory given as root


def _only_error(root, match):
    with pytest.raises(MNISTFormatError, match=match) as err:
        read_mnist(root)
    return err.value


def test_wrong_magic_number(tmp_path):
    root, _, _ = make_root(tmp_path, gz=False)
    path = raw_dir(root) / TRAIN_IMAGES
    data = bytearray(path.read_bytes())
    data[:4] = b"\x12\x34\x56\x78"
    path.write_bytes(bytes(data))
    error = _only_error(root, "wrong magic number 0x12345678")
    assert error.path == path and str(path) in str(error)


def test_labels_file_in_place_of_images(tmp_path):
    root, _, labels = make_root(tmp_path)
    write_idx(raw_dir(root) / f"{TRAIN_IMAGES}.gz", labels)
    _only_error(root, "wrong magic number 0x00000801")


@pytest.mark.parametrize("cut", [2, 10, 16 + 784 * 5])
def test_truncated_raw(tmp_path, cut):
    root, _, _ = make_root(tmp_path, gz=False)
    path = raw_dir(root) / TRAIN_IMAGES
    path.write_bytes(path.read_bytes()[:cut])
    error = _only_error(root, "truncated")
    assert error.path == path


def test_truncated_gzip(tmp_path):
    root, _, _ = make_root(tmp_path)
    path = raw_dir(root) / f"{TRAIN_IMAGES}.gz"
    path.write_bytes(path.read_bytes()[:-40])
    _only_error(root, "truncated or corrupt")


def test_gzip_with_truncated_content(tmp_path):
    root, _, _ = make_root(tmp_path)
    path = raw_dir(root) / f"{TRAIN_IMAGES}.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-100]))
    _only_error(root, "truncated: .* needs")


def test_not_gzip_at_all(tmp_path):
    root, _, _ = make_root(tmp_path)
    (raw_dir(root) / f"{TRAIN_LABELS}.gz").write_bytes(b"<html>404 Not Found</html>")
    _only_error(root, "cannot decompress")


def test_trailing_bytes(tmp_path):
    root, _, _ = make_root(tmp_path, gz=False)
    path = raw_dir(root) / TRAIN_LABELS
    path.write_bytes(path.read_bytes() + b"\0\0")
    _only_error(root, "2 unexpected bytes")


def test_count_mismatch(tmp_path):
    root, _, _ = make_root(tmp_path, labels=np.zeros(11, np.uint8))
    error = _only_error(root, "count mismatch: 11 labels but .* 12 images")
    assert error.path.name.startswith(TRAIN_LABELS)


def test_wrong_image_size(tmp_path):
    root, _, _ = make_root(tmp_path, images=np.zeros((12, 32, 32), np.uint8))
    _only_error(root, "32x32, MNIST images are 28x28")


def test_label_out_of_range(tmp_path):
    labels = np.zeros(12, np.uint8)
    labels[4] = 11
    root, _, _ = make_root(tmp_path, labels=labels)
    _only_error(root, "label 11 at index 4 is outside 0..9")


def test_format_error_is_a_value_error():
    assert issubclass(MNISTFormatError, ValueError)
    assert issubclass(MNISTNotFoundError, FileNotFoundError)


def test_resolve_root(monkeypatch, tmp_path):
    monkeypatch.setenv("PAIRFLOW_DATA", str(tmp_path))
    assert resolve_root("elsewhere") == resolve_root("elsewhere").__class__("elsewhere")
    assert resolve_root(None) == tmp_path
    monkeypatch.delenv("PAIRFLOW_DATA")
    assert str(resolve_root(None)) == "data"


def test_tiny_root_is_digit_like(tiny_mnist_root):
    x, y = read_mnist(tiny_mnist_root, train=True)
    xt, yt = read_mnist(tiny_mnist_root, train=False)
    assert x.shape == (256, 28, 28) and xt.shape == (128, 28, 28)
    assert torch.bincount(y, minlength=10).min() >= 25 and torch.bincount(yt).min() >= 12
    # Mostly black background with bright strokes, as in MNIST.
    ink = (x > 128).float().mean()
    assert 0.05 < ink < 0.35 and int(x.max()) >= 200
    # Classes differ: a nearest-class-mean classifier fit on train separates the test split.
    means = torch.stack([x[y == d].float().mean(0) for d in range(10)])
    guess = torch.cdist(xt.float().flatten(1), means.flatten(1)).argmin(1)
    assert (guess == yt).float().mean() > 0.6


@pytest.mark.mnist
def test_real_mnist(mnist_root, tmp_path):
    x, y = read_mnist(mnist_root, train=True)
    xt, yt = read_mnist(mnist_root, train=False)
    assert x.shape == (60000, 28, 28) and xt.shape == (10000, 28, 28)
    assert torch.bincount(y).tolist() == [
        5923,
        6742,
        5958,
        6131,
        5842,
        5421,
        5918,
        6265,
        5851,
        5949,
    ]
    assert torch.bincount(yt).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert y[:5].tolist() == [5, 0, 4, 1, 9] and yt[:5].tolist() == [7, 2, 1, 0, 4]
    assert abs(x.float().mean().item() / 255 - 0.1307) < 1e-4
    # Uncompressed copies read the same (a torchvision download that was extracted).
    for name in (MNIST_FILES[("test", "images")], MNIST_FILES[("test", "labels")]):
        with gzip.open(raw_dir(mnist_root) / f"{name}.gz") as src:
            (raw_dir(tmp_path)).mkdir(parents=True, exist_ok=True)
            with open(raw_dir(tmp_path) / name, "wb") as dst:
                shutil.copyfileobj(src, dst)
    xr, yr = read_mnist(tmp_path, train=False)
    assert torch.equal(xr, xt) and torch.equal(yr, yt)
