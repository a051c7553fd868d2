"""``bokeh-bench parity``: every backend against the PyTorch fp32 render of the same real
photos, judged with the export stage's per-precision thresholds (``dbsi.export.parity``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from dbsi.benchmarks.candidates import ModelSet
from dbsi.benchmarks.images import real_photos
from dbsi.benchmarks.report import base_report
from dbsi.benchmarks.run_report import look_at_machine, open_models, progress_bar
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


def parity_report(
    models: Iterable[Path],
    cache: Path,
    log: Callable[[str], None] = print,
    pytorch_only: bool = False,
    openvino_bf16: bool = False,
) -> dict[str, Any]:
    """``bokeh-bench parity``: open ``models`` (the checkpoint's reference and at least one
    other backend, else ValueError; only the PyTorch variants with ``pytorch_only``), judge
    every backend on the real photos (``run_parity``) and return the report."""
    machine, gpu = look_at_machine()
    model_set = open_models(
        models,
        cache,
        gpu,
        log,
        torch_variants=True,
        with_backends=not pytorch_only,
        openvino_bf16=openvino_bf16,
    )
    photos, real = real_photos()
    try:
        if model_set.reference is None:
            raise ValueError(
                "parity needs the PyTorch reference: give the checkpoint with --model "
                "(and torch installed)"
            )
        others = [c for c in model_set.candidates if not c.is_reference]
        if not others:
            raise ValueError(
                "no backend to compare with the reference: "
                + ("; ".join(s["reason"] for s in model_set.skipped) or "give an ONNX or engine")
            )
        with progress_bar(len(others) * len(photos), "parity", "photo") as bar:
            rows = run_parity(model_set, photos, progress=bar.update)
    finally:
        model_set.close()
    report = base_report("parity", machine, model_set, rows=rows, real_photos=real)
    if not real:
        report["notes"].append(
            "scikit-image is not installed: GENERATED images stood in for the real photos."
        )
    return report


def failed_backends(rows: list[dict[str, Any]]) -> list[str]:
    """The backends with at least one failing row, sorted."""
    return sorted({r["backend"] for r in rows if not r["passed"]})
