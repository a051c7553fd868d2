"""Real photos to check and measure renders on: scikit-image's sample pictures as uint8 BGR
(OpenCV's order, what the graph takes). Numpy only, so ``bokeh-bench`` can use them without
torch."""

from __future__ import annotations

import numpy as np

PHOTO_NAMES = ("astronaut", "coffee", "chelsea", "motorcycle")


def sample_photos() -> dict[str, np.ndarray]:
    """``PHOTO_NAMES`` as H x W x 3 uint8 BGR (the motorcycle is the left stereo view);
    ImportError when scikit-image is not installed."""
    from skimage import data

    photos = {}
    for name in PHOTO_NAMES:
        rgb = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
        photos[name] = np.ascontiguousarray(rgb[..., ::-1])
    return photos
