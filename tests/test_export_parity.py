"""Parity statistics and their thresholds (dbsi.export.parity)."""

import math

import numpy as np
import pytest

from dbsi.export.parity import PARITY_THRESHOLDS, parity_failures, parity_stats


def photo_like(shape=(2, 40, 60, 3), seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_identical_images_have_zero_error_and_infinite_psnr():
    image = photo_like()
    stats = parity_stats(image, image.copy())
    assert stats["max_abs_error"] == 0
    assert stats["share_over_1_level"] == 0
    assert math.isinf(stats["psnr_db"])
    assert stats["pixels"] == 2 * 40 * 60


def test_a_pixel_counts_as_off_when_any_channel_is_off_by_more_than_one_level():
    reference = np.full((1, 10, 10, 3), 100, np.uint8)
    candidate = reference.copy()
    candidate[0, 0, 0, 2] = 102  # one channel of one pixel, 2 levels
    candidate[0, 5, 5, :] = 101  # 1 level: still in parity
    stats = parity_stats(reference, candidate)
    assert stats["max_abs_error"] == 2
    assert stats["share_over_1_level"] == pytest.approx(1 / 100)


def test_psnr_follows_the_mean_squared_error_in_levels():
    reference = np.full((1, 8, 8, 3), 50, np.uint8)
    candidate = reference + np.uint8(5)  # every value off by 5: MSE 25
    assert parity_stats(reference, candidate)["psnr_db"] == pytest.approx(
        10 * math.log10(255**2 / 25)
    )


def test_differences_do_not_wrap_around_uint8():
    reference = np.zeros((1, 4, 4, 3), np.uint8)
    candidate = np.full((1, 4, 4, 3), 255, np.uint8)
    assert parity_stats(reference, candidate)["max_abs_error"] == 255


def test_fp32_passes_one_level_everywhere_and_fails_three_levels_anywhere():
    reference = photo_like()
    one_off = np.clip(reference.astype(int) + 1, 0, 255).astype(np.uint8)
    assert parity_failures(parity_stats(reference, one_off), "fp32") == []
    three_off = reference.copy()
    three_off[0, 0, 0, 0] = (int(reference[0, 0, 0, 0]) + 3) % 256
    failures = parity_failures(parity_stats(reference, three_off), "fp32")
    assert any("max abs error" in f for f in failures)


def test_fp32_fails_when_more_than_a_thousandth_of_pixels_are_two_levels_off():
    reference = np.full((1, 100, 100, 3), 100, np.uint8)
    candidate = reference.copy()
    candidate[0, 0, :11, 0] = 102  # 11 of 10,000 pixels
    failures = parity_failures(parity_stats(reference, candidate), "fp32")
    assert failures and "pixels off by more than 1 level" in failures[0]
    candidate[0, 0, 10, 0] = 100  # 10 of 10,000: exactly the limit
    assert parity_failures(parity_stats(reference, candidate), "fp32") == []


def test_fp16_judges_by_psnr_of_forty_db():
    assert PARITY_THRESHOLDS["fp16"]["min_psnr_db"] == 40.0
    reference = np.full((1, 20, 20, 3), 100, np.uint8)
    near = reference.copy()
    near[0, :, :, 0] = 102  # MSE 4/3: 46.9 dB
    far = reference + np.uint8(3)  # MSE 9: 38.6 dB
    assert parity_failures(parity_stats(reference, near), "fp16") == []
    assert parity_failures(parity_stats(reference, far), "fp16") != []


def test_mismatched_shapes_and_types_are_refused():
    image = photo_like()
    with pytest.raises(ValueError, match="shapes differ"):
        parity_stats(image, image[:1])
    with pytest.raises(ValueError, match="uint8"):
        parity_stats(image, image.astype(np.float32))
    with pytest.raises(ValueError, match="unknown precision"):
        parity_failures(parity_stats(image, image), "int8")
