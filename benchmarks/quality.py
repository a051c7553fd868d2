"""``bokeh-bench quality``: PSNR, SSIM and LPIPS of a model and of baselines on image pairs.

Protocol of the paper's author (DESIGN.md section 3, Stacked_DMSHN_bokeh ``eval.py``):
full-resolution uint8 images as OpenCV reads them; PSNR from scikit-image with data range 255;
SSIM from scikit-image with its default 7x7 uniform window on each channel, averaged; LPIPS
v0.1 AlexNet on RGB in [-1, 1] (``dbsi.benchmarks.lpips_alex``), or "unavailable".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from dbsi.benchmarks.models import Candidate
from dbsi.train.data import Pair, is_truncated
from dbsi.train.validation import psnr, ssim

BLUR_BASELINE_SIZE = 75
PROTOCOL = (
    "author's eval.py: full-resolution uint8 as read by OpenCV; skimage PSNR (data_range 255); "
    "skimage SSIM, default 7x7 uniform window per channel, averaged; LPIPS v0.1 AlexNet, RGB in "
    "[-1, 1]"
)

COLUMNS = [
    ("method", "method", ""),
    ("mode", "mode", ""),
    ("pairs", "pairs", "d"),
    ("failed", "failed", "d"),
    ("PSNR dB", "psnr_db", ".3f"),
    ("SSIM", "ssim", ".4f"),
    ("LPIPS", "lpips", ".4f"),
]


def read_image(path: Path) -> np.ndarray:
    """uint8 BGR as OpenCV decodes it; ValueError naming the file when it cannot, or when it is
    a JPEG cut before its end (OpenCV would decode it with grey rows that then get scored)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: unreadable ({exc.strerror})") from exc
    if is_truncated(data):
        raise ValueError(f"{path}: truncated JPEG")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: not an image OpenCV can read")
    return image


def identity(image: np.ndarray) -> np.ndarray:
    return image


def global_blur(image: np.ndarray) -> np.ndarray:
    """The whole picture blurred with a 75x75 Gaussian (OpenCV's sigma rule)."""
    return cv2.GaussianBlur(image, (BLUR_BASELINE_SIZE, BLUR_BASELINE_SIZE), 0)


def candidate_method(candidate: Candidate) -> Callable[[np.ndarray], np.ndarray]:
    def render(image: np.ndarray) -> np.ndarray:
        return candidate.render(image[None])[0]

    return render


def mean_over_pairs(values: Sequence[float]) -> float | None:
    """Mean over pairs; inf when any is inf (identical images), None when there are none."""
    if not values:
        return None
    return float(np.mean(values))


def evaluate(
    methods: Sequence[tuple[str, str, Callable[[np.ndarray], np.ndarray]]],
    pairs: Sequence[Pair],
    lpips_model: Any | None,
    lpips_status: str,
    progress: Callable[[], None] | None = None,
    log: Callable[[str], None] = print,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(summary row per method, per-pair rows). A pair that cannot be read (unreadable,
    undecodable, a truncated JPEG) or whose images differ in size is logged with the reason and
    skipped; each method's ``failed`` counts them."""
    from dbsi.benchmarks.lpips_alex import lpips_distance

    per_pair: list[dict[str, Any]] = []
    failed: dict[tuple[str, str], int] = {(name, mode): 0 for name, mode, _ in methods}
    for pair in pairs:
        try:
            original, target = read_image(pair.original), read_image(pair.bokeh)
            if original.shape != target.shape:
                raise ValueError(
                    f"{pair.bokeh}: size {target.shape[:2]} differs from {pair.original}'s "
                    f"{original.shape[:2]}"
                )
        except ValueError as exc:
            log(f"skipped: {exc}")
            for key in failed:
                failed[key] += 1
            continue
        for name, mode, method in methods:
            try:
                prediction = method(original)
            except (ValueError, RuntimeError) as exc:
                log(f"{name} ({mode}) failed on {pair.original}: {exc}")
                failed[name, mode] += 1
                continue
            row = {
                "method": name,
                "mode": mode,
                "pair": pair.stem,
                "psnr_db": psnr(target, prediction),
                "ssim": ssim(target, prediction),
                "lpips": None
                if lpips_model is None
                else lpips_distance(lpips_model, target, prediction),
            }
            per_pair.append(row)
        if progress is not None:
            progress()
    summary = []
    for name, mode, _ in methods:
        mine = [r for r in per_pair if r["method"] == name and r["mode"] == mode]
        lpips_values = [r["lpips"] for r in mine if r["lpips"] is not None]
        summary.append(
            {
                "method": name,
                "mode": mode,
                "pairs": len(mine),
                "failed": failed[name, mode],
                "psnr_db": mean_over_pairs([r["psnr_db"] for r in mine]),
                "ssim": mean_over_pairs([r["ssim"] for r in mine]),
                "lpips": mean_over_pairs(lpips_values)
                if lpips_model is not None
                else "unavailable",
                "lpips_status": lpips_status,
            }
        )
    return summary, per_pair
