"""A ``torchvision.datasets.MNIST`` subclass that serves digit pairs (needs torchvision).

For code built around torchvision datasets: it is an ``MNIST`` instance, reads and downloads
through torchvision's machinery, returns PIL images like torchvision does, and pairs with
the same code as :class:`pairflow.data.PairedMNIST` (so the same seed gives the same pairs).

Import it as ``from pairflow.data import TorchvisionPairedMNIST``; without torchvision the
import raises an ImportError that says how to install it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

try:
    from torchvision.datasets import MNIST
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "TorchvisionPairedMNIST needs torchvision: pip install 'pairflow[torchvision]' "
        "(or use pairflow.data.PairedMNIST, which needs only torch)"
    ) from err

from pairflow.data.mnist import find_mnist_file, raw_dir, read_mnist
from pairflow.data.paired import PairingMixin

__all__ = ["TorchvisionPairedMNIST"]


class TorchvisionPairedMNIST(PairingMixin, MNIST):
    """torchvision's MNIST, paired: items are (PIL image 56x28, int target 10*left + right).

    Arguments are torchvision's (``root``, ``train``, ``transform``, ``target_transform``,
    ``download``) plus the pairing options of :class:`pairflow.data.PairedMNIST`
    (``num_pairs``, ``seed``, ``balanced``, ``labels``). Files are read from
    ``<root>/MNIST/raw/``, raw or gzipped, whatever the subclass name.

    Attributes:
        data: uint8 tensor (N, 28, 28), the digits (torchvision's attribute; same as ``digits``).
        targets: int64 tensor (num_pairs,), the pair labels (torchvision's ``targets`` holds
            digit labels; here those are ``digit_labels``).

    Example:
        >>> ds = TorchvisionPairedMNIST("data", download=True, seed=0)  # doctest: +SKIP
        >>> image, target = ds[0]  # PIL image of size (56, 28)  # doctest: +SKIP
    """

    def __init__(
        self,
        root: str,
        train: bool = True,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        download: bool = False,
        num_pairs: int | None = None,
        seed: int = 0,
        balanced: bool = False,
        labels: int | Iterable[int] | None = None,
    ) -> None:
        super().__init__(
            root,
            train=train,
            transform=transform,
            target_transform=target_transform,
            download=download,
        )
        self.digits, self.digit_labels = self.data, self.targets
        self._init_pairing(
            train=train, num_pairs=num_pairs, seed=seed, balanced=balanced, labels=labels
        )

    # torchvision derives the folder from the class name; keep MNIST's, so files are shared.
    @property
    def raw_folder(self) -> str:
        return str(raw_dir(self.root))

    def _check_exists(self) -> bool:
        try:
            for split in ("train", "t10k"):
                for kind in ("images-idx3", "labels-idx1"):
                    find_mnist_file(self.root, f"{split}-{kind}-ubyte")
        except FileNotFoundError:
            return False
        return True

    def _load_data(self):
        return read_mnist(self.root, train=self.train)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        from PIL import Image

        image = Image.fromarray(self._pair_image(index)[0].numpy())  # uint8 (H, W) -> mode "L"
        target: Any = int(self.targets[index])
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target

    def __len__(self) -> int:
        return len(self.pairs)
