"""Paired-image datasets: two images side by side, labelled with the number they read.

An item is ``(image, target)``: ``image`` a uint8 tensor of shape (C, H, 2W) with values
0..255, (1, 28, 56) for MNIST (bright ink on black), (3, 32, 64) for CIFAR-10 (R, G, B); the
left image in columns 0..W-1 and the right one in columns W..2W-1; ``target`` the int
``10 * left + right`` (3|7 -> 37, 0|5 -> 5). With ``layout="single"`` an item is one image
(C, H, W) and its class 0..9, drawn by the same code (so the same options apply).

All images of a split live in memory as one uint8 tensor ``digits`` ((N, H, W) for one
channel, (N, C, H, W) for colour); a pair is two indices into it (``pairs``), and
:meth:`PairingMixin.get_batch` assembles a whole batch by tensor indexing. The pairing code
is one mixin shared by :class:`PairedDataset` (a dataset by name, ``PairedDataset("cifar10",
root)``, or any in-memory images, e.g. via :meth:`PairedDataset.from_dataset`),
:class:`PairedMNIST` (the MNIST case) and, when torchvision is installed,
``pairflow.data.tvmnist.TorchvisionPairedMNIST``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pairflow.data.pairing import draw_pairs, normalize_labels, pairing_rng
from pairflow.options import DEFAULT_LAYOUT, LABEL_SIDES, num_classes_of

__all__ = ["PairingMixin", "PairedDataset", "PairedMNIST"]

_STATE_VERSION = 1


def _labels_checksum(digit_labels: torch.Tensor) -> str:
    return hashlib.sha1(digit_labels.to(torch.int64).numpy().tobytes()).hexdigest()[:16]


class PairingMixin:
    """Deterministic pairing of in-memory digits, shared by every paired dataset.

    A subclass sets ``self.digits`` (N, H, W) or (N, C, H, W) uint8 and ``self.digit_labels``
    (N,) int64, then calls :meth:`_init_pairing`. Pairs are a pure function of ``(seed, epoch)``
    for the training split and of ``seed`` alone for the test split (whatever the epoch), so test
    metrics compare across runs.

    Attributes:
        digits: uint8 tensor (N, H, W) (one channel) or (N, C, H, W), the source images.
        digit_labels: int64 tensor (N,), their labels 0..9.
        layout: ``"pair"`` (two images side by side) or ``"single"`` (one image).
        pairs: int64 tensor (num_pairs, 2), source indices (left, right) of each pair;
            (num_pairs, 1) for the single layout.
        targets: int64 tensor (num_pairs,), ``10 * label[left] + label[right]`` (pairs) or
            ``label`` (single).
        epoch: the epoch the pairs were drawn for (see :meth:`set_epoch`).
    """

    digits: torch.Tensor
    digit_labels: torch.Tensor
    pairs: torch.Tensor
    targets: torch.Tensor

    def _init_pairing(
        self,
        *,
        train: bool,
        num_pairs: int | None,
        seed: int,
        balanced: bool,
        labels: int | Iterable[int] | None,
        layout: str = "pair",
    ) -> None:
        if layout not in LABEL_SIDES:
            raise ValueError(f"unknown layout {layout!r}: use one of {', '.join(LABEL_SIDES)}")
        if self.digits.dtype != torch.uint8 or self.digits.dim() not in (3, 4):
            raise ValueError(
                f"digits must be a uint8 tensor (N, H, W) or (N, C, H, W), got "
                f"{self.digits.dtype} of shape {tuple(self.digits.shape)}"
            )
        if self.digit_labels.shape != (len(self.digits),):
            raise ValueError(
                f"digit_labels must have shape ({len(self.digits)},), got "
                f"{tuple(self.digit_labels.shape)}"
            )
        if len(self.digit_labels) and not (
            0 <= int(self.digit_labels.min()) and int(self.digit_labels.max()) <= 9
        ):
            raise ValueError("digit labels must be in 0..9 for pair labels 10*left + right")
        self.digits = self.digits.contiguous()
        self.digit_labels = self.digit_labels.to(torch.int64)
        self.layout = layout
        self.train = bool(train)
        self.seed = int(seed)
        self.balanced = bool(balanced)
        self.labels = normalize_labels(labels, self.num_classes)
        if num_pairs is None:
            num_pairs = len(self.digits)
            if self.balanced:  # the largest multiple of the class count that fits, at least one
                k = len(self.labels) if self.labels else self.num_classes
                num_pairs = max(k, num_pairs // k * k)
        if int(num_pairs) <= 0:
            raise ValueError(f"num_pairs must be a positive int, got {num_pairs}")
        self.num_pairs = int(num_pairs)
        self.epoch = 0
        self._redraw()

    # -- pairing -------------------------------------------------------------------------

    @property
    def num_classes(self) -> int:
        """Number of target classes: 100 pair labels, or 10 for the single layout."""
        return num_classes_of(getattr(self, "layout", DEFAULT_LAYOUT))

    def _redraw(self) -> None:
        draw_epoch = self.epoch if self.train else 0  # test pairs never change
        rng = pairing_rng(self.seed, draw_epoch)
        sides = LABEL_SIDES[self.layout]
        pairs = draw_pairs(
            self.digit_labels.numpy(), self.num_pairs, rng, self.balanced, self.labels, sides
        )
        self.pairs = torch.from_numpy(pairs)
        if sides == 2:
            self.targets = (
                10 * self.digit_labels[self.pairs[:, 0]] + self.digit_labels[self.pairs[:, 1]]
            )
        else:
            self.targets = self.digit_labels[self.pairs[:, 0]]

    def set_epoch(self, epoch: int) -> None:
        """Redraw the training pairs for ``epoch`` (deterministic given the seed).

        For the test split this only records the epoch: its pairs stay fixed.
        """
        epoch = int(epoch)
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        changed = epoch != self.epoch
        self.epoch = epoch
        if changed and self.train:
            self._redraw()

    def state_dict(self) -> dict[str, Any]:
        """The pairing state (seed, epoch, options), enough to redraw exactly the same pairs."""
        return {
            "version": _STATE_VERSION,
            "train": self.train,
            "seed": self.seed,
            "epoch": self.epoch,
            "num_pairs": self.num_pairs,
            "balanced": self.balanced,
            "labels": list(self.labels) if self.labels is not None else None,
            "layout": self.layout,
            "num_digits": len(self.digits),
            "digit_labels_checksum": _labels_checksum(self.digit_labels),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`: same options and epoch, hence the same pairs.

        Raises:
            ValueError: the state was made for other data (split or digits differ).
        """
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unknown pairing state version {state.get('version')!r}")
        if state.get("layout", "pair") != self.layout:  # states before layouts were pairs
            raise ValueError(
                f"pairing state is for the {state.get('layout', 'pair')!r} layout, this "
                f"dataset has the {self.layout!r} layout"
            )
        if bool(state["train"]) != self.train:
            raise ValueError(
                f"pairing state is for the {'train' if state['train'] else 'test'} split, "
                f"this dataset is the {'train' if self.train else 'test'} split"
            )
        if state["num_digits"] != len(self.digits) or state[
            "digit_labels_checksum"
        ] != _labels_checksum(self.digit_labels):
            raise ValueError(
                f"pairing state was made for {state['num_digits']} other digits; this dataset "
                f"has {len(self.digits)} (different data root or subset?)"
            )
        self.seed = int(state["seed"])
        self.num_pairs = int(state["num_pairs"])
        self.balanced = bool(state["balanced"])
        self.labels = normalize_labels(state["labels"], self.num_classes)
        self.epoch = int(state["epoch"])
        self._redraw()

    # -- access --------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.pairs)

    def _images4d(self) -> np.ndarray:
        """The source images as a numpy (N, C, H, W) view (C = 1 for (N, H, W) digits)."""
        digits = self.digits.numpy()
        return digits[:, None] if digits.ndim == 3 else digits

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Shape of one item: (C, H, 2W) for pairs, (1, 28, 56) for MNIST; (C, H, W) single."""
        _, c, h, w = self._images4d().shape
        return (c, h, LABEL_SIDES[self.layout] * w)

    def get_batch(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        """Assemble pairs ``idx`` with one gather of the in-memory digits (no per-item work).

        Transforms are not applied here (only per item, in ``__getitem__``).

        Arguments:
            idx: int64 tensor (B,) (or anything ``torch.as_tensor`` takes) of pair indices.

        Returns:
            ``(images, targets)``: uint8 tensor (B, C, H, 2W) with values 0..255, left image
            in columns 0..W-1 ((B, C, H, W) for the single layout); int64 tensor (B,) of
            pair labels (class labels for single).

        Example:
            >>> images, targets = dataset.get_batch(torch.arange(256))  # doctest: +SKIP
            >>> images.shape  # doctest: +SKIP
            torch.Size([256, 1, 28, 56])
        """
        idx = torch.as_tensor(idx, dtype=torch.int64).numpy()
        if idx.ndim != 1:
            raise ValueError(f"get_batch takes a 1-D tensor of pair indices, got shape {idx.shape}")
        pairs = self.pairs.numpy()[idx]  # (B, sides)
        digits = self._images4d()  # (N, C, H, W), shares memory
        (b, sides), (_, c, h, w) = pairs.shape, digits.shape
        # A numpy gather straight into the two halves of the output. Measured on the 2 shared
        # cores here, torch's index_select + cat is as fast on an idle machine but collapses
        # (10-50x) when its intra-op threads compete with other processes; numpy's gather is
        # single-threaded and steady (see benchmarks/data_throughput.py).
        out = np.empty((b, c, h, sides, w), dtype=np.uint8)
        for side in range(sides):
            out[:, :, :, side] = digits[pairs[:, side]]  # left image, then right image
        images = torch.from_numpy(out).view(b, c, h, sides * w)  # (B, C, H, 2W)
        return images, torch.from_numpy(self.targets.numpy()[idx])

    def _pair_image(self, index: int) -> torch.Tensor:
        """Item ``index`` as a uint8 tensor (C, H, 2W), or (C, H, W) for the single layout."""
        images = torch.from_numpy(self._images4d())  # (N, C, H, W)
        return torch.cat([images[i] for i in self.pairs[index].tolist()], dim=-1)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image = self._pair_image(index)  # (C, H, 2W) uint8
        target: Any = int(self.targets[index])
        if getattr(self, "transform", None) is not None:
            image = self.transform(image)
        if getattr(self, "target_transform", None) is not None:
            target = self.target_transform(target)
        return image, target

    def pair_label_counts(self) -> torch.Tensor:
        """int64 tensor (10, 10): entry [l, r] counts the pairs with left digit l, right r.

        For the single layout: (10,), the count of each class.
        """
        counts = torch.bincount(self.targets, minlength=self.num_classes)
        return counts.reshape(10, 10) if self.layout == "pair" else counts

    def _pairing_repr(self) -> list[str]:
        lines = [
            f"Number of pairs: {len(self)}",
            f"Split: {'Train' if self.train else 'Test'}",
            f"Layout: {self.layout} {self.image_shape}",
            f"Pairing: seed={self.seed}, epoch={self.epoch}, balanced={self.balanced}, "
            f"labels={list(self.labels) if self.labels else 'all'}",
        ]
        return lines


class PairedDataset(PairingMixin, Dataset):
    """Pairs of images of a named dataset, or of any in-memory images with labels 0..9.

    Two ways to build one: ``PairedDataset(name, root, ...)`` reads the dataset ``name``
    (``"mnist"``, ``"fashion-mnist"``, ``"cifar10"``; see :mod:`pairflow.data.datasets`)
    from ``root``; ``PairedDataset(digits, digit_labels, ...)`` pairs tensors you hold.

    Arguments:
        digits: a dataset name, or a uint8 tensor (N, H, W) or (N, C, H, W) of images,
            values 0..255.
        digit_labels: with a name, the data root (``None``: ``$PAIRFLOW_DATA``, else
            ``./data``); with tensors, an int tensor (N,) of labels 0..9.
        train: training split (pairs redrawn by :meth:`set_epoch`) or test split (fixed).
        transform: applied to each item's image (a uint8 tensor (C, H, 2W)) by
            ``__getitem__``; :meth:`get_batch` never applies it.
        target_transform: applied to each item's int target by ``__getitem__``.
        num_pairs: number of pairs; default the number of digits (with ``balanced``, rounded
            down to a multiple of the number of pair classes).
        seed: pairing seed; the pairs are a pure function of (seed, epoch).
        balanced: every allowed pair class appears exactly equally often.
        labels: keep only these pair labels (an int such as 37, or a list); default all 100
            (for the single layout: class labels 0..9).
        layout: ``"pair"`` (two images side by side, (C, H, 2W), label 10a + b) or
            ``"single"`` (one image, (C, H, W), its class).
        download: with a name, fetch the files into the root first when missing.

    Attributes:
        dataset_name: the dataset's name, or ``None`` for tensors.
        root: the data root (only when built from a name).

    Example:
        >>> ds = PairedDataset("cifar10", "data", train=False)  # doctest: +SKIP
        >>> ds.image_shape  # doctest: +SKIP
        (3, 32, 64)
        >>> PairedDataset("fashion-mnist", "data", layout="single").image_shape  # doctest: +SKIP
        (1, 28, 28)
        >>> ds = PairedDataset(digits, digit_labels, seed=0)  # doctest: +SKIP
    """

    dataset_name: str | None = None

    def __init__(
        self,
        digits: torch.Tensor | str,
        digit_labels: torch.Tensor | str | os.PathLike | None = None,
        train: bool = True,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        num_pairs: int | None = None,
        seed: int = 0,
        balanced: bool = False,
        labels: int | Iterable[int] | None = None,
        layout: str = "pair",
        download: bool = False,
    ) -> None:
        if isinstance(digits, str):
            from pairflow.data.datasets import get_dataset
            from pairflow.data.mnist import resolve_root

            spec = get_dataset(digits)
            self.dataset_name = spec.name
            self.root = resolve_root(digit_labels)
            if download:
                spec.download(self.root)
            digits, digit_labels = spec.read(self.root, train)
        elif download:
            raise ValueError(
                "download=True needs a dataset name, e.g. PairedDataset('cifar10', root)"
            )
        elif digit_labels is None:
            raise TypeError("PairedDataset(digits, digit_labels): digit_labels is missing")
        self.digits = torch.as_tensor(digits)
        self.digit_labels = torch.as_tensor(digit_labels)
        self.transform = transform
        self.target_transform = target_transform
        self._init_pairing(
            train=train,
            num_pairs=num_pairs,
            seed=seed,
            balanced=balanced,
            labels=labels,
            layout=layout,
        )

    @classmethod
    def from_dataset(cls, base, train: bool = True, **kwargs) -> PairedDataset:
        """Pair the digits of any dataset of ``(image, label)`` items, e.g. FashionMNIST.

        A torchvision-style dataset with ``.data`` (N, H, W) uint8 and ``.targets`` is read
        from those attributes directly (its own transform is not applied); otherwise every
        item is read once: images may be PIL images, numpy arrays or tensors ((H, W) or
        (1, H, W); floats are taken as 0..1 and scaled to 0..255).

        Arguments:
            base: the dataset; labels must be ints 0..9.
            train: whether the pairs follow :meth:`set_epoch`.
            kwargs: the other :class:`PairedDataset` arguments.

        Example:
            >>> fashion = torchvision.datasets.FashionMNIST(root, download=True)  # doctest: +SKIP
            >>> pairs = PairedDataset.from_dataset(fashion, seed=0)  # doctest: +SKIP
        """
        digits, labels = _digits_from_dataset(base)
        return cls(digits, labels, train=train, **kwargs)

    def __repr__(self) -> str:
        lines = self._pairing_repr()
        if self.dataset_name is not None:
            lines += [f"Dataset: {self.dataset_name}", f"Root location: {self.root}"]
        body = "\n    ".join(lines)
        return f"{type(self).__name__}\n    {body}"


def _to_uint8_image(image) -> torch.Tensor:
    if not isinstance(image, torch.Tensor):
        image = torch.from_numpy(np.array(image))  # PIL image or numpy array
    if image.dim() == 3 and image.shape[0] == 1:
        image = image[0]
    elif image.dim() == 3 and image.shape[-1] == 3 and image.shape[0] != 3:
        image = image.permute(2, 0, 1)  # (H, W, 3), as PIL and numpy hold RGB -> (3, H, W)
    if image.dim() != 2 and not (image.dim() == 3 and image.shape[0] == 3):
        raise ValueError(
            f"expected grayscale images (H, W) or (1, H, W), or RGB (3, H, W) or (H, W, 3), "
            f"got {tuple(image.shape)}"
        )
    if image.is_floating_point():
        image = (image * 255).round().clamp(0, 255)
    return image.to(torch.uint8)


def _digits_from_dataset(base) -> tuple[torch.Tensor, torch.Tensor]:
    data, targets = getattr(base, "data", None), getattr(base, "targets", None)
    if data is not None and targets is not None:
        data, targets = torch.as_tensor(np.asarray(data)), torch.as_tensor(np.asarray(targets))
        if data.dtype == torch.uint8 and data.dim() == 4 and data.shape[-1] == 3:
            data = data.permute(0, 3, 1, 2).contiguous()  # torchvision CIFAR10: (N, H, W, 3)
        if data.dtype == torch.uint8 and data.dim() in (3, 4) and len(data) == len(targets):
            return data, targets.to(torch.int64)
    images, labels = [], []
    for i in range(len(base)):
        image, label = base[i]
        images.append(_to_uint8_image(image))
        labels.append(int(label))
    if not images:
        raise ValueError("cannot pair an empty dataset")
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64)


class PairedMNIST(PairedDataset):
    """MNIST digit pairs: two MNIST digits side by side, target ``10 * left + right``.

    Follows torchvision's MNIST constructor conventions, plus pairing options. Reads
    ``<root>/MNIST/raw/`` (raw or gzipped IDX; see :func:`pairflow.data.read_mnist`).

    Arguments:
        root: data root containing ``MNIST/raw/``; ``None`` means ``$PAIRFLOW_DATA``, else
            ``./data``.
        train: the 60,000 training digits (pairs redrawn by :meth:`set_epoch`) or the 10,000
            test digits (pairs fixed whatever the epoch).
        transform: applied to each item's image by ``__getitem__``; the image it receives is
            a uint8 tensor (1, 28, 56), values 0..255.
        target_transform: applied to each item's int target by ``__getitem__``.
        download: fetch the four MNIST files into ``<root>/MNIST/raw/`` first when missing
            (see :func:`pairflow.data.download_mnist`).
        num_pairs: number of pairs; default the split's size (with ``balanced``, rounded down
            to a multiple of the number of pair classes).
        seed: pairing seed: the pairs are a pure function of (seed, epoch).
        balanced: all allowed pair classes (100, or those in ``labels``) exactly equally often.
        labels: keep only these pair labels, e.g. ``37`` or ``[37, 73]``.

    Items:
        ``(image, target)``: image uint8 tensor (1, 28, 56), values 0..255, left digit in
        columns 0..27; target int in 0..99 (3|7 -> 37, 0|5 -> 5).

    Example:
        >>> train = PairedMNIST("/work/shared/data", train=True, seed=0)  # doctest: +SKIP
        >>> images, targets = train.get_batch(torch.arange(64))  # doctest: +SKIP
        >>> images.shape, images.dtype  # doctest: +SKIP
        (torch.Size([64, 1, 28, 56]), torch.uint8)
        >>> train.set_epoch(1)  # new pairs for the next epoch  # doctest: +SKIP
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        train: bool = True,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        download: bool = False,
        num_pairs: int | None = None,
        seed: int = 0,
        balanced: bool = False,
        labels: int | Iterable[int] | None = None,
    ) -> None:
        from pairflow.data.mnist import read_mnist, resolve_root

        self.root = resolve_root(root)
        if download:
            from pairflow.data.download import download_mnist

            download_mnist(self.root)
        digits, digit_labels = read_mnist(self.root, train=train)
        self.dataset_name = "mnist"
        super().__init__(
            digits,
            digit_labels,
            train=train,
            transform=transform,
            target_transform=target_transform,
            num_pairs=num_pairs,
            seed=seed,
            balanced=balanced,
            labels=labels,
        )

    def __repr__(self) -> str:
        body = "\n    ".join([*self._pairing_repr(), f"Root location: {self.root}"])
        return f"{type(self).__name__}\n    {body}"
