"""Training data: generated 32x32x3 images of 10 learnable classes, or CIFAR-10
read from torchvision's on-disk format (``cifar-10-batches-py``)."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

CLASSES = 10
SIDE = 32


def class_templates(seed: int) -> np.ndarray:
    """One smooth colour pattern per class: what the network must tell apart."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0.0, 1.0, size=(CLASSES, 3, 4, 4))
    return coarse.repeat(SIDE // 4, axis=2).repeat(SIDE // 4, axis=3)


def generate(count: int, seed: int, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` images (uint8, N x 32 x 32 x 3) and labels; a shifted, dimmed or
    brightened and noisy copy of its class template each."""
    templates = class_templates(seed)
    rng = np.random.default_rng([seed, split_seed])
    labels = rng.integers(0, CLASSES, size=count)
    images = templates[labels]
    shifts = rng.integers(-3, 4, size=(count, 2))
    for i, (dy, dx) in enumerate(shifts):
        images[i] = np.roll(images[i], (dy, dx), axis=(1, 2))
    images = images * rng.uniform(0.7, 1.3, size=(count, 1, 1, 1)) + rng.normal(0, 0.45, size=images.shape)
    pixels = np.clip(images * 255, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    return pixels, labels.astype(np.int64)


def cifar_dir(data_dir: str) -> Path:
    root = Path(data_dir)
    for candidate in (root, root / "cifar-10-batches-py"):
        if (candidate / "data_batch_1").is_file() and (candidate / "test_batch").is_file():
            return candidate
    raise FileNotFoundError(
        f"{data_dir} is not a CIFAR-10 directory: expected data_batch_1..5 and test_batch "
        "(torchvision's cifar-10-batches-py format) in it or in its cifar-10-batches-py folder"
    )


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="latin1")
    images = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1)
    return images, np.asarray(batch["labels"], dtype=np.int64)


def load_cifar(data_dir: str, train_count: int, test_count: int):
    folder = cifar_dir(data_dir)
    parts = [_read_batch(p) for p in sorted(folder.glob("data_batch_*"))]
    train_x = np.concatenate([x for x, _ in parts])[:train_count]
    train_y = np.concatenate([y for _, y in parts])[:train_count]
    test_x, test_y = _read_batch(folder / "test_batch")
    return (train_x, train_y), (test_x[:test_count], test_y[:test_count])
