"""Training losses: L1 for phases 1-2, -SSIM for phase 3 (docs/DESIGN.md section 1).

The SSIM is the usual differentiable one: an 11x11 Gaussian window with sigma 1.5, constants
K1 = 0.01, K2 = 0.03 for data in [0, 1], population (not sample) covariances, mean over the
pixels whose window fits inside the image and over channels. That is exactly scikit-image's
``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
data_range=1)``, which filters with the same window and then crops its border away.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # scikit-image: int(truncate * sigma + 0.5) with truncate 3.5
K1, K2 = 0.01, 0.03


def l1_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (output - target).abs().mean()


def ssim_window(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The separable 1-D Gaussian taps, 1 x 1 x 1 x 11."""
    x = torch.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=torch.float64)
    taps = torch.exp(-(x**2) / (2 * SSIM_SIGMA**2))
    return (taps / taps.sum()).to(dtype=dtype, device=device).view(1, 1, 1, -1)


def gaussian_filter_valid(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian over each channel, keeping only windows inside the image."""
    channels = x.shape[1]
    rows = taps.expand(channels, 1, 1, -1)
    x = F.conv2d(x, rows, groups=channels)
    return F.conv2d(x, rows.transpose(2, 3), groups=channels)


def gaussian_ssim(
    output: torch.Tensor, target: torch.Tensor, data_range: float = 1.0
) -> torch.Tensor:
    """The training SSIM (11x11 Gaussian window, sigma 1.5; differentiable): mean SSIM per
    image (N values) of N x C x H x W batches; H, W >= 11. Not the evaluation protocol's SSIM
    (``dbsi.train.metrics.protocol_ssim``)."""
    if min(output.shape[-2:]) < 2 * SSIM_RADIUS + 1:
        raise ValueError(f"SSIM needs images of at least 11x11, got {tuple(output.shape[-2:])}")
    output, target = output.float(), target.float()
    taps = ssim_window(output.dtype, output.device)
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    # One filter call for the five moments: stack them on the channel axis.
    channels = output.shape[1]
    moments = gaussian_filter_valid(
        torch.cat([output, target, output * output, target * target, output * target], 1), taps
    )
    mu_x, mu_y, xx, yy, xy = moments.split(channels, dim=1)
    var_x, var_y, cov = xx - mu_x * mu_x, yy - mu_y * mu_y, xy - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    denominator = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return (numerator / denominator).flatten(1).mean(1)


def negative_ssim_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Phase 3's loss, -SSIM averaged over the batch (its gradient is 1 - SSIM's)."""
    return -gaussian_ssim(output, target).mean()


LOSSES = {"l1": l1_loss, "ssim": negative_ssim_loss}
