"""``bokeh-bench parity``: every backend against the PyTorch fp32 render of the same real
photos, judged with the export stage's per-precision thresholds (``dbsi.export.parity``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from dbsi.benchmarks.models import ModelSet
from dbsi.export.parity import PARITY_THRESHOLDS, parity_failures, parity_stats

COLUMNS = [
    ("backend", "backend", ""),
    ("precision", "precision", ""),
    ("photo", "photo", ""),
    ("size", "size", ""),
    ("max abs", "max_abs_error", "d"),
    ("mean abs", "mean_abs_error", ".4f"),
    ("PSNR dB", "psnr_db", ".2f"),
    ("> 1 level", "share_over_1_level", ".5%"),
    ("verdict", "verdict", ""),
]


def compare(reference: np.ndarray, candidate: np.ndarray, precision: str) -> dict[str, Any]:
    """Parity statistics and the verdict for one pair of uint8 renders."""
    stats = parity_stats(reference, candidate)
    failures = parity_failures(stats, precision)
    return {**stats, "passed": not failures, "failures": failures}


def run_parity(
    models: ModelSet,
    photos: dict[str, np.ndarray],
    progress: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """One row per backend and photo, plus one "all photos" row per backend whose statistics
    pool every pixel. The reference must be in ``models``."""
    reference = models.reference
    if reference is None:
        raise ValueError("parity needs the PyTorch reference: give the checkpoint with --model")
    expected = {name: reference.render(photo[None])[0] for name, photo in photos.items()}
    rows = []
    for candidate in models.candidates:
        if candidate.is_reference:
            continue
        if candidate.precision not in PARITY_THRESHOLDS:
            raise ValueError(f"{candidate.name}: no parity thresholds for {candidate.precision}")
        pooled_ref, pooled_out = [], []
        for name, photo in photos.items():
            out = candidate.render(photo[None])[0]
            rows.append(
                row(candidate, name, photo, compare(expected[name], out, candidate.precision))
            )
            pooled_ref.append(expected[name].reshape(-1, 3))
            pooled_out.append(out.reshape(-1, 3))
            if progress is not None:
                progress()
        pooled = compare(
            np.concatenate(pooled_ref), np.concatenate(pooled_out), candidate.precision
        )
        rows.append(row(candidate, "all photos", None, pooled))
    return rows


def row(candidate: Any, photo: str, image: np.ndarray | None, result: dict[str, Any]) -> dict:
    return {
        "backend": candidate.name,
        "device": candidate.device,
        "precision": candidate.precision,
        "source": candidate.source,
        "photo": photo,
        "size": "-" if image is None else f"{image.shape[0]}x{image.shape[1]}",
        **result,
        "thresholds": PARITY_THRESHOLDS[candidate.precision],
        "verdict": "pass" if result["passed"] else "FAIL: " + "; ".join(result["failures"]),
    }
