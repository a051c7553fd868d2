"""Decoding and encoding in the runtime: orientation, grey, alpha, bit depth, broken files."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest

from dbsi.runtime.images import (
    ImageError,
    Picture,
    decode_image,
    encode_image,
    exif_orientation,
    jpeg_is_truncated,
    read_image,
)
from dbsi.runtime.weight_maps import colour_weights, palette
from tests.conftest import real_photo

Image = pytest.importorskip("PIL.Image", reason="Pillow writes the EXIF test files")


def _encode(image: np.ndarray, suffix: str) -> bytes:
    ok, data = cv2.imencode(suffix, image)
    assert ok
    return data.tobytes()


def _with_orientation(rgb: np.ndarray, orientation: int, fmt: str) -> bytes:
    """A picture written by Pillow with an EXIF orientation tag (as cameras write them)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    options = {"quality": 98} if fmt == "JPEG" else {}
    Image.fromarray(rgb).save(buffer, fmt, exif=exif.tobytes(), **options)
    return buffer.getvalue()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_exif_orientation_matches_what_imread_color_shows(orientation):
    rgb = real_photo("chelsea")[:120, :200]
    data = _with_orientation(rgb, orientation, "JPEG")
    expected = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    picture = decode_image(data)
    assert picture.bgr.shape == expected.shape
    np.testing.assert_array_equal(picture.bgr, expected)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF"])
def test_exif_rotation_is_applied_once_in_every_format(fmt):
    rgb = real_photo("coffee")[:60, :100]
    data = _with_orientation(rgb, 6, fmt)
    picture = decode_image(data)
    assert picture.bgr.shape == (100, 60, 3)
    if fmt != "WEBP":  # lossless formats: the pixels are exactly the rotated original
        expected = cv2.rotate(rgb[:, :, ::-1], cv2.ROTATE_90_CLOCKWISE)
        np.testing.assert_array_equal(picture.bgr, expected)


def test_exif_orientation_parser_reads_both_byte_orders_and_ignores_junk():
    little = b"II*\x00\x08\x00\x00\x00\x01\x00\x12\x01\x03\x00\x01\x00\x00\x00\x08\x00\x00\x00"
    big = b"MM\x00*\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01\x00\x03\x00\x00"
    assert exif_orientation(little) == 8
    assert exif_orientation(big) == 3
    assert exif_orientation(b"not exif at all") == 1
    assert exif_orientation(little[:12]) == 1


def test_grey_picture_becomes_three_equal_channels():
    grey = real_photo("coffee")[:, :, 1]
    picture = decode_image(_encode(grey, ".png"))
    assert picture.bgr.shape == (*grey.shape, 3)
    assert picture.alpha is None
    for channel in range(3):
        np.testing.assert_array_equal(picture.bgr[:, :, channel], grey)


def test_alpha_is_split_off_and_written_back_unchanged():
    bgr = real_photo("astronaut")[:64, :96, ::-1]
    alpha = np.tile(np.arange(96, dtype=np.uint8) * 2, (64, 1))
    picture = decode_image(_encode(np.dstack([bgr, alpha]), ".png"))
    np.testing.assert_array_equal(picture.bgr, bgr)
    np.testing.assert_array_equal(picture.alpha, alpha)
    for suffix in (".png", ".tiff", ".webp"):
        again = cv2.imdecode(
            np.frombuffer(encode_image(picture, suffix, quality=90), np.uint8),
            cv2.IMREAD_UNCHANGED,
        )
        np.testing.assert_array_equal(again[:, :, 3], alpha)


def test_alpha_into_jpeg_is_refused_rather_than_dropped():
    picture = Picture(np.zeros((8, 8, 3), np.uint8), np.full((8, 8), 7, np.uint8))
    with pytest.raises(ImageError, match="alpha channel.*--format png"):
        encode_image(picture, ".jpg")


def test_sixteen_bit_picture_is_refused_with_the_reason():
    deep = (real_photo("coffee")[:32, :32].astype(np.uint16) * 257)[:, :, ::-1]
    with pytest.raises(ImageError, match="16-bit.*8-bit"):
        decode_image(_encode(deep, ".png"))


def test_zero_byte_text_and_truncated_files_are_refused():
    with pytest.raises(ImageError, match="empty file"):
        decode_image(b"")
    with pytest.raises(ImageError, match="not a decodable image"):
        decode_image(b"this is a text file, named .jpg by mistake\n")
    jpeg = _encode(real_photo("chelsea")[:, :, ::-1], ".jpg")
    with pytest.raises(ImageError, match="truncated JPEG"):
        decode_image(jpeg[: len(jpeg) // 2])


def test_truncation_check_accepts_whole_jpegs_with_trailers_and_restart_markers():
    photo = real_photo("coffee")[:, :, ::-1]
    ok, progressive = cv2.imencode(
        ".jpg", photo, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1, cv2.IMWRITE_JPEG_RST_INTERVAL, 4]
    )
    progressive = progressive.tobytes()
    assert not jpeg_is_truncated(progressive)
    assert not jpeg_is_truncated(progressive + b"camera trailer \xff\xd8 bytes")
    assert jpeg_is_truncated(progressive[:-2])


def test_missing_file_is_reported_as_unreadable(tmp_path):
    (tmp_path / "ghost.jpg").symlink_to(tmp_path / "nowhere.jpg")
    with pytest.raises(ImageError, match="cannot read"):
        read_image(tmp_path / "ghost.jpg")


def test_weight_picture_mixes_fixed_colours_by_weight():
    weights = np.zeros((4, 2, 3), np.float32)
    weights[0, 0, 0] = 1.0  # all sharp: white
    weights[3, 0, 1] = 1.0  # all largest blur: blue
    weights[:, 1, :] = 0.25  # even mix: the mean colour
    picture = colour_weights(weights)
    assert picture.shape == (2, 3, 3) and picture.dtype == np.uint8
    np.testing.assert_array_equal(picture[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(picture[0, 1], [255, 0, 0])
    np.testing.assert_allclose(picture[1, 1], palette(4).mean(axis=0), atol=1)
