"""Synthetic video clips with their true defocused clips: a benchmark for temporal stability.

A clip is a layered scene of ``dbsi.train.synthetic`` (far textured background, textured shapes
at random depths, the nearest shape the in-focus subject) animated over T frames. Some shapes
move along smooth paths (sinusoids in x and y, so the excursion stays bounded however long the
clip); at least one does when the camera is still. The camera either stays still (``static``)
or pans (``pan``): a rotation moves every layer by the same amount and a sideways translation
adds parallax, so nearer layers shift more. The focus stays on the subject's layer for the
whole clip. Each frame is rendered exactly as the still generator renders one scene (layers in
linear light, each blurred with a disc whose diameter is its circle of confusion, composited
back to front with its blurred alpha), so a model trained on the stills is in distribution.

Each layer lives on a canvas a little larger than the frame and is moved into each frame with
a sub-pixel translation (bilinear). Blurring commutes with translation, so a layer is blurred
once on its canvas and the blurred canvas is moved like the sharp one; the canvas margin keeps
the blur's support inside the canvas, so no border effect ever reaches the frame. A layer that
never moves keeps no margin and is blurred exactly as the still generator blurs its layers
(reflected at the frame edge). A moving shape is drawn clear of the frame edge, so no cut edge
of it can slide into view. The bilinear shifts soften a moving layer's finest texture a little
in frames that fall between pixels, in the original and the truth alike.

Sensor noise (seeded per frame) is added to the ``original`` only, in linear light with a
variance growing with the signal (shot noise) above a floor (read noise); ``noise`` is its
standard deviation in 8-bit levels at mid grey. The ``bokeh`` truth is the noise-free render: a
real lens blurs the scene and the sensor adds its noise afterwards, so the ideal output of a
bokeh method is the defocused scene; noise a method leaves in blurred regions is an error
against this truth, which is fair. The noise also makes per-frame predictions jitter as they do
on real footage.

Files: ``original/{i}.mkv`` and ``bokeh/{i}.mkv``, lossless FFV1 in Matroska with the RGB pixel
format that ``dbsi.runtime.video`` uses for lossless output (``bgr0``), constant frame rate; the
originals of clips 0, 1, 4, 5, 8, 9, ... also carry a 440 Hz sine tone (AAC, 48 kHz, mono) as
long as the clip, so audio copying can be tested end to end. ``video.json`` describes the set.
Clip ``i`` depends only on ``(seed, i)`` and the settings; on one FFmpeg build the same seed
gives the same bytes (muxer and encoders in bit-exact mode).

The flicker metric's region, where the truth does not change from frame t-1 to t, is not
stored: ``static_mask`` derives it from the truth clip (``read_clip(bokeh/{i}.mkv)``), which is
lossless, so it is exact.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from dbsi.runtime.atomic import atomic_path, atomic_write_text
from dbsi.runtime.video import RGB_LOSSLESS, load_av
from dbsi.train.synthetic import (
    GAMMA,
    SceneSpec,
    background_texture,
    circle_of_confusion,
    claim_folder,
    disc_blur,
    shape_mask,
    shape_texture,
    to_linear,
    to_uint8,
)

GENERATOR = "dbsi-synthetic-dof-video"
GENERATOR_VERSION = 1
MANIFEST = "video.json"
FOLDERS = ("original", "bokeh")  # clip i: folder/{i}.mkv
EXTENSION = ".mkv"
CODEC = "ffv1"
PIXEL_FORMAT = RGB_LOSSLESS[CODEC]
CAMERAS = ("static", "pan")
AUDIO_CODEC = "aac"
AUDIO_RATE = 48000
AUDIO_FRAME = 1024  # samples per AAC frame
TONE_HZ = 440.0
SCENE_STREAM, NOISE_STREAM = 0, 1  # independent random streams of a clip
MOVE_PROBABILITY = 0.6  # chance that a shape moves on its own
MAX_DRAWS = 20  # tries at drawing a moving shape clear of the frame edge
NOISE_FLOOR = 0.01  # read noise, as the linear signal whose shot noise it equals


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """What a generated set of clips looks like: the scenes (``SceneSpec``), the clips' length
    and rate, the camera (``static``, ``pan``, or ``both``: even clips static, odd ones pan)
    and the sensor noise of the originals (standard deviation in 8-bit levels at mid grey)."""

    scene: SceneSpec = SceneSpec(height=192, width=256)
    frames: int = 24
    fps: Fraction = Fraction(24)
    camera: str = "both"
    noise: float = 1.5

    def __post_init__(self) -> None:
        # Exact from here; a float as written (29.97 -> 2997/100, not its binary value).
        fps = Fraction(str(self.fps)) if isinstance(self.fps, float) else Fraction(self.fps)
        object.__setattr__(self, "fps", fps)
        if self.frames < 2:
            raise ValueError(f"frames: {self.frames}; a clip needs at least 2")
        if not 0 < self.fps <= 1000:
            raise ValueError(f"fps: {self.fps} is outside (0, 1000]")
        if self.camera not in (*CAMERAS, "both"):
            raise ValueError(f"camera: {self.camera!r} is not static, pan or both")
        if not 0 <= self.noise <= 50:
            raise ValueError(f"noise: {self.noise} is outside [0, 50] levels")

    def camera_of(self, index: int) -> str:
        return CAMERAS[index % 2] if self.camera == "both" else self.camera


def has_audio(index: int) -> bool:
    """Whether clip ``index``'s original carries the tone: pairs of clips, so that with the
    alternating camera both kinds come with and without audio."""
    return (index // 2) % 2 == 0


@dataclasses.dataclass
class Layer:
    """A layer on its canvas (``pad`` pixels beyond the frame on every side), in linear light:
    premultiplied colour and alpha (None: opaque), sharp and blurred, and its shift in each
    frame (``offsets[t] = (dx, dy)`` pixels)."""

    depth: float
    pad: int
    colour: np.ndarray
    alpha: np.ndarray | None
    blurred_colour: np.ndarray
    blurred_alpha: np.ndarray | None
    offsets: np.ndarray
    moving: bool

    def place(self, canvas: np.ndarray, t: int, height: int, width: int) -> np.ndarray:
        """``canvas`` (one of this layer's) as it appears in frame ``t``."""
        dx, dy = self.offsets[t]
        if self.pad == 0 and dx == 0 and dy == 0:
            return canvas
        shift = np.float32([[1, 0, self.pad - dx], [0, 1, self.pad - dy]])
        return cv2.warpAffine(
            canvas,
            shift,
            (width, height),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
        )


@dataclasses.dataclass
class Frame:
    """One rendered frame of a clip."""

    original: np.ndarray  # H x W x 3 RGB uint8, all in focus, with sensor noise
    bokeh: np.ndarray  # H x W x 3 RGB uint8, thin-lens render, noise-free
    layer: np.ndarray  # H x W uint8: the front-most layer (0 background, alpha > 0.5)


@dataclasses.dataclass
class ClipPlan:
    """Clip ``index`` of a set: its layers (back to front, 0 the background) and how they
    move; ``frame(t)`` renders frame t."""

    seed: int
    index: int
    spec: ClipSpec
    camera: str
    focus_layer: int
    layers: list[Layer]

    def frame(self, t: int) -> Frame:
        """Frame ``t`` (0-based) of the clip."""
        h, w = self.spec.scene.height, self.spec.scene.width
        background = self.layers[0]
        sharp = background.place(background.colour, t, h, w)
        bokeh = background.place(background.blurred_colour, t, h, w)
        front = np.zeros((h, w), np.uint8)
        # As render_scene composites: the sharp layers for the original, the blurred ones
        # with their blurred alpha for the truth.
        for k, layer in enumerate(self.layers[1:], start=1):
            alpha = layer.place(layer.alpha, t, h, w)
            blurred_alpha = layer.place(layer.blurred_alpha, t, h, w)
            sharp = layer.place(layer.colour, t, h, w) + (1 - alpha[..., None]) * sharp
            bokeh = (
                layer.place(layer.blurred_colour, t, h, w) + (1 - blurred_alpha[..., None]) * bokeh
            )
            front[alpha > 0.5] = k
        noise = np.random.default_rng([self.seed, self.index, NOISE_STREAM, t])
        original = add_sensor_noise(sharp, self.spec.noise, noise)
        return Frame(to_uint8(original), to_uint8(bokeh), front)

    def info(self) -> dict[str, Any]:
        """The clip's entry in the manifest."""
        name = str(self.index)
        return {
            "name": name,
            **{folder: f"{folder}/{name}{EXTENSION}" for folder in FOLDERS},
            "camera": self.camera,
            "focus_layer": self.focus_layer,
            "focus_depth": round(float(self.layers[self.focus_layer].depth), 4),
            "layer_depths": [round(float(layer.depth), 4) for layer in self.layers],
            "moving_layers": [k for k, layer in enumerate(self.layers) if layer.moving],
            "audio": has_audio(self.index),
        }


def add_sensor_noise(linear: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """``linear`` plus Gaussian noise of variance ``k^2 (x + NOISE_FLOOR)``: shot noise above a
    read-noise floor, ``k`` such that mid grey gets ``noise`` 8-bit levels once displayed."""
    if noise == 0:
        return linear
    mid = 0.5**GAMMA  # linear value of display mid grey
    slope = mid ** (1 / GAMMA - 1) / GAMMA  # d(display)/d(linear) there
    k = noise / 255 / slope / math.sqrt(mid + NOISE_FLOOR)
    sigma = k * np.sqrt(linear + NOISE_FLOOR)
    return linear + sigma * rng.standard_normal(linear.shape, dtype=np.float32)


def wave(rng: np.random.Generator, frames: int, peak_speed: float) -> np.ndarray:
    """A smooth path along one axis, 0 at frame 0: a sinusoid of random period and phase
    whose speed peaks at 30-100% of ``peak_speed`` pixels per frame."""
    peak_speed *= rng.uniform(0.3, 1.0)
    period = rng.uniform(36, 96)
    phase = rng.uniform(0, 2 * np.pi)
    amplitude = peak_speed * period / (2 * np.pi)
    t = np.arange(frames)
    return amplitude * (np.sin(2 * np.pi * t / period + phase) - np.sin(phase))


def clear_shape(rng: np.random.Generator, height: int, width: int, scale: float) -> np.ndarray:
    """``shape_mask`` redrawn until it keeps off the frame edge (a few tries, then the last
    draw): a moving shape cut by the edge would show the cut."""
    for _ in range(MAX_DRAWS):
        alpha = shape_mask(rng, height, width, scale)
        edges = (alpha[0], alpha[-1], alpha[:, 0], alpha[:, -1])
        if not any(edge.any() for edge in edges):
            break
    return alpha


def plan_clip(seed: int, index: int, spec: ClipSpec) -> ClipPlan:
    """Clip ``index`` of the set generated with ``seed``."""
    rng = np.random.default_rng([seed, index, SCENE_STREAM])
    h, w, frames = spec.scene.height, spec.scene.width, spec.frames
    short = min(h, w)
    camera = spec.camera_of(index)
    # The scene, drawn as render_scene draws one.
    coc_inf = rng.uniform(0.6, 1.0) * spec.scene.max_coc * max(h, w)
    background_depth = rng.uniform(*spec.scene.background_depth_range)
    focus = rng.uniform(*spec.scene.focus_depth_range)
    count = int(rng.integers(spec.scene.min_shapes, spec.scene.max_shapes + 1))
    depths = [focus] + list(rng.uniform(focus * 1.2, background_depth * 0.6, count - 1))
    if count > 2 and rng.random() < 0.25:
        depths[-1] = rng.uniform(focus * 0.5, focus * 0.8)
    depths = sorted(depths, reverse=True)

    # The camera: a shift of (turn + slide * focus / depth) pixels per frame at depth d, the
    # turn moving every layer alike, the slide adding parallax; centred on the middle frame.
    angle = rng.uniform(-0.25, 0.25) + np.pi * (rng.random() < 0.5)
    speed = rng.uniform(0.004, 0.01) * short * (camera == "pan")
    turn = rng.uniform(0.4, 0.8)
    steps = np.arange(frames) - (frames - 1) / 2

    def camera_shift(depth: float) -> np.ndarray:
        rate = speed * (turn + (1 - turn) * focus / depth)
        return np.outer(steps * rate, [np.cos(angle), np.sin(angle)])

    # Which shapes move and how, drawn before any shape: a moving one is drawn clear of the
    # edge. A still camera always has something moving: the subject if nothing else.
    moves = [bool(rng.random() < MOVE_PROBABILITY) for _ in depths]
    if camera == "static" and not any(moves):
        moves[depths.index(focus)] = True
    paths = [
        np.stack([wave(rng, frames, 0.01 * short), wave(rng, frames, 0.006 * short)], axis=1)
        if moving
        else np.zeros((frames, 2))
        for moving in moves
    ]

    radius = circle_of_confusion(background_depth, focus, coc_inf) / 2
    offsets = camera_shift(background_depth)
    pad = math.ceil(np.abs(offsets).max() + radius) + 2 if camera == "pan" else 0
    texture = to_linear(background_texture(rng, h + 2 * pad, w + 2 * pad))
    layers = [
        Layer(background_depth, pad, texture, None, disc_blur(texture, radius), None,
              offsets, False)
    ]  # fmt: skip
    for depth, moving, path in zip(depths, moves, paths):
        # Perspective: apparent size falls with depth.
        scale = float(np.clip(0.35 * focus / depth, 0.08, 0.45)) * rng.uniform(0.8, 1.2)
        offsets = camera_shift(depth) + path
        shifts = bool(np.any(offsets))
        alpha = clear_shape(rng, h, w, scale) if shifts else shape_mask(rng, h, w, scale)
        colour = alpha[..., None] * to_linear(shape_texture(rng, h, w))
        radius = circle_of_confusion(depth, focus, coc_inf) / 2
        # A moving layer is empty at its canvas edge: a margin as wide as the blur keeps the
        # blurred shape whole, and outside the canvas is transparent.
        pad = math.ceil(radius) + 1 if shifts else 0
        alpha = np.pad(alpha, pad)
        colour = np.pad(colour, ((pad, pad), (pad, pad), (0, 0)))
        layers.append(
            Layer(depth, pad, colour, alpha, disc_blur(colour, radius), disc_blur(alpha, radius),
                  offsets, moving)
        )  # fmt: skip
    return ClipPlan(seed, index, spec, camera, 1 + depths.index(focus), layers)


def static_mask(truth: np.ndarray) -> np.ndarray:
    """Where the true clip (T x H x W x 3 uint8) does not change from frame t-1 to t: bool
    (T-1) x H x W, every channel equal (the truth is lossless, so a change below one level is
    no change). The flicker metric averages an output's frame-to-frame change over it."""
    return np.all(truth[1:] == truth[:-1], axis=-1)


def read_clip(path: str | Path) -> np.ndarray:
    """Every frame of a clip's first video stream: T x H x W x 3 RGB uint8."""
    av = load_av()
    with av.open(str(path)) as clip:
        return np.stack([f.to_ndarray(format="rgb24") for f in clip.decode(video=0)])


class ClipWriter:
    """A lossless clip written frame by frame: FFV1 (RGB) in Matroska at a constant rate,
    bit-exact; with ``tone``, a sine tone as long as the clip, interleaved with the frames.
    Leaving the ``with`` block without ``close`` closes the file unfinished."""

    def __init__(
        self, path: Path, height: int, width: int, fps: Fraction, frames: int, tone: bool
    ) -> None:
        self.av = load_av()
        self.fps = fps
        self.written = 0
        # Bit-exact: no random track ids or version strings, so same frames, same bytes.
        self.container = self.av.open(str(path), "w", format="matroska",
                                      options={"fflags": "+bitexact"})  # fmt: skip
        try:
            self._add_streams(height, width, frames, tone)
        except BaseException:
            self.container.close()
            raise

    def _add_streams(self, height: int, width: int, frames: int, tone: bool) -> None:
        bitexact = self.av.codec.context.Flags.bitexact
        self.video = self.container.add_stream(CODEC, rate=self.fps)
        self.video.width, self.video.height = width, height
        self.video.pix_fmt = PIXEL_FORMAT
        self.video.time_base = 1 / self.fps
        # One thread: FFV1's slicing, hence its bytes, would follow the thread count.
        self.video.codec_context.thread_count = 1
        self.video.codec_context.flags |= bitexact
        self.audio = None
        if tone:
            self.audio = self.container.add_stream(AUDIO_CODEC, rate=AUDIO_RATE, layout="mono")
            self.audio.codec_context.flags |= bitexact
            t = np.arange(round(frames * AUDIO_RATE / self.fps)) / AUDIO_RATE
            self.tone = (0.2 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)[None]
            self.sent = 0  # samples encoded

    def __enter__(self) -> ClipWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.container is not None:
            self.container.close()

    def write(self, rgb: np.ndarray) -> None:
        """Encode the next frame (H x W x 3 RGB uint8), then the audio up to its end."""
        av = self.av
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame = frame.reformat(format=PIXEL_FORMAT)
        frame.pts, frame.time_base = self.written, self.video.time_base
        self.container.mux(self.video.encode(frame))
        self.written += 1
        if self.audio is not None:
            # Interleaved, so the muxer never holds a whole track waiting for the other.
            until = min(self.tone.shape[1], self.written * AUDIO_RATE / self.fps)
            while self.sent < until:
                chunk = self.tone[:, self.sent : self.sent + AUDIO_FRAME]
                sound = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
                sound.sample_rate, sound.pts = AUDIO_RATE, self.sent
                sound.time_base = Fraction(1, AUDIO_RATE)
                self.container.mux(self.audio.encode(sound))
                self.sent += chunk.shape[1]

    def close(self) -> None:
        """Flush the encoders and close the file."""
        self.container.mux(self.video.encode(None))
        if self.audio is not None:
            self.container.mux(self.audio.encode(None))
        self.container.close()
        self.container = None


def write_clip(out: Path, plan: ClipPlan) -> None:
    """Render ``plan`` into ``out/original/{i}.mkv`` and ``out/bokeh/{i}.mkv`` (each written
    atomically), frame by frame: memory does not grow with the clip's length."""
    spec = plan.spec
    h, w = spec.scene.height, spec.scene.width
    with contextlib.ExitStack() as stack:
        writers = []
        for folder in FOLDERS:
            tmp = stack.enter_context(atomic_path(out / folder / f"{plan.index}{EXTENSION}"))
            tone = folder == "original" and has_audio(plan.index)
            writers.append(stack.enter_context(ClipWriter(tmp, h, w, spec.fps, spec.frames, tone)))
        original, bokeh = writers
        for t in range(spec.frames):
            frame = plan.frame(t)
            original.write(frame.original)
            bokeh.write(frame.bokeh)
        for writer in writers:
            writer.close()


def manifest_for(count: int, seed: int, spec: ClipSpec) -> dict[str, Any]:
    """The manifest without its per-clip entries: everything the clips depend on."""
    return {
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "count": count,
        "seed": seed,
        "frames": spec.frames,
        "fps": str(spec.fps),
        "height": spec.scene.height,
        "width": spec.scene.width,
        "camera": spec.camera,
        "noise": spec.noise,
        "scene": dataclasses.asdict(spec.scene),
        "video": f"{CODEC} {PIXEL_FORMAT} in Matroska, lossless",
        "audio": f"{AUDIO_CODEC} {AUDIO_RATE} Hz mono, {TONE_HZ:g} Hz sine, in the originals "
        "of the clips with audio true",
        "static_mask": "dbsi.train.synthetic_video.static_mask(read_clip(bokeh clip))",
    }


def is_generated(out: str | Path, count: int, seed: int, spec: ClipSpec) -> bool:
    """Whether ``out`` already holds exactly this set (complete manifest, every file there)."""
    out = Path(out)
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict) or "clips" not in manifest:
        return False
    manifest.pop("clips")
    if manifest != json.loads(json.dumps(manifest_for(count, seed, spec))):
        return False
    return all(
        (out / folder / f"{i}{EXTENSION}").is_file() for i in range(count) for folder in FOLDERS
    )


def prepare_output(out: str | Path, count: int, force: bool = False) -> list[Path]:
    """Make ``out`` ready for ``count`` clips; returns the files removed. As the still
    generator's ``prepare_output``: our earlier set loses its manifest first, then its clips
    numbered >= ``count``; a folder with files but no manifest of ours is refused (ValueError)
    unless ``force``. Only files named as this generator names them are removed."""
    out = Path(out)
    present = claim_folder(out, MANIFEST, GENERATOR, list(FOLDERS), "clips", force)
    removed = sorted(
        p
        for p in present
        if p.suffix == EXTENSION and p.stem.isdigit() and int(p.stem) >= count and p.is_file()
    )
    for path in removed:
        path.unlink()
    return removed


def write_videos(
    out: str | Path,
    count: int,
    seed: int,
    spec: ClipSpec,
    on_clip: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Render clips 0..count-1 into ``out``; returns the manifest. The manifest is written
    first unfinished and last complete (with the clips), so only a finished set matches
    ``is_generated``."""
    out = Path(out)
    manifest = manifest_for(count, seed, spec)
    atomic_write_text(out / MANIFEST, json.dumps({**manifest, "complete": False}, indent=2))
    clips = []
    for i in range(count):
        plan = plan_clip(seed, i, spec)
        write_clip(out, plan)
        clips.append(plan.info())
        if on_clip is not None:
            on_clip(i)
    manifest["clips"] = clips
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest
