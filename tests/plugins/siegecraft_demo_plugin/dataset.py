"""`demo_shapes`: 4 classes of noisy 12x12 strokes (horizontal, vertical, diagonal, box), drawn offline.

Every split is generated from its own fixed seed, so the data is identical on every machine and run:
60 training and 20 test images per class (240 / 80 samples).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from siegecraft.core.data.datasets import DATASETS, DatasetLoader, RawSplit

SIZE = 12
CLASSES = ["horizontal", "vertical", "diagonal", "box"]
PER_CLASS = {"train": 60, "test": 20}
SEEDS = {"train": 1234, "test": 5678}


def draw(label: int, rng: np.random.Generator) -> np.ndarray:
    """One uint8 [SIZE, SIZE] image of class `label` at a random place, on a noisy background."""
    img = rng.integers(0, 60, size=(SIZE, SIZE))
    lo, hi = rng.integers(1, 4), rng.integers(SIZE - 4, SIZE - 1)
    at = rng.integers(2, SIZE - 2)
    if label == 0:
        img[at, lo:hi] = 255
    elif label == 1:
        img[lo:hi, at] = 255
    elif label == 2:
        idx = np.arange(lo, hi)
        img[idx, idx] = 255
    else:
        img[lo, lo:hi] = img[hi - 1, lo:hi] = 255
        img[lo:hi, lo] = img[lo:hi, hi - 1] = 255
    return img.astype(np.uint8)


class ShapesLoader(DatasetLoader):
    """Generates the split in memory; nothing is read from or written to disk."""

    def locate(self, root: Path) -> str:
        return "generated in memory by siegecraft_demo_plugin"

    def decode(self, split: str, root: Path) -> RawSplit:
        rng = np.random.default_rng(SEEDS[split])
        labels = np.repeat(np.arange(len(CLASSES)), PER_CLASS[split])
        rng.shuffle(labels)
        images = np.stack([draw(int(k), rng) for k in labels])[:, None]  # [N, 1, H, W]
        return RawSplit(images, labels.astype(np.int64), 255.0, len(CLASSES), CLASSES)


DATASETS.register("demo_shapes")(ShapesLoader())
