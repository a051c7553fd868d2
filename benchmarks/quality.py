"""``bokeh-bench quality``: PSNR, SSIM and LPIPS of a model and of baselines on image pairs.

Protocol of the paper's author (docs/DESIGN.md section 3, Stacked_DMSHN_bokeh ``eval.py``):
full-resolution uint8 images as OpenCV reads them; PSNR from scikit-image with data range 255;
SSIM from scikit-image with its default 7x7 uniform window on each channel, averaged; LPIPS
v0.1 AlexNet on RGB in [-1, 1] (``dbsi.benchmarks.lpips_alex``). Without its weights LPIPS is
not computed: the rows hold no LPIPS value (None, null in the JSON) and the report says why once
(its ``lpips`` status and one note).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from dbsi.benchmarks.candidates import Candidate, ModelSet
from dbsi.benchmarks.pairs import select_pairs
from dbsi.benchmarks.report import base_report
from dbsi.benchmarks.run_report import look_at_machine, open_models, progress_bar
from dbsi.runtime.images import ImageError, read_image
from dbsi.runtime.registry import CHECKPOINT_SUFFIXES
from dbsi.train.metrics import in_focus_mask, protocol_ssim, psnr
from dbsi.train.pairs import Pair

BLUR_BASELINE_SIZE = 75
RENDER_MODES = ("paper", "fullres")
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
    ("PSNR in focus", "psnr_in_focus_db", ".3f"),
    ("SSIM in focus", "ssim_in_focus", ".4f"),
]
IN_FOCUS_NOTE = (
    "In focus: PSNR and SSIM over the pixels where the ground truth is the input itself (the "
    "sharp subject of an aligned pair, 5x5 mean difference under 2 levels), over the pairs where "
    "that is at least 1% of the picture ({count} of {total}); '-' when none is."
)


def read_bgr(path: Path) -> np.ndarray:
    """uint8 BGR as bokeh-run decodes it (OpenCV, EXIF orientation applied, alpha dropped);
    ValueError naming the file when it cannot, or when it is a JPEG cut before its end
    (OpenCV would decode it with grey rows that then get scored)."""
    try:
        return read_image(path).bgr
    except ImageError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def identity(image: np.ndarray) -> np.ndarray:
    return image


def global_blur(image: np.ndarray) -> np.ndarray:
    """The whole picture blurred with a 75x75 Gaussian (OpenCV's sigma rule)."""
    return cv2.GaussianBlur(image, (BLUR_BASELINE_SIZE, BLUR_BASELINE_SIZE), 0)


def candidate_method(
    candidate: Candidate, aperture: float | None = None
) -> Callable[[np.ndarray], np.ndarray]:
    """One picture through ``candidate``, at ``aperture`` (None: as trained)."""

    def render(image: np.ndarray) -> np.ndarray:
        if aperture is None:
            return candidate.render(image[None])[0]
        return candidate.render_at(image[None], np.full(1, aperture, np.float32))[0]

    return render


def aperture_methods(
    candidate: Candidate, mode: str, apertures: Sequence[float], log: Callable[[str], None]
) -> list[Method]:
    """A method per aperture for ``candidate`` (its mode shown as "<mode> a=<aperture>"), or
    none, with one line saying why, for a graph exported without the aperture input."""
    if not apertures:
        return []
    if candidate.render_at is None:
        log(f"{candidate.name}: exported without the aperture input, so no rows at other apertures")
        return []
    return [
        (f"model ({candidate.name})", f"{mode} a={a:g}", candidate_method(candidate, a))
        for a in apertures
    ]


# (name, render mode or "-", uint8 BGR image -> uint8 BGR prediction)
Method = tuple[str, str, Callable[[np.ndarray], np.ndarray]]


def mean_over_pairs(values: Sequence[float]) -> float | None:
    """Mean over pairs; inf when any is inf (identical images), None when there are none."""
    if not values:
        return None
    return float(np.mean(values))


def evaluate(
    methods: Sequence[tuple[str, str, Callable[[np.ndarray], np.ndarray]]],
    pairs: Sequence[Pair],
    lpips_model: Any | None,
    progress: Callable[[], None] | None = None,
    log: Callable[[str], None] = print,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(summary row per method, per-pair rows). A pair that cannot be read (unreadable,
    undecodable, a truncated JPEG) or whose images differ in size is logged with the reason and
    skipped; each method's ``failed`` counts them. With no ``lpips_model`` every row's LPIPS
    is None (the caller states why, once)."""
    from dbsi.benchmarks.lpips_alex import lpips_distance

    per_pair: list[dict[str, Any]] = []
    failed: dict[tuple[str, str], int] = {(name, mode): 0 for name, mode, _ in methods}
    for pair in pairs:
        try:
            original, target = read_bgr(pair.original), read_bgr(pair.bokeh)
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
        focus = in_focus_mask(original, target)
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
                "ssim": protocol_ssim(target, prediction),
                "lpips": None
                if lpips_model is None
                else lpips_distance(lpips_model, target, prediction),
                "psnr_in_focus_db": None if focus is None else psnr(target, prediction, focus),
                "ssim_in_focus": None
                if focus is None
                else protocol_ssim(target, prediction, focus),
            }
            per_pair.append(row)
        if progress is not None:
            progress()
    summary = []
    for name, mode, _ in methods:
        mine = [r for r in per_pair if r["method"] == name and r["mode"] == mode]
        lpips_values = [r["lpips"] for r in mine if r["lpips"] is not None]
        focused = [r for r in mine if r["psnr_in_focus_db"] is not None]
        summary.append(
            {
                "method": name,
                "mode": mode,
                "pairs": len(mine),
                "failed": failed[name, mode],
                "psnr_db": mean_over_pairs([r["psnr_db"] for r in mine]),
                "ssim": mean_over_pairs([r["ssim"] for r in mine]),
                "lpips": mean_over_pairs(lpips_values),
                "in_focus_pairs": len(focused),
                "psnr_in_focus_db": mean_over_pairs([r["psnr_in_focus_db"] for r in focused]),
                "ssim_in_focus": mean_over_pairs([r["ssim_in_focus"] for r in focused]),
            }
        )
    return summary, per_pair


def model_methods(
    models: Sequence[Path],
    cache: Path,
    gpu: bool,
    modes: Sequence[str],
    log: Callable[[str], None] = print,
    apertures: Sequence[float] = (),
) -> tuple[list[Method], list[ModelSet]]:
    """The methods the models give, and the model sets opened for them (the caller closes
    them). A checkpoint (or, with no models, the random one) renders on PyTorch once per mode
    in ``modes``; an ONNX or engine renders in the mode it was exported with. Each renders as
    trained (aperture 1) and, when its graph takes one, at each of ``apertures``."""
    methods: list[Method] = []
    opened: list[ModelSet] = []
    checkpoints = [m for m in models if m.suffix.lower() in CHECKPOINT_SUFFIXES]
    runtimes = [m for m in models if m not in checkpoints]
    for mode in modes:
        if checkpoints or not models:
            model_set = open_models(checkpoints, cache, gpu, log, with_backends=False, mode=mode)
            opened.append(model_set)
            for c in model_set.candidates:
                methods.append((f"model ({c.name})", mode, candidate_method(c)))
                methods += aperture_methods(c, mode, apertures, log)
    if runtimes:
        model_set = open_models(runtimes, cache, gpu, log)
        opened.append(model_set)
        for c in model_set.candidates:
            mode = c.config.get("mode", "?")
            methods.append((f"model ({c.name})", mode, candidate_method(c)))
            methods += aperture_methods(c, mode, apertures, log)
    return methods, opened


def quality_report(
    data: Path,
    models: Sequence[Path],
    cache: Path,
    *,
    subset: str = "auto",
    split_file: Path | None = None,
    modes: Sequence[str] = RENDER_MODES,
    limit: int | None = None,
    lpips_backbone: Path | None = None,
    sheet: Path | None = None,
    sheet_pairs: int = 6,
    sheet_photos: Path | None = None,
    apertures: Sequence[float] = (),
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """``bokeh-bench quality``: choose the pairs in ``data`` (``select_pairs``), score the
    baselines and the models on them (``evaluate``) and return the report; with ``sheet``, also
    write a contact sheet of the first ``sheet_pairs`` pairs (and of the photos in
    ``sheet_photos``) there (``write_quality_sheet``). ValueError when scikit-image is missing
    or ``data`` is no data folder."""
    from dbsi.benchmarks.lpips_alex import load_lpips

    try:
        import skimage  # noqa: F401
    except ImportError:
        raise ValueError(
            "quality needs scikit-image for the protocol's PSNR and SSIM "
            "(pip install 'dbsi-bokeh[dev]')"
        ) from None
    if sheet_photos is not None and not any(
        m.suffix.lower() in CHECKPOINT_SUFFIXES for m in models
    ):
        raise ValueError("--sheet-photos renders with a checkpoint: give its .pt as --model")
    machine, gpu = look_at_machine()
    pairs, chosen, left_out = select_pairs(data, subset, split_file)
    for reason in left_out:
        log(f"left out: {reason}")
    pairs = pairs[:limit] if limit else pairs
    log(f"{chosen}; evaluating {len(pairs)} pairs")
    lpips_model, lpips_status = load_lpips(lpips_backbone)  # said once, in the notes
    methods: list[Method] = [("identity", "-", identity), ("gaussian-blur-75", "-", global_blur)]
    model_ones, opened = model_methods(models, cache, gpu, modes, log, apertures)
    methods += model_ones
    try:
        with progress_bar(len(pairs), "quality", "pair") as bar:
            rows, per_pair = evaluate(methods, pairs, lpips_model, progress=bar.update, log=log)
        if sheet is not None:
            write_quality_sheet(
                sheet,
                data,
                pairs,
                model_ones,
                per_pair,
                opened[0].checkpoint if opened else None,
                sheet_pairs=sheet_pairs,
                photos=sheet_photos,
                log=log,
            )
    finally:
        for model_set in opened:
            model_set.close()
    report = base_report(
        "quality",
        machine,
        opened[0] if opened else ModelSet([], [], False, None),
        rows=rows,
        per_pair=per_pair,
        data=chosen,
        protocol=PROTOCOL,
        lpips=lpips_status,
    )
    report["notes"].append(f"Data: {chosen}. Protocol: {PROTOCOL}.")
    report["notes"].append(f"LPIPS: {lpips_status}")
    focused = {r["pair"] for r in per_pair if r["psnr_in_focus_db"] is not None}
    evaluated = {r["pair"] for r in per_pair}
    report["notes"].append(IN_FOCUS_NOTE.format(count=len(focused), total=len(evaluated)))
    if sheet is not None:
        report["notes"].append(f"Contact sheet: {sheet}")
    return report


def sizes_of(images: Sequence[tuple[str, np.ndarray, np.ndarray]]) -> str:
    """ " (HxW)" of the images, or " (HxW, ...)" when they differ."""
    sizes = sorted({f"{o.shape[0]}x{o.shape[1]}" for _, o, _ in images})
    return f" ({', '.join(sizes)})" if sizes else ""


def write_quality_sheet(
    path: Path,
    data: Path,
    pairs: Sequence[Pair],
    model_ones: Sequence[Method],
    per_pair: Sequence[dict[str, Any]],
    checkpoint: Path | None,
    *,
    sheet_pairs: int = 6,
    photos: Path | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """The contact sheet (``dbsi.benchmarks.contact_sheet``) of the first ``sheet_pairs``
    readable pairs: input | each model method | ground truth | weight maps, the weight maps and
    the legend from ``checkpoint`` (left out without one); then, with ``photos``, that folder's
    first ``sheet_pairs`` images rendered by the checkpoint in fullres."""
    from dbsi.benchmarks.contact_sheet import (
        describe,
        draw_sheet,
        model_renderer,
        pair_section,
        photo_section,
        render_photos,
    )

    images = []
    for pair in pairs:
        try:
            original, target = read_bgr(pair.original), read_bgr(pair.bokeh)
        except ValueError:
            continue
        if original.shape == target.shape:
            images.append((pair.stem, original, target))
        if len(images) == sheet_pairs:
            break
    render, config = model_renderer(checkpoint) if checkpoint else (None, None)
    if render is None:
        log("sheet: no checkpoint, so no weight maps (ONNX and engines render the bokeh only)")
    sections = [
        pair_section(
            f"{len(images)} pairs of {data}{sizes_of(images)}; under each picture: PSNR and "
            "SSIM against the ground truth",
            images,
            model_ones,
            (lambda bgr: render(bgr)[1]) if render else None,
            per_pair,
        )
    ]
    if photos is not None and render is not None:
        rendered = render_photos(photos, render, sheet_pairs, log)
        sections.append(
            photo_section(f"{len(rendered)} photos of {photos} (no ground truth)", rendered)
        )
    title = f"Contact sheet: {checkpoint}, {describe(config)}" if config else "Contact sheet"
    kernel_sizes = config.kernel_sizes if config else None
    written = draw_sheet(sections, path, title=title, kernel_sizes=kernel_sizes)
    log(f"Contact sheet: {written}")
    return written
