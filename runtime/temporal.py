"""Temporal smoothing of video on the host: which frames carry the maps of the frame before
them, and how much (the graph side is ``dbsi.train.temporal``).

``bokeh-run --temporal S`` smooths each frame's weight maps with an exponential average,
``m_k = S * m_(k-1) + (1 - S) * w_k``: the maps the network predicts for one frame jitter a
little (sensor noise, compression), and the average keeps what stays while the blend still
takes every frame's own pixels. A scene cut restarts the average (``c_k = 0``), as does the
first frame of a clip. ``S = 0`` renders every frame on its own, bit for bit as a photo.

Per batch of N frames the recurrence becomes one N x (N + 1) matrix (``mix_matrix``), so a
clip smoothed in batches of any size gives the same maps.
"""

from __future__ import annotations

import cv2
import numpy as np

from dbsi.runtime.contract import TemporalFeed

# Scene cuts: two frames whose colour histograms (16 bins per channel) differ by more than
# this share of their pixels (half the L1 distance of the normalised histograms, 0..1). Moving
# subjects and pans keep most of a frame's colours; a cut replaces them.
CUT_THRESHOLD = 0.4
HISTOGRAM_BINS = 16
# Histograms of a thumbnail: enough pixels for stable shares, cheap at any frame size.
THUMBNAIL = (64, 36)


def mix_matrix(carry: np.ndarray) -> np.ndarray:
    """The N x (N + 1) float32 matrix of ``m_k = c_k * m_(k-1) + (1 - c_k) * w_k`` for the
    carry factors ``c`` of N frames: row k holds the coefficients of [the state m_(-1), w_0,
    ..., w_(N-1)]. Every row sums to one; carry 0 gives a row of one 1 and zeros."""
    carry = np.asarray(carry, np.float64)
    if carry.ndim != 1 or not np.all((carry >= 0) & (carry < 1)):
        raise ValueError(f"carry factors must be a list of values in [0, 1), got {carry}")
    rows = np.zeros((len(carry), len(carry) + 1))
    previous = np.zeros(len(carry) + 1)
    previous[0] = 1.0
    for k, c in enumerate(carry):
        row = c * previous
        row[k + 1] += 1.0 - c
        rows[k] = previous = row
    return rows.astype(np.float32)


def colour_histogram(frame: np.ndarray) -> np.ndarray:
    """The normalised 16-bin histograms of a uint8 H x W x 3 frame's channels, concatenated
    (each channel's sums to one)."""
    small = cv2.resize(frame, THUMBNAIL, interpolation=cv2.INTER_AREA)
    counts = [
        np.bincount(small[..., c].ravel() // (256 // HISTOGRAM_BINS), minlength=HISTOGRAM_BINS)
        for c in range(3)
    ]
    return np.concatenate(counts).astype(np.float64) / (THUMBNAIL[0] * THUMBNAIL[1])


def histogram_change(before: np.ndarray, after: np.ndarray) -> float:
    """The share of pixels whose colour changed bins between two ``colour_histogram``s (half
    their L1 distance per channel, the largest channel's)."""
    per_channel = np.abs(before - after).reshape(3, HISTOGRAM_BINS).sum(axis=1) / 2
    return float(per_channel.max())


class TemporalSmoother:
    """The temporal feed of one clip's batches, in order: ``feed`` before a batch runs,
    ``update`` with the ``temporal_maps`` it returned."""

    def __init__(self, strength: float, maps: int) -> None:
        if not 0 <= strength < 1:
            raise ValueError(f"temporal strength must lie in [0, 1), got {strength}")
        self.strength = strength
        self.maps = maps
        self.state: np.ndarray | None = None
        self.histogram: np.ndarray | None = None
        #: scene cuts found so far (frame indices in the clip)
        self.cuts: list[int] = []
        self.frames = 0

    def feed(self, frames: np.ndarray) -> TemporalFeed:
        """The feed for the next ``frames`` (uint8 N x H x W x 3) of the clip."""
        carry = np.full(len(frames), self.strength)
        for k, frame in enumerate(frames):
            histogram = colour_histogram(frame) if self.strength > 0 else None
            if self.state is None and k == 0:
                carry[k] = 0.0  # the clip's first frame: nothing to carry
            elif histogram is not None and self.histogram is not None:
                if histogram_change(self.histogram, histogram) > CUT_THRESHOLD:
                    carry[k] = 0.0
                    self.cuts.append(self.frames + k)
            self.histogram = histogram
        self.frames += len(frames)
        state = self.state if self.state is not None else np.zeros((1, self.maps, 1, 1), np.float32)
        return TemporalFeed(state, mix_matrix(carry))

    def update(self, maps: np.ndarray, used: int) -> None:
        """Carry the maps of the batch's last real frame (``used`` frames of it were the
        clip's; the rest padded a short batch) into the next batch."""
        self.state = np.ascontiguousarray(maps[used - 1 : used], dtype=np.float32)
