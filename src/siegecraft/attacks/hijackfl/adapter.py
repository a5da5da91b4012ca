"""The hijacking task's data, loaded and adapted to the original model's input shape.

The hijacking dataset may have another size or channel count than the federation's (MNIST 28x28 grey
against a 32x32 RGB model): it is converted once with `ImageDataset.adapt`, so every later stage sees
inputs the global model accepts.
"""

from __future__ import annotations

from dataclasses import dataclass

from siegecraft.core.data.datasets import load_dataset
from siegecraft.core.data.image_dataset import ImageDataset

__all__ = ["HijackData", "adapt_to_input", "load_hijack_data"]


@dataclass
class HijackData:
    """The attacker's hijacking training samples and the hijacking test set, labels 0..K-1."""

    train: ImageDataset
    test: ImageDataset

    @property
    def num_classes(self) -> int:
        return self.train.num_classes


def adapt_to_input(ds: ImageDataset, input_shape: tuple[int, int, int]) -> ImageDataset:
    """`ds` converted to (C, H, W) = `input_shape` (1 <-> 3 channels, bilinear resize); square inputs only."""
    channels, height, width = input_shape
    if height != width:
        raise ValueError(f"hijacking data can be adapted to square inputs only, got {input_shape}")
    c, h, w = ds.shape
    if (c, h, w) == (channels, height, width):
        return ds
    return ds.adapt(channels, height)


def load_hijack_data(
    name: str,
    num_classes: int,
    input_shape: tuple[int, int, int],
    *,
    samples_per_class: int | None = None,
    test_per_class: int | None = None,
    seed: int = 0,
    data_dir: str | None = None,
) -> HijackData:
    """The first `num_classes` classes of dataset `name`, subsampled per class and adapted to the model."""
    splits = []
    for split, per_class in (("train", samples_per_class), ("test", test_per_class)):
        ds = load_dataset(name, split, data_dir=data_dir)
        if num_classes > ds.num_classes:
            raise ValueError(f"hijacking dataset {name!r} has {ds.num_classes} classes, asked for {num_classes}")
        ds = ds.filter_classes(range(num_classes))
        if per_class is not None:
            ds = ds.take_per_class(per_class, seed)
        splits.append(adapt_to_input(ds, input_shape))
    return HijackData(train=splits[0], test=splits[1])
