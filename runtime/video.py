"""Reading and writing video streams with PyAV (FFmpeg): decode a clip's frames as BGR in order,
encode the rendered frames into a new file with the same timestamps, size, rotation and pixel
aspect, and copy its audio and subtitle packets unchanged (remuxed, never re-encoded).

PyAV is imported when a video is opened, not with this module: photos render without it.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import re
import struct
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path, PurePath
from types import ModuleType
from typing import Any

import numpy as np

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi")
#: H.264 encoders in order of preference, when the container holds H.264
H264_ENCODERS = ("libx264", "libopenh264")
#: encoders that take ``--crf`` (their constant-quality option), and their default when
#: neither --crf nor --bitrate is given (x264's 18: visually lossless for most footage)
CRF_ENCODERS = {"libx264": 18, "libx264rgb": 18, "libx265": 20, "libvpx-vp9": 32, "libaom-av1": 30}
#: lossless encoders, given RGB frames so that no YUV conversion loses anything
RGB_LOSSLESS = {"ffv1": "bgr0"}
#: transfer characteristics of HDR video (PQ, HLG): refused, there is no tone mapping here
HDR_TRANSFERS = {16: "PQ (SMPTE ST 2084)", 18: "HLG (ARIB STD-B67)"}
#: FFmpeg's AVFMT_VARIABLE_FPS: the container stores a time per frame (AVI does not: a frame
#: is one tick of a constant rate)
VARIABLE_FPS_FLAG = 0x0400


class VideoError(Exception):
    """A video that cannot be rendered (whole or from frame ``frame`` on): one line."""

    def __init__(self, reason: str, frame: int | None = None) -> None:
        super().__init__(reason if frame is None else f"{reason} at frame {frame}")
        self.frame = frame


def is_video_name(path: str | PurePath) -> bool:
    return PurePath(path).suffix.lower() in VIDEO_EXTENSIONS


def load_av() -> ModuleType:
    """The ``av`` module; VideoError naming the package when it is missing."""
    try:
        import av
    except ImportError as exc:
        raise VideoError(f"rendering video needs PyAV ({exc}): pip install 'av>=14'") from None
    return av


def parse_bitrate(text: str) -> int:
    """``"4M"``, ``"800k"`` or ``"2500000"`` -> bits per second; ValueError otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*", text)
    if match is None or float(match[1]) <= 0:
        raise ValueError(f"bitrate {text!r} is not a positive number of bits/s (e.g. 4M, 800k)")
    scale = {"": 1, "k": 1_000, "m": 1_000_000}[match[2].lower()]
    return int(float(match[1]) * scale)


@dataclasses.dataclass(frozen=True)
class EncodeSettings:
    """How rendered frames are encoded: None everywhere chooses by what FFmpeg has."""

    codec: str | None = None
    crf: int | None = None
    bitrate: int | None = None


def _video_encoder(av: ModuleType, name: str) -> Any:
    """FFmpeg's video encoder ``name``; VideoError when there is none."""
    try:
        codec = av.Codec(name, "w")
    except (av.error.FFmpegError, ValueError):
        raise VideoError(f"this FFmpeg has no encoder {name!r}") from None
    if codec.type != "video":
        raise VideoError(f"{name} is not a video encoder")
    return codec


def check_video_settings(settings: EncodeSettings) -> None:
    """VideoError when videos cannot be rendered here as asked: PyAV missing, no encoder named
    ``settings.codec``, or a quality setting it does not take (bad usage, found before any
    work)."""
    av = load_av()
    if settings.codec is not None:
        name = _video_encoder(av, settings.codec).name
        if name in RGB_LOSSLESS and (settings.crf is not None or settings.bitrate is not None):
            raise VideoError(f"{name} is lossless: --crf and --bitrate do not apply")
        if settings.crf is not None and name not in CRF_ENCODERS:
            raise VideoError(f"--crf does not apply to {name}; give --bitrate")
    if settings.crf is not None and settings.bitrate is not None:
        raise VideoError("give --crf or --bitrate, not both")


def choose_codec(container: Any, requested: str | None) -> str:
    """The encoder for ``container`` (an output container): ``requested`` when given, else
    H.264 when an encoder exists and the container holds it, else the container's default.
    VideoError when the encoder is missing or the container cannot hold its codec."""
    av = load_av()
    if requested is not None:
        codec = _video_encoder(av, requested)
        # supported_codecs names codecs ("h264"); the encoder may be named otherwise (libx264)
        if codec.canonical_name not in container.supported_codecs:
            raise VideoError(f"a {container.format.name} file cannot hold {requested}")
        return codec.name
    if "h264" in container.supported_codecs:
        for name in H264_ENCODERS:
            if name in av.codecs_available:
                return name
    return av.Codec(container.default_video_codec, "w").name


def _pixel_format(codec: Any, width: int, height: int) -> str:
    """The encoder's pixel format: RGB for a lossless codec, else 4:2:0 (what every player
    plays) when the size allows it, else 4:4:4, else the encoder's first."""
    formats = [f.name for f in codec.video_formats or ()]
    if codec.name in RGB_LOSSLESS:
        return RGB_LOSSLESS[codec.name]
    if "yuv420p" in formats and width % 2 == 0 and height % 2 == 0:
        return "yuv420p"
    if "yuv444p" in formats:
        return "yuv444p"
    return formats[0] if formats else "yuv420p"


class VideoTranscode:
    """One clip decoded from ``source`` and its rendered frames encoded to ``target``.

    ``batches`` yields the decoded frames (uint8 N x H x W x 3 BGR) in order, copies the
    other streams' packets as it reads past them and, at the end, checks that the whole clip
    was read; ``write`` takes the rendered frames of each batch, in the same order, and
    encodes them with the timestamps of the frames they came from; ``finish`` flushes the
    encoder and closes the file. Only one batch is held at a time (plus what the encoder
    buffers), so memory does not grow with the clip's length."""

    def __init__(self, source: Path, target: Path, settings: EncodeSettings) -> None:
        self.av = av = load_av()
        self.source = source
        self.decoded = 0  # frames read
        self.written = 0  # frames encoded
        self.notes: list[str] = []
        self._pending: collections.deque[tuple[int, int | None]] = collections.deque()
        self._input: Any = None
        self._output: Any = None
        try:
            self._input = av.open(str(source), metadata_errors="replace")
        except av.error.FFmpegError as exc:
            raise VideoError(f"cannot read the video ({_ffmpeg_reason(exc)})", 0) from None
        try:
            self._open(target, settings)
        except BaseException:
            self.close()
            raise

    def _open(self, target: Path, settings: EncodeSettings) -> None:
        av = self.av
        if not self._input.streams.video:
            kinds = sorted({s.type for s in self._input.streams}) or ["no stream"]
            raise VideoError(f"no video stream (only {', '.join(kinds)})")
        self.stream = stream = self._input.streams.video[0]
        context = stream.codec_context
        trc = int(context.color_trc or 2)
        if trc in HDR_TRANSFERS:
            raise VideoError(
                f"HDR video ({HDR_TRANSFERS[trc]} transfer) is not supported: rendering it in "
                "8-bit without tone mapping would wash it out"
            )
        if context.format is not None and max(c.bits for c in context.format.components) > 8:
            self.notes.append(f"{context.format.name} converted to 8 bits")
        stream.thread_type = "AUTO"  # frame and slice threads: decoding keeps up with rendering
        self.width, self.height = context.width, context.height
        self.rate: Fraction | None = stream.average_rate or stream.guessed_rate
        self._output = output = av.open(str(target), "w")
        self.codec = choose_codec(output, settings.codec)
        encoder = av.Codec(self.codec, "w")
        out = output.add_stream(self.codec, rate=self.rate)
        out.width, out.height = self.width, self.height
        out.pix_fmt = _pixel_format(encoder, self.width, self.height)
        # The input's own time base, so that every frame keeps its exact timestamp; a
        # container without timestamps (AVI) counts frames at the clip's rate instead.
        self.time_base = stream.time_base
        self._constant_rate = not output.format.flags & VARIABLE_FPS_FLAG
        if self._constant_rate:
            self.time_base = 1 / (self.rate or Fraction(25))
            self.notes.append(f"constant frame rate ({target.suffix} stores no timestamps)")
            # Without timestamps a reader cannot put B-frames back in order.
            out.codec_context.max_b_frames = 0
        out.time_base = self.time_base
        out.codec_context.time_base = self.time_base
        if stream.sample_aspect_ratio:  # H.264 keeps it in its bitstream, .mp4/.mov in the file
            out.codec_context.sample_aspect_ratio = stream.sample_aspect_ratio
        for name in ("color_range", "colorspace", "color_primaries", "color_trc"):
            with contextlib.suppress(AttributeError, ValueError, TypeError):
                setattr(out.codec_context, name, getattr(context, name))
        self.quality = self._set_quality(out, encoder, settings)
        self.video_out = out
        self._matrix_set = False
        # Packets of other streams read before the first video frame: held back until that
        # frame gives the display matrix, which must be set before the file's header is
        # written (by the first packet muxed).
        self._held: list[Any] = []
        # Audio and subtitles keep their packets; data streams (timecodes, phone telemetry)
        # and attachments are not carried over, and said so.
        self._copies: dict[int, Any] = {}
        dropped = []
        for other in self._input.streams:
            if other.type in ("audio", "subtitle"):
                try:
                    self._copies[other.index] = output.add_stream_from_template(other)
                except (av.error.FFmpegError, ValueError) as exc:
                    raise VideoError(
                        f"cannot copy the {other.type} stream #{other.index} "
                        f"({other.codec_context.name}) into {target.suffix}: {exc}"
                    ) from None
            elif other is not stream:
                dropped.append(f"#{other.index} {other.type}")
        if dropped:
            self.notes.append(f"not copied: {', '.join(dropped)}")

    def _set_quality(self, out: Any, encoder: Any, settings: EncodeSettings) -> str:
        """Apply --crf / --bitrate (or the encoder's default quality); the words for the
        header."""
        name = encoder.name
        if name in RGB_LOSSLESS:
            if settings.crf is not None or settings.bitrate is not None:
                raise VideoError(f"{name} is lossless: --crf and --bitrate do not apply")
            return "lossless"
        if settings.bitrate is not None:
            out.codec_context.bit_rate = settings.bitrate
            return f"{settings.bitrate / 1e6:g} Mbit/s"
        if name in CRF_ENCODERS:
            crf = CRF_ENCODERS[name] if settings.crf is None else settings.crf
            out.codec_context.options = {"crf": str(crf)}
            if name == "libvpx-vp9":
                out.codec_context.bit_rate = 0  # constant quality: crf alone
            return f"crf {crf}"
        if settings.crf is not None:
            raise VideoError(f"--crf does not apply to {name}; give --bitrate")
        return "the encoder's default quality"

    def describe(self) -> str:
        """One line: what is read and how it is written."""
        rate = f"{float(self.rate):.3g} fps" if self.rate else "unknown rate"
        count = f"{self.stream.frames} frames " if self.stream.frames else ""
        copied = collections.Counter(self._input.streams[i].type for i in self._copies)
        kept = ", ".join(f"{n} {kind} stream(s) copied" for kind, n in sorted(copied.items()))
        parts = [
            f"{count}{self.width}x{self.height} at {rate}",
            f"{self.codec} ({self.video_out.pix_fmt}, {self.quality})",
            *([kept] if kept else []),
            *self.notes,
        ]
        return "; ".join(parts)

    def batches(self, size: int) -> Iterator[np.ndarray]:
        """The decoded frames, ``size`` at a time (the last batch may be shorter); the other
        streams' packets are copied on the way. VideoError at the first frame that cannot be
        decoded, or when the file ends before the frames its header announces."""
        av = self.av
        frames: list[np.ndarray] = []
        streams = [self.stream, *(self._input.streams[i] for i in self._copies)]
        read_until = 0.0  # the end of the latest packet read, in seconds, any stream
        try:
            for packet in self._input.demux(streams):
                if packet.pts is not None and packet.time_base is not None:
                    end = float((packet.pts + (packet.duration or 0)) * packet.time_base)
                    read_until = max(read_until, end)
                if packet.stream.index != self.stream.index:
                    self._copy(packet)
                    continue
                for frame in packet.decode():
                    frames.append(self._take(frame))
                    if len(frames) == size:
                        yield np.stack(frames)
                        frames = []
        except av.error.FFmpegError as exc:
            raise VideoError(f"cannot decode ({_ffmpeg_reason(exc)})", self.decoded) from None
        if frames:
            yield np.stack(frames)
        # AVI counts the empty chunks that pad a video track to its audio among its frames.
        expected = self.stream.frames if self._input.format.name != "avi" else 0
        if expected and self.decoded < expected:
            raise VideoError(
                f"the file ends early ({self.decoded} of {expected} frames)", self.decoded
            )
        # Containers that do not count frames (Matroska, WebM) still give their duration: a
        # cut file ends before it (a frame interval or two of slack for rounding).
        if self._input.duration:
            start = (self._input.start_time or 0) / 1e6
            length = self._input.duration / 1e6
            slack = 2 / float(self.rate or 25) + 0.05
            if read_until < start + length - slack:
                raise VideoError(
                    f"the file ends early ({read_until - start:.2f} s of {length:.2f} s)",
                    self.decoded,
                )

    def _take(self, frame: Any) -> np.ndarray:
        if frame.is_corrupt:
            raise VideoError("corrupt frame", self.decoded)
        if not self._matrix_set:
            self._copy_display_matrix(frame)
        pts = frame.pts
        if pts is None:  # a container without timestamps: one frame interval after the last
            step = 1 / (self.rate or 25) / self.stream.time_base
            pts = round(self.decoded * step)
        duration = frame.duration or None
        if self._constant_rate:  # frame i at i / rate: every frame kept, none inserted
            pts, duration = self.decoded, None
        self._pending.append((pts, duration))
        self.decoded += 1
        # The frame's own colour matrix and range, so that the rendered frame is converted
        # back with the same ones (a mismatch tints every frame).
        return frame.to_ndarray(format="bgr24", src_color_range=frame.color_range or None)

    def _copy_display_matrix(self, frame: Any) -> None:
        """Keep the rotation (and flips) players apply: the first frame carries the stream's
        display matrix. Then the packets held back until now are written."""
        self._matrix_set = True
        side = frame.side_data.get(self.av.sidedata.sidedata.Type.DISPLAYMATRIX)
        if side is not None:
            self.video_out.set_display_matrix(list(struct.unpack("<9i", bytes(side)[:36])))
        held, self._held = self._held, []
        for packet in held:
            self._copy(packet)

    def _copy(self, packet: Any) -> None:
        if packet.dts is None and packet.size == 0:  # the demuxer's end-of-stream marker
            return
        if not self._matrix_set:
            self._held.append(packet)
            return
        packet.stream = self._copies[packet.stream.index]
        self._output.mux(packet)

    def write(self, bokeh: np.ndarray) -> None:
        """Encode rendered frames (uint8 N x H x W x 3 BGR), one per frame ``batches`` gave
        and not written yet, in order."""
        av = self.av
        out = self.video_out
        for picture in bokeh:
            pts, duration = self._pending.popleft()
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="bgr24")
            frame = frame.reformat(
                format=out.pix_fmt,
                dst_colorspace=out.codec_context.colorspace or None,
                dst_color_range=out.codec_context.color_range or None,
            )
            frame.pts = pts
            frame.time_base = self.time_base
            if duration:
                frame.duration = duration
            try:
                self._output.mux(out.encode(frame))
            except av.error.FFmpegError as exc:
                raise VideoError(f"cannot encode ({_ffmpeg_reason(exc)})", self.written) from None
            self.written += 1

    def finish(self) -> None:
        """Flush the encoder and close the output file."""
        try:
            self._output.mux(self.video_out.encode(None))
            self._output.close()
        except self.av.error.FFmpegError as exc:
            raise VideoError(f"cannot finish the file ({_ffmpeg_reason(exc)})") from None
        finally:
            self._output = None

    def close(self) -> None:
        for container in (self._output, self._input):
            if container is not None:
                with contextlib.suppress(Exception):
                    container.close()
        self._output = self._input = None

    def __enter__(self) -> VideoTranscode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ffmpeg_reason(exc: Exception) -> str:
    """FFmpeg's message without the file name PyAV appends."""
    return getattr(exc, "strerror", None) or str(exc)
