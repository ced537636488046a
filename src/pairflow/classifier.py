"""The judge: a small CNN that reads both images of a pair (a 28x56 MNIST pair, by default).

One 10-way class network is applied to each half (28x28, or 32x32 RGB for CIFAR-10), so a
pair is read as ``10 * left + right``. Its penultimate activations (the two halves' vectors,
concatenated) are the feature space of :mod:`pairflow.metrics` (the pairs analogue of
Inception features). It is trained on real training pairs of one dataset only and never
used as a training signal for a generator; its config names that dataset and image shape.

Weights trained by ``pairflow classifier train`` ship in ``pairflow/weights/``:
``classifier.pt`` for MNIST and ``classifier-fashion-mnist.pt`` for Fashion-MNIST
(:data:`SHIPPED_WEIGHTS`); :func:`load_classifier` returns the one for a dataset by default.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "pair_labels",
    "ClassifierConfig",
    "PairClassifier",
    "DEFAULT_WEIGHTS",
    "SHIPPED_WEIGHTS",
    "classifier_config_for",
    "load_classifier",
    "save_classifier",
    "train_classifier",
    "evaluate_classifier",
]

_WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_WEIGHTS = _WEIGHTS_DIR / "classifier.pt"
# The shipped classifier of each dataset (CIFAR-10's is trained where its data exists).
SHIPPED_WEIGHTS: dict[str, Path] = {
    "mnist": DEFAULT_WEIGHTS,
    "fashion-mnist": _WEIGHTS_DIR / "classifier-fashion-mnist.pt",
    "cifar10": _WEIGHTS_DIR / "classifier-cifar10.pt",
}

# Pixel statistics of each dataset's training images (0..1 scale), for standardisation.
_PIXEL_STATS = {"mnist": (0.1307, 0.3081), "fashion-mnist": (0.2860, 0.3530)}
_PIXEL_STATS["cifar10"] = (0.4734, 0.2516)  # over all three channels (Krizhevsky's set)
_MNIST_MEAN = 0.1307 * 255
_MNIST_STD = 0.3081 * 255


@dataclass
class ClassifierConfig:
    """Sizes of :class:`PairClassifier` and the images it reads.

    Attributes:
        channels: output channels of the three convolution stages (28 -> 14 -> 7 -> 3).
        hidden: width of the penultimate layer per digit; the pair feature has 2 * hidden.
        dataset: the dataset it is trained on (``"mnist"``, ``"fashion-mnist"``, ``"cifar10"``).
        in_channels: channels of the images (1, or 3 for CIFAR-10).
        image_size: ``(H, W)`` of one half of a pair (28x28, or 32x32 for CIFAR-10).
        mean, std: pixel statistics (0..255 scale) used to standardise the inputs.
    """

    channels: tuple[int, int, int] = (16, 32, 64)
    hidden: int = 64
    dataset: str = "mnist"
    in_channels: int = 1
    image_size: tuple[int, int] = (28, 28)
    mean: float = _MNIST_MEAN
    std: float = _MNIST_STD

    def __post_init__(self):
        self.channels = tuple(int(c) for c in self.channels)
        self.image_size = tuple(int(v) for v in self.image_size)
        if len(self.channels) != 3 or min(self.channels) < 1 or self.hidden < 1:
            raise ValueError(
                f"channels must be three positive ints and hidden positive, got "
                f"channels={self.channels}, hidden={self.hidden}"
            )
        if len(self.image_size) != 2 or min(self.image_size) < 8 or self.in_channels < 1:
            raise ValueError(
                f"image_size must be (H, W) of at least 8x8 and in_channels positive, got "
                f"image_size={self.image_size}, in_channels={self.in_channels}"
            )

    @property
    def pair_shape(self) -> tuple[int, int, int]:
        """The input shape (C, H, 2W): (1, 28, 56) for MNIST pairs."""
        h, w = self.image_size
        return (self.in_channels, h, 2 * w)


def classifier_config_for(dataset: str, **sizes: Any) -> ClassifierConfig:
    """The :class:`ClassifierConfig` for ``dataset``'s images (shape and pixel statistics).

    Arguments:
        dataset: a name in :data:`pairflow.data.DATASETS`.
        sizes: ``channels`` and ``hidden``, if not the defaults.
    """
    from pairflow.data.datasets import get_dataset

    spec = get_dataset(dataset)
    mean, std = _PIXEL_STATS[spec.name]
    return ClassifierConfig(
        **sizes,
        dataset=spec.name,
        in_channels=spec.channels,
        image_size=(spec.height, spec.width),
        mean=mean * 255,
        std=std * 255,
    )


def _conv(c_in: int, c_out: int) -> list[nn.Module]:
    # In-place ReLU: the network is memory-bound on CPU at this size (saves ~10% in eval).
    return [
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class PairClassifier(nn.Module):
    """Digit-pair classifier: a shared 10-way CNN applied to the left and right halves.

    Inputs are pixel values 0..255 (uint8 or float), shape (B, C, H, 2W) (``config.pair_shape``:
    (B, 1, 28, 56) for MNIST), like every image in pairflow; they are standardised inside.

    Arguments:
        config: the sizes; ``ClassifierConfig()`` by default.

    Example:
        >>> clf = PairClassifier().eval()
        >>> x = torch.randint(0, 256, (4, 1, 28, 56), dtype=torch.uint8)
        >>> clf(x).shape, clf.features(x).shape, clf.predict_pairs(x).shape
        (torch.Size([4, 2, 10]), torch.Size([4, 128]), torch.Size([4]))
    """

    def __init__(self, config: ClassifierConfig | None = None):
        super().__init__()
        self.config = config = config or ClassifierConfig()
        c1, c2, c3 = config.channels
        h, w = config.image_size
        self.body = nn.Sequential(
            *_conv(config.in_channels, c1),
            *_conv(c1, c2),
            nn.MaxPool2d(2),  # 28 -> 14 (32 -> 16)
            *_conv(c2, c3),
            nn.MaxPool2d(2),  # 14 -> 7 (16 -> 8)
            *_conv(c3, c3),
            nn.MaxPool2d(2),  # 7 -> 3 (8 -> 4)
            nn.Flatten(),
            nn.Linear(c3 * (h // 8) * (w // 8), config.hidden),
            nn.ReLU(),
        )
        self.head = nn.Linear(config.hidden, 10)

    @property
    def num_features(self) -> int:
        """Dimension F of :meth:`features`: both halves' penultimate vectors."""
        return 2 * self.config.hidden

    def _digit_features(self, x: Tensor) -> Tensor:
        """Penultimate activations of each half, (B, 2, hidden)."""
        shape = self.config.pair_shape
        if x.dim() != 4 or tuple(x.shape[1:]) != shape:
            raise ValueError(
                f"expected {self.config.dataset} pairs of shape (B, {', '.join(map(str, shape))})"
                f" with pixel values 0..255, got {tuple(x.shape)}"
            )
        param = next(self.parameters())
        x = (x.to(param.device, param.dtype) - self.config.mean) / self.config.std
        return self.body(_halves(x)).view(x.shape[0], 2, -1)

    def forward(self, x: Tensor) -> Tensor:
        """Digit logits, shape (B, 2, 10): ``[:, 0]`` the left digit, ``[:, 1]`` the right."""
        return self.head(self._digit_features(x))

    def features(self, x: Tensor) -> Tensor:
        """Pair features for the metrics, shape (B, 2 * hidden): left then right half."""
        return self._digit_features(x).flatten(1)

    def features_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Both :meth:`features` (B, F) and digit logits (B, 2, 10) in one pass."""
        h = self._digit_features(x)  # (B, 2, hidden)
        return h.flatten(1), self.head(h)

    def predict_pairs(self, x: Tensor) -> Tensor:
        """Predicted pair labels ``10 * left + right``, int64 (B,)."""
        return pair_labels(self(x))

    @torch.inference_mode()
    def embed(self, images: Tensor, batch_size: int = 1000) -> tuple[Tensor, Tensor]:
        """Features and digit logits of many images, in eval mode, batch by batch.

        Arguments:
            images: pixel values 0..255, (N, C, H, 2W), on any device.
            batch_size: images per forward pass.

        Returns:
            ``(features (N, F), logits (N, 2, 10))``, float32 on the CPU.
        """
        was_training = self.training
        self.eval()
        try:
            feats, logits = [], []
            for batch in images.split(batch_size):
                f, lg = self.features_and_logits(batch)
                feats.append(f.float().cpu())
                logits.append(lg.float().cpu())
        finally:
            self.train(was_training)
        if not feats:
            raise ValueError("no images to embed: got an empty tensor")
        return torch.cat(feats), torch.cat(logits)


def pair_labels(digit_logits: Tensor) -> Tensor:
    """Pair labels ``10 * left + right``, int64 (N,), from digit logits (N, 2, 10).

    Example:
        >>> pair_labels(torch.eye(10)[[3, 7]].unsqueeze(0)).tolist()
        [37]
    """
    digits = digit_logits.argmax(dim=-1)  # (N, 2)
    return 10 * digits[:, 0] + digits[:, 1]


def save_classifier(model: PairClassifier, path: str | os.PathLike, **meta: Any) -> Path:
    """Write ``{"config", "state_dict", "meta"}`` to ``path`` atomically.

    Arguments:
        model: the classifier.
        path: destination ``.pt`` file.
        meta: JSON-like facts to keep beside the weights (accuracy, command, seed ...).
    """
    from pairflow.utils import atomic_save

    config = asdict(model.config)
    config["channels"] = list(config["channels"])
    config["image_size"] = list(config["image_size"])
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return atomic_save({"config": config, "state_dict": state, "meta": meta}, path)


def load_classifier(
    path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    dataset: str = "mnist",
) -> PairClassifier:
    """Load a classifier checkpoint; the shipped weights by default. Returned in eval mode.

    Arguments:
        path: a file written by :func:`save_classifier` (``pairflow classifier train``), or
            ``None`` for the shipped one of ``dataset`` (:data:`SHIPPED_WEIGHTS`).
        device: where to put the model.
        dataset: whose shipped weights ``path=None`` means (default MNIST's).

    Returns:
        The :class:`PairClassifier`, in eval mode; its checkpoint's ``meta`` dict is at
        ``model.meta``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a classifier checkpoint, or shipped weights whose bytes are not the
            ones shipped (:class:`~pairflow.pretrained.ChecksumError`).

    Example:
        >>> clf = load_classifier()  # doctest: +SKIP
    """
    if path is None:
        from pairflow.data.datasets import get_dataset

        path = SHIPPED_WEIGHTS[get_dataset(dataset).name]
    path = Path(path)
    if not path.is_file():
        flag = "" if dataset == "mnist" else f" --dataset {dataset}"
        hint = (
            " The shipped weights are missing from this installation: reinstall pairflow, or "
            f"train them with `pairflow classifier train{flag} --out FILE` and pass that file."
            if path == DEFAULT_WEIGHTS
            else f" Train one with `pairflow classifier train{flag} --out FILE`."
        )
        raise FileNotFoundError(f"classifier checkpoint not found: {path}.{hint}")
    if path.resolve() in {p.resolve() for p in SHIPPED_WEIGHTS.values()}:
        from pairflow.pretrained import verify_shipped_file

        verify_shipped_file(path)  # the shipped bytes, or a ChecksumError naming the file
    import pickle

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        config = ClassifierConfig(**checkpoint["config"])
        state = checkpoint["state_dict"]
    except (KeyError, TypeError, RuntimeError, pickle.UnpicklingError, EOFError) as err:
        raise ValueError(
            f"{path} is not a pairflow classifier checkpoint (expected a dict with 'config' "
            f"and 'state_dict', as written by `pairflow classifier train`): {err}"
        ) from err
    model = PairClassifier(config)
    model.load_state_dict(state)
    model.meta = dict(checkpoint.get("meta", {}))
    return model.to(device).eval()


def _halves(x: Tensor) -> Tensor:
    """(B, C, H, 2W) pairs -> (2B, C, H, W) halves: left and right of each pair in turn."""
    b, c, h, w2 = x.shape
    # (B, C, H, 2W) -> (B, C, H, 2, W) -> (B, 2, C, H, W) -> (2B, C, H, W)
    return x.unflatten(-1, (2, w2 // 2)).permute(0, 3, 1, 2, 4).reshape(2 * b, c, h, w2 // 2)


def _digit_targets(targets: Tensor) -> Tensor:
    """Pair labels (B,) -> digit labels (B, 2): (left, right)."""
    return torch.stack([targets // 10, targets % 10], dim=1)


def _random_shift(x: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Shift each half by up to ``max_shift`` pixels (zero fill), (B, C, H, 2W)."""
    if max_shift == 0:
        return x
    b, c, h, w2 = x.shape
    w = w2 // 2
    halves = _halves(x)  # (2B, C, H, W)
    padded = F.pad(halves, (max_shift,) * 4)
    shifts = torch.randint(0, 2 * max_shift + 1, (2 * b, 2), generator=generator)
    rows = torch.arange(h)[None, :] + shifts[:, :1]  # (2B, H)
    cols = torch.arange(w)[None, :] + shifts[:, 1:]  # (2B, W)
    idx = torch.arange(2 * b)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx, rows[:, :, None], cols[:, None, :]]  # (2B, H, W, C)
    return out.view(b, 2, h, w, c).permute(0, 4, 2, 1, 3).reshape(b, c, h, w2)


def train_classifier(
    root: str | os.PathLike | None = None,
    epochs: int = 1,
    seed: int = 0,
    num_pairs: int | None = None,
    batch_size: int = 128,
    lr: float = 3e-3,
    max_shift: int = 2,
    config: ClassifierConfig | None = None,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] | None = print,
    dataset: str = "mnist",
) -> PairClassifier:
    """Train a :class:`PairClassifier` on real training pairs of ``dataset`` (MNIST).

    Adam with a one-cycle learning-rate schedule, cross-entropy on both digits of each pair,
    random shifts of up to ``max_shift`` pixels per half (so that slightly off-centre
    generated digits are still read correctly). Pairs are redrawn every epoch
    (``PairedMNIST.set_epoch``). The same seed gives the same weights on the same machine
    and thread count.

    Arguments:
        root: data root (the directory containing ``MNIST/raw``, or the dataset's folder).
        epochs: passes over the pairs.
        seed: seeds the weights, the pairing, the batch order and the shifts.
        num_pairs: training pairs per epoch; ``None`` for as many pairs as training digits
            (60,000: each digit appears in two pairs on average).
        batch_size: pairs per step (each pair gives two digits).
        lr: peak learning rate.
        max_shift: random translation in pixels (0 disables it).
        config: network sizes (its dataset, shape and statistics must be ``dataset``'s;
            default :func:`classifier_config_for` ``(dataset)``).
        device: where to train.
        log: called with a progress line every 100 steps and per epoch; ``None``: silence.
        dataset: ``"mnist"``, ``"fashion-mnist"`` or ``"cifar10"``.

    Returns:
        The trained classifier in eval mode.
    """
    from pairflow.data import PairedDataset, PairLoader

    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    config = config or classifier_config_for(dataset)
    if config.dataset != dataset:
        raise ValueError(f"config is for {config.dataset!r}, training on {dataset!r}")
    torch.manual_seed(seed)
    device = torch.device(device)
    model = PairClassifier(config).to(device)
    data = PairedDataset(dataset, root, train=True, num_pairs=num_pairs, seed=seed)
    loader = PairLoader(data, batch_size=batch_size, shuffle=True, drop_last=True, seed=seed)
    if len(loader) == 0:
        raise ValueError(
            f"{len(data)} training pairs make no full batch of {batch_size}: lower batch_size"
        )
    steps = epochs * len(loader)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    shift_gen = torch.Generator().manual_seed(seed + 1)
    start = time.perf_counter()
    model.train()
    step = 0
    for epoch in range(epochs):
        loader.set_epoch(epoch)  # new pairs (dataset) and a new order (loader)
        total, seen = 0.0, 0
        for images, targets in loader:  # (B, C, H, 2W) uint8, (B,) int64
            x = _random_shift(images.float(), max_shift, shift_gen).to(device)
            y = _digit_targets(targets).to(device)  # (B, 2)
            loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(targets)
            seen += len(targets)
            step += 1
            if log is not None and step % 100 == 0:
                elapsed = time.perf_counter() - start
                log(f"step {step}/{steps}: loss {loss.item():.4f} ({elapsed:.0f}s)")
        if not math.isfinite(total):
            raise FloatingPointError(f"classifier loss became {total} in epoch {epoch + 1}")
        if log is not None:
            log(
                f"epoch {epoch + 1}/{epochs}: loss {total / seen:.4f} "
                f"({time.perf_counter() - start:.0f}s)"
            )
    return model.eval()


@torch.no_grad()
def evaluate_classifier(
    model: PairClassifier,
    root: str | os.PathLike | None = None,
    num_pairs: int | None = None,
    seed: int = 0,
    batch_size: int = 1000,
) -> dict[str, float]:
    """Accuracy of ``model`` on real test pairs of the dataset it was trained on.

    Arguments:
        model: the classifier (``model.config.dataset`` says which test pairs).
        root: data root.
        num_pairs: test pairs to score; ``None`` for as many pairs as test digits (10,000).
        seed: seeds the pairing of test digits.
        batch_size: pairs per forward pass.

    Returns:
        ``{"digit_accuracy", "pair_accuracy", "num_pairs"}``: the fraction of digits read
        correctly, and of pairs with both digits right.
    """
    from pairflow.data import PairedDataset

    data = PairedDataset(model.config.dataset, root, train=False, num_pairs=num_pairs, seed=seed)
    images, targets = data.get_batch(torch.arange(len(data)))  # (N, C, H, 2W), (N,)
    _, logits = model.embed(images, batch_size=batch_size)  # (N, 2, 10)
    hits = logits.argmax(dim=-1) == _digit_targets(targets)  # (N, 2)
    return {
        "digit_accuracy": hits.double().mean().item(),
        "pair_accuracy": hits.all(dim=1).double().mean().item(),
        "num_pairs": len(data),
    }
