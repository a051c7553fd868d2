"""The blur bank equals OpenCV's GaussianBlur with sigma 0 and its default border."""

import cv2
import numpy as np
import pytest
import torch

from dbsi.train import GaussianBlurBank, opencv_gaussian_sigma
from tests.conftest import real_photo


def test_sigma_follows_opencv_rule_for_paper_kernels():
    assert [round(opencv_gaussian_sigma(k), 2) for k in (25, 45, 75)] == [4.1, 7.1, 11.6]


@pytest.mark.parametrize("sizes", [(25, 45, 75), (5, 25, 45), (75,), (3, 11)])
def test_each_blur_matches_cv2_gaussian_blur(sizes):
    photo = real_photo("astronaut")[::3, ::3].astype(np.float32) / 255  # 171x171
    photo = np.ascontiguousarray(photo[:, :150])  # non-square
    bank = GaussianBlurBank(sizes)
    with torch.no_grad():
        blurred = bank(torch.from_numpy(photo).permute(2, 0, 1)[None])
    for k, out in zip(sizes, blurred):
        expected = cv2.GaussianBlur(photo, (k, k), 0)
        got = out[0].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0, err_msg=f"kernel {k}")


def test_blur_refuses_image_smaller_than_its_reflect_pad():
    with pytest.raises(ValueError, match="at least 38"):
        GaussianBlurBank((25, 45, 75))(torch.rand(1, 3, 37, 100))


def test_even_kernel_size_is_rejected():
    with pytest.raises(ValueError, match="odd"):
        GaussianBlurBank((24,))
