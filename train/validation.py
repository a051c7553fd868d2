"""Validation by the paper author's protocol (docs/DESIGN.md section 3), and a picture to look at.

Every validation image is rendered at its full resolution (the renderer resizes to the network
size itself), rounded to uint8, and scored against the uint8 ground truth: PSNR from
scikit-image with data range 255, SSIM from scikit-image with its default 7x7 uniform window per
channel, averaged (``dbsi.train.metrics``, with which ``bokeh-bench quality`` scores too).
L1 (on [0, 1]) is logged beside them.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
import torch

from dbsi.runtime.atomic import atomic_write_bytes
from dbsi.train.data import Batch
from dbsi.train.metrics import protocol_ssim, psnr
from dbsi.train.pairs import BadPairs
from dbsi.train.render import BokehRenderer

GRID_TILE_HEIGHT = 128


@dataclasses.dataclass
class Example:
    original: np.ndarray  # H x W x 3 RGB uint8
    output: np.ndarray
    target: np.ndarray
    weights: np.ndarray  # (n+1) x H x W float in [0, 1]


@dataclasses.dataclass
class Scores:
    psnr: float
    ssim: float
    l1: float
    count: int

    def as_dict(self) -> dict[str, float]:
        return {
            "val_psnr": self.psnr,
            "val_ssim": self.ssim,
            "val_l1": self.l1,
            "val_count": self.count,
        }


def image_scores(output: np.ndarray, target: np.ndarray) -> tuple[float, float, float]:
    """(PSNR, SSIM, L1) of two H x W x 3 uint8 images by the protocol
    (``dbsi.train.metrics``)."""
    l1 = float(np.abs(output.astype(np.float64) - target.astype(np.float64)).mean() / 255.0)
    return psnr(target, output), protocol_ssim(target, output), l1


def to_uint8_image(tensor: torch.Tensor) -> np.ndarray:
    """3 x H x W float in [0, 1] -> H x W x 3 uint8, rounded."""
    array = tensor.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return array.permute(1, 2, 0).cpu().numpy()


def evaluate(
    renderer: BokehRenderer,
    batches: Iterable[Batch],
    device: torch.device,
    bad: BadPairs,
    autocast: contextlib.AbstractContextManager | None = None,
    examples: int = 4,
    identity: bool = False,
) -> tuple[Scores, list[Example]]:
    """Mean scores over the validation batches (batch size 1: sizes differ) and the first
    ``examples`` renders. ``identity=True`` scores the input itself: the do-nothing baseline."""
    totals, count, kept = np.zeros(3), 0, []
    was_training = renderer.training
    renderer.eval()
    with torch.no_grad():
        for batch in batches:
            for stem, reason in batch.bad:
                bad.add(stem, reason)
            if batch.original is None:
                continue
            for original, target in zip(batch.original, batch.bokeh):
                image = original.to(device).float().div(255).unsqueeze(0)
                if identity:
                    output, weights = image, None
                else:
                    with autocast or contextlib.nullcontext():
                        output, weights = renderer(image)
                out_u8, target_u8 = to_uint8_image(output[0]), target.permute(1, 2, 0).numpy()
                totals += image_scores(out_u8, target_u8)
                count += 1
                if weights is not None and len(kept) < examples:
                    kept.append(
                        Example(
                            original.permute(1, 2, 0).numpy(),
                            out_u8,
                            target_u8,
                            weights[0].float().cpu().numpy(),
                        )
                    )
    renderer.train(was_training)
    if count == 0:
        return Scores(float("nan"), float("nan"), float("nan"), 0), kept
    psnr, ssim, l1 = totals / count
    return Scores(float(psnr), float(ssim), float(l1), count), kept


def grid_image(examples: list[Example]) -> np.ndarray:
    """One row per example: input, output, ground truth, then each weight map (map 0 = sharp),
    as an RGB uint8 image."""
    rows = []
    for ex in examples:
        h, w = ex.original.shape[:2]
        size = (max(1, round(w * GRID_TILE_HEIGHT / h)), GRID_TILE_HEIGHT)
        maps = [np.repeat((m * 255 + 0.5).astype(np.uint8)[..., None], 3, 2) for m in ex.weights]
        tiles = [ex.original, ex.output, ex.target, *maps]
        rows.append(np.hstack([cv2.resize(t, size, interpolation=cv2.INTER_AREA) for t in tiles]))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    return np.vstack(rows)


def write_grid(path: str | Path, examples: list[Example]) -> None:
    if not examples:
        return
    ok, data = cv2.imencode(".png", cv2.cvtColor(grid_image(examples), cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode the grid")
    atomic_write_bytes(path, data.tobytes())
