"""Contact sheets: one PNG that shows at a glance what a model does.

For image pairs with a ground truth (``bokeh-bench quality --sheet``), one row per pair:
input | the model in each render mode evaluated | ground truth | weight maps, with each
picture's PSNR and SSIM under it. For real photos without a ground truth (``photo_section``,
``--sheet-photos``): input | bokeh | weight maps. The weight maps are one colour picture
(``dbsi.runtime.weight_maps.colour_weights``): white is the sharp layer, the blurred layers run
from yellow (smallest kernel) through red to blue (largest); the legend names each colour with
its kernel from the model's config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dbsi.runtime.weight_maps import colour_weights, palette

# Layout in inches at DPI dots per inch: every picture is scaled to CELL_W wide.
DPI = 110
CELL_W = 2.3
GAP = 0.12
LEFT = 0.45  # row labels, rotated, in the left margin
CAPTION_H = 0.24
HEADER_H = 0.32
SECTION_H = 0.42
TITLE_H = 0.5
LEGEND_H = 0.75
BOTTOM = 0.15
WEIGHTS_LABEL = "weight maps"


@dataclasses.dataclass
class Column:
    """One labelled column: an image (uint8 BGR) and an optional caption per row."""

    label: str
    images: list[np.ndarray | None]
    captions: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Section:
    """A titled block of rows sharing its columns."""

    title: str
    row_labels: list[str]
    columns: list[Column]


def legend_entries(kernel_sizes: Sequence[int]) -> list[tuple[str, tuple[float, float, float]]]:
    """(label, RGB in [0, 1]) per weight map: the sharp layer, then each blur kernel."""
    colours = palette(len(kernel_sizes) + 1)[:, ::-1] / 255.0
    labels = ["sharp input (layer 0)"] + [
        f"blur, kernel {k} (layer {i + 1})" for i, k in enumerate(kernel_sizes)
    ]
    return [(label, tuple(float(c) for c in rgb)) for label, rgb in zip(labels, colours)]


def row_heights(section: Section) -> list[float]:
    """Height of each row in inches: its tallest picture (as scaled to CELL_W) plus captions."""
    heights = []
    for i in range(len(section.row_labels)):
        images = [c.images[i] for c in section.columns if c.images[i] is not None]
        aspect = max((im.shape[0] / im.shape[1] for im in images), default=0.75)
        heights.append(CELL_W * aspect + CAPTION_H)
    return heights


def section_height(section: Section) -> float:
    return SECTION_H + HEADER_H + sum(h + GAP for h in row_heights(section))


def draw_sheet(
    sections: Sequence[Section],
    path: str | Path,
    *,
    title: str,
    kernel_sizes: Sequence[int] | None = None,
) -> Path:
    """Draw ``sections`` one below the other under ``title`` and a legend of the weight-map
    colours (when ``kernel_sizes`` are given) and write the PNG to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.patches import Patch

    columns = max(len(s.columns) for s in sections)
    width = LEFT + columns * (CELL_W + GAP) + GAP
    legend_h = LEGEND_H if kernel_sizes else 0.0
    height = TITLE_H + legend_h + sum(section_height(s) for s in sections) + BOTTOM
    fig = plt.figure(figsize=(width, height), dpi=DPI, facecolor="white")

    def at(x: float, y: float) -> tuple[float, float]:
        """Inches from the top-left corner -> figure fraction."""
        return x / width, 1.0 - y / height

    fig.text(*at(width / 2, 0.3), title, ha="center", va="center", fontsize=14, weight="bold")
    y = TITLE_H
    if kernel_sizes:
        handles = [
            Patch(facecolor=rgb, edgecolor="0.25", label=label)
            for label, rgb in legend_entries(kernel_sizes)
        ]
        fig.legend(
            handles=handles,
            loc="upper center",
            bbox_to_anchor=at(width / 2, y - 0.05),
            ncol=len(handles),
            fontsize=10,
            frameon=False,
            handlelength=1.6,
            handleheight=1.2,
            columnspacing=1.4,
        )
        note = (
            "Weight maps: each pixel's colour mixes these colours by the weight the model gives "
            "each layer there (white: kept sharp). Kernels are in pixels of the network-size "
            "image and scale with the picture."
        )
        fig.text(*at(width / 2, y + 0.5), note, ha="center", va="center", fontsize=9, color="0.3")
        y += legend_h
    for section in sections:
        fig.text(
            *at(0.1, y + 0.22), section.title, ha="left", va="center", fontsize=12, weight="bold"
        )
        y += SECTION_H
        for j, column in enumerate(section.columns):
            x = LEFT + j * (CELL_W + GAP) + CELL_W / 2
            fig.text(
                *at(x, y + HEADER_H / 2),
                column.label,
                ha="center",
                va="center",
                fontsize=11,
                weight="bold",
            )
        y += HEADER_H
        for i, (row_label, tall) in enumerate(zip(section.row_labels, row_heights(section))):
            fig.text(
                *at(LEFT / 2, y + (tall - CAPTION_H) / 2),
                row_label,
                ha="center",
                va="center",
                rotation=90,
                fontsize=10,
            )
            for j, column in enumerate(section.columns):
                image = column.images[i]
                x = LEFT + j * (CELL_W + GAP)
                if image is not None:
                    h = CELL_W * image.shape[0] / image.shape[1]
                    left, top = at(x, y + (tall - CAPTION_H - h) / 2)
                    ax = fig.add_axes((left, top - h / height, CELL_W / width, h / height))
                    ax.imshow(np.ascontiguousarray(image[..., ::-1]), interpolation="antialiased")
                    ax.set_axis_off()
                caption = column.captions[i] if i < len(column.captions) else ""
                if caption:
                    fig.text(
                        *at(x + CELL_W / 2, y + tall - CAPTION_H / 2),
                        caption,
                        ha="center",
                        va="center",
                        fontsize=9,
                        color="0.15",
                    )
            y += tall + GAP
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, facecolor="white")
    plt.close(fig)
    return path


def model_renderer(
    checkpoint: str | Path, mode: str = "fullres"
) -> tuple[Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], Any]:
    """(render, its BokehConfig) of a checkpoint: uint8 BGR H x W x 3 -> (uint8 BGR bokeh in
    ``mode``, float (n+1) x H x W weights), on PyTorch's CPU, the graph the exporter traces."""
    import torch

    from dbsi.export.onnx_graph import PixelsToBokeh
    from dbsi.train.checkpoint import load_renderer

    renderer = load_renderer(checkpoint, mode).float().eval()
    module = PixelsToBokeh(renderer, with_weights=True).eval()

    def render(bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            bokeh, weights = module(torch.from_numpy(np.ascontiguousarray(bgr[None])))
        return bokeh[0].numpy(), weights[0].numpy()

    return render, renderer.config


def scores(row: dict[str, Any] | None) -> str:
    if row is None:
        return ""
    db = "inf" if np.isinf(row["psnr_db"]) else f"{row['psnr_db']:.1f}"
    return f"{db} dB  SSIM {row['ssim']:.3f}"


def method_labels(methods: Sequence[tuple[str, str, Any]]) -> list[str]:
    """Column labels of the model methods: "model, <mode>" when one model is evaluated, the
    backend name and mode when several are."""
    if len({name for name, _, _ in methods}) == 1:
        return [f"model, {mode}" for _, mode, _ in methods]
    return [f"{name.removeprefix('model (').rstrip(')')}, {mode}" for name, mode, _ in methods]


def pair_section(
    title: str,
    pairs: Sequence[tuple[str, np.ndarray, np.ndarray]],
    methods: Sequence[tuple[str, str, Callable[[np.ndarray], np.ndarray]]],
    weights: Callable[[np.ndarray], np.ndarray] | None,
    per_pair: Sequence[dict[str, Any]] = (),
) -> Section:
    """Rows of (stem, input BGR, ground truth BGR): input | each method | ground truth |
    weight maps (when ``weights`` maps an input to its (n+1) x H x W weights). Captions are the
    pair's PSNR and SSIM from ``per_pair`` (the input's are the identity baseline's)."""
    found = {(r["method"], r["mode"], r["pair"]): r for r in per_pair}
    stems = [stem for stem, _, _ in pairs]
    columns = [
        Column(
            "input",
            [o for _, o, _ in pairs],
            [scores(found.get(("identity", "-", s))) for s in stems],
        )
    ]
    for label, (name, mode, method) in zip(method_labels(methods), methods):
        columns.append(
            Column(
                label,
                [method(o) for _, o, _ in pairs],
                [scores(found.get((name, mode, s))) for s in stems],
            )
        )
    columns.append(Column("ground truth", [t for _, _, t in pairs]))
    if weights is not None:
        columns.append(Column(WEIGHTS_LABEL, [colour_weights(weights(o)) for _, o, _ in pairs]))
    return Section(title, stems, columns)


def photo_section(
    title: str,
    photos: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
    bokeh_label: str = "bokeh, fullres",
) -> Section:
    """Rows of (name, input BGR, bokeh BGR, (n+1) x H x W weights or their colour picture)
    for photos without a ground truth: input | bokeh | weight maps."""
    pictures = [
        w if w.ndim == 3 and w.shape[-1] == 3 and w.dtype == np.uint8 else colour_weights(w)
        for _, _, _, w in photos
    ]
    return Section(
        title,
        [name for name, _, _, _ in photos],
        [
            Column("input", [p for _, p, _, _ in photos]),
            Column(bokeh_label, [b for _, _, b, _ in photos]),
            Column(WEIGHTS_LABEL, pictures),
        ],
    )


def render_photos(
    folder: Path,
    render: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    limit: int,
    log: Callable[[str], None] = print,
) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """The first ``limit`` images in ``folder`` (by name) rendered by ``render``; an image that
    cannot be read is logged and left out."""
    from dbsi.runtime.images import IMAGE_EXTENSIONS, ImageError, read_image

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    photos = []
    for path in files[:limit]:
        try:
            bgr = read_image(path).bgr
        except ImageError as exc:
            log(f"sheet: left out {path}: {exc}")
            continue
        bokeh, weights = render(bgr)
        photos.append((path.stem, bgr, bokeh, weights))
    return photos


def describe(config: Any) -> str:
    """The model settings a reader needs beside its pictures."""
    kernels = "/".join(str(k) for k in config.kernel_sizes)
    return f"blur kernels {kernels}, network long side {config.net_long_side}"


# Frame-to-frame change is a few levels: amplified so that a reader sees where it is.
CHANGE_GAIN = 8


def frame_change(clip: Mapping[int, np.ndarray], index: int) -> np.ndarray:
    """|frame index - frame index-1| of a clip's uint8 H x W x 3 frames (by index), the
    channels' mean shown in grey, amplified ``CHANGE_GAIN`` times (black: no change)."""
    change = np.abs(clip[index].astype(np.int16) - clip[index - 1].astype(np.int16)).mean(axis=2)
    grey = np.clip(change * CHANGE_GAIN, 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def video_section(
    title: str, clips: Sequence[tuple[str, Mapping[int, np.ndarray]]], frames: Sequence[int]
) -> Section:
    """Rows of the given ``frames`` (indices >= 1) of labelled clips (uint8 H x W x 3 BGR
    frames by index, each ``frames`` index and the one before it): each clip's frame, then for
    every clip but the first (the input) how much it changed since the frame before
    (``frame_change``): flicker shows as bright speckle where the scene stands still."""
    if any(index < 1 for index in frames):
        raise ValueError(f"frames {list(frames)}: the change needs the frame before, so from 1")
    columns = [Column(label, [clip[i] for i in frames]) for label, clip in clips]
    columns += [
        Column(f"{label}: change x{CHANGE_GAIN}", [frame_change(clip, i) for i in frames])
        for label, clip in clips[1:]
    ]
    return Section(title, [f"frame {i}" for i in frames], columns)
