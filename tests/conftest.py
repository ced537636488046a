"""Shared fixtures: tiny synthetic roots; the real MNIST and Fashion-MNIST roots (or a skip)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def real_mnist_root(folder: str = "MNIST") -> Path | None:
    """$PAIRFLOW_DATA, else ../shared/data next to the repo, if it holds <folder>/raw/."""
    candidates = [os.environ.get("PAIRFLOW_DATA"), REPO.parent / "shared" / "data"]
    for candidate in candidates:
        if candidate and (Path(candidate) / folder / "raw").is_dir():
            return Path(candidate)
    return None


def pytest_configure(config):
    """Under pytest-xdist (``make test``: ``-n 2``) each worker, and the commands its tests
    start, takes its share of the cores' threads, so that the workers do not oversubscribe
    them (idle OpenMP threads would spin against the other worker: PASSIVE)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        import torch

        share = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(share)
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        torch.set_num_threads(share)


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory):
    """``--precision auto`` may measure and cache; keep that out of the user's cache dir."""
    old = os.environ.get("PAIRFLOW_CACHE_DIR")
    os.environ["PAIRFLOW_CACHE_DIR"] = str(tmp_path_factory.mktemp("pairflow_cache"))
    yield
    if old is None:
        os.environ.pop("PAIRFLOW_CACHE_DIR", None)
    else:
        os.environ["PAIRFLOW_CACHE_DIR"] = old


@pytest.fixture(autouse=True)
def _seed_torch():
    """Seed torch's global generator before each test, so that a test that draws unseeded
    inputs sees the same ones in every run and in any order (an unseeded draw once made a
    posterior one-hot to float precision and failed CI)."""
    import torch

    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """A command run in-process with ``--threads N`` sets torch's global thread count; put it
    back after each test, so that a test's numbers do not depend on which ran before it."""
    import torch

    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_mnist_root(tmp_path_factory) -> Path:
    """A data root with synthetic digit-like MNIST files: 256 train, 128 test, all 10 classes.

    Shared by the whole session: do not modify it (copy it, or build your own with
    ``pairflow.data.make_synthetic_mnist``).
    """
    from pairflow.data.synthetic import make_synthetic_mnist

    return make_synthetic_mnist(tmp_path_factory.mktemp("tiny_mnist"), 256, 128, seed=0)


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The real MNIST root (read-only); skips the test when it is absent."""
    root = real_mnist_root()
    if root is None:
        pytest.skip("real MNIST not found: set PAIRFLOW_DATA or provide ../shared/data")
    return root


@pytest.fixture(scope="session")
def fashion_mnist_root() -> Path:
    """The real Fashion-MNIST root (read-only); skips the test when it is absent."""
    root = real_mnist_root("FashionMNIST")
    if root is None:
        pytest.skip("real Fashion-MNIST not found: set PAIRFLOW_DATA or provide ../shared/data")
    return root


@pytest.fixture(scope="session")
def tiny_fashion_root(tmp_path_factory) -> Path:
    """A data root with synthetic files in Fashion-MNIST's layout (256 train, 128 test)."""
    from pairflow.data.synthetic import make_synthetic_fashion_mnist

    return make_synthetic_fashion_mnist(tmp_path_factory.mktemp("tiny_fashion"), 256, 128, seed=1)


@pytest.fixture(scope="session")
def tiny_cifar_root(tmp_path_factory) -> Path:
    """A data root with a synthetic CIFAR-10 archive in the real format (250 train, 50 test).

    Shared by the whole session: do not modify it.
    """
    from pairflow.data.synthetic import make_synthetic_cifar10

    return make_synthetic_cifar10(tmp_path_factory.mktemp("tiny_cifar"), 250, 50, archive=True)


@pytest.fixture(scope="session")
def roots(tiny_mnist_root, tiny_fashion_root, tiny_cifar_root) -> dict[str, Path]:
    """The tiny data root of each dataset, by its --dataset name."""
    return {
        "mnist": tiny_mnist_root,
        "fashion-mnist": tiny_fashion_root,
        "cifar10": tiny_cifar_root,
    }


@pytest.fixture
def mirror():
    from httptools import Mirror

    server = Mirror()
    yield server
    server.close()


@pytest.fixture
def refused_url():
    """A loopback port nobody listens on: connections are refused, as when offline."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"
