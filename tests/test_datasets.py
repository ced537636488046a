"""Datasets by name: Fashion-MNIST (real files), CIFAR-10 (archives written here in the real
format), their downloads against a loopback server, and pairs and single images of each."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

import pairflow.data.download as download_module
from httptools import corrupt
from pairflow.data import (
    DATASETS,
    LAYOUTS,
    CIFARFormatError,
    CIFARNotFoundError,
    DownloadError,
    PairedDataset,
    PairedMNIST,
    PairLoader,
    download_cifar10,
    download_fashion_mnist,
    get_dataset,
    raw_dir,
    read_cifar10,
    read_mnist,
    summary,
    write_preview,
)
from pairflow.data.cifar import CIFAR10_ARCHIVE, CIFAR10_FOLDER, read_cifar10_classes
from pairflow.data.synthetic import make_synthetic_cifar10

# sha256 of the decompressed Fashion-MNIST test files (the originals; ../shared/data/README.md).
FASHION_TEST_SHA256 = {
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}


# -- the registry -----------------------------------------------------------------------


def test_registry_shapes_and_dims():
    assert list(DATASETS) == ["mnist", "fashion-mnist", "cifar10"]
    assert get_dataset("mnist").image_shape("pair") == (1, 28, 56)
    assert get_dataset("mnist").dims("pair") == 1568
    assert get_dataset("fashion-mnist").image_shape("single") == (1, 28, 28)
    assert get_dataset("cifar10").image_shape("pair") == (3, 32, 64)
    assert get_dataset("cifar10").dims("single") == 3072  # the literature's D for bits/dim
    assert get_dataset("fashion-mnist").classes[9] == "Ankle boot"


def test_the_registry_is_the_options_the_commands_offer():
    """Commands offer ``--dataset`` from :data:`pairflow.options.DatasetName` (no torch import
    for ``--help``); the registry must hold exactly those datasets, and CIFAR-10's class
    names are the reader's."""
    from pairflow.data.cifar import CIFAR10_CLASSES
    from pairflow.options import DatasetName, Layout, choices

    assert tuple(DATASETS) == choices(DatasetName)
    assert LAYOUTS == choices(Layout) == ("pair", "single")
    assert get_dataset("cifar10").classes is CIFAR10_CLASSES and CIFAR10_CLASSES[0] == "airplane"


def test_unknown_names_say_the_valid_ones():
    with pytest.raises(ValueError, match="mnist, fashion-mnist, cifar10"):
        get_dataset("cifar100")
    with pytest.raises(ValueError, match="pair, single"):
        get_dataset("mnist").image_shape("triple")
    with pytest.raises(ValueError, match="pair, single"):
        PairedDataset(torch.zeros(10, 4, 4, dtype=torch.uint8), torch.arange(10), layout="row")


def test_published_checksums_are_torchvisions():
    assert download_module.FASHION_MNIST_RESOURCES == {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    }
    assert download_module.FASHION_MNIST_MIRRORS == (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    )
    assert download_module.CIFAR10_URL == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert download_module.CIFAR10_MD5 == "c58f30108f718f92721af3b95e74349a"


# -- Fashion-MNIST ----------------------------------------------------------------------


@pytest.mark.fashion_mnist
def test_real_fashion_mnist(fashion_mnist_root):
    x, y = read_mnist(fashion_mnist_root, train=True, folder="FashionMNIST")
    xt, yt = read_mnist(fashion_mnist_root, train=False, folder="FashionMNIST")
    assert x.shape == (60000, 28, 28) and xt.shape == (10000, 28, 28)
    assert y[:5].tolist() == [9, 0, 0, 3, 0] and yt[:5].tolist() == [9, 2, 1, 1, 6]
    assert torch.bincount(y).tolist() == [6000] * 10
    assert torch.bincount(yt).tolist() == [1000] * 10
    mean = x.double().mean() / 255
    assert abs(float(mean) - 0.2860) < 5e-5
    assert abs(float((x.double() / 255).std()) - 0.3530) < 5e-5
    # The decompressed bytes are the originals (the .gz bytes are Debian's packaging).
    for name, sha in FASHION_TEST_SHA256.items():
        with gzip.open(raw_dir(fashion_mnist_root, "FashionMNIST") / f"{name}.gz") as f:
            assert hashlib.sha256(f.read()).hexdigest() == sha
    # Not MNIST: the same code reading the other folder gives other images.
    assert not torch.equal(xt, read_mnist(fashion_mnist_root, train=False)[0])


@pytest.mark.fashion_mnist
def test_real_fashion_mnist_pairs_and_singles(fashion_mnist_root):
    _, yt = read_mnist(fashion_mnist_root, train=False, folder="FashionMNIST")
    pairs = PairedDataset("fashion-mnist", fashion_mnist_root, train=False, seed=0)
    images, targets = pairs.get_batch(torch.arange(8))
    assert images.shape == (8, 1, 28, 56) and pairs.image_shape == (1, 28, 56)
    left, right = pairs.pairs[:8, 0], pairs.pairs[:8, 1]
    assert torch.equal(targets, 10 * yt[left] + yt[right])
    assert torch.equal(images[:, 0, :, :28], pairs.digits[left])
    single = PairedDataset("fashion-mnist", fashion_mnist_root, train=False, layout="single")
    image, target = single[0]
    assert image.shape == (1, 28, 28) and target == int(yt[single.pairs[0, 0]])


@pytest.mark.fashion_mnist
def test_real_fashion_mnist_kept_although_its_gz_checksums_differ(fashion_mnist_root, refused_url):
    # Debian's .gz files do not match the published MD5s but read cleanly: nothing is fetched
    # (the mirror refuses every connection, so any attempt would raise).
    directory = download_fashion_mnist(fashion_mnist_root, mirrors=[refused_url], timeout=5)
    assert directory == fashion_mnist_root / "FashionMNIST" / "raw"


def test_fashion_mnist_download(tmp_path, mirror, tiny_fashion_root):
    names = [p.name for p in sorted(raw_dir(tiny_fashion_root, "FashionMNIST").iterdir())]
    files = {n: (raw_dir(tiny_fashion_root, "FashionMNIST") / n).read_bytes() for n in names}
    md5s = {n: hashlib.md5(b).hexdigest() for n, b in files.items()}
    bad = mirror.serve("bad", {n: corrupt(b) for n, b in files.items()})
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download_fashion_mnist(tmp_path, mirrors=[bad], resources=md5s, timeout=5)
    assert not raw_dir(tmp_path, "FashionMNIST").exists() or not any(
        raw_dir(tmp_path, "FashionMNIST").iterdir()
    )
    good = mirror.serve("good", files)
    download_fashion_mnist(tmp_path, mirrors=[good], resources=md5s, timeout=5)
    x, _ = read_mnist(tmp_path, train=False, folder="FashionMNIST")
    assert x.shape == (128, 28, 28)
    assert not (tmp_path / "MNIST").exists()  # its own folder, never MNIST's


def test_fashion_not_found_names_its_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="Fashion-MNIST file not found.*FashionMNIST/raw"):
        PairedDataset("fashion-mnist", tmp_path)


# -- CIFAR-10 ---------------------------------------------------------------------------


def _batch(data: np.ndarray, labels: list[int], str_keys: bool = False) -> bytes:
    batch = {
        b"batch_label": b"testing batch 1 of 1",
        b"labels": labels,
        b"data": data,
        b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
    }
    if str_keys:  # as pickle.load(..., encoding="latin1") of the Python 2 files would give
        batch = {k.decode(): v for k, v in batch.items()}
    return pickle.dumps(batch, protocol=2)


def _write_batches(root, test_data, test_labels, str_keys=False):
    directory = root / CIFAR10_FOLDER
    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        data = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
        (directory / f"data_batch_{i}").write_bytes(_batch(data, [i % 10, (i + 1) % 10]))
    (directory / "test_batch").write_bytes(_batch(test_data, test_labels, str_keys))
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer"]
    names += [b"dog", b"frog", b"horse", b"ship", b"truck"]
    meta = {b"num_cases_per_batch": 2, b"label_names": names, b"num_vis": 3072}
    (directory / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return directory


@pytest.mark.parametrize("str_keys", [False, True])
def test_cifar_rows_are_rgb_planes_row_major(tmp_path, str_keys):
    data = np.zeros((2, 3072), dtype=np.uint8)
    data[0, 1] = 11  # R plane, row 0, column 1
    data[0, 32] = 22  # R plane, row 1, column 0
    data[0, 1024] = 33  # G plane, first pixel
    data[0, 3071] = 44  # B plane, last pixel
    data[1, 2048 + 5 * 32 + 7] = 55  # image 1, B plane, row 5, column 7
    _write_batches(tmp_path, data, [3, 8], str_keys)
    images, labels = read_cifar10(tmp_path, train=False)
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.tolist() == [3, 8] and labels.dtype == torch.int64
    assert images[0, 0, 0, 1] == 11 and images[0, 0, 1, 0] == 22
    assert images[0, 1, 0, 0] == 33 and images[0, 2, 31, 31] == 44 and images[1, 2, 5, 7] == 55
    assert int(images.sum()) == 11 + 22 + 33 + 44 + 55
    train, train_labels = read_cifar10(tmp_path, train=True)
    assert train.shape == (10, 3, 32, 32)  # five batches of two, in order
    assert train_labels.tolist() == [1, 2, 2, 3, 3, 4, 4, 5, 5, 6]
    assert read_cifar10_classes(tmp_path)[3] == "cat"


def test_cifar_archive_reads_like_its_directory(tmp_path, tiny_cifar_root):
    make_synthetic_cifar10(tmp_path, 250, 50, archive=False)  # same seed, extracted layout
    for train in (True, False):
        a, la = read_cifar10(tiny_cifar_root, train=train)
        b, lb = read_cifar10(tmp_path, train=train)
        assert torch.equal(a, b) and torch.equal(la, lb)
    x, y = read_cifar10(tiny_cifar_root, train=True)
    assert x.shape == (250, 3, 32, 32) and torch.bincount(y).tolist() == [25] * 10
    with tarfile.open(tiny_cifar_root / CIFAR10_ARCHIVE) as tar:  # the published member names
        assert sorted(tar.getnames()) == sorted(
            f"{CIFAR10_FOLDER}/{n}"
            for n in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]
        )


def test_cifar_not_found_says_what_to_do(tmp_path):
    with pytest.raises(CIFARNotFoundError, match="cifar-10-batches-py.*--download"):
        read_cifar10(tmp_path)


def test_cifar_broken_files_are_named(tmp_path):
    directory = _write_batches(tmp_path, np.zeros((2, 3072), np.uint8), [0, 1])
    (directory / "data_batch_3").unlink()
    with pytest.raises(CIFARFormatError, match="data_batch_3"):
        read_cifar10(tmp_path, train=True)
    (directory / "test_batch").write_bytes(_batch(np.zeros((2, 1024), np.uint8), [0, 1]))
    with pytest.raises(CIFARFormatError, match=r"\(N, 3072\)"):
        read_cifar10(tmp_path, train=False)
    (directory / "test_batch").write_bytes(_batch(np.zeros((2, 3072), np.uint8), [0, 10]))
    with pytest.raises(CIFARFormatError, match="label 10 at index 1"):
        read_cifar10(tmp_path, train=False)
    (directory / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(CIFARFormatError, match="not a CIFAR-10 batch"):
        read_cifar10(tmp_path, train=False)


class _Exploit:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_cifar_pickles_cannot_run_code(tmp_path, capsys):
    directory = _write_batches(tmp_path, np.zeros((2, 3072), np.uint8), [0, 1])
    (directory / "test_batch").write_bytes(pickle.dumps({b"data": _Exploit()}, protocol=2))
    with pytest.raises(CIFARFormatError, match=r"refusing (__builtin__|builtins)\.print"):
        read_cifar10(tmp_path, train=False)
    assert "must never run" not in capsys.readouterr().out


def test_cifar_truncated_archive(tmp_path, tiny_cifar_root):
    body = (tiny_cifar_root / CIFAR10_ARCHIVE).read_bytes()
    (tmp_path / CIFAR10_ARCHIVE).write_bytes(body[: len(body) // 2])
    with pytest.raises(CIFARFormatError, match="truncated or corrupt"):
        read_cifar10(tmp_path, train=True)


def test_cifar_download(tmp_path, mirror, tiny_cifar_root):
    archive = (tiny_cifar_root / CIFAR10_ARCHIVE).read_bytes()
    md5 = hashlib.md5(archive).hexdigest()
    bad = mirror.serve("bad", {CIFAR10_ARCHIVE: corrupt(archive)})
    with pytest.raises(DownloadError, match="checksum mismatch") as err:
        download_cifar10(tmp_path, url=bad + CIFAR10_ARCHIVE, md5=md5, timeout=5)
    assert "Nothing was written" in str(err.value)
    assert list(tmp_path.iterdir()) == []  # no half file, no temporary file
    good = mirror.serve("good", {CIFAR10_ARCHIVE: archive})
    path = download_cifar10(tmp_path, url=good + CIFAR10_ARCHIVE, md5=md5, timeout=5)
    assert path == tmp_path / CIFAR10_ARCHIVE and path.read_bytes() == archive
    assert read_cifar10(tmp_path, train=False)[0].shape == (50, 3, 32, 32)
    requests = len(mirror.requests)
    download_cifar10(tmp_path, url=good + CIFAR10_ARCHIVE, md5=md5, timeout=5)
    assert len(mirror.requests) == requests  # present and readable: not fetched again


def test_cifar_download_repairs_a_broken_directory(tmp_path, mirror, tiny_cifar_root):
    archive = (tiny_cifar_root / CIFAR10_ARCHIVE).read_bytes()
    directory = make_synthetic_cifar10(tmp_path, 250, 50) / CIFAR10_FOLDER
    (directory / "test_batch").write_bytes(b"broken")
    url = mirror.serve("good", {CIFAR10_ARCHIVE: archive}) + CIFAR10_ARCHIVE
    download_cifar10(tmp_path, url=url, md5=hashlib.md5(archive).hexdigest(), timeout=5)
    assert torch.equal(read_cifar10(tmp_path, False)[0], read_cifar10(tiny_cifar_root, False)[0])


def test_paired_dataset_download_flag(tmp_path, mirror, tiny_cifar_root, monkeypatch):
    archive = (tiny_cifar_root / CIFAR10_ARCHIVE).read_bytes()
    url = mirror.serve("good", {CIFAR10_ARCHIVE: archive}) + CIFAR10_ARCHIVE
    monkeypatch.setattr(download_module, "CIFAR10_URL", url)
    monkeypatch.setattr(download_module, "CIFAR10_MD5", hashlib.md5(archive).hexdigest())
    ds = PairedDataset("cifar10", tmp_path, train=False, download=True)
    assert len(ds) == 50 and ds.image_shape == (3, 32, 64) and len(mirror.requests) == 1


# -- pairs and single images ------------------------------------------------------------


def test_cifar_pairs(tiny_cifar_root):
    x, y = read_cifar10(tiny_cifar_root, train=True)
    ds = PairedDataset("cifar10", tiny_cifar_root, train=True, seed=2)
    assert ds.image_shape == (3, 32, 64) and len(ds) == 250 and ds.dataset_name == "cifar10"
    images, targets = ds.get_batch(torch.arange(16))
    assert images.shape == (16, 3, 32, 64) and images.dtype == torch.uint8
    left, right = ds.pairs[:16, 0], ds.pairs[:16, 1]
    assert torch.equal(images[..., :32], x[left]) and torch.equal(images[..., 32:], x[right])
    assert torch.equal(targets, 10 * y[left] + y[right])
    image, target = ds[3]
    assert torch.equal(image, images[3]) and target == int(targets[3])
    ds.set_epoch(1)
    assert not torch.equal(ds.pairs[:16], torch.stack([left, right], 1))  # redrawn per epoch


def test_single_layout(tiny_cifar_root, tiny_mnist_root):
    x, y = read_cifar10(tiny_cifar_root, train=False)
    ds = PairedDataset("cifar10", tiny_cifar_root, train=False, layout="single")
    assert ds.image_shape == (3, 32, 32) and ds.pairs.shape == (50, 1) and ds.num_classes == 10
    assert sorted(ds.pairs[:, 0].tolist()) == list(range(50))  # every image once
    images, targets = ds.get_batch(torch.arange(50))
    assert torch.equal(images, x[ds.pairs[:, 0]]) and torch.equal(targets, y[ds.pairs[:, 0]])
    assert ds.pair_label_counts().tolist() == torch.bincount(y, minlength=10).tolist()
    balanced = PairedDataset("cifar10", tiny_cifar_root, layout="single", labels=[3, 5],
                             balanced=True, num_pairs=40)  # fmt: skip
    assert torch.bincount(balanced.targets, minlength=10).tolist()[3:6] == [20, 0, 20]
    with pytest.raises(ValueError, match=r"0\.\.9"):
        PairedDataset("cifar10", tiny_cifar_root, layout="single", labels=[37])
    mnist = PairedDataset("mnist", tiny_mnist_root, train=False, layout="single")
    batch, _ = next(iter(PairLoader(mnist, batch_size=8)))
    assert batch.shape == (8, 1, 28, 28)


def test_layout_is_part_of_the_pairing_state(tiny_cifar_root):
    single = PairedDataset("cifar10", tiny_cifar_root, layout="single", seed=4)
    single.set_epoch(2)
    again = PairedDataset("cifar10", tiny_cifar_root, layout="single")
    again.load_state_dict(single.state_dict())
    assert torch.equal(again.pairs, single.pairs)
    pairs = PairedDataset("cifar10", tiny_cifar_root)
    with pytest.raises(ValueError, match="'single' layout"):
        pairs.load_state_dict(single.state_dict())


def test_mnist_by_name_is_paired_mnist(tiny_mnist_root):
    named = PairedDataset("mnist", tiny_mnist_root, train=True, seed=5, balanced=True)
    classic = PairedMNIST(tiny_mnist_root, train=True, seed=5, balanced=True)
    assert torch.equal(named.pairs, classic.pairs) and torch.equal(named.targets, classic.targets)
    assert named.image_shape == classic.image_shape == (1, 28, 56)


def test_from_dataset_takes_rgb(tiny_cifar_root):
    x, y = read_cifar10(tiny_cifar_root, train=False)

    class TorchvisionLike:  # torchvision's CIFAR10 holds .data as (N, 32, 32, 3) numpy
        data = x.permute(0, 2, 3, 1).numpy()
        targets = y.tolist()

    ds = PairedDataset.from_dataset(TorchvisionLike(), train=False, seed=0)
    assert ds.image_shape == (3, 32, 64) and torch.equal(ds.digits, x)


def test_rgb_preview_and_summary(tiny_cifar_root, tmp_path):
    ds = PairedDataset("cifar10", tiny_cifar_root, train=False)
    path = write_preview(ds, tmp_path / "cifar.png", n=4, cols=2, scale=2)
    with Image.open(path) as image:
        assert image.mode == "RGB"
        rgb = np.asarray(image)
    # The first pair's top-left pixel, scaled 2x, at (PAD + label strip, PAD).
    from pairflow.data.preview import LABEL_HEIGHT, PAD

    first, _ = ds.get_batch(torch.arange(1))
    assert rgb[PAD + LABEL_HEIGHT, PAD].tolist() == first[0, :, 0, 0].tolist()
    info = summary(tiny_cifar_root, dataset="cifar10")
    assert info["image_shape"] == [3, 32, 32] and info["splits"]["test"]["images"] == 50
    assert len(info["splits"]["train"]["channel_mean"]) == 3
    assert info["classes"][9] == "truck"


def test_written_archive_is_in_the_real_format(tiny_cifar_root):
    # Independent of the reader: open the archive and the pickle by hand, as torchvision does.
    with tarfile.open(tiny_cifar_root / CIFAR10_ARCHIVE, "r:gz") as tar:
        raw = tar.extractfile(f"{CIFAR10_FOLDER}/test_batch").read()
    batch = pickle.load(io.BytesIO(raw), encoding="bytes")
    assert set(batch) == {b"data", b"labels", b"batch_label", b"filenames"}
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape == (50, 3072)
    assert len(batch[b"labels"]) == 50 and isinstance(batch[b"labels"][0], int)
    x, _ = read_cifar10(tiny_cifar_root, train=False)
    assert np.array_equal(batch[b"data"][7, :1024].reshape(32, 32), x[7, 0].numpy())


def test_shipped_fashion_classifier_is_small_and_for_fashion():
    from pairflow.classifier import SHIPPED_WEIGHTS, load_classifier

    path = SHIPPED_WEIGHTS["fashion-mnist"]
    assert path.is_file() and path.stat().st_size < 1_000_000
    clf = load_classifier(dataset="fashion-mnist")
    assert clf.config.dataset == "fashion-mnist" and clf.config.pair_shape == (1, 28, 56)
    assert clf.meta["dataset"] == "fashion-mnist" and clf.meta["pair_accuracy"] > 0.8


@pytest.mark.fashion_mnist
def test_shipped_fashion_classifier_reads_real_pairs(fashion_mnist_root):
    from pairflow.classifier import evaluate_classifier, load_classifier

    acc = evaluate_classifier(load_classifier(dataset="fashion-mnist"), fashion_mnist_root, 2000)
    assert acc["digit_accuracy"] > 0.88  # 90.47% on all 10,000 test pairs (BENCHMARKS.md)
