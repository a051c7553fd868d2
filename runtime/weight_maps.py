"""The weight maps as one colour picture, in the spirit of the paper's Fig. 6.

The n+1 softmax maps sum to 1 at every pixel, so colouring map i with a fixed colour c_i and
summing, sum_i W_i * c_i, gives each pixel the mix of its layers: map 0 (the sharp image) is
white, the blurred layers run from yellow (smallest kernel) through red to blue (largest).
"""

from __future__ import annotations

import cv2
import numpy as np

SHARP_COLOUR_BGR = (255, 255, 255)
# Appended to an output's stem for its weight picture: ``a.jpg`` -> ``a.weights.png``.
WEIGHTS_SUFFIX = ".weights.png"


def palette(num_maps: int) -> np.ndarray:
    """(num_maps, 3) BGR float colours: white for the sharp map, then hues from yellow (60 deg)
    to blue (240 deg) going through red, for blur kernels from smallest to largest."""
    blurs = num_maps - 1
    hues = [60.0] if blurs == 1 else list(np.linspace(60.0, -120.0, blurs) % 360.0)
    hsv = np.array([[[h / 2.0, 255, 255] for h in hues]], dtype=np.uint8)  # OpenCV hue is 0..180
    colours = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0].astype(np.float32)
    return np.vstack([np.array([SHARP_COLOUR_BGR], dtype=np.float32), colours])


def colour_weights(weights: np.ndarray) -> np.ndarray:
    """(n+1) x H x W float weights -> H x W x 3 uint8 BGR picture."""
    if weights.ndim != 3:
        raise ValueError(f"weights must be (n+1) x H x W, got shape {weights.shape}")
    colours = palette(weights.shape[0])
    mixed = np.tensordot(np.clip(weights, 0.0, 1.0), colours, axes=([0], [0]))
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
