"""Fetching the four MNIST files from the public mirrors torchvision uses.

Each ``.gz`` file is checked against the MD5 checksum torchvision publishes, streamed into a
temporary file next to its destination and renamed into place only when complete and
correct: a failed, corrupted or interrupted download leaves nothing behind.

References:
    torchvision.datasets.MNIST (``mirrors`` and ``resources``),
    https://github.com/pytorch/vision/blob/main/torchvision/datasets/mnist.py
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

__all__ = ["MNIST_MIRRORS", "MNIST_RESOURCES", "MNISTDownloadError", "download_mnist"]

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
_CHUNK = 1 << 16


class MNISTDownloadError(OSError):
    """No mirror delivered a file with the right checksum (offline, corrupt or truncated)."""


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
        MNISTDownloadError: a file could not be fetched from any mirror; the message says
            whether the machine looks offline, or what was wrong with each mirror's copy,
            and what to do.

    Example:
        >>> download_mnist("data")  # doctest: +SKIP
        PosixPath('data/MNIST/raw')
    """
    from pairflow.data.mnist import resolve_root

    root = resolve_root(root)
    mirrors = tuple(mirrors if mirrors is not None else MNIST_MIRRORS)
    resources = dict(resources if resources is not None else MNIST_RESOURCES)
    directory = raw_dir(root)

    # Which splits already read cleanly? (A file present but broken is fetched again.)
    readable = {}
    for split in ("train", "test"):
        try:
            read_mnist(root, train=split == "train")
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
        problems: list[str] = []
        network_errors = 0
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + gz_name
            try:
                size = _fetch(url, directory / gz_name, md5, timeout)
            except _BadDownload as err:
                problems.append(f"{url}: {err}")
                continue
            except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
                network_errors += _is_network_error(err)
                reason = getattr(err, "reason", err)
                problems.append(f"{url}: {reason}")
                continue
            if verbose:
                print(
                    f"{directory / gz_name}: downloaded {size:,} bytes from {url}", file=sys.stderr
                )
            # A raw (uncompressed) file of the same name would shadow the fresh .gz.
            stale = directory / gz_name[: -len(".gz")]
            if stale.is_file():
                stale.unlink()
            break
        else:
            what_to_do = (
                f"To use a copy you already have, point the root at the directory that "
                f"contains MNIST/raw/ (root argument, --root / --data-dir, or ${ENV_VAR}); or "
                f"download {gz_name} on a machine with internet and put it in {directory}/."
            )
            details = "; ".join(problems)
            if network_errors == len(mirrors):
                raise MNISTDownloadError(
                    f"cannot download {gz_name}: no MNIST mirror could be reached (offline? "
                    f"{details}). {what_to_do}"
                )
            raise MNISTDownloadError(
                f"cannot download {gz_name}: no mirror delivered a correct copy ({details}). "
                f"Nothing was written. Try again later. {what_to_do}"
            )
    return directory
