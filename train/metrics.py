"""Image quality metrics on uint8 pictures, numpy only (scikit-image for the protocol's SSIM).

Two different SSIMs live in this toolkit, and the names say which:
- ``protocol_ssim`` here: the evaluation protocol of the paper's author (scikit-image's default
  7x7 uniform window on each channel, averaged, data range 255), used by training's validation
  and ``bokeh-bench quality``, so their numbers compare with the paper's;
- ``dbsi.train.losses.gaussian_ssim``: the differentiable 11x11 Gaussian (sigma 1.5) SSIM whose
  negative is phase 3's training loss.

``psnr`` is the one PSNR: the protocol's (scikit-image computes the same 10 log10(255^2/MSE)),
the parity checks' and the benchmarks'.

Both take an optional mask to score a region only: ``in_focus_mask`` finds where a pair's
ground truth is the input photo itself (the in-focus subject of a synthetic pair), the region a
render mode that resamples the whole picture damages.

The module lives in ``dbsi.train``, the lowest package that scores pictures (validation), and
imports neither torch nor anything above it, so export's parity checks and ``bokeh-bench`` import
it from here.
"""

from __future__ import annotations

import math

import numpy as np

# in_focus_mask: a pixel is in focus where the ground truth differs from the input by less than
# IN_FOCUS_LEVELS grey levels on average over an IN_FOCUS_WINDOW square (JPEG noise stays below
# it, any visible blur goes above); a pair whose in-focus part is under MIN_IN_FOCUS_FRACTION of
# the picture has no in-focus score (too few pixels to mean anything).
IN_FOCUS_LEVELS = 2.0
IN_FOCUS_WINDOW = 5
MIN_IN_FOCUS_FRACTION = 0.01
# scikit-image's default SSIM window, whose half-width it crops from the map before averaging.
SSIM_WINDOW = 7


def psnr(reference: np.ndarray, candidate: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB of two uint8 images or batches of the same shape, data range 255; ``inf``
    for identical ones (a mean over images that holds one is ``inf`` too). With ``mask`` (H x W
    bool, one image), over the masked pixels only."""
    if reference.shape != candidate.shape:
        raise ValueError(f"shapes differ: {reference.shape} and {candidate.shape}")
    error = (reference.astype(np.float64) - candidate.astype(np.float64)) ** 2
    mse = float(np.mean(error if mask is None else error[mask]))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def protocol_ssim(
    reference: np.ndarray, candidate: np.ndarray, mask: np.ndarray | None = None
) -> float:
    """SSIM of two H x W x 3 uint8 images by the paper author's protocol: scikit-image's
    default 7x7 uniform window on each channel, averaged, data range 255. With ``mask`` (H x W
    bool), the mean of the SSIM map over the masked pixels (the map's border, which
    scikit-image leaves out of its mean, is left out here too)."""
    from skimage.metrics import structural_similarity

    if mask is None:
        return float(structural_similarity(reference, candidate, channel_axis=2, data_range=255))
    _, ssim_map = structural_similarity(
        reference, candidate, channel_axis=2, data_range=255, full=True
    )
    inner = np.zeros_like(mask)
    pad = SSIM_WINDOW // 2
    inner[pad:-pad, pad:-pad] = True
    return float(ssim_map.mean(axis=2)[mask & inner].mean())


def in_focus_mask(original: np.ndarray, target: np.ndarray) -> np.ndarray | None:
    """H x W bool: where the ground truth ``target`` is the input ``original`` itself (see
    IN_FOCUS_LEVELS), or None when that is under MIN_IN_FOCUS_FRACTION of the picture. Made
    for aligned pairs such as synthetic ones; a real f/16 and f/1.8 pair differs in exposure
    nearly everywhere and so usually has none."""
    from scipy.ndimage import uniform_filter

    difference = np.abs(original.astype(np.float32) - target.astype(np.float32)).mean(axis=2)
    mask = uniform_filter(difference, IN_FOCUS_WINDOW, mode="reflect") < IN_FOCUS_LEVELS
    pad = SSIM_WINDOW // 2
    inner = mask[pad:-pad, pad:-pad]
    return mask if inner.size and inner.mean() >= MIN_IN_FOCUS_FRACTION else None
