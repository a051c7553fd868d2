"""Training data: decoding pairs (as bokeh-run decodes pictures), the dataset, batches, the
resumable epoch sampler and flips. Pair discovery and the split are ``dbsi.train.pairs``.

Decoding happens in DataLoader workers; flips are drawn in the training loop from its own
generator, so they are part of the resumable state.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import sys
from collections.abc import Iterator
from multiprocessing.context import BaseContext
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from dbsi.runtime.images import ImageError, read_image
from dbsi.train.pairs import Pair

# Runtimes whose thread pools (OpenVINO's TBB arena, ONNX Runtime's intra-op pool) a forked
# process inherits as bookkeeping without the threads (docs/DESIGN.md section 6).
THREAD_POOL_RUNTIMES = ("openvino", "onnxruntime")


def worker_context() -> BaseContext | None:
    """How DataLoader workers start: from a forkserver once OpenVINO or ONNX Runtime is loaded in
    this process, by the platform default (fork on Linux) otherwise.

    Why: a forked worker is a copy of this process holding those runtimes' objects, and when
    its garbage collector frees one (a session or compiled model left in a reference cycle),
    the destructor waits for threads that do not exist in the copy: ONNX Runtime's pool joins
    them (SIGSEGV in pthread_join), OpenVINO's executor waits on TBB for ever. The forkserver
    is a fresh interpreter holding none of their objects. Training alone keeps fork: its
    workers start faster, and what they compute does not depend on how they started.
    """
    if not any(name in sys.modules for name in THREAD_POOL_RUNTIMES):
        return None
    context = multiprocessing.get_context("forkserver")
    # Workers then fork from a server that has torch and this module imported already,
    # instead of each importing them again every epoch.
    context.set_forkserver_preload([__name__])
    return context


def decode_rgb(path: Path) -> tuple[np.ndarray | None, str]:
    """H x W x 3 RGB uint8 (decoded as bokeh-run decodes: EXIF orientation applied, alpha
    dropped), or (None, reason)."""
    try:
        picture = read_image(path)
    except ImageError as exc:
        return None, f"{path}: {exc}"
    return cv2.cvtColor(picture.bgr, cv2.COLOR_BGR2RGB), ""


def fit_orientation(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Turn a portrait image to landscape (or back) to match the target's orientation."""
    h, w = image.shape[:2]
    if (h > w) != (height > width) and h != w:
        return np.ascontiguousarray(np.rot90(image))
    return image


def load_pair(pair: Pair, size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray] | str:
    """Decoded (original, bokeh) RGB uint8, resized to ``size`` (H, W) when given; or the
    reason the pair is bad."""
    original, reason = decode_rgb(pair.original)
    if original is None:
        return reason
    bokeh, reason = decode_rgb(pair.bokeh)
    if bokeh is None:
        return reason
    if original.shape != bokeh.shape:
        return (
            f"{pair.original}: size {original.shape[1]}x{original.shape[0]} differs from "
            f"its bokeh's {bokeh.shape[1]}x{bokeh.shape[0]}"
        )
    if size is not None:
        height, width = size
        images = []
        for image in (original, bokeh):
            image = fit_orientation(image, height, width)
            images.append(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA))
        original, bokeh = images
    return original, bokeh


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """H x W x 3 uint8 -> 3 x H x W uint8 (scaled to float on the training device)."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


class PairDataset(Dataset):
    """Item i: ``(stem, original, bokeh)`` as 3 x H x W uint8 tensors at the training size,
    or ``(stem, reason)`` for a bad pair (the collate function sorts them out)."""

    def __init__(self, pairs: list[Pair], size: tuple[int, int] | None) -> None:
        self.pairs = pairs
        self.size = size

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple:
        pair = self.pairs[index]
        loaded = load_pair(pair, self.size)
        if isinstance(loaded, str):
            return (pair.stem, loaded)
        return (pair.stem, to_tensor(loaded[0]), to_tensor(loaded[1]))


@dataclasses.dataclass
class Batch:
    stems: list[str]
    original: torch.Tensor | None  # N x 3 x H x W uint8
    bokeh: torch.Tensor | None
    bad: list[tuple[str, str]]


def collate_pairs(items: list[tuple]) -> Batch:
    """Stack the good items; carry the bad ones' reasons."""
    good = [it for it in items if len(it) == 3]
    bad = [it for it in items if len(it) == 2]
    if not good:
        return Batch([], None, None, bad)
    return Batch(
        [it[0] for it in good],
        torch.stack([it[1] for it in good]),
        torch.stack([it[2] for it in good]),
        bad,
    )


class EpochSampler(Sampler[int]):
    """A seeded shuffle per epoch, sharded over ranks, that can start mid-epoch.

    The order depends only on (seed, epoch), like DistributedSampler's, so a resumed run sees
    the same batches; ``start`` skips the items this rank already consumed.
    """

    def __init__(self, size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.size, self.seed, self.rank, self.world = size, seed, rank, world
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def per_rank(self) -> int:
        return -(-self.size // self.world)

    def __len__(self) -> int:
        return self.per_rank() - self.start

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        total = self.per_rank() * self.world
        order += order[: total - len(order)]  # pad so every rank gets as many items
        return iter(order[self.rank : total : self.world][self.start :])


def random_flips(
    original: torch.Tensor, bokeh: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip each pair horizontally and vertically, each with probability 1/2."""
    flips = torch.rand(original.shape[0], 2, generator=generator) < 0.5
    originals, bokehs = [], []
    for o, b, (horizontal, vertical) in zip(original, bokeh, flips.tolist()):
        dims = [d for d, on in ((2, horizontal), (1, vertical)) if on]
        originals.append(o.flip(dims) if dims else o)
        bokehs.append(b.flip(dims) if dims else b)
    return torch.stack(originals), torch.stack(bokehs)
