"""Training pairs from the EBB! layouts: discovery, the train/validation split, decoding.

Layouts read (DESIGN.md section 3): AIM ``Training/original`` + ``Training/bokeh``, PyNET-Bokeh
``train/original`` + ``train/bokeh``, and any root holding ``original/`` and ``bokeh/`` (the
synthetic set's layout). Files pair by stem. A bad pair (unpaired, unreadable, truncated, or
with mismatched sizes) is counted, reported once with examples, and skipped: it never stops a
run. Decoding happens in DataLoader workers; flips are drawn in the training loop from its own
generator, so they are part of the resumable state.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from dbsi.runtime.images import jpeg_is_truncated

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
LAYOUTS = (
    ("Training", "original", "bokeh"),
    ("train", "original", "bokeh"),
    ("", "original", "bokeh"),
)
VAL294_IDS = range(4400, 4694)
JPEG_MAGIC = b"\xff\xd8"


@dataclasses.dataclass(frozen=True)
class Pair:
    stem: str
    original: Path
    bokeh: Path


@dataclasses.dataclass
class BadPairs:
    """Pairs skipped and why; each pair is reported once."""

    reasons: dict[str, str] = dataclasses.field(default_factory=dict)
    reported: set[str] = dataclasses.field(default_factory=set)

    def add(self, stem: str, reason: str) -> None:
        self.reasons.setdefault(stem, reason)

    def report_new(self, examples: int = 3) -> str | None:
        """One line about the bad pairs not reported yet, or None."""
        new = [s for s in self.reasons if s not in self.reported]
        if not new:
            return None
        self.reported.update(new)
        shown = "; ".join(self.reasons[s] for s in new[:examples])
        more = f" (and {len(new) - examples} more)" if len(new) > examples else ""
        return f"skipped {len(new)} bad pair{'s' if len(new) > 1 else ''}: {shown}{more}"


def find_layout(root: str | Path) -> tuple[Path, Path]:
    """The ``original`` and ``bokeh`` folders under ``root``; ValueError naming what was tried."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: no such data folder")
    for parent, original, bokeh in LAYOUTS:
        base = root / parent if parent else root
        if (base / original).is_dir() and (base / bokeh).is_dir():
            return base / original, base / bokeh
    tried = ", ".join(str(Path(p) / "original") for p, _, _ in LAYOUTS)
    raise ValueError(f"{root}: no EBB! layout found (looked for {tried} with bokeh/ beside it)")


def images_by_stem(folder: Path) -> dict[str, Path]:
    return {
        p.stem: p
        for p in sorted(folder.iterdir())
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
    }


def stem_order(stem: str) -> tuple[int, int | str]:
    """Numeric stems in numeric order, then the rest by name."""
    return (0, int(stem)) if stem.isdigit() else (1, stem)


def discover_pairs(root: str | Path, bad: BadPairs) -> list[Pair]:
    """Pairs under ``root`` matched by stem; unpaired and empty files go to ``bad``."""
    original_dir, bokeh_dir = find_layout(root)
    originals, bokehs = images_by_stem(original_dir), images_by_stem(bokeh_dir)
    pairs = []
    for stem in sorted(set(originals) | set(bokehs), key=stem_order):
        if stem not in bokehs:
            bad.add(stem, f"{originals[stem]}: no bokeh image with this stem")
        elif stem not in originals:
            bad.add(stem, f"{bokehs[stem]}: no original image with this stem")
        elif originals[stem].stat().st_size == 0 or bokehs[stem].stat().st_size == 0:
            empty = originals[stem] if originals[stem].stat().st_size == 0 else bokehs[stem]
            bad.add(stem, f"{empty}: empty file")
        else:
            pairs.append(Pair(stem, originals[stem], bokehs[stem]))
    return pairs


def read_split_file(split_file: str | Path) -> tuple[list[str], list[str]]:
    """(train stems, val stems) of a split file: JSON ``{"train": [stems], "val": [stems]}``,
    as ``bokeh-train run`` writes it to ``split.json``; ValueError naming the file otherwise."""
    try:
        split = json.loads(Path(split_file).read_text())
        return [str(s) for s in split["train"]], [str(s) for s in split["val"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"{split_file}: not a split file (JSON with 'train' and 'val' lists): {exc}"
        ) from exc


def val294_pairs(pairs: list[Pair]) -> list[Pair] | None:
    """The paper's validation set, ids 4400-4693 in order, when all 294 have a pair; else None
    (a partial Val294 is not the paper's set, so it is never chosen silently)."""
    by_stem = {p.stem: p for p in pairs}
    if all(str(i) in by_stem for i in VAL294_IDS):
        return [by_stem[str(i)] for i in VAL294_IDS]
    return None


VAL294_RULE = "Val294 (ids 4400-4693, chosen because all 294 are present)"


def split_pairs(
    pairs: list[Pair], seed: int, val_fraction: float = 0.1, split_file: str | Path | None = None
) -> tuple[list[Pair], list[Pair], str]:
    """(train, val, how). A split file (see ``read_split_file``) wins; otherwise Val294 when
    ids 4400-4693 are all present (``val294_pairs``), else a seeded holdout."""
    by_stem = {p.stem: p for p in pairs}
    if split_file is not None:
        train_stems, val_stems = read_split_file(split_file)
        return (
            [by_stem[s] for s in train_stems if s in by_stem],
            [by_stem[s] for s in val_stems if s in by_stem],
            f"split file {split_file}",
        )
    val294 = val294_pairs(pairs)
    if val294 is not None:
        val_set = {p.stem for p in val294}
        return [p for p in pairs if p.stem not in val_set], val294, VAL294_RULE
    if len(pairs) < 2:
        raise ValueError(f"{len(pairs)} usable pair(s): need at least 2 to split train/val")
    n_val = min(len(pairs) - 1, max(1, round(len(pairs) * val_fraction)))
    shuffled = list(pairs)
    random.Random(seed).shuffle(shuffled)
    val_stems = {p.stem for p in shuffled[:n_val]}
    train = [p for p in pairs if p.stem not in val_stems]
    val = [p for p in pairs if p.stem in val_stems]
    return train, val, f"seeded holdout ({n_val} of {len(pairs)}, seed {seed})"


def split_document(train: list[Pair], val: list[Pair]) -> dict[str, list[str]]:
    """The split as a split file holds it."""
    return {"train": [p.stem for p in train], "val": [p.stem for p in val]}


def is_truncated(data: bytes) -> bool:
    """A JPEG (known by its magic bytes, whatever the extension) cut before its end-of-image
    marker: OpenCV decodes such a file with grey rows. Bytes after the marker are allowed."""
    return data.startswith(JPEG_MAGIC) and jpeg_is_truncated(data)


def decode_rgb(path: Path) -> tuple[np.ndarray | None, str]:
    """H x W x 3 RGB uint8, or (None, reason)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, f"{path}: unreadable ({exc.strerror})"
    if is_truncated(data):
        return None, f"{path}: truncated JPEG"
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return None, f"{path}: not a decodable image"
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB), ""


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
