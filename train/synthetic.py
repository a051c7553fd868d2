"""A synthetic depth-of-field dataset: the embedded training set for tests and the demo.

Each scene is a stack of fronto-parallel layers: a far background and textured shapes at random
depths (nearer shapes drawn larger, as perspective would). The all-in-focus ``original`` is the
layers composited back to front; the ``bokeh`` ground truth is the thin-lens render of the same
stack: every layer blurred with a circular aperture (a disc) whose diameter, the circle of
confusion, follows from the layer's depth and the focus distance, then composited back to front
with its blurred alpha (the usual occlusion-aware layered approximation). Blurring happens in
linear light, so bright specks in the background open into bokeh discs as they do in photos.

Files are written in the EBB! layout that ``dbsi.train.data`` reads: ``original/{i}.jpg``,
``bokeh/{i}.jpg``, and ``depth/{i}.png`` (uint16, millimetres). Scene ``i`` depends only on
``(seed, i)``, so the same seed gives the same bytes whatever the count.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from dbsi.runtime.atomic import atomic_write_bytes, atomic_write_text

GENERATOR = "dbsi-synthetic-dof"
GENERATOR_VERSION = 1
MANIFEST = "dataset.json"
FILES = (("original", ".jpg"), ("bokeh", ".jpg"), ("depth", ".png"))  # scene i: folder/{i}ext
SUPERSAMPLE = 4  # shapes are drawn 4x larger and area-downsampled: anti-aliased edges
GAMMA = 2.2


@dataclasses.dataclass(frozen=True)
class SceneSpec:
    """What a generated set looks like. ``max_coc`` is the circle of confusion's diameter for a
    point at infinity, as a fraction of the image's long side (the strongest background blur)."""

    height: int = 96
    width: int = 128
    min_shapes: int = 2
    max_shapes: int = 5
    max_coc: float = 0.1
    focus_depth_range: tuple[float, float] = (0.8, 3.0)
    background_depth_range: tuple[float, float] = (8.0, 30.0)
    jpeg_quality: int = 95

    def __post_init__(self) -> None:
        if min(self.height, self.width) < 16:
            raise ValueError(f"scene size {self.height}x{self.width}: both sides must be >= 16")
        if not 1 <= self.min_shapes <= self.max_shapes:
            raise ValueError(
                f"shapes: need 1 <= min ({self.min_shapes}) <= max ({self.max_shapes})"
            )
        if not 0 < self.max_coc < 0.5:
            raise ValueError(f"max_coc: {self.max_coc} is outside (0, 0.5)")


@dataclasses.dataclass
class Scene:
    original: np.ndarray  # H x W x 3 RGB uint8, all in focus
    bokeh: np.ndarray  # H x W x 3 RGB uint8, thin-lens render
    depth_mm: np.ndarray  # H x W uint16, depth of the front-most layer in millimetres


def disc_kernel(radius: float) -> np.ndarray:
    """Normalised circular-aperture kernel of a given radius in pixels, edge anti-aliased."""
    half = int(np.ceil(radius))
    y, x = np.mgrid[-half : half + 1, -half : half + 1]
    kernel = np.clip(radius + 0.5 - np.hypot(x, y), 0.0, 1.0).astype(np.float32)
    return kernel / kernel.sum()


def disc_blur(image: np.ndarray, radius: float) -> np.ndarray:
    """Blur with a disc of ``radius`` pixels; below half a pixel the image is left as is."""
    if radius < 0.5:
        return image
    return cv2.filter2D(image, -1, disc_kernel(radius), borderType=cv2.BORDER_REFLECT_101)


def circle_of_confusion(depth: float, focus: float, coc_at_infinity: float) -> float:
    """Thin-lens CoC diameter: ``A f / (d_f - f) * |d - d_f| / d``, which for a focal length much
    shorter than the focus distance is ``c_inf * |1 - d_f / d|``."""
    return coc_at_infinity * abs(1.0 - focus / depth)


def smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """A smooth random field in [0, 1]: coarse noise upsampled bicubically."""
    grid = rng.random((cells, max(2, round(cells * width / height))), dtype=np.float32)
    field = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(field, 0.0, 1.0)


def random_colour(rng: np.random.Generator) -> np.ndarray:
    hue = rng.uniform(0, 180)
    hsv = np.uint8([[[hue, rng.uniform(60, 230), rng.uniform(90, 250)]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32) / 255.0


def background_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Far scenery: a colour gradient, foliage-like mid-frequency noise and bright specks."""
    top, bottom = random_colour(rng), random_colour(rng)
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    image = top * (1 - ramp) + bottom * ramp
    image = np.broadcast_to(image, (height, width, 3)).copy()
    foliage = smooth_noise(rng, height, width, cells=max(4, height // 6))
    image *= (0.55 + 0.45 * foliage)[..., None]
    fine = rng.random((height, width), dtype=np.float32)
    image *= (0.85 + 0.15 * fine)[..., None]
    specks = rng.random((height, width)) < rng.uniform(0.001, 0.004)
    image[specks] = np.clip(image[specks] + rng.uniform(0.5, 1.0), 0.0, 1.0)
    return image


def shape_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """An object's surface: stripes, checks or blotches in two colours."""
    a, b = random_colour(rng), random_colour(rng)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    kind = rng.integers(3)
    period = rng.uniform(4, 14)
    if kind == 0:
        angle = rng.uniform(0, np.pi)
        mix = 0.5 + 0.5 * np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / period)
    elif kind == 1:
        mix = ((np.floor(x / period) + np.floor(y / period)) % 2).astype(np.float32)
    else:
        mix = (smooth_noise(rng, height, width, cells=max(3, int(height / period))) > 0.5) * 1.0
    mix = mix.astype(np.float32)[..., None]
    return a * mix + b * (1 - mix)


def shape_mask(rng: np.random.Generator, height: int, width: int, scale: float) -> np.ndarray:
    """Anti-aliased alpha in [0, 1] of an ellipse, rectangle or polygon of size ~``scale``."""
    s = SUPERSAMPLE
    canvas = np.zeros((height * s, width * s), np.uint8)
    cx, cy = rng.uniform(0.1, 0.9) * width * s, rng.uniform(0.15, 0.95) * height * s
    size = scale * min(height, width) * s
    kind = rng.integers(3)
    if kind == 0:
        axes = (int(size * rng.uniform(0.5, 1.0)), int(size * rng.uniform(0.5, 1.0)))
        cv2.ellipse(canvas, (int(cx), int(cy)), axes, rng.uniform(0, 180), 0, 360, 255, -1)
    else:
        corners = 4 if kind == 1 else int(rng.integers(5, 9))
        angles = np.sort(rng.uniform(0, 2 * np.pi, corners)) if kind == 2 else None
        if angles is None:
            start = rng.uniform(0, np.pi / 2)
            angles = start + np.arange(4) * np.pi / 2 + rng.uniform(-0.3, 0.3, 4)
        radii = size * rng.uniform(0.6, 1.0, corners)
        points = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)
        cv2.fillPoly(canvas, [points.astype(np.int32)], 255)
    return (
        cv2.resize(canvas, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    )


def to_linear(image: np.ndarray) -> np.ndarray:
    return np.power(image, GAMMA)


def to_uint8(linear: np.ndarray) -> np.ndarray:
    display = np.power(np.clip(linear, 0.0, 1.0), 1.0 / GAMMA)
    return (display * 255.0 + 0.5).astype(np.uint8)


def render_scene(seed: int, index: int, spec: SceneSpec) -> Scene:
    """Scene ``index`` of the set generated with ``seed``."""
    rng = np.random.default_rng([seed, index])
    h, w = spec.height, spec.width
    coc_inf = rng.uniform(0.6, 1.0) * spec.max_coc * max(h, w)
    background_depth = rng.uniform(*spec.background_depth_range)
    focus = rng.uniform(*spec.focus_depth_range)
    count = int(rng.integers(spec.min_shapes, spec.max_shapes + 1))
    # The nearest shape is the subject, in focus; the others stand between it and the
    # background. A scene sometimes has one shape nearer still, blurred in front of the subject.
    depths = [focus] + list(rng.uniform(focus * 1.2, background_depth * 0.6, count - 1))
    if count > 2 and rng.random() < 0.25:
        depths[-1] = rng.uniform(focus * 0.5, focus * 0.8)

    background = to_linear(background_texture(rng, h, w))
    sharp = background.copy()
    bokeh = disc_blur(background, circle_of_confusion(background_depth, focus, coc_inf) / 2)
    depth = np.full((h, w), background_depth, np.float32)
    for layer_depth in sorted(depths, reverse=True):
        # Perspective: apparent size falls with depth.
        scale = float(np.clip(0.35 * focus / layer_depth, 0.08, 0.45)) * rng.uniform(0.8, 1.2)
        alpha = shape_mask(rng, h, w, scale)[..., None]
        colour = to_linear(shape_texture(rng, h, w))
        radius = circle_of_confusion(layer_depth, focus, coc_inf) / 2
        sharp = alpha * colour + (1 - alpha) * sharp
        blurred_alpha = disc_blur(alpha[..., 0], radius)[..., None]
        bokeh = disc_blur(alpha * colour, radius) + (1 - blurred_alpha) * bokeh
        depth[alpha[..., 0] > 0.5] = layer_depth
    depth_mm = np.clip(depth * 1000.0 + 0.5, 0, 65535).astype(np.uint16)
    return Scene(to_uint8(sharp), to_uint8(bokeh), depth_mm)


def encode(image: np.ndarray, extension: str, jpeg_quality: int = 95) -> bytes:
    """Encode an RGB (or single-channel) image as OpenCV writes it."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if extension == ".jpg" else []
    ok, data = cv2.imencode(extension, image, params)
    if not ok:
        raise OSError(f"OpenCV could not encode a {extension} image")
    return data.tobytes()


def manifest_for(count: int, seed: int, spec: SceneSpec) -> dict:
    return {
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "count": count,
        "seed": seed,
        "spec": dataclasses.asdict(spec),
    }


def is_generated(out: str | Path, count: int, seed: int, spec: SceneSpec) -> bool:
    """Whether ``out`` already holds exactly this set (same manifest, every file present)."""
    out = Path(out)
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    if manifest != json.loads(json.dumps(manifest_for(count, seed, spec))):
        return False
    return all(
        (out / folder / f"{i}{ext}").is_file() for i in range(count) for folder, ext in FILES
    )


def generated_files(out: Path) -> dict[int, list[Path]]:
    """Files under ``out`` named as the generator names them (``original/{i}.jpg``, ...), by
    scene id."""
    found: dict[int, list[Path]] = {}
    for folder, ext in FILES:
        if (out / folder).is_dir():
            for path in (out / folder).iterdir():
                if path.suffix == ext and path.stem.isdigit() and path.is_file():
                    found.setdefault(int(path.stem), []).append(path)
    return found


def claim_folder(
    out: Path, manifest: str, generator: str, folders: list[str], items: str, force: bool
) -> list[Path]:
    """Take ``out`` for a generated set: the files in its ``folders``, after removing the
    ``manifest`` (so an interrupted regeneration never looks complete). ValueError naming a
    file when ``out`` holds files but no manifest of ``generator``'s, unless ``force``;
    ``items`` names what the set holds in that message."""
    try:
        found = json.loads((out / manifest).read_text())
        ours = isinstance(found, dict) and found.get("generator") == generator
    except (OSError, ValueError):
        ours = False
    present = [p for folder in folders if (out / folder).is_dir() for p in (out / folder).iterdir()]
    if not ours and (present or (out / manifest).exists()) and not force:
        example = (present or [out / manifest])[0]
        raise ValueError(
            f"{out}: holds files (e.g. {example}) but no {manifest} from this generator; pick "
            f"an empty folder or pass --force to write into it ({items} numbered >= --count are "
            "then removed)"
        )
    (out / manifest).unlink(missing_ok=True)
    return present


def prepare_output(out: str | Path, count: int, force: bool = False) -> list[Path]:
    """Make ``out`` ready for a set of ``count`` scenes; returns the files removed.

    A set generated before (our manifest) loses its manifest first, so an interrupted
    regeneration never looks complete, then its scenes with ids >= ``count``, which would
    otherwise be mixed into training (an interrupted run left an unfinished manifest, so it
    counts as ours). A folder with files but no manifest of ours (real data, perhaps) is not
    touched without ``force`` (ValueError naming a file); with ``force`` it is pruned the same
    way.
    Only files the generator's naming scheme produces are removed.
    """
    out = Path(out)
    existing = generated_files(out)
    claim_folder(out, MANIFEST, GENERATOR, [folder for folder, _ in FILES], "scenes", force)
    removed = [p for i, paths in sorted(existing.items()) if i >= count for p in paths]
    for path in removed:
        path.unlink()
    return removed


def write_dataset(
    out: str | Path,
    count: int,
    seed: int,
    spec: SceneSpec,
    on_scene: Callable[[int], None] | None = None,
) -> None:
    """Render scenes 0..count-1 into ``out`` (files written atomically). The manifest is
    written first marked unfinished (the folder is the generator's from then on) and last
    complete, so only a finished set matches ``is_generated``."""
    out = Path(out)
    unfinished = {**manifest_for(count, seed, spec), "complete": False}
    atomic_write_text(out / MANIFEST, json.dumps(unfinished, indent=2) + "\n")
    for i in range(count):
        scene = render_scene(seed, i, spec)
        atomic_write_bytes(
            out / "original" / f"{i}.jpg", encode(scene.original, ".jpg", spec.jpeg_quality)
        )
        atomic_write_bytes(
            out / "bokeh" / f"{i}.jpg", encode(scene.bokeh, ".jpg", spec.jpeg_quality)
        )
        atomic_write_bytes(out / "depth" / f"{i}.png", encode(scene.depth_mm, ".png"))
        if on_scene is not None:
            on_scene(i)
    atomic_write_text(out / MANIFEST, json.dumps(manifest_for(count, seed, spec), indent=2) + "\n")
