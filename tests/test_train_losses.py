"""The differentiable SSIM matches scikit-image's Gaussian SSIM on real photos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from dbsi.train.losses import gaussian_ssim, negative_ssim_loss
from tests.conftest import real_photo


def as_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image.astype(np.float32) / 255).permute(2, 0, 1)[None]


def skimage_gaussian_ssim(a: np.ndarray, b: np.ndarray) -> float:
    return structural_similarity(
        a.astype(np.float64) / 255,
        b.astype(np.float64) / 255,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1,
        channel_axis=2,
    )


@pytest.mark.parametrize(
    "name, degrade",
    [
        ("astronaut", lambda im: cv2.GaussianBlur(im, (9, 9), 0)),
        ("coffee", lambda im: cv2.GaussianBlur(im, (25, 25), 0)),
        (
            "chelsea",
            lambda im: np.clip(
                im + np.random.default_rng(0).normal(0, 12, im.shape), 0, 255
            ).astype(np.uint8),
        ),
        (
            "motorcycle",
            lambda im: cv2.resize(cv2.resize(im, None, fx=0.25, fy=0.25), im.shape[1::-1]),
        ),
    ],
)
def test_ssim_matches_scikit_image_on_real_photos(name, degrade):
    photo = real_photo(name)[:256, :320]
    degraded = degrade(photo)
    ours = gaussian_ssim(as_tensor(photo), as_tensor(degraded)).item()
    assert abs(ours - skimage_gaussian_ssim(photo, degraded)) < 1e-4


def test_ssim_of_an_image_with_itself_is_one():
    photo = as_tensor(real_photo("rocket")[:64, :64])
    assert gaussian_ssim(photo, photo).item() == pytest.approx(1.0, abs=1e-6)


def test_negative_ssim_loss_gives_gradients_that_raise_ssim():
    target = as_tensor(real_photo("astronaut")[:64, :64])
    output = cv2.GaussianBlur(real_photo("astronaut")[:64, :64], (7, 7), 0)
    output = as_tensor(output).requires_grad_(True)
    loss = negative_ssim_loss(output, target)
    loss.backward()
    stepped = (output - 0.5 * output.grad).detach()
    assert gaussian_ssim(stepped, target).item() > -loss.item()
