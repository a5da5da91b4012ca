"""ImageDataset: shape conversion, normalisation and the selection helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from siegecraft.core.data.image_dataset import ImageDataset


def make_dataset(
    n_per_class: int = 5, num_classes: int = 4, channels: int = 1, size: int = 28, seed: int = 0
) -> ImageDataset:
    gen = torch.Generator().manual_seed(seed)
    n = n_per_class * num_classes
    x = torch.rand(n, channels, size, size, generator=gen)
    y = torch.arange(num_classes).repeat_interleave(n_per_class)
    return ImageDataset(x, y, num_classes, "toy", [f"c{k}" for k in range(num_classes)])


def test_basic_properties_and_validation() -> None:
    ds = make_dataset()
    assert len(ds) == 20 and ds.shape == (1, 28, 28)
    assert "n=20" in repr(ds)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        ImageDataset(torch.zeros(3, 28, 28), torch.zeros(3, dtype=torch.long), 2, "bad")
    with pytest.raises(ValueError, match="y must be"):
        ImageDataset(torch.zeros(3, 1, 2, 2), torch.zeros(4, dtype=torch.long), 2, "bad")


def test_adapt_grey_to_rgb_repeats_channel_and_resizes() -> None:
    ds = make_dataset()
    out = ds.adapt(3, 32)
    assert out.shape == (3, 32, 32) and out.x.dtype == torch.float32
    assert torch.equal(out.x[:, 0], out.x[:, 1]) and torch.equal(out.x[:, 0], out.x[:, 2])
    assert 0.0 <= out.x.min() and out.x.max() <= 1.0
    assert torch.equal(out.y, ds.y) and ds.shape == (1, 28, 28)  # original untouched


def test_adapt_rgb_to_grey_uses_luma() -> None:
    x = torch.zeros(2, 3, 4, 4)
    x[0, 0] = 1.0  # pure red
    x[1] = 1.0  # white
    ds = ImageDataset(x, torch.tensor([0, 1]), 2, "rgb")
    out = ds.adapt(1, 4)
    assert out.shape == (1, 4, 4)
    assert torch.allclose(out.x[0], torch.full((1, 4, 4), 0.299))
    assert torch.allclose(out.x[1], torch.ones(1, 4, 4)) and out.x.max() <= 1.0


@pytest.mark.parametrize("size", [32, 64, 14])
def test_adapt_resize_keeps_range_and_mean(size: int) -> None:
    ds = make_dataset(channels=1, size=28)
    out = ds.adapt(1, size)
    assert out.shape == (1, size, size)
    assert out.x.min() >= 0.0 and out.x.max() <= 1.0
    # bilinear resampling preserves the mean brightness closely
    assert torch.allclose(out.x.mean(dim=(1, 2, 3)), ds.x.mean(dim=(1, 2, 3)), atol=0.02)


def test_adapt_constant_image_stays_constant_and_noop_shares_nothing_mutable() -> None:
    ds = ImageDataset(torch.full((2, 1, 8, 8), 0.5), torch.tensor([0, 1]), 2, "flat")
    assert torch.allclose(ds.adapt(3, 28).x, torch.full((2, 3, 28, 28), 0.5))
    same = ds.adapt(1, 8)
    assert same is not ds and same.shape == ds.shape
    with pytest.raises(ValueError, match="channels"):
        ds.adapt(2, 8)


def test_normalize_per_channel() -> None:
    ds = make_dataset(channels=3, size=8, n_per_class=50)
    mean, std = ds.x.mean(dim=(0, 2, 3)).tolist(), ds.x.std(dim=(0, 2, 3)).tolist()
    out = ds.normalize(mean, std)
    assert torch.allclose(out.x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(out.x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-4)
    assert ds.x.min() >= 0.0  # original untouched
    with pytest.raises(ValueError, match="normalize"):
        ds.normalize([0.5, 0.5], [0.2, 0.2])
    with pytest.raises(ValueError, match="std"):
        ds.normalize([0.5], [0.0])


def test_subset_accepts_lists_arrays_tensors_and_masks() -> None:
    ds = make_dataset()
    for idx in ([3, 0, 7], np.array([3, 0, 7]), torch.tensor([3, 0, 7])):
        sub = ds.subset(idx)
        assert len(sub) == 3 and torch.equal(sub.x[1], ds.x[0]) and sub.y.tolist() == [0, 0, 1]
    mask = ds.y == 2
    assert ds.subset(mask).y.tolist() == [2] * 5
    assert len(ds.subset([])) == 0
    assert ds.subset([1]).classes == ds.classes and ds.subset([1]).classes is not ds.classes


def test_take_per_class_is_deterministic_and_capped() -> None:
    ds = make_dataset(n_per_class=10, num_classes=3)
    a, b, c = ds.take_per_class(4, seed=1), ds.take_per_class(4, seed=1), ds.take_per_class(4, seed=2)
    assert torch.bincount(a.y).tolist() == [4, 4, 4]
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)
    assert torch.bincount(ds.take_per_class(50, seed=0).y).tolist() == [10, 10, 10]


def test_filter_classes_relabels_in_given_order() -> None:
    ds = make_dataset(n_per_class=3, num_classes=4)
    out = ds.filter_classes([3, 1])
    assert out.num_classes == 2 and out.classes == ["c3", "c1"]
    assert sorted(out.y.tolist()) == [0, 0, 0, 1, 1, 1]
    # sample that was class 3 is now label 0
    original = ds.x[ds.y == 3]
    assert torch.equal(out.x[out.y == 0], original)
    kept = ds.filter_classes([3, 1], relabel=False)
    assert set(kept.y.tolist()) == {1, 3} and kept.num_classes == 4
    with pytest.raises(ValueError, match="outside"):
        ds.filter_classes([7])
