"""Paired-digit datasets: two digits side by side, labelled with the number they read.

An item is ``(image, target)``: ``image`` a uint8 tensor of shape (1, 28, 56) with values
0..255 (bright ink on black, as in MNIST), the left digit in columns 0..27 and the right digit
in columns 28..55; ``target`` the int ``10 * left + right`` (3|7 -> 37, 0|5 -> 5).

All digits of a split live in memory as one uint8 tensor ``digits`` (N, 28, 28); a pair is two
indices into it (``pairs``), and :meth:`PairingMixin.get_batch` assembles a whole batch by
tensor indexing. The pairing code is one mixin shared by :class:`PairedMNIST` (reads the IDX
files), :class:`PairedDataset` (any in-memory digits, e.g. from FashionMNIST or KMNIST via
:meth:`PairedDataset.from_dataset`) and, when torchvision is installed,
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

from pairflow.data.pairing import (
    NUM_PAIR_CLASSES,
    draw_pairs,
    normalize_labels,
    pairing_rng,
)

__all__ = ["PairingMixin", "PairedDataset", "PairedMNIST"]

_STATE_VERSION = 1


def _labels_checksum(digit_labels: torch.Tensor) -> str:
    return hashlib.sha1(digit_labels.to(torch.int64).numpy().tobytes()).hexdigest()[:16]


class PairingMixin:
    """Deterministic pairing of in-memory digits, shared by every paired dataset.

    A subclass sets ``self.digits`` (N, H, W) uint8 and ``self.digit_labels`` (N,) int64,
    then calls :meth:`_init_pairing`. Pairs are a pure function of ``(seed, epoch)`` for the
    training split and of ``seed`` alone for the test split (whatever the epoch), so test
    metrics compare across runs.

    Attributes:
        digits: uint8 tensor (N, H, W), the source digits.
        digit_labels: int64 tensor (N,), their labels 0..9.
        pairs: int64 tensor (num_pairs, 2), source indices (left, right) of each pair.
        targets: int64 tensor (num_pairs,), ``10 * label[left] + label[right]``.
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
    ) -> None:
        if self.digits.dtype != torch.uint8 or self.digits.dim() != 3:
            raise ValueError(
                f"digits must be a uint8 tensor (N, H, W), got {self.digits.dtype} of shape "
                f"{tuple(self.digits.shape)}"
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
        self.train = bool(train)
        self.seed = int(seed)
        self.balanced = bool(balanced)
        self.labels = normalize_labels(labels)
        if num_pairs is None:
            num_pairs = len(self.digits)
            if self.balanced:  # the largest multiple of the class count that fits, at least one
                k = len(self.labels) if self.labels else NUM_PAIR_CLASSES
                num_pairs = max(k, num_pairs // k * k)
        if int(num_pairs) <= 0:
            raise ValueError(f"num_pairs must be a positive int, got {num_pairs}")
        self.num_pairs = int(num_pairs)
        self.epoch = 0
        self._redraw()

    # -- pairing -------------------------------------------------------------------------

    def _redraw(self) -> None:
        draw_epoch = self.epoch if self.train else 0  # test pairs never change
        rng = pairing_rng(self.seed, draw_epoch)
        pairs = draw_pairs(
            self.digit_labels.numpy(), self.num_pairs, rng, self.balanced, self.labels
        )
        self.pairs = torch.from_numpy(pairs)
        self.targets = (
            10 * self.digit_labels[self.pairs[:, 0]] + self.digit_labels[self.pairs[:, 1]]
        )

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
        self.labels = normalize_labels(state["labels"])
        self.epoch = int(state["epoch"])
        self._redraw()

    # -- access --------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Shape of one pair image: (1, H, 2W), (1, 28, 56) for MNIST."""
        _, h, w = self.digits.shape
        return (1, h, 2 * w)

    def get_batch(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        """Assemble pairs ``idx`` with one gather of the in-memory digits (no per-item work).

        Transforms are not applied here (only per item, in ``__getitem__``).

        Arguments:
            idx: int64 tensor (B,) (or anything ``torch.as_tensor`` takes) of pair indices.

        Returns:
            ``(images, targets)``: uint8 tensor (B, 1, H, 2W) with values 0..255, left digit
            in columns 0..W-1; int64 tensor (B,) of pair labels.

        Example:
            >>> images, targets = dataset.get_batch(torch.arange(256))  # doctest: +SKIP
            >>> images.shape  # doctest: +SKIP
            torch.Size([256, 1, 28, 56])
        """
        idx = torch.as_tensor(idx, dtype=torch.int64).numpy()
        if idx.ndim != 1:
            raise ValueError(f"get_batch takes a 1-D tensor of pair indices, got shape {idx.shape}")
        pairs = self.pairs.numpy()[idx]  # (B, 2)
        digits = self.digits.numpy()  # (N, H, W), shares memory
        b, (_, h, w) = len(pairs), digits.shape
        # A numpy gather straight into the two halves of the output. Measured on the 2 shared
        # cores here, torch's index_select + cat is as fast on an idle machine but collapses
        # (10-50x) when its intra-op threads compete with other processes; numpy's gather is
        # single-threaded and steady (see benchmarks/data_throughput.py).
        out = np.empty((b, h, 2, w), dtype=np.uint8)
        out[:, :, 0] = digits[pairs[:, 0]]  # left digit
        out[:, :, 1] = digits[pairs[:, 1]]  # right digit
        images = torch.from_numpy(out).view(b, 1, h, 2 * w)  # (B, 1, H, 2W)
        return images, torch.from_numpy(self.targets.numpy()[idx])

    def _pair_image(self, index: int) -> torch.Tensor:
        left, right = self.pairs[index].tolist()
        return torch.cat((self.digits[left], self.digits[right]), dim=1).unsqueeze(0)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image = self._pair_image(index)  # (1, H, 2W) uint8
        target: Any = int(self.targets[index])
        if getattr(self, "transform", None) is not None:
            image = self.transform(image)
        if getattr(self, "target_transform", None) is not None:
            target = self.target_transform(target)
        return image, target

    def pair_label_counts(self) -> torch.Tensor:
        """int64 tensor (10, 10): entry [l, r] counts the pairs with left digit l, right r."""
        return torch.bincount(self.targets, minlength=NUM_PAIR_CLASSES).reshape(10, 10)

    def _pairing_repr(self) -> list[str]:
        lines = [
            f"Number of pairs: {len(self)}",
            f"Split: {'Train' if self.train else 'Test'}",
            f"Pairing: seed={self.seed}, epoch={self.epoch}, balanced={self.balanced}, "
            f"labels={list(self.labels) if self.labels else 'all'}",
        ]
        return lines


class PairedDataset(PairingMixin, Dataset):
    """Pairs of in-memory digits (any (image, label) source with labels 0..9).

    Arguments:
        digits: uint8 tensor (N, H, W) of digit images, values 0..255.
        digit_labels: int tensor (N,) of labels 0..9.
        train: training split (pairs redrawn by :meth:`set_epoch`) or test split (fixed).
        transform: applied to each item's image (a uint8 tensor (1, H, 2W)) by
            ``__getitem__``; :meth:`get_batch` never applies it.
        target_transform: applied to each item's int target by ``__getitem__``.
        num_pairs: number of pairs; default the number of digits (with ``balanced``, rounded
            down to a multiple of the number of pair classes).
        seed: pairing seed; the pairs are a pure function of (seed, epoch).
        balanced: every allowed pair class appears exactly equally often.
        labels: keep only these pair labels (an int such as 37, or a list); default all 100.

    Example:
        >>> ds = PairedDataset(digits, digit_labels, seed=0)  # doctest: +SKIP
        >>> image, target = ds[0]  # doctest: +SKIP
    """

    def __init__(
        self,
        digits: torch.Tensor,
        digit_labels: torch.Tensor,
        train: bool = True,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        num_pairs: int | None = None,
        seed: int = 0,
        balanced: bool = False,
        labels: int | Iterable[int] | None = None,
    ) -> None:
        self.digits = torch.as_tensor(digits)
        self.digit_labels = torch.as_tensor(digit_labels)
        self.transform = transform
        self.target_transform = target_transform
        self._init_pairing(
            train=train, num_pairs=num_pairs, seed=seed, balanced=balanced, labels=labels
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
        body = "\n    ".join(self._pairing_repr())
        return f"{type(self).__name__}\n    {body}"


def _to_uint8_image(image) -> torch.Tensor:
    if not isinstance(image, torch.Tensor):
        image = torch.from_numpy(np.array(image))  # PIL image or numpy array
    if image.dim() == 3 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != 2:
        raise ValueError(f"expected grayscale images (H, W) or (1, H, W), got {tuple(image.shape)}")
    if image.is_floating_point():
        image = (image * 255).round().clamp(0, 255)
    return image.to(torch.uint8)


def _digits_from_dataset(base) -> tuple[torch.Tensor, torch.Tensor]:
    data, targets = getattr(base, "data", None), getattr(base, "targets", None)
    if data is not None and targets is not None:
        data, targets = torch.as_tensor(np.asarray(data)), torch.as_tensor(np.asarray(targets))
        if data.dtype == torch.uint8 and data.dim() == 3 and len(data) == len(targets):
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
