"""download_mnist against a loopback HTTP server: good, corrupt, truncated, offline.

No test here touches the internet: every mirror is http://127.0.0.1:<port>/.
"""

from __future__ import annotations

import hashlib

import pytest

import pairflow.data.download as download_module
from httptools import Mirror, corrupt  # noqa: F401 - Mirror: test_faults imports it from here
from pairflow.data import MNISTDownloadError, PairedMNIST, download_mnist, raw_dir, read_mnist

NAMES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]


@pytest.fixture(scope="module")
def good_files(tiny_mnist_root):
    return {name: (raw_dir(tiny_mnist_root) / name).read_bytes() for name in NAMES}


@pytest.fixture(scope="module")
def md5s(good_files):
    return {name: hashlib.md5(body).hexdigest() for name, body in good_files.items()}


def leftovers(root):
    directory = raw_dir(root)
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_published_checksums_are_torchvisions():
    assert download_module.MNIST_RESOURCES == {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    }
    assert download_module.MNIST_MIRRORS[0] == "https://ossci-datasets.s3.amazonaws.com/mnist/"


def test_good_download_then_skip(tmp_path, mirror, good_files, md5s, tiny_mnist_root):
    url = mirror.serve("good", good_files)
    directory = download_mnist(tmp_path, mirrors=[url], resources=md5s, timeout=5)
    assert directory == raw_dir(tmp_path) and leftovers(tmp_path) == sorted(NAMES)
    for name in NAMES:
        assert (directory / name).read_bytes() == good_files[name]
    x, y = read_mnist(tmp_path, train=False)
    assert x.shape == (128, 28, 28)
    assert len(mirror.requests) == 4
    download_mnist(tmp_path, mirrors=[url], resources=md5s, timeout=5)
    assert len(mirror.requests) == 4  # all present and valid: nothing fetched again


def test_falls_back_to_the_next_mirror(tmp_path, mirror, good_files, md5s):
    bad = mirror.serve("bad", {name: corrupt(body) for name, body in good_files.items()})
    good = mirror.serve("good", good_files)
    download_mnist(tmp_path, mirrors=[bad, good], resources=md5s, timeout=5)
    assert all((raw_dir(tmp_path) / n).read_bytes() == good_files[n] for n in NAMES)


def test_corrupt_download_leaves_nothing(tmp_path, mirror, good_files, md5s):
    url = mirror.serve("bad", {name: corrupt(body) for name, body in good_files.items()})
    with pytest.raises(MNISTDownloadError, match="checksum mismatch") as err:
        download_mnist(tmp_path, mirrors=[url], resources=md5s, timeout=5)
    assert "train-images-idx3-ubyte.gz" in str(err.value) and url in str(err.value)
    assert leftovers(tmp_path) == []  # no half file, no temporary file


def test_truncated_download_leaves_nothing(tmp_path, mirror, good_files, md5s):
    cut = {name: body[: len(body) // 2] for name, body in good_files.items()}
    url = mirror.serve("cut", cut, declared={n: len(b) for n, b in good_files.items()})
    with pytest.raises(MNISTDownloadError, match="truncated"):
        download_mnist(tmp_path, mirrors=[url], resources=md5s, timeout=5)
    assert leftovers(tmp_path) == []


def test_short_file_with_matching_length_fails_checksum(tmp_path, mirror, good_files, md5s):
    url = mirror.serve("short", {name: body[:100] for name, body in good_files.items()})
    with pytest.raises(MNISTDownloadError, match="checksum mismatch"):
        download_mnist(tmp_path, mirrors=[url], resources=md5s, timeout=5)
    assert leftovers(tmp_path) == []


def test_offline_says_so_and_what_to_do(tmp_path, refused_url, md5s):
    with pytest.raises(MNISTDownloadError) as err:
        download_mnist(tmp_path, mirrors=[refused_url, refused_url], resources=md5s, timeout=5)
    message = str(err.value)
    assert "offline" in message and "PAIRFLOW_DATA" in message and "--root" in message
    assert "refused" in message.lower()
    assert leftovers(tmp_path) == []


def test_missing_on_mirror(tmp_path, mirror, md5s):
    url = mirror.serve("empty", {})
    with pytest.raises(MNISTDownloadError, match="Not Found") as err:
        download_mnist(tmp_path, mirrors=[url], resources=md5s, timeout=5)
    assert "offline" not in str(err.value)  # the server answered


def test_broken_local_file_is_replaced(tmp_path, mirror, good_files, md5s):
    url = mirror.serve("good", good_files)
    download_mnist(tmp_path, mirrors=[url], resources=md5s, timeout=5)
    labels = raw_dir(tmp_path) / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(good_files["train-labels-idx1-ubyte.gz"][:-30])  # truncated copy
    before = len(mirror.requests)
    download_mnist(tmp_path, mirrors=[url], resources=md5s, timeout=5)
    assert labels.read_bytes() == good_files["train-labels-idx1-ubyte.gz"]
    assert mirror.requests[before:] == ["/good/train-labels-idx1-ubyte.gz"]


def test_readable_copy_with_other_checksum_is_kept(tiny_mnist_root, refused_url):
    # Like the shared MNIST copy: re-compressed, so the published MD5s do not match.
    wrong = {name: "0" * 32 for name in NAMES}
    download_mnist(tiny_mnist_root, mirrors=[refused_url], resources=wrong, timeout=5)


def test_paired_mnist_download_flag(tmp_path, mirror, good_files, md5s, monkeypatch):
    url = mirror.serve("good", good_files)
    monkeypatch.setattr(download_module, "MNIST_MIRRORS", (url,))
    monkeypatch.setattr(download_module, "MNIST_RESOURCES", md5s)
    ds = PairedMNIST(tmp_path, train=False, download=True)
    assert len(ds) == 128 and len(mirror.requests) == 4
    PairedMNIST(tmp_path, train=True, download=True)
    assert len(mirror.requests) == 4
