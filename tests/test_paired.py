"""Pairing: determinism, halves equal their sources, label arithmetic, selection, epochs,
state round trips, and the loader's batches and sharding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pairflow.data import PairedDataset, PairedMNIST, PairLoader, read_mnist
from pairflow.data.pairing import draw_pairs, pairing_rng


def check_halves(ds, images, targets, idx):
    """Every image's halves are its source digits; every target is 10*left + right."""
    for k, i in enumerate(idx.tolist()):
        left, right = ds.pairs[i].tolist()
        assert torch.equal(images[k, 0, :, :28], ds.digits[left])
        assert torch.equal(images[k, 0, :, 28:], ds.digits[right])
        expected = 10 * int(ds.digit_labels[left]) + int(ds.digit_labels[right])
        assert int(targets[k]) == expected


def test_items_and_batches(tiny_mnist_root):
    ds = PairedMNIST(tiny_mnist_root, train=True, seed=3)
    assert len(ds) == 256 and ds.pairs.shape == (256, 2) and ds.pairs.dtype == torch.int64
    image, target = ds[5]
    assert image.dtype == torch.uint8 and image.shape == (1, 28, 56) and isinstance(target, int)
    idx = torch.tensor([5, 0, 255, 17, 5])
    images, targets = ds.get_batch(idx)
    assert images.shape == (5, 1, 28, 56) and images.dtype == torch.uint8
    assert targets.dtype == torch.int64
    check_halves(ds, images, targets, idx)
    assert torch.equal(images[0], image) and int(targets[0]) == target
    assert torch.equal(
        ds.targets, 10 * ds.digit_labels[ds.pairs[:, 0]] + ds.digit_labels[ds.pairs[:, 1]]
    )


def test_label_arithmetic_explicit():
    # Digit k is a constant image of value k, label k: pairs are easy to read back.
    digits = torch.arange(10, dtype=torch.uint8).view(10, 1, 1).expand(10, 28, 28).clone()
    ds = PairedDataset(digits, torch.arange(10), labels=[5, 37, 90], balanced=True, num_pairs=30)
    images, targets = ds.get_batch(torch.arange(30))
    for image, target in zip(images, targets.tolist(), strict=True):
        left, right = int(image[0, 0, 0]), int(image[0, 0, 55])
        assert (left, right) in {(0, 5), (3, 7), (9, 0)}
        assert target == 10 * left + right  # 0|5 -> 5, 3|7 -> 37, 9|0 -> 90
    assert torch.bincount(targets, minlength=100)[[5, 37, 90]].tolist() == [10, 10, 10]


def test_transforms_apply_per_item_only(tiny_mnist_root):
    ds = PairedMNIST(
        tiny_mnist_root, transform=lambda x: x.float() / 255, target_transform=lambda t: -t
    )
    image, target = ds[0]
    assert image.dtype == torch.float32 and float(image.max()) <= 1.0
    assert target == -int(ds.targets[0])
    images, _ = ds.get_batch(torch.arange(2))
    assert images.dtype == torch.uint8


def test_deterministic_given_seed(tiny_mnist_root):
    a = PairedMNIST(tiny_mnist_root, seed=7)
    b = PairedMNIST(tiny_mnist_root, seed=7)
    c = PairedMNIST(tiny_mnist_root, seed=8)
    assert torch.equal(a.pairs, b.pairs)
    assert not torch.equal(a.pairs, c.pairs)


def test_default_uses_every_digit_once_per_side(tiny_mnist_root):
    ds = PairedMNIST(tiny_mnist_root)
    assert len(ds) == len(ds.digits)
    for side in (0, 1):
        assert torch.equal(ds.pairs[:, side].sort().values, torch.arange(len(ds.digits)))
    ds = PairedMNIST(tiny_mnist_root, num_pairs=600)
    for side in (0, 1):  # 600 = 2 * 256 + 88: each digit used 2 or 3 times
        use = torch.bincount(ds.pairs[:, side], minlength=256)
        assert use.min() >= 2 and use.max() <= 3


def test_set_epoch_redraws_train_not_test(tiny_mnist_root):
    train = PairedMNIST(tiny_mnist_root, train=True, seed=1)
    test = PairedMNIST(tiny_mnist_root, train=False, seed=1)
    train0, test0 = train.pairs.clone(), test.pairs.clone()
    train.set_epoch(1)
    test.set_epoch(1)
    assert not torch.equal(train.pairs, train0)
    assert torch.equal(test.pairs, test0) and test.epoch == 1
    train.set_epoch(0)
    assert torch.equal(train.pairs, train0)  # epoch k's pairs are a function of (seed, k)
    again = PairedMNIST(tiny_mnist_root, train=True, seed=1)
    again.set_epoch(1)
    train.set_epoch(1)
    assert torch.equal(again.pairs, train.pairs)


def test_balanced_all_classes_exactly_equal(tiny_mnist_root):
    ds = PairedMNIST(tiny_mnist_root, balanced=True)
    assert len(ds) == 200  # 256 rounded down to a multiple of 100
    assert ds.pair_label_counts().flatten().tolist() == [2] * 100
    ds = PairedMNIST(tiny_mnist_root, balanced=True, num_pairs=1000)
    assert torch.bincount(ds.targets, minlength=100).tolist() == [10] * 100
    with pytest.raises(ValueError, match="multiple of .*100.* got 250, use 200 or 300"):
        PairedMNIST(tiny_mnist_root, balanced=True, num_pairs=250)


def test_balanced_redraw_stays_balanced(tiny_mnist_root):
    ds = PairedMNIST(tiny_mnist_root, balanced=True, num_pairs=300)
    first = ds.pairs.clone()
    ds.set_epoch(4)
    assert not torch.equal(first, ds.pairs)
    assert torch.bincount(ds.targets, minlength=100).tolist() == [3] * 100
    check_halves(ds, *ds.get_batch(torch.arange(300)), torch.arange(300))


@pytest.mark.parametrize("labels", [37, [37], [5, 73]])
def test_label_selection(tiny_mnist_root, labels):
    ds = PairedMNIST(tiny_mnist_root, labels=labels, num_pairs=64)
    wanted = {labels} if isinstance(labels, int) else set(labels)
    assert set(ds.targets.tolist()) == wanted and len(ds) == 64
    check_halves(ds, *ds.get_batch(torch.arange(64)), torch.arange(64))


def test_label_selection_default_size_and_validation(tiny_mnist_root):
    assert len(PairedMNIST(tiny_mnist_root, labels=37)) == 256
    with pytest.raises(ValueError, match="0..99"):
        PairedMNIST(tiny_mnist_root, labels=[37, 100])
    with pytest.raises(ValueError, match="do not occur"):
        PairedDataset(
            torch.zeros(4, 28, 28, dtype=torch.uint8), torch.tensor([1, 1, 2, 2]), labels=33
        )


def test_unbalanced_selection_keeps_natural_frequencies():
    labels = np.array([1] * 90 + [2] * 10)
    pairs = draw_pairs(labels, 20000, pairing_rng(0, 0), labels=(11, 22))
    targets = 10 * labels[pairs[:, 0]] + labels[pairs[:, 1]]
    share_22 = (targets == 22).mean()
    assert abs(share_22 - 100 / (8100 + 100)) < 0.005  # p(2)^2 / (p(1)^2 + p(2)^2)


def test_state_dict_round_trip(tiny_mnist_root):
    ds = PairedMNIST(tiny_mnist_root, seed=5, balanced=True, num_pairs=200)
    ds.set_epoch(3)
    state = ds.state_dict()
    fresh = PairedMNIST(tiny_mnist_root)  # other seed, options and epoch
    fresh.load_state_dict(state)
    assert torch.equal(fresh.pairs, ds.pairs) and fresh.epoch == 3 and fresh.seed == 5
    ds.set_epoch(4)
    fresh.set_epoch(4)
    assert torch.equal(fresh.pairs, ds.pairs)
    with pytest.raises(ValueError, match="test split"):
        PairedMNIST(tiny_mnist_root, train=False).load_state_dict(state)
    other = PairedDataset(ds.digits[:100], ds.digit_labels[:100])
    with pytest.raises(ValueError, match="other digits"):
        other.load_state_dict(state)


def test_from_dataset_pairs_any_image_label_dataset(tiny_mnist_root):
    images, labels = read_mnist(tiny_mnist_root, train=False)

    class ItemDataset(torch.utils.data.Dataset):  # float (1, H, W) images in 0..1, no .data
        def __len__(self):
            return len(labels)

        def __getitem__(self, i):
            return images[i].unsqueeze(0).float() / 255, int(labels[i])

    class DataAttrDataset(ItemDataset):  # torchvision-style .data / .targets
        data, targets = images, labels

    a = PairedDataset.from_dataset(ItemDataset(), train=False, seed=2)
    b = PairedDataset.from_dataset(DataAttrDataset(), train=False, seed=2)
    c = PairedMNIST(tiny_mnist_root, train=False, seed=2)
    for ds in (a, b):
        assert torch.equal(ds.digits, images) and torch.equal(ds.pairs, c.pairs)
        assert torch.equal(ds.get_batch(torch.arange(9))[0], c.get_batch(torch.arange(9))[0])


def test_torchvision_subclass(tiny_mnist_root, tmp_path):
    torchvision = pytest.importorskip("torchvision")
    from pairflow.data import TorchvisionPairedMNIST

    ds = TorchvisionPairedMNIST(str(tiny_mnist_root), train=True, seed=4)
    ours = PairedMNIST(tiny_mnist_root, train=True, seed=4)
    assert isinstance(ds, torchvision.datasets.MNIST)
    assert torch.equal(ds.pairs, ours.pairs) and torch.equal(ds.targets, ours.targets)
    image, target = ds[0]
    assert image.size == (56, 28) and target == int(ours.targets[0])


def test_loader_batches_cover_the_epoch(tiny_mnist_root):
    ds = PairedMNIST(tiny_mnist_root, num_pairs=100)
    loader = PairLoader(ds, batch_size=32, seed=0)
    assert len(loader) == 4
    batches = list(loader)
    assert [len(t) for _, t in batches] == [32, 32, 32, 4]
    images, targets = batches[0]
    assert images.shape == (32, 1, 28, 56) and images.dtype == torch.uint8
    order = loader.indices()
    assert sorted(order.tolist()) == list(range(100))
    check_halves(ds, images, targets, order[:32])
    assert len(PairLoader(ds, 32, drop_last=True)) == 3
    assert len(list(PairLoader(ds, 32, drop_last=True))) == 3
    plain = PairLoader(ds, 100, shuffle=False)
    assert torch.equal(next(iter(plain))[1], ds.targets)


def test_loader_set_epoch_reshuffles_and_redraws(tiny_mnist_root):
    ds = PairedMNIST(tiny_mnist_root)
    loader = PairLoader(ds, batch_size=64, seed=1)
    order0, pairs0 = loader.indices(), ds.pairs.clone()
    assert torch.equal(order0, loader.indices())  # same epoch, same order
    loader.set_epoch(1)
    assert not torch.equal(order0, loader.indices())
    assert ds.epoch == 1 and not torch.equal(pairs0, ds.pairs)


@pytest.mark.parametrize("num_pairs,world_size", [(120, 3), (101, 4), (256, 1)])
def test_loader_sharding_disjoint_and_covering(tiny_mnist_root, num_pairs, world_size):
    ds = PairedMNIST(tiny_mnist_root, num_pairs=num_pairs)
    for epoch in (0, 1):
        shares = []
        for rank in range(world_size):
            loader = PairLoader(ds, batch_size=16, seed=9, rank=rank, world_size=world_size)
            loader.set_epoch(epoch)
            shares.append(loader.indices())
            assert sum(len(t) for _, t in loader) == len(shares[-1])
        lengths = {len(s) for s in shares}
        assert lengths == {num_pairs // world_size}  # equal steps on every rank
        union = torch.cat(shares)
        assert len(set(union.tolist())) == len(union)  # disjoint
        assert len(union) >= num_pairs - (world_size - 1)  # covers the epoch
        assert set(union.tolist()) <= set(range(num_pairs))


def test_loader_validates_arguments(tiny_mnist_root):
    ds = PairedMNIST(tiny_mnist_root)
    with pytest.raises(ValueError, match="rank must be in 0..1"):
        PairLoader(ds, 8, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        PairLoader(ds, 0)
    with pytest.raises(TypeError, match="get_batch"):
        PairLoader([1, 2, 3], 8)


@pytest.mark.mnist
def test_real_mnist_pairs(mnist_root):
    train = PairedMNIST(mnist_root, train=True, seed=0)
    test = PairedMNIST(mnist_root, train=False, seed=0)
    assert len(train) == 60000 and len(test) == 10000
    idx = torch.randint(0, 60000, (64,), generator=torch.Generator().manual_seed(0))
    check_halves(train, *train.get_batch(idx), idx)
    # Natural pairing: pair-class frequencies follow p(l) p(r) (1 gets ~11%, 5 ~9%).
    counts = train.pair_label_counts()
    assert counts.sum() == 60000 and counts.min() > 350
    balanced = PairedMNIST(mnist_root, train=False, balanced=True)
    assert len(balanced) == 10000 and balanced.pair_label_counts().unique().tolist() == [100]
    test_pairs = test.pairs.clone()
    test.set_epoch(5)
    train_pairs = train.pairs.clone()
    train.set_epoch(5)
    assert torch.equal(test.pairs, test_pairs) and not torch.equal(train.pairs, train_pairs)
    sevens = PairedMNIST(mnist_root, train=False, labels=37, num_pairs=500)
    images, targets = sevens.get_batch(torch.arange(500))
    assert set(targets.tolist()) == {37}
    check_halves(sevens, images[::50], targets[::50], torch.arange(0, 500, 50))
