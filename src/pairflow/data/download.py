"""Fetching MNIST, Fashion-MNIST and CIFAR-10 from the official locations torchvision uses.

Each file is checked against the MD5 checksum torchvision publishes, streamed into a
temporary file next to its destination and renamed into place only when complete and
correct: a failed, corrupted or interrupted download leaves nothing behind.

References:
    torchvision.datasets.MNIST and FashionMNIST (``mirrors`` and ``resources``),
    https://github.com/pytorch/vision/blob/main/torchvision/datasets/mnist.py;
    torchvision.datasets.CIFAR10 (``url``, ``tgz_md5``),
    https://github.com/pytorch/vision/blob/main/torchvision/datasets/cifar.py
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from pairflow.data.idx import MNISTFormatError
from pairflow.data.mnist import ENV_VAR, MNIST_FILES, raw_dir, read_mnist
from pairflow.utils import atomic_write

__all__ = [
    "CIFAR10_MD5",
    "CIFAR10_URL",
    "DownloadError",
    "FASHION_MNIST_MIRRORS",
    "FASHION_MNIST_RESOURCES",
    "MNIST_MIRRORS",
    "MNIST_RESOURCES",
    "MNISTDownloadError",
    "download_cifar10",
    "download_fashion_mnist",
    "download_mnist",
]

MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
# MD5 of the .gz files as published (torchvision's MNIST.resources).
MNIST_RESOURCES: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
FASHION_MNIST_MIRRORS: tuple[str, ...] = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
)
# MD5 of the .gz files as published by Zalando (torchvision's FashionMNIST.resources).
FASHION_MNIST_RESOURCES: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
# Krizhevsky's archive of the Python batches (torchvision's CIFAR10.url and tgz_md5).
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
_CHUNK = 1 << 16


class DownloadError(OSError):
    """No mirror delivered a file with the right checksum (offline, corrupt or truncated)."""


# The name the MNIST code has always raised; every dataset raises this same class.
MNISTDownloadError = DownloadError


class _BadDownload(Exception):
    """One mirror's copy was unusable (checksum or length); try the next mirror."""


def _md5(path: Path) -> str:
    digest = hashlib.md5()  # integrity against the published checksums, not security
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch(url: str, destination: Path, md5: str, timeout: float) -> int:
    """Stream ``url`` into ``destination`` atomically, checking length and MD5."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        declared = response.headers.get("Content-Length")
        received = 0

        def write(f) -> None:
            nonlocal received
            digest = hashlib.md5()
            while True:
                try:
                    block = response.read(_CHUNK)
                except http.client.IncompleteRead as err:
                    raise _BadDownload(
                        f"truncated: connection closed after {received + len(err.partial)} "
                        f"of {declared} bytes"
                    ) from err
                if not block:
                    break
                received += len(block)
                digest.update(block)
                f.write(block)
            if declared is not None and received != int(declared):
                raise _BadDownload(f"truncated: got {received} of {declared} bytes")
            if digest.hexdigest() != md5:
                raise _BadDownload(
                    f"checksum mismatch: md5 {digest.hexdigest()}, expected {md5} "
                    f"({received} bytes; corrupted or truncated)"
                )

        atomic_write(destination, write)
    return received


def _is_network_error(err: BaseException) -> bool:
    if isinstance(err, urllib.error.HTTPError):
        return False  # the server answered
    return isinstance(err, (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError))


def _present(directory: Path, gz_name: str, md5: str, split_readable: bool) -> bool:
    """Is this file already there and usable, so that it need not be fetched?"""
    gz, raw = directory / gz_name, directory / gz_name[: -len(".gz")]
    if split_readable and (gz.is_file() or raw.is_file()):
        return True  # any copy that reads cleanly (e.g. re-gzipped or extracted) will do
    # The published .gz, unless a raw file of the same name shadows it.
    return gz.is_file() and not raw.is_file() and _md5(gz) == md5


def _fetch_from_mirrors(
    name: str,
    directory: Path,
    mirrors: Sequence[str],
    md5: str,
    timeout: float,
    verbose: bool,
    title: str,
    what_to_do: str,
) -> None:
    """Fetch ``name`` into ``directory`` from the first mirror that delivers it correctly."""
    problems: list[str] = []
    network_errors = 0
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + name
        try:
            size = _fetch(url, directory / name, md5, timeout)
        except _BadDownload as err:
            problems.append(f"{url}: {err}")
            continue
        except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
            network_errors += _is_network_error(err)
            reason = getattr(err, "reason", err)
            problems.append(f"{url}: {reason}")
            continue
        if verbose:
            print(f"{directory / name}: downloaded {size:,} bytes from {url}", file=sys.stderr)
        return
    details = "; ".join(problems)
    if network_errors == len(mirrors):
        raise DownloadError(
            f"cannot download {name}: no {title} mirror could be reached (offline? "
            f"{details}). {what_to_do}"
        )
    raise DownloadError(
        f"cannot download {name}: no mirror delivered a correct copy ({details}). "
        f"Nothing was written. Try again later. {what_to_do}"
    )


def _download_idx(
    root: str | os.PathLike | None,
    folder: str,
    title: str,
    mirrors: Sequence[str],
    resources: Mapping[str, str],
    timeout: float,
    verbose: bool,
) -> Path:
    """The four IDX files of MNIST or Fashion-MNIST into ``<root>/<folder>/raw/``."""
    from pairflow.data.mnist import resolve_root

    root = resolve_root(root)
    mirrors = tuple(mirrors)
    directory = raw_dir(root, folder)

    # Which splits already read cleanly? (A file present but broken is fetched again.)
    readable = {}
    for split in ("train", "test"):
        try:
            read_mnist(root, train=split == "train", folder=folder)
            readable[split] = True
        except (FileNotFoundError, MNISTFormatError):
            readable[split] = False
    split_of = {f"{name}.gz": split for (split, _), name in MNIST_FILES.items()}

    for gz_name, md5 in resources.items():
        split = split_of.get(gz_name)
        if _present(directory, gz_name, md5, readable.get(split, False)):
            if verbose:
                print(f"{directory / gz_name}: present", file=sys.stderr)
            continue
        what_to_do = (
            f"To use a copy you already have, point the root at the directory that "
            f"contains {folder}/raw/ (root argument, --root / --data-dir, or ${ENV_VAR}); or "
            f"download {gz_name} on a machine with internet and put it in {directory}/."
        )
        _fetch_from_mirrors(gz_name, directory, mirrors, md5, timeout, verbose, title, what_to_do)
        # A raw (uncompressed) file of the same name would shadow the fresh .gz.
        stale = directory / gz_name[: -len(".gz")]
        if stale.is_file():
            stale.unlink()
    return directory


def download_mnist(
    root: str | os.PathLike | None = None,
    mirrors: Sequence[str] | None = None,
    resources: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    verbose: bool = False,
) -> Path:
    """Download the MNIST files into ``<root>/MNIST/raw/``, skipping those already valid.

    A file counts as present when its ``.gz`` matches the checksum, or when a raw or gzipped
    copy of it is there and the split reads without error (re-compressed copies, like a
    torchvision download that was extracted, have other checksums but the same content).
    Missing or broken files are fetched from the first mirror that delivers them complete,
    with the right MD5; each is written atomically.

    Arguments:
        root: data root (see :func:`pairflow.data.resolve_root`).
        mirrors: base URLs tried in order; default :data:`MNIST_MIRRORS`.
        resources: ``{file name: md5}``; default :data:`MNIST_RESOURCES`.
        timeout: seconds to wait on each connection or read.
        verbose: print one line per file to stderr.

    Returns:
        The raw directory ``<root>/MNIST/raw``.

    Raises:
        DownloadError: (also named ``MNISTDownloadError``) a file could not be fetched from
            any mirror; the message says whether the machine looks offline, or what was wrong
            with each mirror's copy, and what to do.

    Example:
        >>> download_mnist("data")  # doctest: +SKIP
        PosixPath('data/MNIST/raw')
    """
    return _download_idx(
        root,
        "MNIST",
        "MNIST",
        mirrors if mirrors is not None else MNIST_MIRRORS,
        resources if resources is not None else MNIST_RESOURCES,
        timeout,
        verbose,
    )


def download_fashion_mnist(
    root: str | os.PathLike | None = None,
    mirrors: Sequence[str] | None = None,
    resources: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    verbose: bool = False,
) -> Path:
    """Download Fashion-MNIST into ``<root>/FashionMNIST/raw/``, as :func:`download_mnist`.

    Local copies are judged as MNIST's are: a split that reads cleanly is kept whatever its
    ``.gz`` checksum (Debian's packaging re-compresses the files, so their ``.gz`` bytes differ
    from the published ones while the content is the same).

    Arguments:
        root: data root (see :func:`pairflow.data.resolve_root`).
        mirrors: base URLs tried in order; default :data:`FASHION_MNIST_MIRRORS`.
        resources: ``{file name: md5}``; default :data:`FASHION_MNIST_RESOURCES`.
        timeout: seconds to wait on each connection or read.
        verbose: print one line per file to stderr.

    Returns:
        The raw directory ``<root>/FashionMNIST/raw``.

    Raises:
        DownloadError: a file could not be fetched from any mirror (the message says why).
    """
    return _download_idx(
        root,
        "FashionMNIST",
        "Fashion-MNIST",
        mirrors if mirrors is not None else FASHION_MNIST_MIRRORS,
        resources if resources is not None else FASHION_MNIST_RESOURCES,
        timeout,
        verbose,
    )


def download_cifar10(
    root: str | os.PathLike | None = None,
    url: str | None = None,
    md5: str | None = None,
    timeout: float = 30.0,
    verbose: bool = False,
) -> Path:
    """Download ``cifar-10-python.tar.gz`` into ``<root>/``, checked against its MD5.

    Nothing is fetched when the data already reads cleanly (the extracted
    ``<root>/cifar-10-batches-py/`` or the archive, whatever its checksum). The archive is
    not extracted: :func:`pairflow.data.read_cifar10` reads the batches straight from it, and
    torchvision's ``CIFAR10(root, download=True)`` finds it there and extracts it itself.

    Arguments:
        root: data root (see :func:`pairflow.data.resolve_root`).
        url: the archive's URL; default :data:`CIFAR10_URL`.
        md5: its MD5; default :data:`CIFAR10_MD5`.
        timeout: seconds to wait on each connection or read.
        verbose: print one line to stderr.

    Returns:
        The path of the archive, or of the batches directory if that was already there
        (a broken batches directory is rewritten from the fresh archive).

    Raises:
        DownloadError: the archive could not be fetched, or its checksum was wrong (then
            nothing is written).

    Example:
        >>> download_cifar10("data")  # doctest: +SKIP
        PosixPath('data/cifar-10-python.tar.gz')
    """
    from pairflow.data.cifar import (
        CIFAR10_ARCHIVE,
        CIFAR10_FOLDER,
        CIFARFormatError,
        extract_cifar10,
        read_cifar10,
    )
    from pairflow.data.mnist import resolve_root

    root = resolve_root(root)
    url = url if url is not None else CIFAR10_URL
    md5 = md5 if md5 is not None else CIFAR10_MD5
    archive = root / CIFAR10_ARCHIVE
    try:
        read_cifar10(root, train=True)
        read_cifar10(root, train=False)
        present = True
    except (FileNotFoundError, CIFARFormatError):
        present = False
    if present:
        found = root / CIFAR10_FOLDER
        found = found if found.is_dir() else archive
        if verbose:
            print(f"{found}: present", file=sys.stderr)
        return found
    base, name = url.rsplit("/", 1)
    what_to_do = (
        f"To use a copy you already have, point the root at the directory that contains "
        f"{CIFAR10_FOLDER}/ or {CIFAR10_ARCHIVE} (root argument, --root / --data-dir, or "
        f"${ENV_VAR}); or download {url} on a machine with internet and put it in {root}/."
    )
    # The broken copy (if any) is replaced atomically, so a failure leaves it as it was.
    _fetch_from_mirrors(name, root, [base], md5, timeout, verbose, "CIFAR-10", what_to_do)
    if name != CIFAR10_ARCHIVE:  # a mirror with another file name: store it under ours
        os.replace(root / name, archive)
    if (root / CIFAR10_FOLDER).is_dir():
        # The directory is read before the archive: repair it from the fresh archive.
        return extract_cifar10(root)
    return archive
