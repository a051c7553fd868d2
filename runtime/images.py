"""Decoding and encoding pictures without losing anything the model does not touch.

Decoding keeps what ``IMREAD_UNCHANGED`` keeps (alpha, bit depth) and applies the EXIF
orientation as ``IMREAD_COLOR`` would: ``IMREAD_UNCHANGED`` ignores the orientation for JPEG,
PNG and WebP (OpenCV's TIFF decoder applies it in every mode), so the EXIF block is read with
``imdecodeWithMetadata`` and the rotation applied here. Grey pictures become 3-channel BGR; an
alpha channel is split off and written back unchanged.
"""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import cv2
import numpy as np

from dbsi.runtime.atomic import atomic_write_bytes

# Every format the toolkit reads, in training, export checks, benchmarks and bokeh-run alike.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp")
ALPHA_FORMATS = (".png", ".tif", ".tiff", ".webp")
EXIF_ORIENTATION_TAG = 0x0112
DEFAULT_QUALITY = 95


class ImageError(ValueError):
    """A picture that cannot be decoded or encoded; the message says why (callers add the
    file name)."""


@dataclasses.dataclass
class Picture:
    """A decoded picture: the 8-bit BGR the model takes, and the alpha it leaves alone."""

    bgr: np.ndarray
    alpha: np.ndarray | None = None

    @property
    def size(self) -> tuple[int, int]:
        return self.bgr.shape[0], self.bgr.shape[1]


def check_opencv() -> None:
    """ImageError when this OpenCV cannot return EXIF blocks (``imdecodeWithMetadata`` came with
    OpenCV 4.12): without them, rotated photos would silently come out sideways."""
    if not hasattr(cv2, "imdecodeWithMetadata"):
        raise ImageError(
            f"OpenCV {cv2.__version__} cannot read EXIF orientation; install "
            "opencv-python-headless>=4.12"
        )


def exif_orientation(exif: bytes) -> int:
    """The orientation tag (1..8) of a TIFF-structured EXIF block; 1 when absent or unreadable."""
    if len(exif) < 8 or exif[:4] not in (b"II*\x00", b"MM\x00*"):
        return 1
    order = "<" if exif[:2] == b"II" else ">"
    (ifd,) = struct.unpack_from(order + "I", exif, 4)
    if ifd + 2 > len(exif):
        return 1
    (count,) = struct.unpack_from(order + "H", exif, ifd)
    for i in range(count):
        entry = ifd + 2 + 12 * i
        if entry + 12 > len(exif):
            break
        tag, kind, _, value = struct.unpack_from(order + "HHI4s", exif, entry)
        if tag == EXIF_ORIENTATION_TAG and kind == 3:  # SHORT, stored in the first 2 bytes
            (orientation,) = struct.unpack_from(order + "H", value)
            return orientation if 1 <= orientation <= 8 else 1
    return 1


def jpeg_is_truncated(data: bytes) -> bool:
    """True when a JPEG stream ends before its end-of-image marker.

    Walks the marker segments (skipping entropy-coded scans), so an EXIF thumbnail's own
    end marker or bytes appended after the image do not mislead it. Some OpenCV builds decode
    a truncated JPEG into a picture with a grey bottom and only a warning; this catches it.
    """
    pos, size = 2, len(data)
    while pos + 1 < size:
        if data[pos] != 0xFF:
            return False  # not a marker where one must be: corrupt, left to the decoder
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:
            return False
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            pos += 2
            continue
        if pos + 4 > size:
            return True
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:  # start of scan: entropy-coded data runs to the next marker
            while True:
                pos = data.find(b"\xff", pos)
                if pos < 0 or pos + 1 >= size:
                    return True
                following = data[pos + 1]
                if following == 0x00 or 0xD0 <= following <= 0xD7:  # stuffed byte or restart
                    pos += 2
                elif following == 0xFF:
                    pos += 1
                else:
                    break
    return True


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels into the picture as it should be viewed (EXIF orientation 1..8)."""
    if orientation == 2:
        return cv2.flip(image, 1)
    if orientation == 3:
        return cv2.rotate(image, cv2.ROTATE_180)
    if orientation == 4:
        return cv2.flip(image, 0)
    if orientation == 5:
        return cv2.transpose(image)
    if orientation == 6:
        return cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)
    if orientation == 7:
        return cv2.rotate(cv2.transpose(image), cv2.ROTATE_180)
    if orientation == 8:
        return cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return image


def decode_image(data: bytes) -> Picture:
    """Decode encoded bytes into a Picture; ImageError for anything the 8-bit model cannot
    take."""
    if not data:
        raise ImageError("empty file (0 bytes)")
    if data[:2] == b"\xff\xd8" and jpeg_is_truncated(data):
        raise ImageError("truncated JPEG (the data ends before its end-of-image marker)")
    buffer = np.frombuffer(data, dtype=np.uint8)
    image, kinds, blocks = cv2.imdecodeWithMetadata(buffer, flags=cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise ImageError("not a decodable image (corrupt, truncated or not a picture)")
    if image.dtype != np.uint8:
        bits = image.dtype.itemsize * 8
        raise ImageError(
            f"{bits}-bit pixels ({image.dtype}); the model takes 8-bit images "
            "(convert it first, e.g. with OpenCV: (img / 257).astype('uint8'))"
        )
    for kind, block in zip(kinds, blocks):
        if kind == cv2.IMAGE_METADATA_EXIF:
            image = apply_orientation(image, exif_orientation(np.asarray(block).tobytes()))
            break
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels == 1:
        return Picture(cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR))
    if channels == 3:
        return Picture(np.ascontiguousarray(image))
    if channels == 4:
        return Picture(np.ascontiguousarray(image[:, :, :3]), np.ascontiguousarray(image[:, :, 3]))
    raise ImageError(f"{channels} channels (expected grey, BGR or BGRA)")


def read_image(path: str | Path) -> Picture:
    """Read and decode a file (bytes first, so any path OpenCV's imread would choke on works)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read it ({exc.strerror or exc})") from exc
    return decode_image(data)


def encode_image(picture: Picture, suffix: str, quality: int = DEFAULT_QUALITY) -> bytes:
    """Encode a Picture in the format ``suffix`` names (".jpg", ".png", ...)."""
    suffix = suffix.lower()
    image = picture.bgr
    if picture.alpha is not None:
        if suffix not in ALPHA_FORMATS:
            raise ImageError(
                f"has an alpha channel that {suffix} cannot store; choose --format png, tiff "
                "or webp to keep it"
            )
        image = np.dstack([picture.bgr, picture.alpha])
    params: list[int] = []
    if suffix in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    elif suffix == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, int(quality)]
    ok, encoded = cv2.imencode(suffix, image, params)
    if not ok:
        raise ImageError(f"OpenCV cannot encode {suffix}")
    return encoded.tobytes()


def write_image(path: str | Path, picture: Picture, quality: int = DEFAULT_QUALITY) -> None:
    """Encode by ``path``'s suffix and write atomically (a whole file or nothing)."""
    path = Path(path)
    atomic_write_bytes(path, encode_image(picture, path.suffix, quality))
