"""Generated scenes of coloured shapes, each with its true caption.

A scene is a 32x32 RGB image with one shape, or two side by side, on a dark
noisy background. Its caption names each shape's size, colour and kind, left
to right: ``a large red circle`` or ``a small blue square left of a large
yellow triangle``. Everything follows from the seed; nothing is downloaded.
"""
from __future__ import annotations

import numpy as np

SIDE = 32
COLOURS = {
    "red": (0.9, 0.15, 0.1),
    "green": (0.15, 0.8, 0.2),
    "blue": (0.2, 0.35, 0.95),
    "yellow": (0.95, 0.85, 0.1),
    "white": (0.95, 0.95, 0.95),
}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": 8, "large": 14}
WORDS = ("a", "left", "of", *SIZES, *COLOURS, *SHAPES)


def _mask(shape: str, size: int) -> np.ndarray:
    """A ``size`` x ``size`` boolean mask of the shape."""
    y, x = np.mgrid[0:size, 0:size] + 0.5
    if shape == "circle":
        return (x - size / 2) ** 2 + (y - size / 2) ** 2 <= (size / 2) ** 2
    if shape == "square":
        return np.ones((size, size), dtype=bool)
    return np.abs(x - size / 2) <= y / 2  # triangle, apex up


def _draw(image: np.ndarray, rng, obj: tuple[str, str, str], x_range: tuple[int, int]) -> None:
    size_name, colour, shape = obj
    size = SIZES[size_name]
    x0 = rng.integers(x_range[0], max(x_range[0], x_range[1] - size) + 1)
    y0 = rng.integers(1, SIDE - size)
    tint = np.asarray(COLOURS[colour]) * rng.uniform(0.85, 1.0)
    image[y0 : y0 + size, x0 : x0 + size][_mask(shape, size)] = tint


def _random_object(rng) -> tuple[str, str, str]:
    return (
        list(SIZES)[rng.integers(len(SIZES))],
        list(COLOURS)[rng.integers(len(COLOURS))],
        SHAPES[rng.integers(len(SHAPES))],
    )


def caption_of(objects: list[tuple[str, str, str]]) -> str:
    return " left of ".join("a " + " ".join(obj) for obj in objects)


def generate(count: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """``count`` scenes (uint8, N x 32 x 32 x 3) and their true captions."""
    rng = np.random.default_rng(seed)
    images = np.empty((count, SIDE, SIDE, 3), dtype=np.uint8)
    captions = []
    for i in range(count):
        image = rng.uniform(0.0, 0.12, size=(SIDE, SIDE, 3))
        objects = [_random_object(rng) for _ in range(rng.integers(1, 3))]
        halves = [(1, SIDE - 1)] if len(objects) == 1 else [(0, SIDE // 2), (SIDE // 2, SIDE)]
        for obj, x_range in zip(objects, halves):
            _draw(image, rng, obj, x_range)
        image += rng.normal(0.0, 0.04, size=image.shape)
        images[i] = np.clip(image * 255, 0, 255).astype(np.uint8)
        captions.append(caption_of(objects))
    return images, captions
