"""IDX files: the binary format MNIST is distributed in, read and written with numpy.

An IDX file is a 4-byte magic number ``0x00 0x00 <dtype code> <ndim>``, then ``ndim``
big-endian uint32 dimension sizes, then the array in C order, big-endian. MNIST uses
``0x00000803`` (uint8, 3 dims: N x 28 x 28) for images and ``0x00000801`` (uint8, 1 dim: N)
for labels. Files ending in ``.gz`` are gzip-compressed.

References:
    LeCun, Cortes, Burges. The MNIST database of handwritten digits.
    http://yann.lecun.com/exdb/mnist/ (section "FILE FORMATS FOR THE MNIST DATABASE")
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from pairflow.utils import atomic_write_bytes

__all__ = ["MNISTFormatError", "read_idx", "parse_idx", "write_idx", "IDX_DTYPES"]

# IDX type code -> numpy dtype (big-endian where it matters).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class MNISTFormatError(ValueError):
    """A data file exists but is not what it should be (bad magic, truncated, bad shape...).

    The message names the file and the problem; ``.path`` holds the file.
    """

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as err:  # permissions, a directory, an I/O error
        raise MNISTFormatError(
            path, f"cannot be read ({err.strerror}); check the file's permissions"
        ) from err
    if path.name.endswith(".gz"):
        try:
            return gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as err:
            # EOFError: the gzip stream ends early (a truncated download);
            # BadGzipFile (an OSError) / zlib.error: not gzip at all, or corrupted.
            raise MNISTFormatError(
                path, f"cannot decompress ({err}); the file is truncated or corrupt, delete it"
            ) from err
    return raw


def parse_idx(data: bytes, path: str | os.PathLike = "<bytes>") -> np.ndarray:
    """Parse the bytes of an (uncompressed) IDX file.

    Arguments:
        data: the file's bytes.
        path: used in error messages only.

    Returns:
        A read-only numpy array with the file's dtype and shape (a view of ``data``).

    Raises:
        MNISTFormatError: bad magic number, unknown type code, truncated or overlong data.
    """
    if len(data) < 4:
        raise MNISTFormatError(path, f"truncated: {len(data)} bytes, not even an IDX header")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    magic = int.from_bytes(data[:4], "big")
    if zero != 0 or code not in IDX_DTYPES or ndim == 0:
        raise MNISTFormatError(
            path,
            f"wrong magic number 0x{magic:08X}: not an IDX file (MNIST images start with "
            "0x00000803, labels with 0x00000801)",
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise MNISTFormatError(path, f"truncated: {len(data)} bytes, header needs {header}")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = IDX_DTYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) < expected:
        raise MNISTFormatError(
            path,
            f"truncated: {len(data)} bytes but shape {shape} needs {expected}; "
            "delete the file and download it again",
        )
    if len(data) > expected:
        raise MNISTFormatError(
            path, f"{len(data) - expected} unexpected bytes after the data of shape {shape}"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzip-compressed if its name ends in ``.gz``) into a numpy array.

    Arguments:
        path: the file.

    Returns:
        A read-only numpy array with the file's dtype and shape.

    Raises:
        FileNotFoundError: the file does not exist.
        MNISTFormatError: the file is not a valid IDX file (see :func:`parse_idx`).

    Example:
        >>> images = read_idx("data/MNIST/raw/t10k-images-idx3-ubyte.gz")  # doctest: +SKIP
        >>> images.shape, images.dtype  # doctest: +SKIP
        ((10000, 28, 28), dtype('uint8'))
    """
    path = Path(path)
    return parse_idx(_read_bytes(path), path)


def write_idx(path: str | os.PathLike, array) -> Path:
    """Write ``array`` as an IDX file, gzip-compressed if ``path`` ends in ``.gz``, atomically.

    Arguments:
        path: destination file.
        array: numpy array or torch tensor of dtype uint8, int8, int16, int32, float32 or
            float64 with at least one dimension.

    Returns:
        The destination path.

    Example:
        >>> write_idx(tmp / "labels-idx1-ubyte.gz", np.array([5, 0, 4], np.uint8))  # doctest: +SKIP
    """
    if hasattr(array, "detach"):  # torch tensor, without importing torch here
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if array.ndim == 0:
        raise ValueError("write_idx needs an array with at least one dimension")
    by_dtype = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}
    code = by_dtype.get(array.dtype.newbyteorder("="))
    if code is None:
        valid = ", ".join(str(dt.newbyteorder("=")) for dt in IDX_DTYPES.values())
        raise ValueError(f"write_idx cannot store dtype {array.dtype}; use one of: {valid}")
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    body = np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    data = header + body
    path = Path(path)
    if path.name.endswith(".gz"):
        # mtime=0: the same array always gives the same bytes (stable checksums in tests).
        data = gzip.compress(data, compresslevel=6, mtime=0)
    return atomic_write_bytes(path, data)
