"""The blur bank of eq. 1: separable Gaussians, sigma by OpenCV's rule, reflect-101 border.

Each blur equals ``cv2.GaussianBlur(img, (k, k), 0)``: the same 1-D kernel (computed in double,
normalised to sum 1), applied along rows then columns with OpenCV's default border, which is
what ``F.pad(mode="reflect")`` does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dbsi.train.config import opencv_gaussian_sigma

# OpenCV's getGaussianKernel uses these fixed binomial-like tables instead of the formula when
# sigma <= 0 and the size is 7 or less (the 5-tap ablation kernel hits this).
OPENCV_SMALL_KERNELS = {
    1: (1.0,),
    3: (0.25, 0.5, 0.25),
    5: (0.0625, 0.25, 0.375, 0.25, 0.0625),
    7: (0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125),
}


def gaussian_kernel_1d(kernel_size: int, sigma: float | None = None) -> torch.Tensor:
    """Normalised 1-D Gaussian taps; ``sigma=None`` is OpenCV's ``sigma=0``: its fixed table
    for sizes up to 7, otherwise the Gaussian with OpenCV's sigma rule."""
    if sigma is None and kernel_size in OPENCV_SMALL_KERNELS:
        return torch.tensor(OPENCV_SMALL_KERNELS[kernel_size], dtype=torch.float32)
    sigma = opencv_gaussian_sigma(kernel_size) if sigma is None else sigma
    half = (kernel_size - 1) / 2
    taps = torch.tensor(
        [math.exp(-((i - half) ** 2) / (2 * sigma * sigma)) for i in range(kernel_size)],
        dtype=torch.float64,
    )
    return (taps / taps.sum()).float()


class GaussianBlurBank(nn.Module):
    """Blur an NCHW image with each kernel size; returns one blurred image per kernel."""

    def __init__(self, kernel_sizes: Sequence[int], channels: int = 3) -> None:
        super().__init__()
        self.kernel_sizes = tuple(kernel_sizes)
        self.channels = channels
        for i, k in enumerate(self.kernel_sizes):
            if k < 3 or k % 2 == 0:
                raise ValueError(f"blur kernel size {k} is not an odd size >= 3")
            # Depthwise taps, one copy per channel: [C, 1, 1, k]. Not trained.
            taps = gaussian_kernel_1d(k).view(1, 1, 1, k).repeat(channels, 1, 1, 1)
            self.register_buffer(f"taps{i}", taps, persistent=False)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        height, width = image.shape[-2:]
        pad = max(self.kernel_sizes) // 2
        if not torch.compiler.is_compiling() and (height <= pad or width <= pad):
            raise ValueError(
                f"image {height}x{width} is too small for a {max(self.kernel_sizes)}-tap "
                f"reflect-padded blur: both sides must be at least {pad + 1}"
            )
        return [self.blur_one(image, i) for i in range(len(self.kernel_sizes))]

    def blur_one(self, image: torch.Tensor, index: int) -> torch.Tensor:
        taps = getattr(self, f"taps{index}").to(image.dtype)
        r = self.kernel_sizes[index] // 2
        # Pad each axis just before its pass: the same result as padding both at once, with
        # less work on the larger padded frame.
        rows = F.conv2d(F.pad(image, (r, r, 0, 0), mode="reflect"), taps, groups=self.channels)
        return F.conv2d(
            F.pad(rows, (0, 0, r, r), mode="reflect"), taps.transpose(2, 3), groups=self.channels
        )
