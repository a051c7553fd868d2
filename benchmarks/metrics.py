"""Image quality metrics on uint8 pictures, numpy only (scikit-image for the protocol's SSIM).

Two different SSIMs live in this toolkit, and the names say which:
- ``protocol_ssim`` here: the evaluation protocol of the paper's author (scikit-image's default
  7x7 uniform window on each channel, averaged, data range 255), used by training's validation
  and ``bokeh-bench quality``, so their numbers compare with the paper's;
- ``dbsi.train.losses.gaussian_ssim``: the differentiable 11x11 Gaussian (sigma 1.5) SSIM whose
  negative is phase 3's training loss.

``psnr`` is the one PSNR: the protocol's (scikit-image computes the same 10 log10(255^2/MSE)),
the parity checks' and the benchmarks'.
"""

from __future__ import annotations

import math

import numpy as np


def psnr(reference: np.ndarray, candidate: np.ndarray) -> float:
    """PSNR in dB of two uint8 images or batches of the same shape, data range 255; ``inf``
    for identical ones (a mean over images that holds one is ``inf`` too)."""
    if reference.shape != candidate.shape:
        raise ValueError(f"shapes differ: {reference.shape} and {candidate.shape}")
    mse = float(np.mean((reference.astype(np.float64) - candidate.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def protocol_ssim(reference: np.ndarray, candidate: np.ndarray) -> float:
    """SSIM of two H x W x 3 uint8 images by the paper author's protocol: scikit-image's
    default 7x7 uniform window on each channel, averaged, data range 255."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(reference, candidate, channel_axis=2, data_range=255))
