"""Benchmark inputs: generated photo-like images of any size, and the real photos that ship
with scikit-image (with generated stand-ins when scikit-image is not installed)."""

from __future__ import annotations

import cv2
import numpy as np

from dbsi.export.photos import PHOTO_NAMES, sample_photos


def generated_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A deterministic uint8 BGR image with what the render reacts to: smooth gradients, sharp
    edges, a few discs and fine texture (plain noise would make every codec and blur look
    alike)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack(
        [
            96 + 80 * np.sin(x / width * np.pi * (1 + seed % 3)),
            96 + 80 * np.cos(y / height * np.pi * 2),
            64 + 128 * (x + y) / (height + width),
        ],
        axis=-1,
    )
    for _ in range(6):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        radius = int(
            rng.integers(max(2, min(height, width) // 20), max(3, min(height, width) // 5))
        )
        colour = tuple(float(c) for c in rng.integers(0, 256, 3))
        cv2.circle(image, centre, radius, colour, thickness=-1)
    image += rng.normal(0, 12, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def real_photos() -> tuple[dict[str, np.ndarray], bool]:
    """The scikit-image photos as uint8 BGR (``dbsi.export.photos``), and whether they are real:
    without scikit-image, generated images of similar sizes stand in (the caller must say so)."""
    try:
        return sample_photos(), True
    except ImportError:
        sizes = {
            "astronaut": (512, 512),
            "coffee": (400, 600),
            "chelsea": (300, 451),
            "motorcycle": (500, 741),
        }
        return {n: generated_image(*sizes[n], seed=i) for i, n in enumerate(PHOTO_NAMES)}, False
